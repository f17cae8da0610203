"""The collector script (static/collector.js) in real headless chromium.

A small aiohttp server on 127.0.0.1 plays tagrelay: it serves the script with
the collect path written in, serves test pages, and records every request to
the collect path. Most pages run on ``www.shop.example`` and load the script
from ``t.shop.example`` (both mapped to 127.0.0.1 inside chromium), the
cross-origin set-up the snippet is made for.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from proxy.app import Script
from aiohttp import web

from tests.browser import chromium, needs_chromium

STATIC = Path(__file__).resolve().parent.parent / "static"
PLACEHOLDER = '"__TAGRELAY_COLLECT__"'
SCRIPT_PATH = "/assets/c.js"
COLLECT_PATH = "/e"
HOSTS = {"www.shop.example": "127.0.0.1", "t.shop.example": "127.0.0.1"}

UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
HEX128_RE = re.compile(r"^[0-9a-f]{32}$")

# Safety net, not a timing assertion: how long to wait for a hit before
# failing with the list of what did arrive.
HIT_WAIT_SECS = 20


def served_script(collect_path: str = COLLECT_PATH) -> bytes:
    """collector.js as the server sends it: minified, the placeholder replaced by a JSON string."""
    source = (STATIC / "collector.js").read_text(encoding="utf-8")
    assert source.count(PLACEHOLDER) == 1
    return Script(source, collect_path).plain


def snippet_lines() -> list[str]:
    """The lines of static/snippet.html a site owner pastes (its comment left out)."""
    text = (STATIC / "snippet.html").read_text(encoding="utf-8")
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.DOTALL)
    return [line for line in text.splitlines() if line.strip()]


STUB, LOADER, NOSCRIPT = snippet_lines()


@dataclass
class Hit:
    method: str
    host: str
    content_type: str
    batch: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [event["name"] for event in self.batch["events"]]


@dataclass
class Recorder:
    """Every request that reached the collect path, in arrival order."""

    hits: list[Hit] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.methods.append(request.method)
        if request.method in ("POST", "GET"):
            raw = body if request.method == "POST" else request.query.get("d", "{}")
            hit = Hit(
                request.method,
                request.host,
                request.headers.get("Content-Type", ""),
                json.loads(raw),
            )
            async with self.changed:
                self.hits.append(hit)
                self.changed.notify_all()
        return web.Response(status=204)

    async def wait_for(self, match: Callable[[Hit], bool], what: str) -> Hit:
        """Return the first hit that ``match`` accepts, waiting for it to arrive."""

        def found() -> Hit | None:
            return next((hit for hit in self.hits if match(hit)), None)

        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: found() is not None), HIT_WAIT_SECS
                )
            except TimeoutError:
                pytest.fail(
                    f"no hit with {what} arrived; got {[hit.batch for hit in self.hits]}"
                )
        hit = found()
        assert hit is not None
        return hit

    async def hit_with(self, name: str) -> Hit:
        return await self.wait_for(lambda hit: name in hit.names, f"event {name!r}")


@dataclass
class Shop:
    """The test server: pages by path, and the recorder behind the collect path."""

    port: int
    recorder: Recorder
    pages: dict[str, str]

    def site(self, path: str = "/") -> str:
        return f"http://www.shop.example:{self.port}{path}"

    def tagrelay(self, path: str = "") -> str:
        return f"http://t.shop.example:{self.port}{path}"

    def page(self, *head: str, path: str = "/") -> str:
        """Serve an HTML page at ``path`` on the site and return its URL."""
        self.pages[path] = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Shop</title>"
            "<link rel='icon' href='data:,'>"
            + "".join(head)
            + "</head><body><h1>Shop</h1></body></html>"
        )
        return self.site(path)

    def snippet(self) -> list[str]:
        """The snippet with the tagrelay origin put before its paths, as its comment says."""
        return [
            STUB,
            LOADER.replace('"/assets/', f'"{self.tagrelay()}/assets/'),
            NOSCRIPT.replace('"/e?', f'"{self.tagrelay()}/e?'),
        ]


@pytest.fixture
async def shop(aiohttp_server) -> Shop:
    recorder = Recorder()
    pages: dict[str, str] = {}
    demo = (STATIC / "demo" / "index.html").read_text(encoding="utf-8")

    async def script(request: web.Request) -> web.Response:
        return web.Response(body=served_script(), content_type="application/javascript")

    async def page(request: web.Request) -> web.Response:
        path = request.path
        if path in pages:
            return web.Response(text=pages[path], content_type="text/html")
        if path == "/demo/" or path.startswith("/product/"):
            return web.Response(text=demo, content_type="text/html")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get(SCRIPT_PATH, script)
    app.router.add_route("*", COLLECT_PATH, recorder.handle)
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app, host="127.0.0.1")
    return Shop(server.port, recorder, pages)


@pytest.fixture
async def browser():
    async with chromium(host_map=HOSTS) as context:
        yield context


async def open_page(browser, url: str, init_script: str = ""):
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if init_script:
        await page.add_init_script(init_script)
    await page.goto(url)
    page.errors = errors
    return page


# --- size -------------------------------------------------------------------


def test_served_script_is_at_most_2_kb_gzipped():
    """The script as served, gzipped at level 9, fits in 2048 bytes."""
    assert len(gzip.compress(served_script(), compresslevel=9, mtime=0)) <= 2048


def test_script_holds_the_collect_placeholder_once():
    """The server's substitution has exactly one place to go."""
    assert (STATIC / "collector.js").read_text(encoding="utf-8").count(PLACEHOLDER) == 1


