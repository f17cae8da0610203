"""RedditCAPI (Conversions API v3): settings, rendering, hashing, building, classification, round trip.

Expected values come from Reddit's v2-to-v3 migration guide, "Direct
Integration" page and error tables, as captured verbatim in the
Reddit-maintained Segment destination (``V3-API-REFERENCE.md``), including
Reddit's own hashing examples.

vendors.md corrections found here: the v3 path is
``/api/v3/pixels/{pixel_id}/conversion_events`` (the ``accounts/...`` candidate
is not Reddit's); ``test_id`` sits in ``data`` next to ``events``;
``metadata.value`` is a double (v2's ``value_decimal``); e-mail
canonicalisation also removes dots and "+tags" from the local part; phone
numbers are hashed as E.164 with "+"; ``custom_event_name`` is at most 64
characters; success is ``{"data": {"message": ...}}`` and errors are
``{"error": {"code", "message", "fields"}}``; 1,000 events per request and
7 days of age are confirmed.
"""

from __future__ import annotations

import hashlib
import time

import aiohttp
import orjson
import pytest

from proxy import __version__
from proxy.model import Context, Event, Page, UserData
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.reddit import RedditCAPI, hash_reddit
from tests.standins import STANDIN
from tests.standins.reddit import RATE_LIMITED, reddit_app

TOKEN = "reddit-conversion-token"
PIXEL = "a2_standin123"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
UUID = "1677712978045.b8f7eb7d-b357-437b-8bd3-e1c8166c7132"
T = 1_700_000_000.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def adapter(**over) -> RedditCAPI:
    return RedditCAPI("reddit", {"pixel_id": PIXEL, "access_token": TOKEN, **over})


def canonical(name: str, when: float = T, **params) -> Event:
    return Event(
        name=name,
        id=f"evt-{name}",
        time=when,
        page=Page(
            "https://shop.example.com/checkout?step=3",
            "https://www.example.org/",
            "Checkout",
        ),
        user=UserData(
            email=" Foo@Bar.com ",
            phone="+1 (650) 555-1234",
            first_name="Jane",
            external_id="user-42",
        ),
        context=Context(
            ip="203.0.113.9",
            user_agent=UA,
            screen="1280x800",
            ids={
                "visitor_id": "v1",
                "rdt_cid": "3184742045291813272",
                "rdt_uuid": UUID,
            },
        ),
        params=params,
    )


def purchase(when: float = T) -> Event:
    return canonical(
        "purchase",
        when,
        transaction_id="T-1001",
        value=59.9,
        currency="eur",
        items=[
            {"item_id": "SKU-1", "item_name": "Tea", "price": 19.95, "quantity": 2},
            {"item_id": "SKU-2", "item_name": "Cup", "price": 20.0, "quantity": 1},
        ],
    )


def lead(when: float = T) -> Event:
    return canonical(
        "generate_lead", when, value=25, currency="USD", lead_source="form"
    )


USER = {
    "email": sha("foo@bar.com"),
    "phone_number": sha("+16505551234"),
    "external_id": sha("user-42"),
    "ip_address": sha("203.0.113.9"),
    "user_agent": UA,
    "uuid": UUID,
    "screen_dimensions": {"width": 1280, "height": 800},
}


class TestSettings:
    def test_every_problem_reported_at_once(self):
        """A bad pixel ID, a missing token, an empty test_id and a bad endpoint are reported together."""
        with pytest.raises(ConfigError) as err:
            RedditCAPI(
                "r", {"pixel_id": "a2 bad", "test_id": "", "endpoint": "ftp://x"}
            )
        assert [k for k, _ in err.value.problems] == [
            "pixel_id",
            "access_token",
            "test_id",
            "endpoint",
        ]

    def test_defaults(self):
        """Without endpoint and test_id the adapter posts for real to ads-api.reddit.com."""
        a = adapter()
        assert (a.endpoint, a.test_id) == ("https://ads-api.reddit.com", None)

    def test_token_is_secret(self):
        """access_token is declared secret so it is never printed."""
        assert RedditCAPI.secret_keys == ("access_token",)


