"""The vendor stand-ins reject what the vendor rejects and accept what our adapters build.

Rules come from Meta's Conversions API docs and Google's Measurement Protocol
docs (see the module docstrings of ``tests/standins/meta.py`` and
``tests/standins/ga4.py``).
"""

from __future__ import annotations

import hashlib
import time

import aiohttp
import pytest

from proxy.model import Context, Event, Geo, Page, UAInfo, UserData
from proxy.vendors.base import Answer, Request, Verdict
from proxy.vendors.ga4 import GA4
from proxy.vendors.meta import MetaCAPI
from tests.standins import STANDIN, Canned
from tests.standins.ga4 import ga4_app
from tests.standins.meta import meta_app

TOKEN = "standin-token"
PIXEL = "123456789012345"
MID = "G-TEST12345"
SECRET = "standin-secret"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
HASH = hashlib.sha256(b"a@b.c").hexdigest()


def meta_event(**over):
    event = {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thanks",
        "user_data": {"client_user_agent": UA, "em": [HASH]},
        "custom_data": {"currency": "EUR", "value": 10.0},
    }
    event.update(over)
    return event


@pytest.fixture
async def meta(aiohttp_server):
    app = meta_app(access_token=TOKEN)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:

        async def post(body, token=TOKEN, path=f"/v26.0/{PIXEL}/events"):
            url = server.make_url(path)
            params = {"access_token": token} if token is not None else {}
            async with session.post(url, params=params, json=body) as resp:
                return resp.status, await resp.json()

        yield post, app[STANDIN]


@pytest.fixture
async def ga4(aiohttp_server):
    app = ga4_app(measurement_id=MID, api_secret=SECRET)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:

        async def post(body, path="/debug/mp/collect", query=None):
            url = server.make_url(path)
            params = {"measurement_id": MID, "api_secret": SECRET} if query is None else query
            async with session.post(url, params=params, json=body) as resp:
                data = await resp.json() if resp.status == 200 else None
                return resp.status, data

        yield post, app[STANDIN]


def ga4_body(**over):
    body = {
        "client_id": "1234567890.1700000000",
        "events": [{"name": "purchase", "params": {"currency": "EUR", "value": 10.0, "session_id": "1700000000"}}],
    }
    body.update(over)
    return body


def codes(answer):
    return [m["validationCode"] for m in answer["validationMessages"]]


# -- Meta rules --------------------------------------------------------------


