"""TikTokEventsAPI: settings, rendering, hashing, request building, classification, round trip.

Expected values come from TikTok's server GTM template (tiktok/gtm-template-eapi),
TikTok's Business API response envelope, Segment's TikTok Conversions
destination test (email hash) and TikTok's documented phone form ``+12133734253``.
"""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest

from proxy.model import Context, Event, Page, UserData
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.tiktok import TikTokEventsAPI
from tests.standins import STANDIN, Canned
from tests.standins.tiktok import tiktok_answer, tiktok_app

TOKEN = "tt-secret-token"
PIXEL = "CABCDEFGHIJ1234567890"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
NOW = 1_750_000_000
# sha256("+12133734253"): TikTok hashes E.164 with the leading "+".
PHONE_HASH = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
# Segment tiktok-conversions formatter.test.ts: bugsbunny@warnerbros.com.
EMAIL_HASH = "67e28cdcc3e845d3a4da05ca9fe5ddb7320a83b4cc2167f0555a3b04f63511e3"


def adapter(**over) -> TikTokEventsAPI:
    return TikTokEventsAPI(
        "tiktok", {"pixel_code": PIXEL, "access_token": TOKEN, **over}
    )


def event(name="purchase", **kw) -> Event:
    base = {
        "name": name,
        "id": "evt-1",
        "time": NOW,
        "page": Page(
            "https://shop.example.com/thanks", "https://shop.example.com/cart", "Thanks"
        ),
        "context": Context(
            ip="203.0.113.9",
            user_agent=UA,
            click_ids={"ttclid": "E.C.P.landing"},
            ids={"ttclid": "E.C.P.kept", "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH"},
        ),
    }
    base.update(kw)
    return Event(**base)


PURCHASE_PARAMS = {
    "transaction_id": "T-1",
    "value": 59.9,
    "currency": "eur",
    "items": [
        {"item_id": "SKU-1", "item_name": "Tea", "price": 19.95, "quantity": 2},
        {"item_id": "SKU-2", "price": 20},
    ],
}
USER = {
    "ttclid": "E.C.P.kept",
    "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
    "ip": "203.0.113.9",
    "user_agent": UA,
}
PAGE = {
    "url": "https://shop.example.com/thanks",
    "referrer": "https://shop.example.com/cart",
}


class TestSettings:
    def test_every_problem_reported_at_once(self):
        """Bad pixel, missing token, bad test code, region, version and endpoint are reported together."""
        with pytest.raises(ConfigError) as err:
            TikTokEventsAPI(
                "t",
                {
                    "pixel_code": "px 1",
                    "test_event_code": 5,
                    "default_region": "USA",
                    "api_version": "1.3",
                    "endpoint": "ftp://x",
                },
            )
        assert [k for k, _ in err.value.problems] == [
            "pixel_code",
            "access_token",
            "test_event_code",
            "default_region",
            "api_version",
            "endpoint",
        ]

    def test_token_never_in_error_text(self):
        """A config error never echoes the access token."""
        with pytest.raises(ConfigError) as err:
            TikTokEventsAPI("t", {"pixel_code": "bad code", "access_token": TOKEN})
        assert TOKEN not in str(err.value)

    def test_limits_and_secrets(self):
        """1,000 events per request; access_token is secret."""
        assert TikTokEventsAPI.max_batch == 1000
        assert TikTokEventsAPI.secret_keys == ("access_token",)
        assert TikTokEventsAPI.type == "tiktok_capi"