class TestLimits:
    def test_batch_limit_is_1000(self):
        """Reddit: "1,000 events/request"."""
        assert RedditCAPI.max_batch == 1000

    def test_max_age_is_7_days(self):
        """Reddit: "events must be sent within seven days after they occur"."""
        assert RedditCAPI.max_age_secs == 7 * 24 * 3600


class TestRender:
    def test_purchase(self):
        """A canonical purchase: ms time, WEBSITE, PURCHASE, click ID, hashed user, metadata with products."""
        assert adapter().render(purchase()) == {
            "event_at": 1_700_000_000_000,
            "action_source": "WEBSITE",
            "type": {"tracking_type": "PURCHASE"},
            "event_source_url": "https://shop.example.com/checkout?step=3",
            "click_id": "3184742045291813272",
            "user": USER,
            "metadata": {
                "conversion_id": "evt-purchase",
                "value": 59.9,
                "currency": "EUR",
                "products": [
                    {"id": "SKU-1", "name": "Tea", "quantity": 2, "item_price": 19.95},
                    {"id": "SKU-2", "name": "Cup", "quantity": 1, "item_price": 20.0},
                ],
                "item_count": 3,
            },
        }

    def test_generate_lead(self):
        """A canonical generate_lead is LEAD with value and currency."""
        out = adapter().render(lead())
        assert out["type"] == {"tracking_type": "LEAD"}
        assert out["metadata"] == {
            "conversion_id": "evt-generate_lead",
            "value": 25.0,
            "currency": "USD",
        }

    def test_page_view(self):
        """A canonical page_view is PAGE_VISIT with only the conversion ID as metadata."""
        assert adapter().render(canonical("page_view")) == {
            "event_at": 1_700_000_000_000,
            "action_source": "WEBSITE",
            "type": {"tracking_type": "PAGE_VISIT"},
            "event_source_url": "https://shop.example.com/checkout?step=3",
            "click_id": "3184742045291813272",
            "user": USER,
            "metadata": {"conversion_id": "evt-page_view"},
        }

    def test_custom_event(self):
        """Other names are CUSTOM with custom_event_name inside type."""
        assert adapter().render(canonical("Promotion Event"))["type"] == {
            "tracking_type": "CUSTOM",
            "custom_event_name": "Promotion Event",
        }

    def test_custom_name_over_64_chars_is_refused(self):
        """custom_event_name is at most 64 characters."""
        with pytest.raises(RenderError, match="64"):
            adapter().render(canonical("x" * 65))

    @pytest.mark.parametrize(
        ("source", "reddit"),
        [
            ("app", "APP"),
            ("physical_store", "PHYSICAL_STORE"),
            ("phone_call", "OTHER"),
            ("system_generated", "OTHER"),
        ],
    )
    def test_action_sources(self, source, reddit):
        """action_source is required in v3; sources without a Reddit channel are OTHER."""
        assert (
            adapter().render(Event("purchase", "e", T, action_source=source))[
                "action_source"
            ]
            == reddit
        )

    def test_event_source_url_only_for_website(self):
        """event_source_url is for WEBSITE events only."""
        event = Event(
            "purchase", "e", T, action_source="app", page=Page("https://x.example/")
        )
        assert "event_source_url" not in adapter().render(event)

    def test_click_id_falls_back_to_landing_url(self):
        """Without a server-kept rdt_cid the landing URL's rdt_cid is used."""
        event = Event(
            "purchase", "e", T, context=Context(click_ids={"rdt_cid": "from-url"})
        )
        assert adapter().render(event)["click_id"] == "from-url"

    def test_render_has_no_raw_pii(self):
        """Neither the raw e-mail, phone, external ID nor IP appears in the payload."""
        text = orjson.dumps(adapter().render(purchase())).decode().lower()
        assert not any(
            raw in text for raw in ("foo@bar.com", "555-1234", "user-42", "203.0.113.9")
        )


