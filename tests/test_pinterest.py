"""PinterestCAPI: settings, rendering, hashing, request building, classification and a round trip.

Expected values come from Pinterest's OpenAPI-generated client docs
(ConversionEventsData, ConversionEventsUserData, ConversionEventsCustomData,
ConversionApiResponse) and, for the hashing rules Pinterest shares with
Meta's Parameter Builder (e-mail trimmed and lowercased; phone digits only
with leading zeros removed), from ``tests/data/vectors/``.

vendors.md corrections found here: ``click_id`` (the ``_epik`` cookie or
``epik`` URL parameter) and ``partner_id`` are documented ``user_data`` fields
[now V]; ``em`` and the other hashed keys are arrays [V]; the event list also
holds ``contact``, ``initiate_checkout``, ``view_content`` and more; the
1,000-events limit and the 422 status for refused events are still unconfirmed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.model import Context, Event, Page, UserData
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.pinterest import PinterestCAPI, hash_pinterest
from tests.standins import STANDIN, Canned
from tests.standins.pinterest import RATE_LIMITED, pinterest_app

TOKEN = "pina_standin-token"
ACCOUNT = "549755885175"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
T = 1_700_000_000.0
VECTORS = Path(__file__).parent / "data" / "vectors"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def adapter(**over) -> PinterestCAPI:
    return PinterestCAPI(
        "pinterest", {"ad_account_id": ACCOUNT, "access_token": TOKEN, **over}
    )


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
            last_name="Doe",
        ),
        context=Context(
            ip="203.0.113.9",
            user_agent=UA,
            screen="1280x800",
            ids={"visitor_id": "v1", "epik": "dj0yJnU9epik-value"},
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


USER_DATA = {
    "em": [sha("foo@bar.com")],
    "ph": [sha("16505551234")],
    "fn": [sha("jane")],
    "ln": [sha("doe")],
    "client_ip_address": "203.0.113.9",
    "client_user_agent": UA,
    "click_id": "dj0yJnU9epik-value",
}


class TestSettings:
    def test_every_problem_reported_at_once(self):
        """A bad account ID, a missing token, a non-boolean test flag and a bad endpoint are reported together."""
        with pytest.raises(ConfigError) as err:
            PinterestCAPI(
                "p", {"ad_account_id": "act-1", "test": "yes", "endpoint": "ftp://x"}
            )
        assert [k for k, _ in err.value.problems] == [
            "ad_account_id",
            "access_token",
            "test",
            "endpoint",
        ]

    def test_defaults(self):
        """Without endpoint and test the adapter posts for real to api.pinterest.com."""
        a = adapter()
        assert (a.endpoint, a.test) == ("https://api.pinterest.com", False)

    def test_numeric_account_from_toml(self):
        """An ad account ID written as a TOML integer is used as its digits."""
        assert adapter(ad_account_id=549755885175).ad_account_id == ACCOUNT

    def test_token_is_secret(self):
        """access_token is declared secret so it is never printed."""
        assert PinterestCAPI.secret_keys == ("access_token",)

    def test_error_never_echoes_the_token(self):
        """A token of the wrong type is reported without its value."""
        with pytest.raises(ConfigError) as err:
            adapter(access_token=["pina_secret-value"])
        assert "pina_secret-value" not in str(err.value)


class TestLimits:
    def test_batch_limit_is_1000(self):
        """One request carries up to 1,000 events (vendors.md; unconfirmed in Pinterest's own pages)."""
        assert PinterestCAPI.max_batch == 1000

    def test_max_age_is_7_days(self):
        """Events older than seven days are not sent (partner docs; Pinterest reports later ones as offline)."""
        assert PinterestCAPI.max_age_secs == 7 * 24 * 3600


class TestRender:
    def test_purchase(self):
        """A canonical purchase becomes a web "checkout" with hashed user data and string value and prices."""
        assert adapter().render(purchase()) == {
            "event_name": "checkout",
            "action_source": "web",
            "event_time": 1_700_000_000,
            "event_id": "evt-purchase",
            "event_source_url": "https://shop.example.com/checkout?step=3",
            "user_data": USER_DATA,
            "custom_data": {
                "value": "59.9",
                "currency": "EUR",
                "contents": [
                    {"id": "SKU-1", "item_price": "19.95", "quantity": 2},
                    {"id": "SKU-2", "item_price": "20.0", "quantity": 1},
                ],
                "content_ids": ["SKU-1", "SKU-2"],
                "num_items": 3,
                "order_id": "T-1001",
            },
        }

    def test_generate_lead(self):
        """A canonical generate_lead becomes "lead" with its value; unknown params are not sent."""
        out = adapter().render(lead())
        assert out["event_name"] == "lead"
        assert out["custom_data"] == {"value": "25.0", "currency": "USD"}
        assert out["user_data"] == USER_DATA

    def test_page_view(self):
        """A canonical page_view becomes "page_visit" without custom_data."""
        assert adapter().render(canonical("page_view")) == {
            "event_name": "page_visit",
            "action_source": "web",
            "event_time": 1_700_000_000,
            "event_id": "evt-page_view",
            "event_source_url": "https://shop.example.com/checkout?step=3",
            "user_data": USER_DATA,
        }

    @pytest.mark.parametrize(
        ("canonical_name", "pinterest"),
        [
            ("sign_up", "signup"),
            ("search", "search"),
            ("add_to_cart", "add_to_cart"),
            ("view_item_list", "view_category"),
        ],
    )
    def test_standard_names(self, canonical_name, pinterest):
        """GA4 recommended names map to Pinterest's event names."""
        assert adapter().render(canonical(canonical_name))["event_name"] == pinterest

    def test_other_names_are_custom(self):
        """A name without a Pinterest counterpart is sent as the predefined "custom" event."""
        assert adapter().render(canonical("newsletter_open"))["event_name"] == "custom"

    def test_click_id_falls_back_to_epik_cookie_then_url(self):
        """Without a server-kept epik the _epik cookie is used, then the landing URL's epik."""
        cookie = Event(
            "page_view",
            "e",
            T,
            context=Context(ip="1.2.3.4", user_agent=UA, ids={"epik_cookie": "ck"}),
        )
        url = Event(
            "page_view",
            "e",
            T,
            context=Context(ip="1.2.3.4", user_agent=UA, click_ids={"epik": "u"}),
        )
        assert adapter().render(cookie)["user_data"]["click_id"] == "ck"
        assert adapter().render(url)["user_data"]["click_id"] == "u"

    def test_physical_store_is_offline(self):
        """A store event is sent with action_source "offline"."""
        store = Event(
            "purchase",
            "e",
            T,
            action_source="physical_store",
            user=UserData(email="a@b.co"),
        )
        assert adapter().render(store)["action_source"] == "offline"

    def test_app_events_are_refused(self):
        """An app event cannot say app_android or app_ios, so it is a render error, not a guess."""
        with pytest.raises(RenderError, match="action_source"):
            adapter().render(
                Event(
                    "purchase",
                    "e",
                    T,
                    action_source="app",
                    user=UserData(email="a@b.co"),
                )
            )

    def test_missing_match_keys_are_refused(self):
        """Without e-mail or IP plus user agent Pinterest refuses the event, so it is not rendered."""
        with pytest.raises(RenderError, match="user_data"):
            adapter().render(
                Event("purchase", "e", T, context=Context(ip="203.0.113.9"))
            )

    def test_missing_event_id_is_refused(self):
        """event_id is required by Pinterest."""
        with pytest.raises(RenderError, match="event_id"):
            adapter().render(Event("purchase", "", T, user=UserData(email="a@b.co")))

    def test_future_time_is_sent_as_now(self):
        """A client clock ahead of the server gives the current time, not a future one."""
        before = int(time.time())
        out = adapter().render(canonical("page_view", time.time() + 3600))
        assert before <= out["event_time"] <= int(time.time())

    def test_render_has_no_raw_pii(self):
        """Nothing of the raw e-mail, phone or names appears in the rendered payload."""
        text = orjson.dumps(adapter().render(purchase())).decode().lower()
        assert not any(
            raw in text for raw in ("foo@bar.com", "555-1234", "jane", "doe")
        )


def _vector_rows(name: str):
    rows = json.loads((VECTORS / name).read_text())
    return [r for r in rows if r.get("normalized") and "note" not in r]


class TestHashing:
    @pytest.mark.parametrize(
        "row",
        _vector_rows("meta_param_builder_email.json"),
        ids=lambda r: repr(r["input"])[:40],
    )
    def test_email_matches_trim_lowercase_vectors(self, row):
        """em is SHA-256 of the trimmed, lowercased address (Pinterest: "lowercase version of user's email")."""
        assert hash_pinterest("em", row["input"]) == row["sha256"]

    @pytest.mark.parametrize(
        "row",
        _vector_rows("meta_param_builder_phone.json"),
        ids=lambda r: repr(r["input"])[:40],
    )
    def test_phone_matches_digits_without_leading_zeros(self, row):
        """ph keeps digits only and drops leading zeros, as Pinterest documents and the Builder vectors show."""
        assert hash_pinterest("ph", row["input"]) == row["sha256"]

    def test_names_are_lowercased_without_spaces(self):
        """fn/ln: "in lowercase"; white space is removed."""
        assert hash_pinterest("fn", " Mary Ann ") == sha("maryann")

    def test_external_id_is_hashed_as_given(self):
        """external_id is hashed trimmed, case kept: Pinterest asks for no normalisation."""
        assert hash_pinterest("external_id", " User-42 ") == sha("User-42")

    def test_hashed_values_pass_through(self):
        """A value that already is a SHA-256 digest is sent lowercased, not hashed again."""
        digest = sha("foo@bar.com")
        assert hash_pinterest("em", digest.upper()) == digest


class TestBuild:
    def test_url_headers_and_body(self):
        """POST /v5/ad_accounts/{id}/events, bearer token, JSON {"data": [...]}."""
        a = adapter()
        payload = a.render(purchase())
        req = a.build([payload])
        assert (req.method, req.url) == (
            "POST",
            f"https://api.pinterest.com/v5/ad_accounts/{ACCOUNT}/events",
        )
        assert req.headers["Authorization"] == f"Bearer {TOKEN}"
        assert orjson.loads(req.body) == {"data": [payload]}

    def test_test_mode_adds_query(self):
        """test = true sends ?test=true: validated, not recorded."""
        req = adapter(test=True).build([adapter().render(purchase())])
        assert req.url.endswith("/events?test=true")

    def test_token_is_redacted(self):
        """The printable request hides the token."""
        shown = adapter().build([adapter().render(purchase())]).redacted()
        assert TOKEN not in shown.headers["Authorization"]

    def test_oversized_batch_is_refused(self):
        """Delivery must never hand over more than max_batch payloads."""
        with pytest.raises(ValueError, match="1001"):
            adapter().build([{}] * 1001)


def answer(status, body, headers=None):
    return Answer(
        status,
        headers or {},
        orjson.dumps(body) if not isinstance(body, bytes) else body,
    )


class TestClassify:
    def test_all_processed_is_ok(self):
        """Every event "processed" is ok."""
        body = {
            "num_events_received": 2,
            "num_events_processed": 2,
            "events": [{"status": "processed"}] * 2,
        }
        outcome = adapter().classify(answer(200, body))
        assert (outcome.verdict, outcome.reason) == (
            Verdict.OK,
            "http 200 processed 2/2",
        )

    def test_failed_event_is_final_with_its_message(self):
        """A "failed" event is final and its error_message is kept."""
        body = {
            "num_events_received": 2,
            "num_events_processed": 1,
            "events": [
                {"status": "processed"},
                {"status": "failed", "error_message": "event_time: too old"},
            ],
        }
        outcome = adapter().classify(answer(422, body))
        assert (outcome.verdict, outcome.reason) == (
            Verdict.FINAL,
            "http 422 failed 1/2: event_time: too old",
        )

    def test_failure_reported_under_200_is_final(self):
        """A 2xx whose body reports a failed event is a failure."""
        body = {
            "num_events_received": 1,
            "num_events_processed": 0,
            "events": [{"status": "failed"}],
        }
        assert adapter().classify(answer(200, body)).verdict is Verdict.FINAL

    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            (400, Verdict.FINAL),
            (401, Verdict.FINAL),
            (403, Verdict.FINAL),
            (503, Verdict.RETRY),
        ],
    )
    def test_error_envelopes(self, status, verdict):
        """Pinterest's {"code", "message"} errors: 4xx final, 503 ("ramped down") retried; the reason names the code."""
        outcome = adapter().classify(
            answer(status, {"code": 2, "message": "Authentication failed."})
        )
        assert outcome.verdict is verdict
        assert outcome.reason == f"http {status} code 2: Authentication failed."

    def test_429_retries_after_header(self):
        """The rate-limit answer retries after Retry-After seconds."""
        outcome = adapter().classify(
            Answer(429, RATE_LIMITED.headers, orjson.dumps(RATE_LIMITED.body))
        )
        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 60.0)

    def test_2xx_without_events_is_retried(self):
        """A 2xx that is not Pinterest's answer shape is retried (Pinterest deduplicates on event_id)."""
        assert adapter().classify(Answer(200, {}, b"<html>")).verdict is Verdict.RETRY

    def test_timeout_retries(self):
        """No answer at all retries."""
        assert (
            adapter().classify(Answer(None, error="timeout")).verdict is Verdict.RETRY
        )


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
        app = pinterest_app(access_token=TOKEN, ad_account_ids={ACCOUNT})
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(await send(a.build([a.render(make(time.time() - 30))])))

        assert app[STANDIN].problems == []
        assert outcome.verdict is Verdict.OK
        assert len(app[STANDIN].received) == 1

    async def test_test_mode_records_nothing(self, aiohttp_server):
        """With test = true the stand-in validates and answers alike but records nothing."""
        app = pinterest_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")), test=True)

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert outcome.verdict is Verdict.OK
        assert (app[STANDIN].received, len(app[STANDIN].tested)) == ([], 1)

    async def test_wrong_token_is_final(self, aiohttp_server):
        """A wrong token gets Pinterest's 401 envelope and is a dead letter."""
        app = pinterest_app(access_token="other")
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert (outcome.verdict, outcome.reason) == (
            Verdict.FINAL,
            "http 401 code 2: Authentication failed.",
        )

    async def test_stale_event_is_refused_by_stand_in(self, aiohttp_server):
        """An event older than 7 days is "failed" in a 422 answer, which is final."""
        app = pinterest_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 8 * 86400))]))
        )

        assert outcome.verdict is Verdict.FINAL
        assert "event_time" in outcome.reason

    async def test_scripted_rate_limit_retries(self, aiohttp_server):
        """The stand-in's scripted 429 is classified as retry with its Retry-After."""
        app = pinterest_app(access_token=TOKEN)
        app[STANDIN].script(
            RATE_LIMITED, Canned(503, body={"code": 503, "message": "ramped down"})
        )
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))
        req = a.build([a.render(purchase(time.time() - 30))])

        first, second = a.classify(await send(req)), a.classify(await send(req))

        assert (first.verdict, first.retry_after_secs) == (Verdict.RETRY, 60.0)
        assert second.verdict is Verdict.RETRY
