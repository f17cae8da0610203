"""GA4 (Measurement Protocol): settings, rendering within GA's limits, batching, building, classifying.

Expected values come from Google's "Measurement Protocol reference", "Send
Measurement Protocol events" (Limitations, Override timestamp) and "Validate
events" pages, cited per test.
"""

from __future__ import annotations

import time

import orjson
import pytest

from proxy.model import Context, Event, Geo, Page, UAInfo
from proxy.vendors import ADAPTERS
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.ga4 import GA4, client_id_from_cookie

SECRET = "mp-secret-value"
SETTINGS = {"measurement_id": "G-ABC123DEF4", "api_secret": SECRET}
CHROME = UAInfo(browser="Chrome", browser_version="131.0.0", os="Android", os_version="14",
                device_brand="Google", device_model="Pixel 9 Pro", category="mobile")  # fmt: skip


def adapter(**over) -> GA4:
    return GA4("ga4", {**SETTINGS, **over})


def event(name="purchase", *, params=None, ids=None, **ctx) -> Event:
    context = Context(
        ip=ctx.pop("ip", "203.0.113.9"),
        user_agent=ctx.pop("user_agent", "Mozilla/5.0 (Linux; Android 14; Pixel 9 Pro)"),
        ua=ctx.pop("ua", CHROME),
        geo=ctx.pop("geo", None),
        language=ctx.pop("language", "en-US"),
        screen=ctx.pop("screen", "1080x2400"),
        consent=ctx.pop("consent", {}),
        ids=ids if ids is not None else {"ga_client_id": "1234567890.1700000000", "ga_session_id": "1700000100"},
    )
    return Event(
        name=name,
        id="e1",
        time=ctx.pop("time", time.time() - 10),
        page=Page("https://shop.example.com/", "https://ref.example.org/", "Shop"),
        context=context,
        params=params or {},
        user_id=ctx.pop("user_id", None),
    )


def params_of(payload):
    return payload["events"][0]["params"]


class TestSettings:
    def test_defaults(self):
        """Without endpoint the adapter sends to www.google-analytics.com, not in validate mode."""
        a = adapter()
        assert (a.endpoint, a.validate) == ("https://www.google-analytics.com", False)

    def test_registered_as_ga4(self):
        """Rule files name this adapter ``ga4``."""
        assert ADAPTERS["ga4"] is GA4

    def test_every_problem_reported_at_once(self):
        """A UA- ID, a missing secret, a non-bool validate and a bad endpoint are reported together."""
        with pytest.raises(ConfigError) as err:
            GA4("ga4", {"measurement_id": "UA-1234-1", "validate": "yes", "endpoint": "www.google-analytics.com"})
        assert [k for k, _ in err.value.problems] == ["measurement_id", "api_secret", "validate", "endpoint"]

    def test_eu_endpoint_is_accepted(self):
        """region1.google-analytics.com (EU collection) can be set as endpoint."""
        req = adapter(endpoint="https://region1.google-analytics.com").build([adapter().render(event())])
        assert req.url.startswith("https://region1.google-analytics.com/mp/collect?")

    def test_api_secret_is_secret(self):
        """api_secret is declared secret so it never gets printed."""
        assert GA4.secret_keys == ("api_secret",)


class TestVendorLimits:
    def test_25_events_per_request(self):
        """Google: "Requests can have a maximum of 25 events"."""
        assert GA4.max_batch == 25

    def test_backdating_limit_is_72_hours(self):
        """Google: "Events can be backdated up to 72 hours"."""
        assert GA4.max_age_secs == 72 * 3600