class TestRender:
    def test_purchase(self):
        """purchase -> CompletePayment with contents, value, currency, order_id and the click/cookie IDs."""
        out = adapter().render(event(params=PURCHASE_PARAMS))
        assert out == {
            "event": "CompletePayment",
            "event_time": NOW,
            "event_id": "evt-1",
            "user": USER,
            "page": PAGE,
            "properties": {
                "value": 59.9,
                "currency": "EUR",
                "contents": [
                    {
                        "content_id": "SKU-1",
                        "content_type": "product",
                        "content_name": "Tea",
                        "quantity": 2,
                        "price": 19.95,
                    },
                    {
                        "content_id": "SKU-2",
                        "content_type": "product",
                        "quantity": 1,
                        "price": 20.0,
                    },
                ],
                "content_type": "product",
                "order_id": "T-1",
            },
        }

    def test_generate_lead(self):
        """generate_lead -> SubmitForm, with the user's email hashed."""
        out = adapter().render(
            event("generate_lead", user=UserData(email=" BugsBunny@WarnerBros.com "))
        )
        assert out == {
            "event": "SubmitForm",
            "event_time": NOW,
            "event_id": "evt-1",
            "user": {"email": EMAIL_HASH, **USER},
            "page": PAGE,
        }

    def test_page_view(self):
        """page_view -> Pageview (TikTok's own spelling in its GTM template)."""
        out = adapter().render(event("page_view"))
        assert out == {
            "event": "Pageview",
            "event_time": NOW,
            "event_id": "evt-1",
            "user": USER,
            "page": PAGE,
        }

    def test_custom_name_is_kept(self):
        """A name without a standard counterpart is sent as a custom event."""
        assert adapter().render(event("newsletter_open"))["event"] == "newsletter_open"

    def test_landing_click_id_when_none_kept(self):
        """Without a kept ttclid, the one on this hit's URL is used."""
        ctx = Context(click_ids={"ttclid": "E.C.P.landing"})
        assert adapter().render(event(context=ctx))["user"] == {
            "ttclid": "E.C.P.landing"
        }

    def test_app_events_are_refused(self):
        """A pixel takes web events only; an app event fails to render."""
        with pytest.raises(RenderError, match="action_source"):
            adapter().render(event(action_source="app"))

    def test_bad_currency_is_a_render_error(self):
        """A currency that is not three letters fails this event, not the batch."""
        with pytest.raises(RenderError, match="currency"):
            adapter().render(event(params={"currency": "EURO"}))


class TestPhone:
    @pytest.mark.parametrize(
        "raw", ["+1 (213) 373-4253", "+12133734253", "001 213 373 4253"]
    )
    def test_phone_is_e164_with_plus(self, raw):
        """The phone is hashed as E.164 with "+" (TikTok's form +12133734253), not digits only."""
        out = adapter().render(event(user=UserData(phone=raw)))
        assert out["user"]["phone"] == PHONE_HASH

    def test_national_number_needs_default_region(self):
        """Without "+" and without default_region the phone is left out rather than guessed."""
        assert (
            "phone"
            not in adapter().render(event(user=UserData(phone="(213) 373-4253")))[
                "user"
            ]
        )

    def test_default_region_places_national_number(self):
        """With default_region US a national number gets country code 1."""
        out = adapter(default_region="US").render(
            event(user=UserData(phone="(213) 373-4253"))
        )
        assert out["user"]["phone"] == PHONE_HASH

    def test_hashed_values_pass_through(self):
        """An already-hashed phone is sent as given, lowercased."""
        out = adapter().render(event(user=UserData(phone=PHONE_HASH.upper())))
        assert out["user"]["phone"] == PHONE_HASH


class TestBuild:
    def test_request(self):
        """POST /open_api/v1.3/event/track/ with Access-Token and the web event source."""
        a = adapter()
        payload = a.render(event())
        req = a.build([payload])
        assert (req.method, req.url) == (
            "POST",
            "https://business-api.tiktok.com/open_api/v1.3/event/track/",
        )
        assert req.headers == {
            "Content-Type": "application/json",
            "Access-Token": TOKEN,
        }
        assert orjson.loads(req.body) == {
            "event_source": "web",
            "event_source_id": PIXEL,
            "data": [payload],
        }
        assert TOKEN not in str(req.redacted().headers)

    def test_test_event_code(self):
        """Test mode: test_event_code goes in the body next to data."""
        req = adapter(test_event_code="TEST123").build([adapter().render(event())])
        assert orjson.loads(req.body)["test_event_code"] == "TEST123"

    def test_oversized_batch_is_refused(self):
        """More than 1,000 payloads is a bug in the caller."""
        with pytest.raises(ValueError, match="1001"):
            adapter().build([{}] * 1001)


