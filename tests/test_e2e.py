"""End to end: a real browser on the demo shop, through tagrelay, to Meta and GA4 stand-ins.

Headless Chromium lands on the demo page with ``?fbclid=``, views it, and buys
with an email address. tagrelay (behind a trusted proxy that forwards the
client IP) enriches and routes the events to local stand-ins of Meta's
Conversions API and GA4's Measurement Protocol, which check every request
against the vendors' documented rules. The test then reads what the vendors
received.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.app import DELIVERY, make_app
from proxy.rules import load_rules
from proxy.settings import Settings
from tests.browser import chromium, needs_chromium
from tests.standins import STANDIN
from tests.standins.ga4 import ga4_app
from tests.standins.meta import meta_app

DATA = Path(__file__).parent / "data"
FBCLID = "IwAR2_e2e-TestCase-9xYz"  # mixed case, '-', '_': must arrive unchanged
CLIENT_IP = "81.2.69.160"  # London in MaxMind's GeoLite2-City test database
EMAIL_CASE = "    SomeOne@domain.com  "  # a Meta Parameter Builder email vector input

ACCEPTED = (
    "localStorage.setItem('demo-consent', JSON.stringify("
    "{analytics: true, ads: true, ad_personalization: true, ad_user_data: true}))"
)
pytestmark = pytest.mark.browser


def vector_hash(field_file: str, raw: str) -> str:
    cases = json.loads((DATA / "vectors" / field_file).read_text(encoding="utf-8"))
    (case,) = [c for c in cases if c["input"] == raw and c.get("sha256")][:1]
    return str(case["sha256"])


async def wait_for(predicate: Any, what: str, secs: float = 20.0) -> None:
    """Poll until ``predicate()`` holds; a bound on waiting, not a timing assertion."""
    for _ in range(int(secs / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def meta_events(app: web.Application) -> list[dict[str, Any]]:
    return [e for r in app[STANDIN].requests if r.json for e in r.json.get("data", [])]


def ga4_requests(app: web.Application) -> list[dict[str, Any]]:
    return [r.json for r in app[STANDIN].requests if r.json]


def ga4_events(app: web.Application) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(body, e) for body in ga4_requests(app) for e in body.get("events", [])]


@pytest.fixture
async def shop(aiohttp_server, tmp_path):
    """tagrelay in demo mode, routing every event to Meta and GA4 stand-ins."""
    meta, ga4 = meta_app(access_token="e2e-meta-token"), ga4_app("G-E2ETEST1", "e2e-ga4-secret")
    meta_server, ga4_server = await aiohttp_server(meta), await aiohttp_server(ga4)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-e2e.toml").write_text(
        f"""
[destinations.meta]
type = "meta_capi"
pixel_id = "1234567890"
access_token = "${{E2E_META_TOKEN}}"
endpoint = "http://127.0.0.1:{meta_server.port}"

[destinations.ga4]
type = "ga4"
measurement_id = "G-E2ETEST1"
api_secret = "${{E2E_GA4_SECRET}}"
endpoint = "http://127.0.0.1:{ga4_server.port}"

[[routes]]
name = "everything"
to = ["meta", "ga4"]
""",
        encoding="utf-8",
    )
    settings = Settings(
        rules_dir=rules,
        data_dir=tmp_path,
        demo=True,
        trusted_proxies=Settings.from_env({"TAGRELAY_TRUSTED_PROXIES": "127.0.0.1/32"}).trusted_proxies,
        geo_db=DATA / "geo" / "GeoLite2-City-Test.mmdb",
    )
    env = {"E2E_META_TOKEN": "e2e-meta-token", "E2E_GA4_SECRET": "e2e-ga4-secret"}
    app = make_app(settings, load_rules(rules, env=env))
    server = await aiohttp_server(app)
    return server, app, meta, ga4


@needs_chromium
async def test_browser_purchase_reaches_meta_and_ga4_enriched_and_hashed(shop):
    """A landing with fbclid, a page view and a purchase with email arrive at both vendors as documented."""
    server, app, meta, ga4 = shop
    # The browser stands behind a trusted proxy that reports the client's address.
    async with chromium(extra_http_headers={"X-Forwarded-For": CLIENT_IP}) as browser:
        page = await browser.new_page()
        # A returning visitor who accepted the demo's consent banner before.
        await page.add_init_script(ACCEPTED)
        await page.goto(str(server.make_url("/")) + f"?fbclid={FBCLID}")
        await wait_for(lambda: any(e["event_name"] == "PageView" for e in meta_events(meta)), "Meta PageView")
        user_agent = await page.evaluate("navigator.userAgent")
        await page.fill("#email", EMAIL_CASE)
        await page.click("#buy")
        await wait_for(lambda: any(e["event_name"] == "Purchase" for e in meta_events(meta)), "Meta Purchase")
        await wait_for(lambda: any(e["name"] == "purchase" for _, e in ga4_events(ga4)), "GA4 purchase")
        cookies = {c["name"]: c for c in await browser.cookies()}
    assert await app[DELIVERY].wait_idle(10)

    # Both vendors found nothing to object to.
    assert meta[STANDIN].problems == [] and ga4[STANDIN].validation_messages == []

    by_name = {e["event_name"]: e for e in meta_events(meta)}
    assert {"PageView", "Purchase"} <= set(by_name)
    purchase = by_name["Purchase"]
    (ga4_body, ga4_purchase) = next((b, e) for b, e in ga4_events(ga4) if e["name"] == "purchase")

    # One event ID, minted in the browser, shared by both vendors.
    assert purchase["event_id"] == ga4_purchase["params"]["event_id"]

    # The email left only as the SHA-256 of its normalised form (Meta's vector).
    assert purchase["user_data"]["em"] == [vector_hash("meta_param_builder_email.json", EMAIL_CASE)]
    assert EMAIL_CASE.strip().lower() not in json.dumps(meta_events(meta) + ga4_requests(ga4))

    # fbc is fb.<subdomain index>.<ms>.<fbclid>, fbclid unchanged; 127.0.0.1 is an IP host: index 0.
    assert re.fullmatch(r"fb\.0\.\d{13}\." + re.escape(FBCLID), purchase["user_data"]["fbc"])
    assert purchase["user_data"]["fbc"] == cookies["_fbc"]["value"]
    assert re.fullmatch(r"fb\.0\.\d{13}\.\d+", purchase["user_data"]["fbp"])

    # The forwarded client IP, its geo, and the browser's real user agent.
    assert purchase["user_data"]["client_ip_address"] == CLIENT_IP
    assert purchase["user_data"]["client_user_agent"] == user_agent
    assert ga4_body["user_location"]["city"] == "London"
    assert ga4_body["user_location"]["country_id"] == "GB"

    # GA4 counts it in a session: client ID from the server-set _ga, session ID and engagement time.
    assert cookies["_ga"]["value"].endswith("." + ga4_body["client_id"])
    assert ga4_purchase["params"]["session_id"] and ga4_purchase["params"]["engagement_time_msec"] >= 1

    # The purchase itself, mapped to Meta's standard event with its value.
    assert purchase["action_source"] == "website"
    assert purchase["event_source_url"].startswith(str(server.make_url("/")))
    assert purchase["custom_data"]["currency"] == "EUR" and purchase["custom_data"]["value"] > 0

    # The visitor cookie is the server's: HttpOnly, SameSite=Lax.
    assert cookies["trid"]["httpOnly"] and cookies["trid"]["sameSite"] == "Lax"