class TestClientId:
    def test_ga_cookie_loses_its_prefix(self):
        """_ga=GA1.1.1234567890.1700000000 gives client_id 1234567890.1700000000."""
        assert client_id_from_cookie("GA1.1.1234567890.1700000000") == "1234567890.1700000000"

    def test_bare_client_id_is_kept(self):
        """A client ID without the GA1.n. prefix is used as it is."""
        assert client_id_from_cookie("1234567890.1700000000") == "1234567890.1700000000"

    def test_render_uses_ga_client_id(self):
        """client_id comes from context.ids['ga_client_id'], cookie prefix removed."""
        out = adapter().render(event(ids={"ga_client_id": "GA1.2.55.1700000000"}))
        assert out["client_id"] == "55.1700000000"

    def test_missing_client_id_is_a_render_error(self):
        """A web stream needs client_id; without one the event cannot be sent."""
        with pytest.raises(RenderError, match="client id"):
            adapter().render(event(ids={}))

    def test_malformed_client_id_is_a_render_error(self):
        """A client ID that is neither a _ga cookie nor '<n>.<n>' is refused with its value named."""
        with pytest.raises(RenderError, match="abc"):
            adapter().render(event(ids={"ga_client_id": "abc"}))


class TestRequestFields:
    def test_user_location_from_geo(self):
        """Geo becomes user_location: city, ISO country, ISO 3166-2 region ("US-CA"), M49 continent."""
        out = adapter().render(event(geo=Geo(country="US", region="CA", city="Mountain View", continent="NA")))
        assert out["user_location"] == {"city": "Mountain View", "country_id": "US", "region_id": "US-CA", "continent_id": "019"}

    @pytest.mark.parametrize(("maxmind", "m49"), [("EU", "150"), ("AS", "142"), ("AF", "002"), ("OC", "009"), ("SA", "019")])
    def test_continent_codes_are_m49(self, maxmind, m49):
        """Continents use UN M49 codes (Europe 150, Asia 142, Africa 002, Oceania 009, Americas 019)."""
        out = adapter().render(event(geo=Geo(country="XX", continent=maxmind)))
        assert out["user_location"]["continent_id"] == m49

    def test_ip_override_only_without_geo(self):
        """GA ignores ip_override when user_location is sent, so the IP goes only when geo is unknown."""
        with_geo = adapter().render(event(geo=Geo(country="DE")))
        without_geo = adapter().render(event(geo=None))
        assert "ip_override" not in with_geo
        assert without_geo["ip_override"] == "203.0.113.9"

    def test_device_from_parsed_user_agent(self):
        """A parsed UA fills device: category, language, screen, OS, model, brand, browser."""
        out = adapter().render(event())
        assert out["device"] == {
            "category": "mobile",
            "language": "en-US",
            "screen_resolution": "1080x2400",
            "operating_system": "Android",
            "operating_system_version": "14",
            "model": "Pixel 9 Pro",
            "brand": "Google",
            "browser": "Chrome",
            "browser_version": "131.0.0",
        }
        assert "user_agent" not in out

    def test_raw_user_agent_when_unparsed(self):
        """When our parser knew nothing, the raw user_agent goes instead (GA ignores it next to device)."""
        out = adapter().render(event(ua=UAInfo(), user_agent="SomeNewBrowser/1.0"))
        assert out["user_agent"] == "SomeNewBrowser/1.0"
        assert "device" not in out

    def test_user_id(self):
        """user_id is sent when the event has one."""
        assert adapter().render(event(user_id="u-42"))["user_id"] == "u-42"

    def test_consent_from_marketing_purpose(self):
        """Marketing consent gives ad_user_data and ad_personalization GRANTED or DENIED."""
        granted = adapter().render(event(consent={"marketing": True}))["consent"]
        denied = adapter().render(event(consent={"marketing": False, "ad_personalization": True}))["consent"]
        assert granted == {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}
        assert denied == {"ad_user_data": "DENIED", "ad_personalization": "GRANTED"}

    def test_no_consent_signal_sends_no_consent(self):
        """Without a consent signal no consent field goes (GA then uses the online consent)."""
        assert "consent" not in adapter().render(event(consent={}))

    def test_timestamp_is_per_event_micros(self):
        """The event's time goes as events[].timestamp_micros in microseconds."""
        out = adapter().render(event(time=1_700_000_000.5))
        assert out["events"][0]["timestamp_micros"] == 1_700_000_000_500_000
        assert "timestamp_micros" not in out

    def test_future_time_is_sent_as_now(self):
        """A time ahead of the server clock is sent as now (timestamps are for the past)."""
        out = adapter().render(event(time=time.time() + 3600))
        assert out["events"][0]["timestamp_micros"] <= time.time() * 1_000_000