def answer(code, status=200, message="m"):
    return Answer(status, {}, orjson.dumps(tiktok_answer(code, message)))


class TestClassify:
    @pytest.mark.parametrize(
        ("ans", "verdict"),
        [
            (answer(0, message="OK"), Verdict.OK),
            (answer(40002), Verdict.FINAL),
            (answer(40001), Verdict.FINAL),
            (answer(40105), Verdict.FINAL),
            (answer(40100), Verdict.RETRY),
            (answer(50000), Verdict.RETRY),
            (answer(0, status=500), Verdict.RETRY),
            (Answer(429, {"Retry-After": "7"}), Verdict.RETRY),
            (Answer(200, {}, b"<html>"), Verdict.RETRY),
            (Answer(400, {}, b""), Verdict.FINAL),
            (Answer(None, error="timeout"), Verdict.RETRY),
        ],
    )
    def test_table(self, ans, verdict):
        """code 0 is ok; 40100 and 5xxxx retry; other codes are final although HTTP says 200."""
        assert adapter().classify(ans).verdict is verdict

    def test_reason_names_code_and_message(self):
        """The reason keeps TikTok's code and message for the dead letter."""
        assert (
            adapter().classify(answer(40002, message="Invalid email")).reason
            == "http 200 code 40002: Invalid email"
        )


async def test_round_trip(aiohttp_server):
    """purchase, generate_lead and page_view built by the adapter are accepted by the stand-in."""
    app = tiktok_app(access_token=TOKEN, pixel_code=PIXEL, now=lambda: NOW + 60)
    server = await aiohttp_server(app)
    a = adapter(endpoint=str(server.make_url("")).rstrip("/"), test_event_code="TEST1")
    payloads = [
        a.render(
            event(
                params=PURCHASE_PARAMS,
                user=UserData(email="a@b.co", phone="+12133734253"),
            )
        ),
        a.render(event("generate_lead")),
        a.render(event("page_view")),
    ]
    req = a.build(payloads)
    async with aiohttp.ClientSession() as session:
        async with session.post(req.url, data=req.body, headers=req.headers) as resp:
            got = Answer(resp.status, dict(resp.headers), await resp.read())
    assert a.classify(got).verdict is Verdict.OK
    assert app[STANDIN].problems == []
    assert [e["event"] for e in app[STANDIN].received] == [
        "CompletePayment",
        "SubmitForm",
        "Pageview",
    ]


async def test_wrong_token_is_final(aiohttp_server):
    """The stand-in answers a wrong token like TikTok (HTTP 200, code 40105) and that is final."""
    app = tiktok_app(access_token="other", pixel_code=PIXEL, now=lambda: NOW + 60)
    server = await aiohttp_server(app)
    a = adapter(endpoint=str(server.make_url("")).rstrip("/"))
    req = a.build([a.render(event())])
    async with aiohttp.ClientSession() as session:
        async with session.post(req.url, data=req.body, headers=req.headers) as resp:
            got = Answer(resp.status, dict(resp.headers), await resp.read())
    assert (got.status, a.classify(got).verdict) == (200, Verdict.FINAL)


async def test_rate_limit_answer_retries(aiohttp_server):
    """A scripted rate-limit answer (code 40100) is retried."""
    app = tiktok_app(access_token=TOKEN, pixel_code=PIXEL)
    app[STANDIN].script(Canned(200, body=tiktok_answer(40100, "Too many requests")))
    server = await aiohttp_server(app)
    a = adapter(endpoint=str(server.make_url("")).rstrip("/"))
    req = a.build([a.render(event(time=time.time()))])
    async with aiohttp.ClientSession() as session:
        async with session.post(req.url, data=req.body, headers=req.headers) as resp:
            got = Answer(resp.status, dict(resp.headers), await resp.read())
    assert a.classify(got).verdict is Verdict.RETRY