class TestMetaRules:
    async def test_accepts_valid_event(self, meta):
        """A complete website event is counted: events_received 1, no messages, a trace id."""
        post, state = meta
        status, answer = await post({"data": [meta_event()]})
        assert status == 200
        assert answer["events_received"] == 1
        assert answer["messages"] == []
        assert answer["fbtrace_id"]
        assert len(state.received) == 1

    async def test_wrong_token_is_graph_error_190(self, meta):
        """A token that is not the configured one gets Graph error 190 with HTTP 400."""
        post, _ = meta
        status, answer = await post({"data": [meta_event()]}, token="wrong")
        assert status == 400
        assert answer["error"]["code"] == 190
        assert answer["error"]["type"] == "OAuthException"

    async def test_missing_token_is_graph_error_190(self, meta):
        """A request without any access token is refused like a bad token."""
        post, _ = meta
        status, answer = await post({"data": [meta_event()]}, token=None)
        assert status == 400
        assert answer["error"]["code"] == 190

    async def test_non_numeric_pixel_is_unknown_object(self, meta):
        """A pixel ID that is not digits is Graph's 'object does not exist' (code 100, subcode 33)."""
        post, _ = meta
        status, answer = await post({"data": [meta_event()]}, path="/v26.0/abc/events")
        assert status == 400
        assert (answer["error"]["code"], answer["error"]["error_subcode"]) == (100, 33)

    async def test_empty_data_is_invalid(self, meta):
        """An empty data array is an invalid parameter (code 100)."""
        post, _ = meta
        status, answer = await post({"data": []})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_more_than_1000_events_is_invalid(self, meta):
        """1,001 events in one request exceed Meta's limit of 1,000 (code 100)."""
        post, _ = meta
        status, answer = await post({"data": [meta_event()] * 1001})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_1000_events_are_accepted(self, meta):
        """Exactly 1,000 events fit in one request."""
        post, _ = meta
        status, answer = await post({"data": [meta_event()] * 1000})
        assert (status, answer["events_received"]) == (200, 1000)

    async def test_missing_event_name_is_invalid(self, meta):
        """An event without event_name fails the whole request."""
        post, _ = meta
        event = meta_event()
        del event["event_name"]
        status, answer = await post({"data": [event]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_event_time_in_milliseconds_is_too_far_ahead(self, meta):
        """event_time is unix seconds: a millisecond value lies in the future and is refused."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(event_time=int(time.time() * 1000))]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_event_time_older_than_7_days_is_invalid(self, meta):
        """An event_time more than 7 days old fails the whole request."""
        post, state = meta
        old = int(time.time()) - 7 * 24 * 3600 - 120
        status, answer = await post({"data": [meta_event(), meta_event(event_time=old)]})
        assert (status, answer["error"]["code"]) == (400, 100)
        assert state.received == []

    async def test_event_time_as_string_is_invalid(self, meta):
        """event_time must be an integer, not a string."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(event_time=str(int(time.time())))]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_unknown_action_source_is_invalid(self, meta):
        """action_source must be one of Meta's values (``web`` is not one)."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(action_source="web")]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_website_event_needs_event_source_url(self, meta):
        """A website event without event_source_url is refused."""
        post, _ = meta
        event = meta_event()
        del event["event_source_url"]
        status, answer = await post({"data": [event]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_website_event_needs_client_user_agent(self, meta):
        """A website event without user_data.client_user_agent is refused."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(user_data={"em": [HASH]})]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_non_website_event_needs_no_url_or_agent(self, meta):
        """Non-web events (here physical_store) need only action_source besides the basics."""
        post, _ = meta
        event = meta_event(action_source="physical_store", user_data={"em": [HASH]})
        del event["event_source_url"]
        status, _answer = await post({"data": [event]})
        assert status == 200

    async def test_unhashed_email_is_invalid(self, meta):
        """user_data.em must be a SHA-256 hex digest, never a plain address."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(user_data={"client_user_agent": UA, "em": ["a@b.c"]})]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_uppercase_hash_is_invalid(self, meta):
        """Hashes are lowercase hex; an uppercase digest is refused."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(user_data={"client_user_agent": UA, "ph": HASH.upper()})]})
        assert (status, answer["error"]["code"]) == (400, 100)

    @pytest.mark.parametrize(
        "fbc",
        ["fb.1.1700000000000.IwAR2xyz", "fb.1.1700000000000.IwAR2xyz.Bg", "fb.1.1700000000000.IwAR2xyz.AQICAQAB"],
    )
    async def test_wellformed_fbc_is_accepted(self, meta, fbc):
        """fbc as fb.<n>.<ms>.<fbclid>, optionally with a Parameter Builder appendix, is accepted."""
        post, _ = meta
        status, _answer = await post({"data": [meta_event(user_data={"client_user_agent": UA, "fbc": fbc})]})
        assert status == 200

    @pytest.mark.parametrize("fbc", ["IwAR2xyz", "fb.1.123.test123.test", "fb.1.notdigits.IwAR2xyz"])
    async def test_malformed_fbc_is_invalid(self, meta, fbc):
        """A bare fbclid, a bad 5th segment or a non-numeric time makes fbc invalid."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(user_data={"client_user_agent": UA, "fbc": fbc})]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_malformed_fbp_is_invalid(self, meta):
        """fbp's last segment is a random number; letters there are refused."""
        post, _ = meta
        user = {"client_user_agent": UA, "fbp": "fb.1.1700000000000.abc"}
        status, answer = await post({"data": [meta_event(user_data=user)]})
        assert (status, answer["error"]["code"]) == (400, 100)

    async def test_currency_must_be_three_letters(self, meta):
        """custom_data.currency is an ISO 4217 code; 'EURO' is refused."""
        post, _ = meta
        status, answer = await post({"data": [meta_event(custom_data={"currency": "EURO", "value": 1})]})
        assert (status, answer["error"]["code"]) == (400, 100)


# -- GA4 rules ---------------------------------------------------------------


class TestGA4Rules:
    async def test_valid_request_has_no_messages(self, ga4):
        """A well-formed purchase gets an empty validationMessages list."""
        post, _ = ga4
        status, answer = await post(ga4_body())
        assert status == 200
        assert answer == {"validationMessages": []}

    async def test_collect_answers_204_even_when_invalid(self, ga4):
        """/mp/collect answers 204 for an invalid body and the stand-in records why."""
        post, state = ga4
        status, _ = await post(ga4_body(events=[{"name": "1bad"}]), path="/mp/collect")
        assert status == 204
        assert [m["validationCode"] for m in state.validation_messages] == ["NAME_INVALID"]
        assert state.collected == []

    async def test_collect_counts_valid_events(self, ga4):
        """Events of a valid /mp/collect request are collected."""
        post, state = ga4
        status, _ = await post(ga4_body(), path="/mp/collect")
        assert status == 204
        assert state.validation_messages == []
        assert [e["name"] for e in state.collected] == ["purchase"]

    async def test_missing_api_secret_is_recorded(self, ga4):
        """A request without api_secret is recorded as VALUE_REQUIRED (GA would drop it silently)."""
        post, state = ga4
        await post(ga4_body(), path="/mp/collect", query={"measurement_id": MID})
        assert [(m["fieldPath"], m["validationCode"]) for m in state.problems] == [("api_secret", "VALUE_REQUIRED")]

    async def test_debug_does_not_check_credentials(self, ga4):
        """Like Google's validator, /debug does not report a missing measurement_id or api_secret."""
        post, state = ga4
        _, answer = await post(ga4_body(), query={})
        assert answer["validationMessages"] == []
        assert {m["fieldPath"] for m in state.problems} == {"measurement_id", "api_secret"}

    async def test_missing_client_id_is_value_required(self, ga4):
        """A web-stream request needs client_id."""
        post, _ = ga4
        body = ga4_body()
        del body["client_id"]
        _, answer = await post(body)
        assert codes(answer) == ["VALUE_REQUIRED"]

    async def test_26_events_exceed_max_entities(self, ga4):
        """A request carries at most 25 events."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase"}] * 26))
        assert codes(answer) == ["EXCEEDED_MAX_ENTITIES"]

    async def test_25_events_are_valid(self, ga4):
        """Exactly 25 events fit in one request."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase"}] * 25))
        assert codes(answer) == []

    @pytest.mark.parametrize("name", ["1purchase", "purchase-done", "a" * 41])
    async def test_invalid_event_name(self, ga4, name):
        """Event names start with a letter, use letters, digits, '_' and have at most 40 chars."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": name}]))
        assert codes(answer) == ["NAME_INVALID"]

    @pytest.mark.parametrize("name", ["session_start", "first_visit", "user_engagement", "screen_view"])
    async def test_reserved_event_name(self, ga4, name):
        """Reserved event names (and app-only ones like screen_view) are NAME_RESERVED."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": name}]))
        assert codes(answer) == ["NAME_RESERVED"]

    async def test_26_params_exceed_max_entities(self, ga4):
        """An event carries at most 25 parameters."""
        post, _ = ga4
        params = {f"p{i}": i for i in range(26)}
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": params}]))
        assert codes(answer) == ["EXCEEDED_MAX_ENTITIES"]

    @pytest.mark.parametrize("param", ["firebase_conversion", "ga_x", "google_x", "firebase_x", "_x"])
    async def test_reserved_param_name(self, ga4, param):
        """firebase_conversion and names starting with _, firebase_, ga_, google_ are NAME_RESERVED."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {param: 1}}]))
        assert codes(answer) == ["NAME_RESERVED"]

    async def test_param_value_over_100_chars(self, ga4):
        """A string parameter value longer than 100 characters is VALUE_OUT_OF_BOUNDS."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {"coupon": "x" * 101}}]))
        assert codes(answer) == ["VALUE_OUT_OF_BOUNDS"]

    async def test_param_value_of_100_chars_is_valid(self, ga4):
        """A string parameter value of exactly 100 characters is valid."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {"coupon": "x" * 100}}]))
        assert codes(answer) == []

    async def test_object_param_value_is_invalid(self, ga4):
        """Parameter values are strings or numbers; an object is VALUE_INVALID."""
        post, _ = ga4
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {"x": {"a": 1}}}]))
        assert codes(answer) == ["VALUE_INVALID"]

    async def test_201_items_exceed_max_entities(self, ga4):
        """An event carries at most 200 items."""
        post, _ = ga4
        items = [{"item_id": str(i)} for i in range(201)]
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {"items": items}}]))
        assert codes(answer) == ["EXCEEDED_MAX_ENTITIES"]

    async def test_11_custom_item_params_exceed_max_entities(self, ga4):
        """An item carries at most 10 custom parameters."""
        post, _ = ga4
        item = {"item_id": "a", **{f"c{i}": i for i in range(11)}}
        _, answer = await post(ga4_body(events=[{"name": "purchase", "params": {"items": [item]}}]))
        assert codes(answer) == ["EXCEEDED_MAX_ENTITIES"]

    async def test_old_timestamp_rejected_when_enforcing(self, ga4):
        """With ENFORCE_RECOMMENDATIONS a timestamp older than 72 hours is out of bounds."""
        post, _ = ga4
        old = int((time.time() - 73 * 3600) * 1_000_000)
        _, answer = await post(ga4_body(timestamp_micros=old, validation_behavior="ENFORCE_RECOMMENDATIONS"))
        assert codes(answer) == ["VALUE_OUT_OF_BOUNDS"]

    async def test_old_timestamp_accepted_when_relaxed(self, ga4):
        """In the default RELAXED mode an old timestamp is accepted (GA moves it to 72 hours ago)."""
        post, _ = ga4
        old = int((time.time() - 73 * 3600) * 1_000_000)
        _, answer = await post(ga4_body(timestamp_micros=old))
        assert codes(answer) == []

    async def test_consent_value_must_be_granted_or_denied(self, ga4):
        """consent values are GRANTED or DENIED."""
        post, _ = ga4
        _, answer = await post(ga4_body(consent={"ad_user_data": "yes"}))
        assert codes(answer) == ["VALUE_INVALID"]

    async def test_region_id_needs_country_prefix(self, ga4):
        """user_location.region_id is ISO 3166-2 with the country ("US-CA"), not "CA"."""
        post, _ = ga4
        _, answer = await post(ga4_body(user_location={"country_id": "US", "region_id": "CA"}))
        assert codes(answer) == ["VALUE_INVALID"]

    async def test_unhashed_email_in_user_data_is_invalid(self, ga4):
        """user_data.sha256_email_address holds digests, never plain addresses."""
        post, _ = ga4
        _, answer = await post(ga4_body(user_data={"sha256_email_address": ["a@b.c"]}))
        assert codes(answer) == ["VALUE_INVALID"]


# -- scripted misbehaviour -----------------------------------------------------


class TestScript:
    async def test_canned_answers_apply_in_order_then_normal(self, meta):
        """Canned answers replace the next responses one each; then the stand-in answers normally."""
        post, state = meta
        state.script(Canned(503, body="down"), Canned(429, {"Retry-After": "7"}, {"error": {"code": 4}}))
        body = {"data": [meta_event()]}

        first = await _raw(post, body)
        second = await _raw(post, body)
        third = await post(body)

        assert first == 503
        assert second == 429
        assert third[0] == 200
        assert [r.answered for r in state.requests] == [503, 429, 200]

    async def test_delayed_request_is_still_answered(self, ga4):
        """A delay holds the answer back but the request is then handled normally."""
        post, state = ga4
        state.delay_next(1, 0.05)
        status, answer = await post(ga4_body())
        assert status == 200 and answer == {"validationMessages": []}
        assert len(state.requests) == 1


async def _raw(post, body):
    try:
        status, _ = await post(body)
    except aiohttp.ContentTypeError:
        # The canned 503 is plain text; only the status matters here.
        return 503
    return status


# -- what the adapters build is accepted ---------------------------------------


def canonical_event(name: str, **params) -> Event:
    return Event(
        name=name,
        id=f"evt-{name}",
        time=time.time() - 30,
        page=Page("https://shop.example.com/checkout?step=3", "https://www.example.org/", "Checkout"),
        user=UserData(email="Foo@Bar.com", phone="+1 (650) 555-1234", first_name="Jane", last_name="Doe"),
        context=Context(
            ip="203.0.113.9",
            user_agent=UA,
            ua=UAInfo(browser="Chrome", browser_version="131.0.0", os="Linux", category="desktop"),
            geo=Geo(country="US", region="CA", city="Mountain View", continent="NA"),
            language="en-us",
            screen="1280x800",
            consent={"marketing": True},
            ids={
                "fbp": "fb.1.1700000000000.1234567890",
                "fbc": "fb.1.1700000000000.IwAR2abcDEF",
                "ga_client_id": "1234567890.1700000000",
                "ga_session_id": "1700000000",
                "visitor_id": "v1",
            },
        ),
        params=params,
    )


CANONICAL = [
    canonical_event(
        "purchase",
        transaction_id="T-1001",
        value=59.9,
        currency="EUR",
        items=[
            {"item_id": "SKU-1", "item_name": "Tea", "price": 19.95, "quantity": 2},
            {"item_id": "SKU-2", "item_name": "Cup", "price": 20.0, "quantity": 1},
        ],
    ),
    canonical_event("page_view"),
    canonical_event("generate_lead", value=25, currency="USD", lead_source="form"),
]


async def _send(request: Request) -> Answer:
    async with aiohttp.ClientSession() as session:
        async with session.request(request.method, request.url, headers=request.headers, data=request.body) as resp:
            return Answer(resp.status, dict(resp.headers), await resp.read())


class TestAdaptersAccepted:
    @pytest.mark.parametrize("event", CANONICAL, ids=lambda e: e.name)
    async def test_meta_accepts_built_request(self, aiohttp_server, event):
        """The stand-in counts the request MetaCAPI builds for a canonical event, and classify says ok."""
        app = meta_app(access_token=TOKEN, pixel_ids={PIXEL})
        server = await aiohttp_server(app)
        adapter = MetaCAPI("meta", {"pixel_id": PIXEL, "access_token": TOKEN, "endpoint": str(server.make_url(""))})

        answer = await _send(adapter.build([adapter.render(event)]))

        assert app[STANDIN].problems == []
        assert adapter.classify(answer).verdict is Verdict.OK

    async def test_meta_accepts_mixed_batch(self, aiohttp_server):
        """All three canonical events in one batch are counted together."""
        app = meta_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        adapter = MetaCAPI("meta", {"pixel_id": PIXEL, "access_token": TOKEN, "endpoint": str(server.make_url(""))})

        answer = await _send(adapter.build([adapter.render(e) for e in CANONICAL]))

        assert adapter.classify(answer).reason == "http 200 events_received 3"

    @pytest.mark.parametrize("event", CANONICAL, ids=lambda e: e.name)
    @pytest.mark.parametrize("validate", [False, True], ids=["collect", "debug"])
    async def test_ga4_accepts_built_request(self, aiohttp_server, event, validate):
        """The GA4 stand-in finds no validation problem in what GA4 builds, in both modes."""
        app = ga4_app(measurement_id=MID, api_secret=SECRET)
        server = await aiohttp_server(app)
        adapter = GA4(
            "ga4",
            {"measurement_id": MID, "api_secret": SECRET, "endpoint": str(server.make_url("")), "validate": validate},
        )

        answer = await _send(adapter.build([adapter.render(event)]))

        assert app[STANDIN].problems == []
        assert adapter.classify(answer).verdict is Verdict.OK

    async def test_ga4_accepts_batch_of_one_session(self, aiohttp_server):
        """Three events of one client and session share a request and all pass validation."""
        app = ga4_app(measurement_id=MID, api_secret=SECRET)
        server = await aiohttp_server(app)
        adapter = GA4("ga4", {"measurement_id": MID, "api_secret": SECRET, "endpoint": str(server.make_url(""))})
        payloads = [adapter.render(e) for e in CANONICAL]
        assert len({adapter.batch_key(p) for p in payloads}) == 1

        await _send(adapter.build(payloads))

        assert app[STANDIN].problems == []
        assert [e["name"] for e in app[STANDIN].collected] == ["purchase", "page_view", "generate_lead"]