class TestEventParams:
    def test_session_engagement_and_page(self):
        """session_id, engagement_time_msec (default 1) and page_location/referrer/title are params."""
        params = params_of(adapter().render(event()))
        assert params == {
            "session_id": "1700000100",
            "engagement_time_msec": 1,
            "event_id": "e1",
            "page_location": "https://shop.example.com/",
            "page_referrer": "https://ref.example.org/",
            "page_title": "Shop",
        }

    def test_given_engagement_time_is_kept(self):
        """An engagement_time_msec from the event is used instead of the default."""
        assert params_of(adapter().render(event(params={"engagement_time_msec": 2500})))["engagement_time_msec"] == 2500

    @pytest.mark.parametrize("name", ["1st_purchase", "purchase-done", "a" * 41, "x y"])
    def test_invalid_event_name_is_a_render_error(self, name):
        """Names need 1-40 letters, digits or underscores, starting with a letter."""
        with pytest.raises(RenderError, match="event name"):
            adapter().render(event(name))

    @pytest.mark.parametrize("name", ["session_start", "first_visit", "user_engagement", "screen_view", "in_app_purchase", "ad_impression", "firebase_x", "google_x", "ga_x"])
    def test_reserved_event_name_is_a_render_error(self, name):
        """Reserved names, app-stream-only names (screen_view, in_app_purchase, ad_impression) and Google prefixes are refused."""
        with pytest.raises(RenderError, match="reserved"):
            adapter().render(event(name))

    def test_app_background_is_not_reserved(self):
        """vendors.md lists app_background as reserved; Google's reference does not, so it is sent."""
        assert adapter().render(event("app_background"))["events"][0]["name"] == "app_background"

    def test_page_view_is_allowed(self):
        """page_view is not on the Measurement Protocol's reserved list."""
        assert adapter().render(event("page_view"))["events"][0]["name"] == "page_view"

    @pytest.mark.parametrize("name", ["firebase_conversion", "_private", "ga_thing", "google_thing", "firebase_thing", "gtag.config", "1abc", "a" * 41])
    def test_reserved_or_invalid_param_names_are_dropped(self, name):
        """Reserved names, reserved prefixes (_ firebase_ ga_ google_ gtag.) and invalid names are dropped."""
        params = params_of(adapter().render(event(params={name: "v", "plan": "pro"})))
        assert name not in params and params["plan"] == "pro"

    def test_string_values_are_cut_to_100_chars(self):
        """Parameter values longer than 100 characters are truncated to 100."""
        assert params_of(adapter().render(event(params={"coupon": "x" * 150})))["coupon"] == "x" * 100

    def test_at_most_25_params(self):
        """An event keeps at most 25 parameters, the built-in ones first."""
        params = params_of(adapter().render(event(params={f"p{i:02d}": i for i in range(40)})))
        assert len(params) == 25
        assert "session_id" in params and "page_location" in params

    def test_non_scalar_values_are_dropped(self):
        """Objects and lists other than items are not valid GA parameter values."""
        params = params_of(adapter().render(event(params={"extra": {"a": 1}, "tags": ["a"]})))
        assert "extra" not in params and "tags" not in params

    def test_items_capped_at_200(self):
        """At most 200 items go with an event."""
        items = [{"item_id": f"S{i}", "price": 1.0} for i in range(250)]
        assert len(params_of(adapter().render(event(params={"items": items})))["items"]) == 200

    def test_item_custom_params_capped_at_10(self):
        """An item keeps its standard params and at most 10 custom ones."""
        item = {"item_id": "S1", "item_name": "Tea", "price": 2.5, **{f"c{i:02d}": i for i in range(12)}}
        out = params_of(adapter().render(event(params={"items": [item]})))["items"][0]
        assert {"item_id", "item_name", "price"} <= set(out)
        assert len([k for k in out if k.startswith("c")]) == 10


