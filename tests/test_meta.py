"""MetaCAPI: settings, rendering, request building and answer classification.

Expected values come from Meta's Conversions API and Graph API docs (cited
per test) and from the Meta business SDK test vectors (hash of an email).
"""

from __future__ import annotations

import time

import orjson
import pytest

from proxy.model import Context, Event, Page, UserData
from proxy.vendors import ADAPTERS
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.meta import MetaCAPI

TOKEN = "EAAB-secret-token"
SETTINGS = {"pixel_id": "123456789012345", "access_token": TOKEN}
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def adapter(**over) -> MetaCAPI:
    return MetaCAPI("meta", {**SETTINGS, **over})


def event(name="purchase", **kw) -> Event:
    base = dict(
        name=name,
        id="evt-1",
        time=time.time() - 60,
        page=Page("https://shop.example.com/p/1", "https://ref.example.org/", "Product"),
        context=Context(ip="203.0.113.9", user_agent=UA),
    )
    base.update(kw)
    return Event(**base)


def graph_error(code, status=400, **extra):
    return Answer(status, {}, orjson.dumps({"error": {"message": "m", "type": "OAuthException", "code": code, **extra}}))


class TestSettings:
    def test_defaults(self):
        """Without api_version and endpoint the adapter posts to graph.facebook.com with v26.0."""
        a = adapter()
        assert a.endpoint == "https://graph.facebook.com"
        assert a.api_version == "v26.0"

    def test_registered_as_meta_capi(self):
        """Rule files name this adapter ``meta_capi``."""
        assert ADAPTERS["meta_capi"] is MetaCAPI

    def test_every_problem_reported_at_once(self):
        """Bad pixel, missing token, bad version and a non-http endpoint are all reported together."""
        with pytest.raises(ConfigError) as err:
            MetaCAPI("meta", {"pixel_id": "px-1", "api_version": "26", "endpoint": "ftp://graph.example"})
        assert [k for k, _ in err.value.problems] == ["pixel_id", "access_token", "api_version", "endpoint"]

    def test_numeric_pixel_id_from_toml_is_accepted(self):
        """A pixel ID written as a TOML integer is used as its digits."""
        assert adapter(pixel_id=123456789012345).pixel_id == "123456789012345"

    def test_bad_test_event_code_is_reported(self):
        """test_event_code, when set, must be a non-empty string."""
        with pytest.raises(ConfigError) as err:
            adapter(test_event_code=12)
        assert [k for k, _ in err.value.problems] == ["test_event_code"]

    def test_endpoint_with_query_is_refused(self):
        """The endpoint is a base URL; a query string there is a configuration error."""
        with pytest.raises(ConfigError):
            adapter(endpoint="https://graph.facebook.com/?x=1")

    def test_access_token_is_secret(self):
        """access_token is declared secret so it never gets printed."""
        assert MetaCAPI.secret_keys == ("access_token",)


class TestVendorLimits:
    def test_batch_limit_is_1000(self):
        """Meta: "You can send up to 1,000 events in data"."""
        assert MetaCAPI.max_batch == 1000

    def test_max_age_is_7_days(self):
        """Meta: event_time "can be up to 7 days before you send an event"."""
        assert MetaCAPI.max_age_secs == 7 * 24 * 3600


