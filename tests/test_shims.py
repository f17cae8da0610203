"""The pixel shims (static/shims.js) in real headless chromium.

A page keeps its existing pixel code (Meta ``fbq``, Google ``gtag``, TikTok
``ttq``, Snap ``snaptr``, Pinterest ``pintrk``, Reddit ``rdt``); shims.js turns
each call into a ``tagrelay()`` call of the collector (static/collector.js),
and the recording server checks what arrives. The calls are the vendors'
documented signatures as used in public code (collected in the project's
``testdata/hits/pixel_calls.md``); the stubs below behave as each vendor's
base code does: a function that queues its calls until the vendor script
loads (Meta ``callMethod``/``queue``, Snap ``handleRequest``/``queue``,
Reddit ``sendEvent``/``callQueue``, Pinterest ``queue`` only, TikTok an array
of ``[method, ...args]`` whose methods and ``load()`` are set even when
``ttq`` already exists).

The rules the shims follow, one test each below:

- A vendor's standard event becomes the GA4 recommended name (Meta
  ``Purchase``, TikTok ``CompletePayment``, Snap ``PURCHASE``, Pinterest
  ``checkout``, Reddit ``Purchase`` -> ``purchase``); other names pass as
  given, with characters the collector refuses replaced by ``_``.
- Vendor params become GA4 params: the item list (``contents``,
  ``line_items``, ``products``, ``content_ids``, ``item_ids``) becomes
  ``items[]`` with ``item_id``/``item_name``/``price``/``quantity``; order IDs
  become ``transaction_id``; item counts ``num_items``; Snap's ``price`` is
  ``value``. Everything else passes unchanged.
- The dedup key (Meta ``eventID``, TikTok ``event_id``, Snap
  ``client_dedup_id``, Pinterest ``event_id``, Reddit ``conversionId``, a
  gtag ``event_id`` param) becomes the event ID, when the collect endpoint
  accepts it as one; otherwise the collector mints one and the event still goes.
- Page views are the collector's: it sends ``page_view`` on load and on each
  history change, so vendor page-view calls send nothing. A Pinterest
  ``pagevisit`` with ``line_items`` is a product view (``view_item``).
  ``gtag('event', 'page_view')`` is explicit and passes;
  ``gtag('config', id, {send_page_view: false})`` turns the automatic one off.
- Advanced matching (``fbq init``, ``gtag set user_data``, ``ttq.identify``,
  ``snaptr init``, ``pintrk load``, ``rdt init``) becomes ``tagrelay('user')``
  with hashed values passed as given.
- Consent: gtag consent mode maps ``ad_storage``/``analytics_storage`` to
  ``ads``/``analytics`` and keeps ``ad_user_data``/``ad_personalization``; an
  update wins over defaults, and among defaults a denial wins (a region-scoped
  default cannot be told apart in the browser). A pixel's own switch (fbq
  consent, ttq grant/revokeConsent, pintrk setconsent, rdt optOut) sets ``ads``.
- Pixel IDs are ignored: tagrelay's rules decide where events go.
- Loaded without ``async`` before the pixel code, the shims leave every
  vendor snippet inert (no vendor script is requested); loaded later, they take
  over the stubs and replay what was queued, gtag first so that consent
  defaults come before every pixel's events.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.browser import chromium, needs_chromium
from tests.test_collector import HOSTS, Recorder, served_script

STATIC = Path(__file__).resolve().parent.parent / "static"
COLLECTOR_PATH = "/assets/c.js"
SHIMS_PATH = "/assets/s.js"  # the default path the lead serves shims.js at
COLLECT_PATH = "/e"

SHA256_EMAIL = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"  # test@example.com

# --- the vendors' base code, as queue stubs ------------------------------------
# Each stub behaves as the vendor's own snippet. `src` is the vendor script the
# snippet would load; None stands for a site that deleted that part.


def _loader(src: str | None) -> str:
    if src is None:
        return ""
    return (
        f"var t = document.createElement('script'); t.async = true; t.src = '{src}';"
        "var s = document.getElementsByTagName('script')[0]; s.parentNode.insertBefore(t, s);"
    )


def meta_stub(
    src: str | None = "https://connect.facebook.net/en_US/fbevents.js",
) -> str:
    return (
        "<script>(function (w) { if (w.fbq) return;"
        " var n = w.fbq = function () { n.callMethod ? n.callMethod.apply(n, arguments) : n.queue.push(arguments); };"
        " if (!w._fbq) w._fbq = n; n.push = n; n.loaded = true; n.version = '2.0'; n.queue = [];"
        f" {_loader(src)} }})(window);</script>"
    )


def gtag_stub() -> str:
    # The gtag.js <script src> line is a tag of its own: the site deletes it.
    return "<script>window.dataLayer = window.dataLayer || []; function gtag() { dataLayer.push(arguments); }</script>"


def tiktok_stub(
    src: str | None = "https://analytics.tiktok.com/i18n/pixel/events.js",
) -> str:
    load = (
        f"ttq._i = ttq._i || {{}}; ttq._i[code] = []; ttq._i[code]._u = '{src or ''}';"
        "ttq._t = ttq._t || {}; ttq._t[code] = +new Date(); ttq._o = ttq._o || {}; ttq._o[code] = opts || {};"
    ) + _loader(src and src + "?sdkid=' + code + '&lib=ttq")
    return (
        "<script>(function (w, name) { w.TiktokAnalyticsObject = name; var ttq = w[name] = w[name] || [];"
        " ttq.methods = ['page', 'track', 'identify', 'instances', 'debug', 'on', 'off', 'once', 'ready', 'alias',"
        " 'group', 'enableCookie', 'disableCookie', 'holdConsent', 'revokeConsent', 'grantConsent'];"
        " ttq.setAndDefer = function (o, m) { o[m] = function () { o.push([m].concat([].slice.call(arguments, 0))); }; };"
        " for (var i = 0; i < ttq.methods.length; i++) ttq.setAndDefer(ttq, ttq.methods[i]);"
        " ttq.instance = function (code) { var e = ttq._i[code] || [];"
        "   for (var n = 0; n < ttq.methods.length; n++) ttq.setAndDefer(e, ttq.methods[n]); return e; };"
        f" ttq.load = function (code, opts) {{ {load} }};"
        " })(window, 'ttq');</script>"
    )


def snap_stub(src: str | None = "https://sc-static.net/scevent.min.js") -> str:
    return (
        "<script>(function (w) { if (w.snaptr) return;"
        " var a = w.snaptr = function () { a.handleRequest ? a.handleRequest.apply(a, arguments) : a.queue.push(arguments); };"
        f" a.queue = []; {_loader(src)} }})(window);</script>"
    )


def pinterest_stub(src: str | None = "https://s.pinimg.com/ct/core.js") -> str:
    return (
        "<script>(function () { if (window.pintrk) return;"
        " window.pintrk = function () { window.pintrk.queue.push(Array.prototype.slice.call(arguments)); };"
        f" var n = window.pintrk; n.queue = []; n.version = '3.0'; {_loader(src)} }})();</script>"
    )


def reddit_stub(src: str | None = "https://www.redditstatic.com/ads/pixel.js") -> str:
    return (
        "<script>(function (w) { if (w.rdt) return;"
        " var p = w.rdt = function () { p.sendEvent ? p.sendEvent.apply(p, arguments) : p.callQueue.push(arguments); };"
        f" p.callQueue = []; {_loader(src)} }})(window);</script>"
    )


def script(js: str) -> str:
    return f"<script>{js}</script>"


# --- the recording server --------------------------------------------------------


@dataclass
class Site:
    """The test server: the collector, the shims, pages, and the recorder behind the collect path."""

    port: int
    recorder: Recorder
    pages: dict[str, str] = field(default_factory=dict)

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def collector(self) -> list[str]:
        """The collector snippet's stub and async loader, loading from the tagrelay origin."""
        return [
            "<script>window.tagrelay=window.tagrelay||function(){(tagrelay.q=tagrelay.q||[]).push(arguments)};</script>",
            f'<script async src="{self.url("t.shop.example", COLLECTOR_PATH)}"></script>',
        ]

    def shims(self, mode: str = "") -> str:
        return (
            f'<script {mode} src="{self.url("t.shop.example", SHIMS_PATH)}"></script>'
        )

    def page(self, *head: str, path: str = "/") -> str:
        self.pages[path] = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Shop</title>"
            "<link rel='icon' href='data:,'>"
            + "".join(head)
            + "</head><body><h1>Shop</h1></body></html>"
        )
        return self.url("www.shop.example", path)

    def shims_first(self, *head: str, loader_last: bool = False) -> str:
        """A page whose shims load right after the collector snippet, before the pixel code.

        With ``loader_last`` the collector's loader comes after the pixel code,
        so the page's calls are all made before the collector runs: how a page
        makes sure consent defaults and send_page_view reach the first page_view.
        """
        stub, loader = self.collector()
        if loader_last:
            return self.page(stub, self.shims(), *head, loader)
        return self.page(stub, loader, self.shims(), *head)

    def events(self) -> list[dict[str, Any]]:
        return [event for hit in self.recorder.hits for event in hit.batch["events"]]

    async def event(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The first event called ``name`` and the batch it came in, waiting for it."""
        hit = await self.recorder.hit_with(name)
        return next(e for e in hit.batch["events"] if e["name"] == name), hit.batch

    async def settle(self, page) -> list[str]:
        """Send a last marker event and return every event name that arrived up to it."""
        await page.evaluate("tagrelay('event', 'marker')")
        await self.recorder.hit_with("marker")
        return [event["name"] for event in self.events()]


@pytest.fixture
async def site(aiohttp_server) -> Site:
    recorder = Recorder()
    pages: dict[str, str] = {}
    shims = (STATIC / "shims.js").read_bytes()

    async def collector(request: web.Request) -> web.Response:
        return web.Response(
            body=served_script(COLLECT_PATH), content_type="application/javascript"
        )

    async def shim(request: web.Request) -> web.Response:
        return web.Response(body=shims, content_type="application/javascript")

    async def page(request: web.Request) -> web.Response:
        if request.path in pages:
            return web.Response(text=pages[request.path], content_type="text/html")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get(COLLECTOR_PATH, collector)
    app.router.add_get(SHIMS_PATH, shim)
    app.router.add_route("*", COLLECT_PATH, recorder.handle)
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app, host="127.0.0.1")
    return Site(server.port, recorder, pages)


@pytest.fixture
async def browser():
    """Chromium that resolves only our two host names, and records every request it tries."""
    async with chromium(host_map=HOSTS) as context:
        context.requested = []
        context.on("request", lambda request: context.requested.append(request.url))
        # Belt and braces: nothing leaves for another host even if resolution changed.
        await context.route(
            lambda url: urlsplit(url).hostname not in HOSTS, lambda route: route.abort()
        )
        yield context


async def open_page(browser, url: str):
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    page.errors = errors
    return page


def foreign(browser) -> list[str]:
    """Requests the page tried to send to any host but ours."""
    return [url for url in browser.requested if urlsplit(url).hostname not in HOSTS]


# --- size and shape ------------------------------------------------------------------


def test_shims_gzip_to_at_most_4_kb():
    """shims.js as written, gzipped at level 9, fits in 4096 bytes."""
    # TODO(issue shims-size): 3 KB is the aim; met once the server minifies
    # scripts before compressing them (rjsmin brings it to about 2.8 KB).
    assert (
        len(gzip.compress((STATIC / "shims.js").read_bytes(), compresslevel=9, mtime=0))
        <= 4096
    )


# --- no vendor requests ----------------------------------------------------------------


@needs_chromium
async def test_vendor_snippets_load_nothing_when_shims_come_first(site, browser):
    """With the shims before them, the six vendors' snippets, loaders included, request no vendor script."""
    url = site.shims_first(
        meta_stub(),
        script("fbq('init', '123456'); fbq('track', 'PageView');"),
        gtag_stub(),
        script("gtag('js', new Date()); gtag('config', 'G-XXXXXXX');"),
        tiktok_stub(),
        script("ttq.load('CABCDEFGHIJK'); ttq.page();"),
        snap_stub(),
        script(
            "snaptr('init', 'a1b2c3d4-0000-4000-8000-000000000000'); snaptr('track', 'PAGE_VIEW');"
        ),
        pinterest_stub(),
        script("pintrk('load', '2612345678901'); pintrk('page');"),
        reddit_stub(),
        script(
            "rdt('init', 'a2_abcdefgh', {optOut: false, useDecimalCurrencyValues: true}); rdt('track', 'PageVisit');"
        ),
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert foreign(browser) == []
    assert names == ["page_view", "marker"]
    assert page.errors == []


# --- Meta ------------------------------------------------------------------------------


@needs_chromium
async def test_meta_purchase_becomes_purchase_with_the_event_id(site, browser):
    """fbq track Purchase with {eventID} is a purchase whose ID is the eventID and whose contents are items."""
    # Params from Omnibug's captured Purchase hit (cd[contents], cd[value], ...).
    url = site.shims_first(
        meta_stub(),
        script(
            "fbq('init', '123456');"
            "fbq('track', 'Purchase', {value: 25, currency: 'USD', content_type: 'product', order_id: 'T-1001',"
            " contents: [{id: '1234', quantity: 2, item_price: 10}, {id: '4642', quantity: 1, item_price: 5}]},"
            " {eventID: 'order-1001.purchase'});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("purchase")

    assert event["id"] == "order-1001.purchase"
    assert event["params"] == {
        "value": 25,
        "currency": "USD",
        "content_type": "product",
        "transaction_id": "T-1001",
        "items": [
            {"item_id": "1234", "quantity": 2, "price": 10},
            {"item_id": "4642", "quantity": 1, "price": 5},
        ],
    }


@needs_chromium
async def test_meta_view_content_content_ids_become_items(site, browser):
    """fbq track ViewContent is view_item, and content_ids without contents become items."""
    # The call from DefinitelyTyped's facebook-pixel tests.
    url = site.shims_first(
        meta_stub(),
        script(
            "fbq('track', 'ViewContent', {content_name: 'Really Fast Running Shoes',"
            " content_category: 'Apparel & Accessories > Shoes', content_ids: ['1234'], content_type: 'product',"
            " value: 0.50, currency: 'USD'});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("view_item")

    assert event["params"] == {
        "content_name": "Really Fast Running Shoes",
        "content_category": "Apparel & Accessories > Shoes",
        "content_type": "product",
        "value": 0.5,
        "currency": "USD",
        "items": [{"item_id": "1234"}],
    }


@needs_chromium
async def test_meta_standard_events_get_their_ga4_names(site, browser):
    """Meta's standard events arrive under the GA4 names tagrelay's Meta adapter maps back."""
    calls = {
        "AddToCart": "add_to_cart",
        "AddToWishlist": "add_to_wishlist",
        "InitiateCheckout": "begin_checkout",
        "AddPaymentInfo": "add_payment_info",
        "Lead": "generate_lead",
        "CompleteRegistration": "sign_up",
        "Search": "search",
        "Contact": "contact",
        "CustomizeProduct": "customize_product",
        "Donate": "donate",
        "FindLocation": "find_location",
        "Schedule": "schedule",
        "StartTrial": "start_trial",
        "SubmitApplication": "submit_application",
        "Subscribe": "subscribe",
    }
    url = site.shims_first(
        meta_stub(), script("".join(f"fbq('track', '{n}');" for n in calls))
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert names == ["page_view", *calls.values(), "marker"]


@needs_chromium
async def test_meta_track_custom_keeps_its_name(site, browser):
    """fbq trackCustom sends the site's own event name and params unchanged."""
    url = site.shims_first(
        meta_stub(),
        script(
            "fbq('trackCustom', 'MyCustomEvent', {custom_param: 'custom_value', content_type: 'product'});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("MyCustomEvent")

    assert event["params"] == {
        "custom_param": "custom_value",
        "content_type": "product",
    }


@needs_chromium
async def test_meta_track_single_is_tracked_like_track(site, browser):
    """fbq trackSingle (one pixel of several) maps like track; the pixel ID is left to the rules."""
    url = site.shims_first(
        meta_stub(),
        script(
            "fbq('trackSingle', '123456', 'Purchase', {value: 9, currency: 'EUR'}, {eventID: 'p-9'});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("purchase")

    assert event["id"] == "p-9"
    assert event["params"] == {"value": 9, "currency": "EUR"}


@needs_chromium
async def test_meta_init_advanced_matching_becomes_user_data(site, browser):
    """fbq init's em, ph, fn, ln and external_id become tagrelay user data, hashed values as given."""
    url = site.shims_first(
        meta_stub(),
        script(
            f"fbq('init', '123456', {{em: '{SHA256_EMAIL}', ph: 33612345678, fn: 'jane', ln: 'doe',"
            " external_id: 'u-42', country: 'fr'}, {agent: 'plugin'});"
            "fbq('track', 'Lead');"
        ),
    )

    await open_page(browser, url)
    _, batch = await site.event("generate_lead")

    assert batch["user"] == {
        "email": SHA256_EMAIL,
        "phone": "33612345678",
        "first_name": "jane",
        "last_name": "doe",
        "external_id": "u-42",
    }


@needs_chromium
async def test_meta_consent_revoke_and_grant_set_ads(site, browser):
    """fbq consent revoke sends later events with ads consent false, grant with true."""
    url = site.shims_first(
        meta_stub(),
        script(
            "fbq('consent', 'revoke'); fbq('init', '123456'); fbq('track', 'Lead');"
        ),
    )

    page = await open_page(browser, url)
    _, revoked = await site.event("generate_lead")
    await page.evaluate(
        "fbq('consent', 'grant'); fbq('track', 'Purchase', {value: 1, currency: 'EUR'})"
    )
    _, granted = await site.event("purchase")

    assert revoked["consent"] == {"ads": False}
    assert granted["consent"] == {"ads": True}


# --- Google tag ------------------------------------------------------------------------


@needs_chromium
async def test_gtag_purchase_passes_with_its_params(site, browser):
    """gtag event purchase arrives as purchase with the GA4 params as given, minus event_callback."""
    # The purchase from sesamy-go's measurement protocol example (two item fields shown).
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('event', 'purchase', {currency: 'USD', value: 30.03, transaction_id: 'T_12345',"
            " coupon: 'SUMMER_FUN', shipping: 3.33, tax: 1.11, send_to: 'G-XXXXXXX',"
            " items: [{item_id: 'SKU_12345', item_name: 'Stan and Friends Tee', price: 10.01, quantity: 3}]});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("purchase")

    assert event["params"] == {
        "currency": "USD",
        "value": 30.03,
        "transaction_id": "T_12345",
        "coupon": "SUMMER_FUN",
        "shipping": 3.33,
        "tax": 1.11,
        "send_to": "G-XXXXXXX",
        "items": [
            {
                "item_id": "SKU_12345",
                "item_name": "Stan and Friends Tee",
                "price": 10.01,
                "quantity": 3,
            }
        ],
    }


@needs_chromium
async def test_gtag_event_id_param_becomes_the_event_id(site, browser):
    """A gtag event_id param becomes the event ID and leaves the params."""
    url = site.shims_first(
        gtag_stub(),
        script("gtag('event', 'login', {method: 'Google', event_id: 'ev-77'});"),
    )

    await open_page(browser, url)
    event, _ = await site.event("login")

    assert event["id"] == "ev-77"
    assert event["params"] == {"method": "Google"}


@needs_chromium
async def test_gtag_event_callback_runs_after_the_hit_is_sent(site, browser):
    """event_callback is called once the batch with the event is sent, as gtag.js does."""
    url = site.shims_first(
        gtag_stub(),
        script(
            "window.sent = [];"
            "document.addEventListener('tagrelay:sent', function (e) {"
            "  e.detail.events.forEach(function (x) { sent.push(x.name); }); });"
            "gtag('event', 'generate_lead', {event_callback: function () { window.calledAfter = sent.slice(); }});"
        ),
    )

    page = await open_page(browser, url)
    await site.event("generate_lead")
    await page.wait_for_function("window.calledAfter !== undefined")

    assert "generate_lead" in await page.evaluate("window.calledAfter")


@needs_chromium
async def test_gtag_consent_default_and_update_map_to_purposes(site, browser):
    """Consent mode defaults, then an update, map to ads, analytics, ad_user_data and ad_personalization."""
    # The four v2 keys denied with wait_for_update, then all granted (python-check-weather's gtag.js).
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('consent', 'default', {ad_storage: 'denied', analytics_storage: 'denied',"
            " ad_user_data: 'denied', ad_personalization: 'denied', wait_for_update: 600});"
            "gtag('event', 'before');"
            "gtag('consent', 'update', {ad_storage: 'granted', analytics_storage: 'granted',"
            " ad_user_data: 'granted', ad_personalization: 'granted'});"
            "gtag('event', 'after');"
        ),
        loader_last=True,
    )

    await open_page(browser, url)
    _, page_view = await site.event("page_view")
    _, before = await site.event("before")
    _, after = await site.event("after")

    denied = {
        "ads": False,
        "analytics": False,
        "ad_user_data": False,
        "ad_personalization": False,
    }
    assert page_view["consent"] == denied
    assert before["consent"] == denied
    assert after["consent"] == {k: True for k in denied}


@needs_chromium
async def test_gtag_regional_default_denial_is_not_overridden_by_a_global_grant(
    site, browser
):
    """A region-scoped default denial still holds after a global default grant; only an update grants."""
    # GitLab's consent set-up: EU-and-more denied by region, granted elsewhere.
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('consent', 'default', {analytics_storage: 'denied', ad_storage: 'denied',"
            " region: ['AT', 'BE', 'FR', 'DE', 'CA-QC'], wait_for_update: 500});"
            "gtag('consent', 'default', {analytics_storage: 'granted', ad_storage: 'granted', wait_for_update: 500});"
            "gtag('event', 'before');"
            "gtag('consent', 'update', {analytics_storage: 'granted'});"
            "gtag('event', 'after');"
        ),
    )

    await open_page(browser, url)
    _, before = await site.event("before")
    _, after = await site.event("after")

    assert before["consent"] == {"ads": False, "analytics": False}
    assert after["consent"] == {"ads": False, "analytics": True}


@needs_chromium
async def test_gtag_regional_default_grant_is_ignored(site, browser):
    """A region-scoped default grant sets nothing: the browser cannot tell the visitor is in that region."""
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('consent', 'default', {ad_storage: 'granted', region: ['US']}); gtag('event', 'marker0');"
        ),
    )

    await open_page(browser, url)
    _, batch = await site.event("marker0")

    assert "consent" not in batch


@needs_chromium
async def test_gtag_config_without_page_view_turns_the_automatic_one_off(site, browser):
    """config with send_page_view false stops the automatic page_view; an explicit page_view event passes."""
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('js', new Date());"
            "gtag('config', 'G-XXXXXXX', {send_page_view: false});"
            "gtag('event', 'page_view', {page_title: 'Shop'});"
        ),
        loader_last=True,
    )

    page = await open_page(browser, url)
    names = await site.settle(page)
    event, _ = await site.event("page_view")

    assert names == ["page_view", "marker"]
    assert event["params"] == {"page_title": "Shop"}


@needs_chromium
async def test_gtag_ads_config_without_page_view_keeps_the_automatic_one(site, browser):
    """send_page_view false on a Google Ads ID (AW-) leaves the collector's page_view on."""
    url = site.shims_first(
        gtag_stub(),
        script("gtag('config', 'AW-123456789', {send_page_view: false});"),
        loader_last=True,
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert names == ["page_view", "marker"]


@needs_chromium
async def test_gtag_set_user_data_becomes_user_data(site, browser):
    """gtag set user_data's email, phone_number and address names become tagrelay user data."""
    url = site.shims_first(
        gtag_stub(),
        script(
            "gtag('set', 'user_data', {email: 'jane@example.com', phone_number: '+33612345678',"
            " address: {first_name: 'Jane', last_name: 'Doe', city: 'Paris', country: 'FR'}});"
            "gtag('config', 'G-XXXXXXX', {user_id: 'u-42'});"
            "gtag('event', 'sign_up', {method: 'email'});"
        ),
    )

    await open_page(browser, url)
    _, batch = await site.event("sign_up")

    assert batch["user"] == {
        "email": "jane@example.com",
        "phone": "+33612345678",
        "first_name": "Jane",
        "last_name": "Doe",
        "external_id": "u-42",
    }


@needs_chromium
async def test_gtag_get_answers_its_callback(site, browser):
    """gtag get calls back (with no value: the IDs live in server-set cookies) so waiting code goes on."""
    url = site.shims_first(gtag_stub())

    page = await open_page(browser, url)
    answer = await page.evaluate(
        "() => new Promise((resolve) => gtag('get', 'G-XXXXXXX', 'client_id', (id) => resolve(String(id))))"
    )

    assert answer == "undefined"


# --- TikTok ----------------------------------------------------------------------------


@needs_chromium
async def test_tiktok_complete_payment_becomes_purchase_with_the_event_id(
    site, browser
):
    """ttq.track CompletePayment with {event_id} is a purchase with that ID and contents as items."""
    # Shaped as nextcardbd's call, with Segment's third argument.
    url = site.shims_first(
        tiktok_stub(),
        script(
            "ttq.load('CABCDEFGHIJK'); ttq.page();"
            "ttq.track('CompletePayment', {value: 1200, currency: 'BDT', description: 'card',"
            " contents: [{content_id: 'NC-1', content_type: 'product', content_name: 'NFC card', quantity: 2, price: 600}]},"
            " {event_id: 'order_88'});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("purchase")

    assert event["id"] == "order_88"
    assert event["params"] == {
        "value": 1200,
        "currency": "BDT",
        "description": "card",
        "items": [
            {
                "item_id": "NC-1",
                "content_type": "product",
                "item_name": "NFC card",
                "quantity": 2,
                "price": 600,
            }
        ],
    }


@needs_chromium
async def test_tiktok_standard_events_get_their_ga4_names(site, browser):
    """TikTok's events map to GA4 names; ones without a GA4 match keep their name."""
    calls = {
        "ViewContent": "view_item",
        "AddToCart": "add_to_cart",
        "InitiateCheckout": "begin_checkout",
        "AddPaymentInfo": "add_payment_info",
        "SubmitForm": "generate_lead",
        "CompleteRegistration": "sign_up",
        "Search": "search",
        "ClickButton": "ClickButton",
        "PlaceAnOrder": "PlaceAnOrder",
    }
    url = site.shims_first(
        tiktok_stub(), script("".join(f"ttq.track('{n}', {{}});" for n in calls))
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert names == ["page_view", *calls.values(), "marker"]


@needs_chromium
async def test_tiktok_query_becomes_search_term(site, browser):
    """ttq.track Search's query param becomes GA4's search_term."""
    url = site.shims_first(
        tiktok_stub(), script("ttq.track('Search', {query: 'red mug'});")
    )

    await open_page(browser, url)
    event, _ = await site.event("search")

    assert event["params"] == {"search_term": "red mug"}


@needs_chromium
async def test_tiktok_identify_becomes_user_data(site, browser):
    """ttq.identify's email, phone_number and external_id become tagrelay user data."""
    url = site.shims_first(
        tiktok_stub(),
        script(
            "ttq.identify({email: 'jane@example.com', phone_number: '+12133734253', external_id: 'u-42'});"
            "ttq.track('AddToCart', {value: 3, currency: 'USD'});"
        ),
    )

    await open_page(browser, url)
    _, batch = await site.event("add_to_cart")

    assert batch["user"] == {
        "email": "jane@example.com",
        "phone": "+12133734253",
        "external_id": "u-42",
    }


@needs_chromium
async def test_tiktok_instance_track_is_tracked(site, browser):
    """ttq.instance(pixel).track, the multi-pixel form, is tracked like ttq.track."""
    url = site.shims_first(
        tiktok_stub(),
        script(
            "ttq.load('CABCDEFGHIJK'); ttq.instance('CABCDEFGHIJK').track('InitiateCheckout', {value: 5});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("begin_checkout")

    assert event["params"] == {"value": 5}


@needs_chromium
async def test_tiktok_consent_calls_set_ads(site, browser):
    """ttq.revokeConsent sends later events with ads false, grantConsent with ads true."""
    url = site.shims_first(
        tiktok_stub(),
        script("ttq.holdConsent(); ttq.revokeConsent(); ttq.track('ViewContent', {});"),
    )

    page = await open_page(browser, url)
    _, revoked = await site.event("view_item")
    await page.evaluate("ttq.grantConsent(); ttq.track('AddToCart', {})")
    _, granted = await site.event("add_to_cart")

    assert revoked["consent"] == {"ads": False}
    assert granted["consent"] == {"ads": True}


# --- Snap ------------------------------------------------------------------------------


@needs_chromium
async def test_snap_purchase_becomes_purchase_with_the_dedup_id(site, browser):
    """snaptr track PURCHASE: price is value, client_dedup_id the event ID, item_ids the items."""
    url = site.shims_first(
        snap_stub(),
        script(
            "snaptr('init', 'a1b2c3d4-0000-4000-8000-000000000000', {user_email: 'jane@example.com'});"
            "snaptr('track', 'PAGE_VIEW');"
            "snaptr('track', 'PURCHASE', {price: 29.99, currency: 'USD', transaction_id: 'order-123',"
            " client_dedup_id: 'order-123-snap', item_ids: ['SKU_123'], number_items: 1});"
        ),
    )

    await open_page(browser, url)
    event, batch = await site.event("purchase")

    assert event["id"] == "order-123-snap"
    assert event["params"] == {
        "value": 29.99,
        "currency": "USD",
        "transaction_id": "order-123",
        "num_items": 1,
        "items": [{"item_id": "SKU_123"}],
    }
    assert batch["user"] == {"email": "jane@example.com"}


@needs_chromium
async def test_snap_standard_events_get_their_ga4_names(site, browser):
    """Snap's upper-case events map to GA4 names; ones without a GA4 match keep their name."""
    calls = {
        "VIEW_CONTENT": "view_item",
        "ADD_CART": "add_to_cart",
        "START_CHECKOUT": "begin_checkout",
        "ADD_BILLING": "add_payment_info",
        "SIGN_UP": "sign_up",
        "LIST_VIEW": "view_item_list",
        "SAVE": "SAVE",
        "CUSTOM_EVENT_1": "CUSTOM_EVENT_1",
    }
    url = site.shims_first(
        snap_stub(), script("".join(f"snaptr('track', '{n}');" for n in calls))
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert names == ["page_view", *calls.values(), "marker"]


# --- Pinterest -------------------------------------------------------------------------


@needs_chromium
async def test_pinterest_checkout_becomes_purchase_with_the_event_id(site, browser):
    """pintrk track checkout is a purchase: event_id the ID, line_items the items, order_quantity num_items."""
    # Shaped as the Shopify gist's checkout call, with an event_id for dedup.
    url = site.shims_first(
        pinterest_stub(),
        script(
            "pintrk('load', '2612345678901'); pintrk('page');"
            "pintrk('track', 'checkout', {value: 100, order_quantity: 1, currency: 'USD', order_id: 'X-151',"
            " event_id: 'eid-151', line_items: [{product_name: 'Parker Boots', product_id: '1414',"
            " product_price: 99.99, product_quantity: 1, product_category: 'Shoes'}]});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("purchase")

    assert event["id"] == "eid-151"
    assert event["params"] == {
        "value": 100,
        "num_items": 1,
        "currency": "USD",
        "transaction_id": "X-151",
        "items": [
            {
                "item_name": "Parker Boots",
                "item_id": "1414",
                "price": 99.99,
                "quantity": 1,
                "item_category": "Shoes",
            }
        ],
    }


@needs_chromium
async def test_pinterest_pagevisit_with_line_items_is_a_product_view(site, browser):
    """pintrk track pagevisit with line_items is view_item; without them it is the collector's page_view."""
    url = site.shims_first(
        pinterest_stub(),
        script(
            "pintrk('track', 'pagevisit');"
            "pintrk('track', 'pagevisit', {line_items: [{product_id: '1414', product_name: 'Parker Boots'}]});"
        ),
    )

    page = await open_page(browser, url)
    names = await site.settle(page)
    event, _ = await site.event("view_item")

    assert names == ["page_view", "view_item", "marker"]
    assert event["params"] == {
        "items": [{"item_id": "1414", "item_name": "Parker Boots"}]
    }


@needs_chromium
async def test_pinterest_events_get_their_ga4_names(site, browser):
    """Pinterest's events, lower case or camel case, map to GA4 names."""
    calls = {
        "addtocart": "add_to_cart",
        "AddToCart": "add_to_cart",
        "signup": "sign_up",
        "lead": "generate_lead",
        "search": "search",
        "viewcategory": "view_item_list",
        "Checkout": "purchase",
        "watchvideo": "watchvideo",
    }
    url = site.shims_first(
        pinterest_stub(), script("".join(f"pintrk('track', '{n}');" for n in calls))
    )

    page = await open_page(browser, url)
    names = await site.settle(page)

    assert names == ["page_view", *calls.values(), "marker"]


@needs_chromium
async def test_pinterest_load_em_and_setconsent(site, browser):
    """pintrk load's em becomes the user's email; setconsent false sets ads false."""
    url = site.shims_first(
        pinterest_stub(),
        script(
            f"pintrk('load', '2612345678901', {{em: '{SHA256_EMAIL}'}}); pintrk('setconsent', false);"
            "pintrk('track', 'signup');"
        ),
    )

    await open_page(browser, url)
    _, batch = await site.event("sign_up")

    assert batch["user"] == {"email": SHA256_EMAIL}
    assert batch["consent"] == {"ads": False}


# --- Reddit ----------------------------------------------------------------------------


@needs_chromium
async def test_reddit_purchase_becomes_purchase_with_the_conversion_id(site, browser):
    """rdt track Purchase: conversionId is the event ID, itemCount num_items, products the items."""
    url = site.shims_first(
        reddit_stub(),
        script(
            "rdt('init', 'a2_abcdefgh', {optOut: false, useDecimalCurrencyValues: true, email: 'jane@example.com',"
            " externalId: 'u-42'});"
            "rdt('track', 'PageVisit');"
            "rdt('track', 'Purchase', {currency: 'USD', value: 20, itemCount: 2, conversionId: 'conv-20',"
            " transactionId: 'T-20', products: [{id: 'SKU1', name: 'Blue mug', category: 'Mugs'}]});"
        ),
    )

    await open_page(browser, url)
    event, batch = await site.event("purchase")

    assert event["id"] == "conv-20"
    assert event["params"] == {
        "currency": "USD",
        "value": 20,
        "num_items": 2,
        "transaction_id": "T-20",
        "items": [
            {"item_id": "SKU1", "item_name": "Blue mug", "item_category": "Mugs"}
        ],
    }
    assert batch["user"] == {"email": "jane@example.com", "external_id": "u-42"}


@needs_chromium
async def test_reddit_custom_event_takes_its_custom_name(site, browser):
    """rdt track Custom sends the customEventName as the event name."""
    url = site.shims_first(
        reddit_stub(),
        script(
            "rdt('track', 'Custom', {customEventName: 'quote_requested', value: 1});"
        ),
    )

    await open_page(browser, url)
    event, _ = await site.event("quote_requested")

    assert event["params"] == {"value": 1}


@needs_chromium
async def test_reddit_method_style_calls_are_tracked(site, browser):
    """rdt.init and rdt.track, as Segment's wrapper calls them, map like rdt('init') and rdt('track')."""
    url = site.shims_first(
        reddit_stub(),
        script(
            "rdt.init('a2_abcdefgh', {}); rdt.track('SignUp', {email: 'jane@example.com', conversionId: 's-1'});"
        ),
    )

    await open_page(browser, url)
    event, batch = await site.event("sign_up")

    assert event["id"] == "s-1"
    assert event["params"] == {}
    assert batch["user"] == {"email": "jane@example.com"}


# --- queued calls ------------------------------------------------------------------------


QUEUED_CALLS = script(
    "gtag('consent', 'default', {ad_storage: 'denied', analytics_storage: 'granted'});"
    "fbq('init', '123456', {em: 'jane@example.com'}); fbq('track', 'PageView');"
    "fbq('track', 'AddToCart', {value: 1, currency: 'EUR'}, {eventID: 'fb-1'});"
    "ttq.load('CABCDEFGHIJK'); ttq.page(); ttq.track('ViewContent', {}, {event_id: 'tt-1'});"
    "ttq.instance('CABCDEFGHIJK').track('AddToWishlist', {});"
    "snaptr('init', 'a1b2', {}); snaptr('track', 'SIGN_UP', {client_dedup_id: 'sc-1'});"
    "pintrk('load', '26123'); pintrk('track', 'lead', {event_id: 'pin-1'});"
    "rdt('init', 'a2_abc'); rdt('track', 'Search', {conversionId: 'rd-1'});"
    "gtag('event', 'login', {method: 'Google'});"
)


def stubs_without_loaders() -> list[str]:
    """The six snippets as a site leaves them once it deleted each vendor's script loading."""
    return [
        gtag_stub(),
        meta_stub(None),
        tiktok_stub(None),
        snap_stub(None),
        pinterest_stub(None),
        reddit_stub(None),
    ]


EXPECTED_QUEUED = [
    ("login", None),
    ("add_to_cart", "fb-1"),
    ("view_item", "tt-1"),
    ("add_to_wishlist", None),
    ("sign_up", "sc-1"),
    ("generate_lead", "pin-1"),
    ("search", "rd-1"),
]


@needs_chromium
async def test_calls_queued_in_the_stubs_before_the_shims_load_all_arrive(
    site, browser
):
    """Calls queued in each vendor's stub before an async shims.js loads all arrive, gtag's first."""
    url = site.page(
        *site.collector(), *stubs_without_loaders(), QUEUED_CALLS, site.shims("async")
    )

    page = await open_page(browser, url)
    await site.settle(page)

    events = [
        (e["name"], e["id"])
        for e in site.events()
        if e["name"] not in ("page_view", "marker")
    ]
    assert [name for name, _ in events] == [name for name, _ in EXPECTED_QUEUED]
    for (name, event_id), (_, expected) in zip(events, EXPECTED_QUEUED):
        assert expected is None or event_id == expected, name
    assert foreign(browser) == []
    assert page.errors == []


@needs_chromium
async def test_queued_consent_and_user_apply_to_every_queued_event(site, browser):
    """A queued gtag consent default and fbq init reach all the events replayed after them."""
    url = site.page(
        *site.collector(), *stubs_without_loaders(), QUEUED_CALLS, site.shims("async")
    )

    page = await open_page(browser, url)
    await site.settle(page)

    _, batch = await site.event("add_to_cart")

    assert batch["consent"] == {"ads": False, "analytics": True}
    assert batch["user"] == {"email": "jane@example.com"}


@needs_chromium
async def test_stubs_keep_working_after_the_shims_took_them_over(site, browser):
    """Calls made through the stubs after a late shims.js load are tracked too."""
    url = site.page(*site.collector(), *stubs_without_loaders(), site.shims("async"))

    page = await open_page(browser, url)
    await page.wait_for_function("window.tagrelayShims === 1")
    await page.evaluate(
        "fbq('track', 'Purchase', {value: 1, currency: 'EUR'});"
        "ttq.track('AddToCart', {});"
        "snaptr('track', 'START_CHECKOUT');"
        "pintrk('track', 'signup');"
        "rdt('track', 'Lead');"
        "gtag('event', 'share');"
    )
    names = await site.settle(page)

    assert names == [
        "page_view",
        "purchase",
        "add_to_cart",
        "begin_checkout",
        "sign_up",
        "generate_lead",
        "share",
        "marker",
    ]


@needs_chromium
async def test_shims_without_any_vendor_snippet_define_the_six_functions(site, browser):
    """A page that deleted its vendor snippets entirely still has fbq, gtag, ttq, snaptr, pintrk and rdt."""
    page = await open_page(browser, site.shims_first())
    await page.evaluate(
        "fbq('track', 'Purchase', {value: 1, currency: 'EUR'});"
        "gtag('event', 'share'); ttq.track('AddToCart'); snaptr('track', 'SIGN_UP');"
        "pintrk('track', 'lead'); rdt('track', 'Search');"
    )
    names = await site.settle(page)

    assert names == [
        "page_view",
        "purchase",
        "share",
        "add_to_cart",
        "sign_up",
        "generate_lead",
        "search",
        "marker",
    ]


# --- robustness ------------------------------------------------------------------------


@needs_chromium
async def test_event_ids_the_collector_would_refuse_are_replaced(site, browser):
    """A dedup key that is no valid event ID is dropped, so the event goes with a minted ID instead of failing the hit."""
    page = await open_page(browser, site.shims_first())
    await page.evaluate(
        "fbq('track', 'Purchase', {value: 1, currency: 'EUR'}, {eventID: 'order #1 / a'})"
    )
    event, _ = await site.event("purchase")

    assert event["id"] != "order #1 / a"
    assert len(event["id"]) >= 32


@needs_chromium
async def test_event_names_the_collector_would_refuse_are_made_safe(site, browser):
    """Custom names with spaces or a leading digit have those characters replaced, not the event dropped."""
    page = await open_page(browser, site.shims_first())
    await page.evaluate("fbq('trackCustom', 'Video played'); gtag('event', '2nd-step')")
    names = await site.settle(page)

    assert names == ["page_view", "Video_played", "e_2nd_step", "marker"]


@needs_chromium
async def test_bad_calls_throw_nothing_into_the_page(site, browser):
    """Missing, wrong-typed and unknown arguments are ignored without an error in the page."""
    page = await open_page(browser, site.shims_first())
    result = await page.evaluate(
        """() => {
          const cyclic = {}; cyclic.self = cyclic;
          fbq(); fbq('track'); fbq('track', 42); fbq('init', '1', 'x'); fbq('consent', 'maybe');
          fbq('track', 'Purchase', cyclic); fbq('nonsense', 1);
          gtag(); gtag('event'); gtag('consent', 'default', null); gtag('set', 'user_data', 5);
          dataLayer.push(null, {event: 'gtm.js'}, ['event']);
          ttq.track(); ttq.identify(null); ttq.push(null); ttq.push(['nope']); ttq.debug(); ttq.ready(5);
          snaptr(); snaptr('track'); snaptr('init', 1, 2);
          pintrk(); pintrk('track', 5); pintrk('setconsent', 'yes');
          rdt(); rdt('track', 'Custom'); rdt('init', null);
          return 'ok';
        }"""
    )
    names = await site.settle(page)

    assert result == "ok"
    assert names == ["page_view", "Custom", "marker"]
    assert page.errors == []


@needs_chromium
async def test_shims_loaded_twice_send_each_event_once(site, browser):
    """A second copy of shims.js on the page does nothing."""
    page = await open_page(
        browser, site.page(*site.collector(), site.shims(), site.shims())
    )
    await page.evaluate("fbq('track', 'Lead'); gtag('event', 'share')")
    names = await site.settle(page)

    assert names == ["page_view", "generate_lead", "share", "marker"]


@needs_chromium
async def test_page_view_is_sent_once_for_all_pixels(site, browser):
    """Six pixels' page-view calls plus the collector still make one page_view per page."""
    page = await open_page(
        browser,
        site.shims_first(
            script(
                "fbq('track', 'PageView'); ttq.page(); snaptr('track', 'PAGE_VIEW'); pintrk('page');"
                "rdt('track', 'PageVisit'); gtag('config', 'G-XXXXXXX');"
            )
        ),
    )
    await page.evaluate(
        "history.pushState({}, '', '/cart'); fbq('track', 'PageView'); ttq.page()"
    )
    names = await site.settle(page)

    assert names == ["page_view", "page_view", "marker"]