class TestHashing:
    @pytest.mark.parametrize("raw", ["alice@example.com", "Al.ice+Apple@Example.Com"])
    def test_email_examples_from_reddit(self, raw):
        """Reddit's example: both addresses hash to ff8d9819...d976."""
        assert (
            hash_reddit("email", raw)
            == "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
        )

    def test_phone_example_from_reddit(self):
        """Reddit's example: +15554441234 hashes to e5b124c5...994a (with the "+")."""
        assert hash_reddit("phone_number", "+1 (555) 444-1234") == (
            "e5b124c58580eb16bd959b8d0cac12b12c952e2ceae0203d416cff94f10b994a"
        )

    def test_phone_extension_is_removed(self):
        """An extension is not part of the number."""
        assert hash_reddit("phone_number", "+1 555 444 1234 ext. 99") == hash_reddit(
            "phone_number", "+15554441234"
        )

    def test_phone_with_00_prefix(self):
        """An international 00 prefix is read as "+"."""
        assert hash_reddit("phone_number", "0015554441234") == hash_reddit(
            "phone_number", "+15554441234"
        )

    def test_phone_without_country_code_is_dropped(self):
        """Reddit needs the country code; a national number is not sent rather than sent wrong."""
        assert hash_reddit("phone_number", "(555) 444-1234") is None

    def test_malformed_email_is_dropped(self):
        """An address without a domain is not sent."""
        assert hash_reddit("email", "not-an-address") is None

    def test_hashed_values_pass_through(self):
        """An already hashed value is sent lowercased, not hashed again."""
        digest = sha("alice@example.com")
        assert hash_reddit("email", digest.upper()) == digest


class TestBuild:
    def test_url_headers_and_body(self):
        """POST /api/v3/pixels/{pixel}/conversion_events, bearer token, {"data": {"events": [...]}}."""
        a = adapter()
        payload = a.render(purchase())
        req = a.build([payload])
        assert (
            req.url
            == f"https://ads-api.reddit.com/api/v3/pixels/{PIXEL}/conversion_events"
        )
        assert req.headers["Authorization"] == f"Bearer {TOKEN}"
        assert orjson.loads(req.body) == {"data": {"events": [payload]}}

    def test_user_agent_names_tagrelay(self):
        """Reddit throttles default user agents, so requests carry a descriptive one."""
        req = adapter().build([adapter().render(purchase())])
        assert (
            req.headers["User-Agent"]
            == f"tagrelay/{__version__} (server-side conversions)"
        )

    def test_test_id_goes_into_data(self):
        """A configured test_id is sent as data.test_id (v3 replaces v2's test_mode)."""
        req = adapter(test_id="t2_test123").build([adapter().render(purchase())])
        assert orjson.loads(req.body)["data"]["test_id"] == "t2_test123"

    def test_token_is_redacted(self):
        """The printable request hides the token."""
        shown = adapter().build([adapter().render(purchase())]).redacted()
        assert TOKEN not in shown.headers["Authorization"]


def answer(status, body, headers=None):
    return Answer(status, headers or {}, orjson.dumps(body))