def test_demo_page_loads_the_collector_with_the_snippet():
    """The demo page carries the snippet's lines verbatim, as a site owner would paste them."""
    demo = (STATIC / "demo" / "index.html").read_text(encoding="utf-8")

    assert "\n".join(snippet_lines()) in demo


# --- page views -------------------------------------------------------------


@needs_chromium
async def test_page_view_is_sent_on_load(shop, browser):
    """Loading a page sends one page_view with the page's URL, referrer and title."""
    url = shop.page(*shop.snippet())
    before_ms = int(time.time() * 1000)

    page = await open_page(browser, url)
    hit = await shop.recorder.hit_with("page_view")

    after_ms = int(time.time() * 1000)
    assert hit.names == ["page_view"]
    event = hit.batch["events"][0]
    assert event["page"] == {"url": url, "referrer": "", "title": "Shop"}
    assert event["params"] == {}
    assert before_ms <= event["time"] <= after_ms
    assert hit.batch["v"] == 1
    assert re.fullmatch(r"\d+x\d+", hit.batch["screen"])
    assert hit.batch["language"] == await page.evaluate("navigator.language")
    assert page.errors == []


@needs_chromium
async def test_hit_goes_to_the_scripts_origin(shop, browser):
    """The collect path is resolved against the script's src, not the page's origin."""
    await open_page(browser, shop.page(*shop.snippet()))
    hit = await shop.recorder.hit_with("page_view")

    assert hit.host == f"t.shop.example:{shop.port}"


@needs_chromium
async def test_hit_is_a_text_plain_post_without_preflight(shop, browser):
    """The cross-origin hit is a text/plain POST, so no CORS preflight (OPTIONS) is sent."""
    await open_page(browser, shop.page(*shop.snippet()))
    hit = await shop.recorder.hit_with("page_view")

    assert hit.method == "POST"
    assert hit.content_type == "text/plain;charset=UTF-8"
    assert "OPTIONS" not in shop.recorder.methods


@needs_chromium
async def test_omits_empty_user_consent_and_click_ids(shop, browser):
    """A batch has no user, consent or click_ids key while they are empty."""
    await open_page(browser, shop.page(*shop.snippet()))
    hit = await shop.recorder.hit_with("page_view")

    assert set(hit.batch) == {"v", "events", "screen", "language"}


@needs_chromium
async def test_config_page_view_false_turns_off_the_automatic_page_view(shop, browser):
    """tagrelay('config', {page_view: false}) before load sends no page_view."""
    url = shop.page(
        STUB,
        "<script>tagrelay('config', {page_view: false});</script>",
        shop.snippet()[1],
    )

    page = await open_page(browser, url)
    await page.evaluate("tagrelay('event', 'marker')")
    hit = await shop.recorder.hit_with("marker")

    assert hit.names == ["marker"]
    assert all("page_view" not in hit.names for hit in shop.recorder.hits)


@needs_chromium
async def test_script_loaded_twice_sends_one_page_view(shop, browser):
    """A second copy of the script on the page does nothing."""
    stub, loader, _ = shop.snippet()
    page = await open_page(
        browser, shop.page(stub, loader, loader.replace("c.js", "c.js?again"))
    )

    await page.evaluate("tagrelay('event', 'marker')")
    await shop.recorder.hit_with("marker")

    names = [name for hit in shop.recorder.hits for name in hit.names]
    assert names.count("page_view") == 1