class TestBatching:
    def test_same_client_and_session_share_a_key(self):
        """Two events of one client, session and context may share a request."""
        a = adapter()
        assert a.batch_key(a.render(event("purchase"))) == a.batch_key(a.render(event("page_view")))

    def test_other_client_gets_another_key(self):
        """Events of different clients never share a request."""
        a = adapter()
        other = event(ids={"ga_client_id": "999.1700000000", "ga_session_id": "1700000100"})
        assert a.batch_key(a.render(event())) != a.batch_key(a.render(other))

    def test_build_merges_events(self):
        """build sends the request fields once and every payload's events in order."""
        a = adapter()
        payloads = [a.render(event("view_item")), a.render(event("add_to_cart")), a.render(event("purchase"))]
        body = orjson.loads(a.build(payloads).body)
        assert [e["name"] for e in body["events"]] == ["view_item", "add_to_cart", "purchase"]
        assert body["client_id"] == "1234567890.1700000000"

    def test_build_refuses_mixed_clients(self):
        """Payloads with different request-level fields cannot be merged."""
        a = adapter()
        other = a.render(event(ids={"ga_client_id": "999.1700000000"}))
        with pytest.raises(ValueError, match="request-level"):
            a.build([a.render(event()), other])

    def test_build_refuses_26_events(self):
        """A request carries at most 25 events."""
        a = adapter()
        with pytest.raises(ValueError, match="26"):
            a.build([a.render(event())] * 26)

    def test_url_and_redaction(self):
        """POST /mp/collect?measurement_id=...&api_secret=...; the printable copy hides the secret."""
        req = adapter().build([adapter().render(event())])
        assert req.url == f"https://www.google-analytics.com/mp/collect?measurement_id=G-ABC123DEF4&api_secret={SECRET}"
        assert req.headers["Content-Type"] == "application/json"
        assert SECRET not in req.redacted().url

    def test_validate_mode_uses_debug_endpoint(self):
        """validate = true sends to /debug/mp/collect."""
        req = adapter(validate=True).build([adapter().render(event())])
        assert req.url.startswith("https://www.google-analytics.com/debug/mp/collect?")


class TestClassify:
    def test_2xx_is_ok_even_with_any_body(self):
        """/mp/collect answers 2xx even for invalid payloads, so 2xx is ok."""
        assert adapter().classify(Answer(204, {}, b"")).verdict is Verdict.OK

    def test_validation_messages_are_final_in_validate_mode(self):
        """In validate mode a non-empty validationMessages list is a final error naming the code."""
        body = orjson.dumps({"validationMessages": [{"fieldPath": "events", "description": "d", "validationCode": "NAME_RESERVED"}]})
        outcome = adapter(validate=True).classify(Answer(200, {}, body))
        assert outcome.verdict is Verdict.FINAL
        assert "NAME_RESERVED" in outcome.reason

    def test_empty_validation_messages_are_ok(self):
        """An empty validationMessages list means valid."""
        body = orjson.dumps({"validationMessages": []})
        assert adapter(validate=True).classify(Answer(200, {}, body)).verdict is Verdict.OK

    @pytest.mark.parametrize("status", [500, 503, 429])
    def test_5xx_and_429_retry(self, status):
        """Server errors and rate limiting retry."""
        assert adapter().classify(Answer(status, {}, b"")).verdict is Verdict.RETRY

    def test_timeout_retries(self):
        """No answer (timeout) retries."""
        assert adapter().classify(Answer(None, error="timeout")).verdict is Verdict.RETRY

    def test_other_4xx_is_final(self):
        """A 4xx means the request itself is wrong; Google says not to retry it."""
        assert adapter().classify(Answer(400, {}, b"")).verdict is Verdict.FINAL