class TestClassify:
    def test_success_message_is_ok(self):
        """Reddit's {"data": {"message": ...}} is ok."""
        outcome = adapter().classify(
            answer(
                200,
                {"data": {"message": "Successfully processed 2 conversion events."}},
            )
        )
        assert (outcome.verdict, outcome.reason) == (
            Verdict.OK,
            "http 200: Successfully processed 2 conversion events.",
        )

    def test_invalid_events_are_final_with_field(self):
        """A 400 naming invalid events is final and the reason names the first bad field."""
        body = {
            "error": {
                "code": 400,
                "message": "There were 1 invalid conversion events. None were processed.",
                "fields": [
                    {"field": "$.data.events[0].user.UUID", "message": "invalid UUID"}
                ],
            }
        }
        outcome = adapter().classify(answer(400, body))
        assert outcome.verdict is Verdict.FINAL
        assert outcome.reason == (
            "http 400: There were 1 invalid conversion events. None were processed."
            " ($.data.events[0].user.UUID: invalid UUID)"
        )

    @pytest.mark.parametrize(
        ("status", "message"),
        [(401, "UNAUTHORIZED"), (403, "Missing adsconversions scope")],
    )
    def test_auth_errors_are_final(self, status, message):
        """Bad tokens and missing permissions need a human."""
        assert (
            adapter()
            .classify(answer(status, {"error": {"code": status, "message": message}}))
            .verdict
            is Verdict.FINAL
        )

    def test_rate_limit_retries_after_header(self):
        """Reddit's 429 retries after Retry-After."""
        outcome = adapter().classify(
            Answer(429, RATE_LIMITED.headers, orjson.dumps(RATE_LIMITED.body))
        )
        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 10.0)

    def test_500_retries(self):
        """ "The service is currently unavailable" (500) retries."""
        body = {
            "error": {"code": 500, "message": "The service is currently unavailable."}
        }
        assert adapter().classify(answer(500, body)).verdict is Verdict.RETRY

    def test_error_envelope_under_200_is_final(self):
        """A 2xx carrying Reddit's error envelope is a failure."""
        assert (
            adapter()
            .classify(answer(200, {"error": {"code": 400, "message": "x"}}))
            .verdict
            is Verdict.FINAL
        )

    def test_2xx_without_message_is_retried(self):
        """A 2xx that is not Reddit's success shape is retried (dedup on conversion_id)."""
        assert adapter().classify(Answer(200, {}, b"")).verdict is Verdict.RETRY


async def send(req):
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            req.method, req.url, headers=req.headers, data=req.body
        ) as resp,
    ):
        return Answer(resp.status, dict(resp.headers), await resp.read())


class TestRoundTrip:
    @pytest.mark.parametrize(
        "make",
        [purchase, lead, lambda when: canonical("page_view", when)],
        ids=["purchase", "generate_lead", "page_view"],
    )
    async def test_stand_in_accepts_what_is_built(self, aiohttp_server, make):
        """The stand-in processes the request built for each canonical event and classify says ok."""
        app = reddit_app(access_token=TOKEN, pixel_ids={PIXEL})
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(await send(a.build([a.render(make(time.time() - 30))])))

        assert app[STANDIN].problems == []
        assert outcome.verdict is Verdict.OK
        assert len(app[STANDIN].received) == 1

    async def test_test_id_routes_to_event_testing(self, aiohttp_server):
        """With test_id the stand-in accepts the request but does not count it."""
        app = reddit_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")), test_id="t2_test123")

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert outcome.verdict is Verdict.OK
        assert (app[STANDIN].received, len(app[STANDIN].tested)) == ([], 1)

    async def test_unknown_pixel_is_final(self, aiohttp_server):
        """A pixel the token may not post to gets Reddit's 403, a dead letter."""
        app = reddit_app(access_token=TOKEN, pixel_ids={"a2_other"})
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert outcome.verdict is Verdict.FINAL
        assert (
            outcome.reason
            == f"http 403: You're not authorized to post conversions to Pixel ID {PIXEL}."
        )

    async def test_scripted_rate_limit_retries(self, aiohttp_server):
        """The stand-in's scripted 429 is classified as retry."""
        app = reddit_app(access_token=TOKEN)
        app[STANDIN].script(RATE_LIMITED)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 10.0)

    async def test_v2_shape_is_refused(self, aiohttp_server):
        """A v2-shaped event (event_type, ISO time) is refused by the v3 stand-in."""
        app = reddit_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        async with aiohttp.ClientSession() as session:
            body = {
                "data": {
                    "events": [
                        {
                            "event_at": "2026-01-01T00:00:00Z",
                            "event_type": {"tracking_type": "Purchase"},
                        }
                    ]
                }
            }
            url = server.make_url(f"/api/v3/pixels/{PIXEL}/conversion_events")
            async with session.post(
                url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                status, doc = resp.status, await resp.json()
        assert status == 400
        assert (
            doc["error"]["message"]
            == "There were 1 invalid conversion events. None were processed."
        )