# --- queue ------------------------------------------------------------------


@needs_chromium
async def test_calls_queued_before_load_are_replayed_in_order(shop, browser):
    """Calls made before the script loads arrive in order, after the automatic page_view."""
    calls = """<script>
      tagrelay('event', 'view_item', {items: [{item_id: 'SKU1'}]});
      tagrelay('event', 'add_to_cart', {value: 1});
      tagrelay('event', 'begin_checkout');
    </script>"""
    stub, loader, _ = shop.snippet()

    await open_page(browser, shop.page(stub, calls, loader))
    hit = await shop.recorder.hit_with("begin_checkout")

    assert hit.names == ["page_view", "view_item", "add_to_cart", "begin_checkout"]
    assert hit.batch["events"][1]["params"] == {"items": [{"item_id": "SKU1"}]}


@needs_chromium
async def test_user_and_consent_queued_before_load_reach_the_page_view(shop, browser):
    """Queued user and consent calls apply to the automatic page_view."""
    calls = """<script>
      tagrelay('consent', {analytics: true, ads: false});
      tagrelay('user', {email: 'Jane@Example.com'});
    </script>"""
    stub, loader, _ = shop.snippet()

    await open_page(browser, shop.page(stub, calls, loader))
    hit = await shop.recorder.hit_with("page_view")

    assert hit.batch["consent"] == {"analytics": True, "ads": False}
    assert hit.batch["user"] == {"email": "Jane@Example.com"}


# --- batching and IDs -------------------------------------------------------


@needs_chromium
async def test_events_of_the_same_tick_share_one_request(shop, browser):
    """Two events sent in the same task arrive in one hit, in call order."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await shop.recorder.hit_with("page_view")

    await page.evaluate(
        "tagrelay('event', 'add_to_cart', {value: 1}); tagrelay('event', 'begin_checkout')"
    )
    hit = await shop.recorder.hit_with("add_to_cart")

    assert hit.names == ["add_to_cart", "begin_checkout"]


@needs_chromium
async def test_event_ids_are_unique_hex_without_secure_context(shop, browser):
    """On an http page (no crypto.randomUUID) every event gets its own 128-bit hex ID."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate("for (var i = 0; i < 20; i++) tagrelay('event', 'e' + i)")
    hit = await shop.recorder.hit_with("e19")

    ids = [event["id"] for event in hit.batch["events"]]
    assert len(set(ids)) == 20
    assert all(HEX128_RE.match(event_id) for event_id in ids)


@needs_chromium
async def test_event_ids_are_uuids_in_a_secure_context(shop, browser):
    """On 127.0.0.1 (a secure context) event IDs come from crypto.randomUUID."""
    shop.page(STUB, LOADER, path="/secure")

    page = await open_page(browser, f"http://127.0.0.1:{shop.port}/secure")
    await page.evaluate("tagrelay('event', 'a'); tagrelay('event', 'b')")
    hit = await shop.recorder.hit_with("b")

    ids = [event["id"] for event in hit.batch["events"]]
    assert len(set(ids)) == 2
    assert all(UUID_RE.match(event_id) for event_id in ids)


@needs_chromium
async def test_options_id_overrides_the_minted_id(shop, browser):
    """options.id becomes the event ID, so a pixel beside tagrelay can share it."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate("tagrelay('event', 'purchase', {value: 5}, {id: 'order-1001'})")
    hit = await shop.recorder.hit_with("purchase")

    assert hit.batch["events"][0]["id"] == "order-1001"
    assert hit.batch["events"][0]["params"] == {"value": 5}


@needs_chromium
async def test_params_event_id_overrides_the_minted_id(shop, browser):
    """params.event_id becomes the event ID and is not repeated in params."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate(
        "tagrelay('event', 'generate_lead', {event_id: 'lead-7', value: 5, currency: 'EUR'})"
    )
    hit = await shop.recorder.hit_with("generate_lead")

    assert hit.batch["events"][0]["id"] == "lead-7"
    assert hit.batch["events"][0]["params"] == {"value": 5, "currency": "EUR"}