class TestRender:
    @pytest.mark.parametrize(
        ("canonical", "meta"),
        [
            ("page_view", "PageView"),
            ("view_item", "ViewContent"),
            ("add_to_cart", "AddToCart"),
            ("add_to_wishlist", "AddToWishlist"),
            ("begin_checkout", "InitiateCheckout"),
            ("add_payment_info", "AddPaymentInfo"),
            ("purchase", "Purchase"),
            ("generate_lead", "Lead"),
            ("sign_up", "CompleteRegistration"),
            ("search", "Search"),
        ],
    )
    def test_standard_event_names(self, canonical, meta):
        """GA4 recommended names map to Meta's standard event names."""
        assert adapter().render(event(canonical))["event_name"] == meta

    def test_other_names_are_custom_events(self):
        """A name without a standard counterpart is sent as a custom event under its own name."""
        assert adapter().render(event("newsletter_open"))["event_name"] == "newsletter_open"

    def test_event_time_is_whole_unix_seconds(self):
        """event_time is an integer of unix seconds, not milliseconds."""
        out = adapter().render(event(time=1_700_000_000.75))
        assert out["event_time"] == 1_700_000_000

    def test_future_time_is_sent_as_now(self):
        """An event time ahead of the server clock is sent as the current time (Meta refuses future times)."""
        before = int(time.time())
        out = adapter().render(event(time=time.time() + 3600))
        assert before <= out["event_time"] <= int(time.time())

    def test_ids_and_urls(self):
        """event_id, action_source, event_source_url and referrer_url come from the event and page."""
        out = adapter().render(event())
        assert out["event_id"] == "evt-1"
        assert out["action_source"] == "website"
        assert out["event_source_url"] == "https://shop.example.com/p/1"
        assert out["referrer_url"] == "https://ref.example.org/"

    @pytest.mark.parametrize(
        "page, ua, missing",
        [
            (Page(""), UA, "event_source_url"),
            (Page("https://shop.example.com/"), "", "user_data.client_user_agent"),
            (Page(""), "", "event_source_url and user_data.client_user_agent"),
        ],
        ids=["no-url", "no-user-agent", "neither"],
    )
    def test_a_website_event_without_its_url_or_user_agent_is_not_expressible(self, page, ua, missing):
        """Meta requires event_source_url and client_user_agent for website events; it would refuse the request."""
        a = adapter()
        payload = a.render(event(page=page, context=Context(ip="203.0.113.9", user_agent=ua)))
        with pytest.raises(RenderError, match=f"action_source website: Meta requires {missing}$"):
            a.check(payload)

    def test_an_event_from_a_store_needs_neither_url_nor_user_agent(self):
        """physical_store events carry no page or browser; Meta takes them without."""
        a = adapter()
        a.check(a.render(event(page=Page(""), action_source="physical_store", context=Context())))

    def test_email_is_hashed(self):
        """em is SHA-256 of the normalised email (Meta business SDK vector: foo@bar.com)."""
        out = adapter().render(event(user=UserData(email=" Foo@Bar.com ")))
        assert out["user_data"]["em"] == ["0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b"]

    def test_browser_signals_are_not_hashed(self):
        """client_ip_address, client_user_agent, fbp and fbc go as they are."""
        ctx = Context(
            ip="203.0.113.9",
            user_agent=UA,
            ids={"fbp": "fb.1.1700000000000.987654321", "fbc": "fb.1.1700000000000.IwAR2AbC"},
        )
        user = adapter().render(event(context=ctx))["user_data"]
        assert user == {
            "client_ip_address": "203.0.113.9",
            "client_user_agent": UA,
            "fbp": "fb.1.1700000000000.987654321",
            "fbc": "fb.1.1700000000000.IwAR2AbC",
        }

    def test_empty_user_fields_are_left_out(self):
        """Without IP, user agent or cookies, user_data is an empty object, not a set of empty strings."""
        assert adapter().render(event(context=Context()))["user_data"] == {}

    def test_purchase_custom_data(self):
        """value, currency, contents, content_ids, num_items and order_id come from GA4-shaped params."""
        params = {
            "transaction_id": "T-1",
            "value": "59.90",
            "currency": "eur",
            "items": [
                {"item_id": "SKU-1", "price": 19.95, "quantity": 2},
                {"item_id": "SKU-2", "price": 20},
            ],
        }
        custom = adapter().render(event(params=params))["custom_data"]
        assert custom == {
            "value": 59.9,
            "currency": "EUR",
            "contents": [{"id": "SKU-1", "quantity": 2, "item_price": 19.95}, {"id": "SKU-2", "quantity": 1, "item_price": 20.0}],
            "content_ids": ["SKU-1", "SKU-2"],
            "content_type": "product",
            "num_items": 3,
            "order_id": "T-1",
        }

    def test_search_term_becomes_search_string(self):
        """GA4's search_term is Meta's search_string."""
        custom = adapter().render(event("search", params={"search_term": "green tea"}))["custom_data"]
        assert custom == {"search_string": "green tea"}

    def test_scalar_params_are_custom_properties(self):
        """Other scalar params are kept as custom properties; nested values are not."""
        custom = adapter().render(event(params={"plan": "pro", "seats": 3, "meta": {"a": 1}}))["custom_data"]
        assert custom == {"plan": "pro", "seats": 3}

    def test_pii_params_never_reach_custom_data(self):
        """custom_data is stored unhashed, so PII-named keys and email- or phone-looking values stay out."""
        params = {"email": "x@y.io", "note": "mail me at x@y.io", "contact": "+44 20 7946 0958", "sku": "1234567"}
        custom = adapter().render(event(params=params))["custom_data"]
        assert custom == {"sku": "1234567"}

    def test_bad_currency_is_a_render_error(self):
        """A currency that is not three letters fails this event only, not the whole batch at Meta."""
        with pytest.raises(RenderError, match="currency"):
            adapter().render(event(params={"currency": "EURO", "value": 1}))

    def test_non_numeric_value_is_a_render_error(self):
        """value must be a number."""
        with pytest.raises(RenderError, match="value"):
            adapter().render(event(params={"value": "lots"}))

    def test_unknown_action_source_is_a_render_error(self):
        """action_source must be one of Meta's values."""
        with pytest.raises(RenderError, match="action_source"):
            adapter().render(event(action_source="kiosk"))


