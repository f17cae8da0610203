"""No URL the demo page makes the browser request is blocked by a real ad-block engine.

The demo shop is served by tagrelay itself on ``www.shop.example`` (mapped to
127.0.0.1 inside Chromium). The browser lands with click IDs, uses every
button, navigates in-page, and is then pushed onto the collector's fallbacks
(fetch, then the GET image). Every request it made, with its query string and
resource type, is checked against Brave's engine loaded with the real
EasyPrivacy, EasyList and uBlock Origin lists.
"""

from __future__ import annotations

import pytest

from proxy.app import make_app
from proxy.rules import load_rules
from proxy.settings import Settings
from tests.adblock import PROFILES, blocked, request_type_for
from tests.browser import chromium, needs_chromium

ACCEPTED = (
    "localStorage.setItem('demo-consent', JSON.stringify("
    "{analytics: true, ads: true, ad_personalization: true, ad_user_data: true}))"
)
pytestmark = pytest.mark.browser
HOST = "www.shop.example"


@needs_chromium
async def test_no_request_of_the_demo_page_is_blocked(aiohttp_server, tmp_path):
    """Script, beacon, fetch and image requests of the demo all pass both list profiles."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n'
    )
    # Plain http on a non-local name: Secure cookies would be refused, and are not the point here.
    settings = Settings(rules_dir=rules, demo=True, cookie_secure=False, data_dir=tmp_path)
    server = await aiohttp_server(make_app(settings, load_rules(rules, env={})))
    origin = f"http://{HOST}:{server.port}"
    seen: list[tuple[str, str]] = []

    async with chromium(host_map={HOST: "127.0.0.1"}) as browser:
        page = await browser.new_page()
        # A returning visitor who accepted the demo's consent banner before.
        await page.add_init_script(ACCEPTED)
        page.on("request", lambda r: seen.append((r.url, r.resource_type)))
        await page.goto(f"{origin}/?fbclid=IwAR2xYz&gclid=Cj0KCQ&ttclid=E.C.P.abc")
        for button in ("#add", "#checkout"):
            await page.click(button)
        await page.fill("#email", "jo@example.com")
        await page.click("#buy")
        await page.click("#news")
        await page.click("#next")
        # Push the collector onto its fallbacks: no beacon, then no fetch either.
        await page.evaluate("navigator.sendBeacon = () => false")
        async with page.expect_request(lambda r: r.resource_type == "fetch"):
            await page.click("#add")
        await page.evaluate("window.fetch = undefined")
        async with page.expect_request(lambda r: r.resource_type == "image"):
            await page.click("#add")

    kinds = {kind for url, kind in seen if url.startswith(origin)}
    assert {"document", "script", "ping", "fetch", "image"} <= kinds, f"missing request kinds: {kinds}"
    problems = []
    for url, kind in seen:
        if kind == "document":
            continue  # the page itself is not the collector
        rtype = request_type_for(kind)
        for profile in PROFILES:
            rule = blocked(url, f"{origin}/", rtype, profile)
            if rule:
                problems.append(f"{kind} {url} blocked by {rule!r} ({profile})")
    assert problems == []