@needs_chromium
async def test_an_id_the_server_would_refuse_is_replaced_not_sent(shop, browser):
    """An event ID with characters the endpoint refuses gets a minted one, so the hit still counts."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate("tagrelay('event', 'purchase', {value: 5}, {id: 'order #1001 / x'})")
    hit = await shop.recorder.hit_with("purchase")

    event_id = hit.batch["events"][-1]["id"]
    assert event_id != "order #1001 / x" and re.fullmatch(r"[\w.:-]{1,64}", event_id)


@needs_chromium
async def test_an_event_with_a_bad_name_is_dropped_and_its_batch_mates_go(shop, browser):
    """'add to cart' (spaces) is dropped in the page; the valid event of the same tick is sent."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate("tagrelay('event', 'add to cart'); tagrelay('event', 'marker')")
    hit = await shop.recorder.hit_with("marker")

    assert "add to cart" not in hit.names


@needs_chromium
async def test_user_fields_are_the_known_ones_as_text(shop, browser):
    """Unknown user fields are left out and numbers become text, as the endpoint expects."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate("tagrelay('user', {phone: 4670123456, ssn: '1'}); tagrelay('event', 'marker')")
    hit = await shop.recorder.hit_with("marker")

    assert hit.batch["user"] == {"phone": "4670123456"}


# --- user, consent, click IDs -----------------------------------------------


@needs_chromium
async def test_user_and_consent_are_attached_to_later_events(shop, browser):
    """User data and consent set on the page go with the events that follow."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate(
        """tagrelay('user', {email: 'jane@example.com', phone: '+33 6 12 34 56 78',
                             first_name: 'Jane', last_name: 'Doe', external_id: 'u-42'});
           tagrelay('consent', {analytics: true, ads: true, ad_personalization: false, ad_user_data: true});
           tagrelay('event', 'purchase', {value: 42.5, currency: 'EUR', transaction_id: 'T-1'})"""
    )
    hit = await shop.recorder.hit_with("purchase")

    assert hit.batch["user"] == {
        "email": "jane@example.com",
        "phone": "+33 6 12 34 56 78",
        "first_name": "Jane",
        "last_name": "Doe",
        "external_id": "u-42",
    }
    assert hit.batch["consent"] == {
        "analytics": True,
        "ads": True,
        "ad_personalization": False,
        "ad_user_data": True,
    }


@needs_chromium
async def test_user_data_does_not_reach_earlier_events(shop, browser):
    """An event sent before tagrelay('user') in the same tick goes out without the user data."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate(
        "tagrelay('event', 'before'); tagrelay('user', {email: 'jane@example.com'}); tagrelay('event', 'after')"
    )
    before = await shop.recorder.hit_with("before")
    after = await shop.recorder.hit_with("after")

    assert before.names == ["before"]
    assert "user" not in before.batch
    assert after.batch["user"] == {"email": "jane@example.com"}


@needs_chromium
async def test_consent_values_that_are_not_booleans_are_ignored(shop, browser):
    """Only true/false consent values are sent; others are dropped, not guessed."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await page.evaluate(
        "tagrelay('consent', {analytics: 'yes', ads: false}); tagrelay('event', 'marker')"
    )
    hit = await shop.recorder.hit_with("marker")

    assert hit.batch["consent"] == {"ads": False}


@needs_chromium
async def test_click_ids_are_read_from_the_landing_url_unchanged(shop, browser):
    """fbclid, gclid and ttclid are sent exactly as in the URL: same case, not decoded."""
    url = shop.page(*shop.snippet()) + (
        "?utm_source=meta&fbclid=IwAR2xYz_AbC-dEf%2Bg&gclid=Cj0KCQiA-Abc_DEF"
        "&ttclid=E.C.P.CqcBxYz&FBCLID=other&msclkid=9f8e7d"
    )

    await open_page(browser, url)
    hit = await shop.recorder.hit_with("page_view")

    assert hit.batch["click_ids"] == {
        "fbclid": "IwAR2xYz_AbC-dEf%2Bg",
        "gclid": "Cj0KCQiA-Abc_DEF",
        "ttclid": "E.C.P.CqcBxYz",
        "msclkid": "9f8e7d",
    }


@needs_chromium
async def test_click_ids_outlive_spa_navigation(shop, browser):
    """Click IDs from the landing URL still go with events after pushState drops them from the URL."""
    page = await open_page(browser, shop.page(*shop.snippet()) + "?gclid=Cj0KCQiA")
    await page.evaluate("history.pushState({}, '', '/product/2')")
    hit = await shop.recorder.wait_for(
        lambda hit: any(
            e["page"]["url"].endswith("/product/2") for e in hit.batch["events"]
        ),
        "a page_view of /product/2",
    )

    assert hit.batch["click_ids"] == {"gclid": "Cj0KCQiA"}