class TestBuild:
    def test_url_body_and_headers(self):
        """POST {endpoint}/{version}/{pixel}/events?access_token=..., JSON body {"data": [...]}."""
        a = adapter()
        payload = a.render(event())
        req = a.build([payload])
        assert req.method == "POST"
        assert req.url == f"https://graph.facebook.com/v26.0/123456789012345/events?access_token={TOKEN}"
        assert req.headers["Content-Type"] == "application/json"
        assert orjson.loads(req.body) == {"data": [payload]}

    def test_test_event_code_is_sent(self):
        """A configured test_event_code goes in the body next to data."""
        req = adapter(test_event_code="TEST123").build([adapter().render(event())])
        assert orjson.loads(req.body)["test_event_code"] == "TEST123"

    def test_token_is_redacted(self):
        """The printable copy of the request does not contain the token."""
        req = adapter().build([adapter().render(event())])
        shown = req.redacted()
        assert TOKEN not in shown.url and TOKEN not in shown.body.decode()

    def test_more_than_1000_payloads_is_refused(self):
        """Delivery must never hand over more than max_batch payloads."""
        a = adapter()
        with pytest.raises(ValueError, match="1001"):
            a.build([a.render(event())] * 1001)


class TestClassify:
    def test_events_received_is_ok(self):
        """Meta's success answer {"events_received": n} is ok."""
        body = orjson.dumps({"events_received": 2, "messages": [], "fbtrace_id": "x"})
        outcome = adapter().classify(Answer(200, {}, body))
        assert (outcome.verdict, outcome.reason) == (Verdict.OK, "http 200 events_received 2")

    def test_2xx_without_count_is_retried(self):
        """A 2xx that is not Meta's success shape is retried (Meta deduplicates on event_id)."""
        assert adapter().classify(Answer(200, {}, b"<html>")).verdict is Verdict.RETRY

    @pytest.mark.parametrize("code", [100, 190, 102, 10, 200, 3])
    def test_request_errors_are_final(self, code):
        """Invalid parameter, bad token and permission errors need a human: final."""
        outcome = adapter().classify(graph_error(code))
        assert outcome.verdict is Verdict.FINAL
        assert outcome.reason.startswith(f"http 400 code {code}")

    @pytest.mark.parametrize(
        "code, subcode, whole",
        [(190, None, True), (102, None, True), (10, None, True), (200, None, True), (100, 33, True), (100, None, False)],
    )
    def test_errors_about_the_token_permissions_or_pixel_are_not_worth_splitting_a_batch_for(self, code, subcode, whole):
        """A bad token refuses each event alone just the same; a bad parameter (100) may be one event's."""
        extra = {"error_subcode": subcode} if subcode is not None else {}
        assert adapter().classify(graph_error(code, **extra)).whole is whole

    @pytest.mark.parametrize("code", [1, 2, 4, 17, 32, 341, 368, 613])
    def test_transient_and_throttling_errors_retry(self, code):
        """Graph codes for temporary outages (1, 2) and throttling (4, 17, 32, 341, 368, 613) retry."""
        assert adapter().classify(graph_error(code)).verdict is Verdict.RETRY

    def test_is_transient_flag_retries(self):
        """An error Graph marks is_transient retries whatever its code."""
        assert adapter().classify(graph_error(100, is_transient=True)).verdict is Verdict.RETRY

    def test_subcode_is_in_reason(self):
        """The reason names code and subcode so a dead letter says what Meta refused."""
        outcome = adapter().classify(graph_error(100, error_subcode=33))
        assert outcome.reason.startswith("http 400 code 100 subcode 33")

    def test_5xx_retries(self):
        """HTTP 5xx retries even with an error envelope."""
        assert adapter().classify(graph_error(100, status=500)).verdict is Verdict.RETRY

    def test_429_retries_after_header(self):
        """HTTP 429 retries after the Retry-After seconds."""
        outcome = adapter().classify(Answer(429, {"Retry-After": "30"}, b""))
        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 30.0)

    def test_timeout_retries(self):
        """No answer at all (timeout) retries."""
        assert adapter().classify(Answer(None, error="timeout")).verdict is Verdict.RETRY

    def test_plain_400_is_final(self):
        """A 400 without a Graph envelope is final."""
        assert adapter().classify(Answer(400, {}, b"bad")).verdict is Verdict.FINAL