# --- SPA --------------------------------------------------------------------


@needs_chromium
async def test_push_state_sends_a_page_view_with_the_previous_url_as_referrer(
    shop, browser
):
    """history.pushState to a new URL sends page_view with the new URL and the old one as referrer."""
    url = shop.page(*shop.snippet())
    page = await open_page(browser, url)
    await shop.recorder.hit_with("page_view")

    await page.evaluate(
        "document.title = 'Red mug'; history.pushState({}, '', '/product/2')"
    )
    hit = await shop.recorder.wait_for(
        lambda hit: hit.batch["events"][0]["page"]["title"] == "Red mug",
        "the new title",
    )

    assert hit.names == ["page_view"]
    assert hit.batch["events"][0]["page"] == {
        "url": shop.site("/product/2"),
        "referrer": url,
        "title": "Red mug",
    }


@needs_chromium
async def test_popstate_sends_a_page_view(shop, browser):
    """Going back in the history sends page_view for the URL returned to."""
    url = shop.page(*shop.snippet())
    page = await open_page(browser, url)
    await page.evaluate("history.pushState({}, '', '/product/2')")

    await page.evaluate("history.back()")
    hit = await shop.recorder.wait_for(
        lambda hit: (
            hit.batch["events"][0]["page"]["referrer"] == shop.site("/product/2")
        ),
        "a page_view back",
    )

    assert hit.names == ["page_view"]
    assert hit.batch["events"][0]["page"]["url"] == url
    assert hit.batch["events"][0]["page"]["referrer"] == shop.site("/product/2")


@needs_chromium
async def test_replace_state_to_the_same_url_sends_no_page_view(shop, browser):
    """replaceState that keeps the URL, or changes only the fragment, is not a page view."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    await shop.recorder.hit_with("page_view")

    await page.evaluate(
        "history.replaceState({step: 2}, ''); history.replaceState({}, '', '#reviews'); tagrelay('event', 'marker')"
    )
    hit = await shop.recorder.hit_with("marker")

    assert hit.names == ["marker"]


@needs_chromium
async def test_events_after_spa_navigation_carry_the_new_page(shop, browser):
    """An event after pushState reports the new URL and the previous URL as referrer."""
    url = shop.page(*shop.snippet())
    page = await open_page(browser, url)
    await page.evaluate(
        "history.pushState({}, '', '/cart'); tagrelay('event', 'begin_checkout')"
    )
    hit = await shop.recorder.hit_with("begin_checkout")

    assert hit.batch["events"][-1]["page"]["url"] == shop.site("/cart")
    assert hit.batch["events"][-1]["page"]["referrer"] == url


# --- transport fallbacks ----------------------------------------------------

FETCH_SPY = """
  window.__fetches = 0;
  var realFetch = window.fetch;
  window.fetch = function () { window.__fetches++; return realFetch.apply(this, arguments); };
"""


@needs_chromium
async def test_fetch_is_used_when_send_beacon_is_missing(shop, browser):
    """Without navigator.sendBeacon the hit goes by fetch, still text/plain and without preflight."""
    page = await open_page(
        browser,
        shop.page(*shop.snippet()),
        "delete Navigator.prototype.sendBeacon;" + FETCH_SPY,
    )
    hit = await shop.recorder.hit_with("page_view")

    assert await page.evaluate("window.__fetches") == 1
    assert hit.method == "POST"
    assert hit.content_type == "text/plain;charset=UTF-8"
    assert "OPTIONS" not in shop.recorder.methods
    assert page.errors == []


@needs_chromium
async def test_fetch_is_used_when_send_beacon_returns_false(shop, browser):
    """When sendBeacon refuses the payload (returns false) the hit goes by fetch."""
    refuse = "Navigator.prototype.sendBeacon = function () { window.__beacons = (window.__beacons || 0) + 1; return false; };"
    page = await open_page(browser, shop.page(*shop.snippet()), refuse + FETCH_SPY)
    hit = await shop.recorder.hit_with("page_view")

    assert await page.evaluate("[window.__beacons, window.__fetches]") == [1, 1]
    assert hit.method == "POST"


@needs_chromium
async def test_image_get_is_the_last_resort(shop, browser):
    """Without sendBeacon and fetch the batch goes as a GET image with the JSON in `d`."""
    page = await open_page(
        browser,
        shop.page(*shop.snippet()),
        "delete Navigator.prototype.sendBeacon; window.fetch = undefined;",
    )
    hit = await shop.recorder.hit_with("page_view")

    assert hit.method == "GET"
    assert hit.batch["events"][0]["page"]["url"] == shop.site("/")
    assert page.errors == []


# --- robustness -------------------------------------------------------------


@needs_chromium
async def test_bad_calls_are_ignored_without_errors(shop, browser):
    """Unknown commands, bad names and unserialisable params throw nothing into the page."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    result = await page.evaluate(
        """() => {
          const cyclic = {}; cyclic.self = cyclic;
          tagrelay();
          tagrelay('nonsense', 1);
          tagrelay('event');
          tagrelay('event', 42);
          tagrelay('event', 'bad_params', cyclic);
          tagrelay('user', null);
          tagrelay('consent', 'yes');
          tagrelay('config');
          tagrelay('event', 'marker');
          return 'ok';
        }"""
    )
    hit = await shop.recorder.hit_with("marker")

    assert result == "ok"
    assert hit.names == ["marker"]
    assert page.errors == []


OLD_BROWSER = """
  delete Navigator.prototype.sendBeacon;
  window.fetch = undefined;
  window.Promise = undefined;
  window.CustomEvent = undefined;
  Object.defineProperty(window, 'crypto', {value: undefined});
  Object.defineProperty(Document.prototype, 'currentScript', {get: function () { return null; }});
"""


@needs_chromium
async def test_works_without_modern_apis(shop, browser):
    """Without sendBeacon, fetch, Promise, CustomEvent, crypto and currentScript it still sends, by GET to the page's origin."""
    page = await open_page(browser, shop.page(*shop.snippet()), OLD_BROWSER)
    await page.evaluate("tagrelay('event', 'a'); tagrelay('event', 'b')")
    hit = await shop.recorder.hit_with("b")

    assert hit.method == "GET"
    assert hit.host == f"www.shop.example:{shop.port}"
    assert hit.names == ["a", "b"]
    assert all(HEX128_RE.match(event["id"]) for event in hit.batch["events"])
    assert page.errors == []


@needs_chromium
async def test_sent_batches_are_announced_on_the_document(shop, browser):
    """Each sent batch is dispatched as a `tagrelay:sent` DOM event with the batch as detail."""
    page = await open_page(browser, shop.page(*shop.snippet()))
    detail = await page.evaluate(
        """() => new Promise((resolve) => {
          document.addEventListener('tagrelay:sent', (e) => resolve(e.detail));
          tagrelay('event', 'add_to_cart', {value: 3});
        })"""
    )
    hit = await shop.recorder.hit_with("add_to_cart")

    assert detail == hit.batch


# --- demo shop --------------------------------------------------------------


@needs_chromium
async def test_demo_shop_sends_its_events(shop, browser):
    """The demo page's buttons and in-page link send the GA4 events they are named for."""
    requested: list[str] = []
    browser.on("request", lambda request: requested.append(request.url))
    page = await open_page(browser, shop.site("/product/1"))

    await page.click("#add")
    await shop.recorder.hit_with("add_to_cart")
    await page.click("#checkout")
    await shop.recorder.hit_with("begin_checkout")
    await page.fill("#email", "jane@example.com")
    await page.click("#buy")
    purchase = await shop.recorder.hit_with("purchase")
    await page.click("#news")
    await shop.recorder.hit_with("generate_lead")
    await page.click("#next")
    spa = await shop.recorder.wait_for(
        lambda hit: any(
            e["page"]["url"].endswith("/product/2") for e in hit.batch["events"]
        ),
        "page_view of /product/2",
    )

    params = purchase.batch["events"][0]["params"]
    assert purchase.batch["user"] == {"email": "jane@example.com"}
    assert params["value"] == 21.25 and params["currency"] == "EUR"
    assert params["transaction_id"].startswith("T-")
    assert params["items"] == [
        {"item_id": "SKU1", "item_name": "Blue mug", "price": 21.25, "quantity": 1}
    ]
    assert spa.names == ["page_view"]
    assert spa.batch["events"][0]["page"]["title"] == "Red mug · Demo shop"
    assert spa.batch["events"][0]["page"]["referrer"] == shop.site("/product/1")
    assert await page.locator("#log li").count() == len(shop.recorder.hits)
    assert all(url.startswith(shop.site()) for url in requested)
    assert page.errors == []
