"""The server events API: API keys, bearer authentication, and what a batch may hold."""

from __future__ import annotations

import copy
import hmac
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import events_api
from proxy.collect import HitError
from proxy.enrich import Enricher
from proxy.events_api import (
    MAX_AGE_SECS,
    MAX_FUTURE_SECS,
    ServerEvent,
    authenticate,
    parse_api_keys,
    parse_event_time,
    parse_server_events,
    to_events,
)
from proxy.model import event_view
from proxy.settings import Settings, SettingsError

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z
S = Settings()
ENRICHER = Enricher(S)
KEY_CRM = "crm-key-0123456789abcdef"
KEY_APP = "app-key-fedcba9876543210"
KEYS = {"crm": KEY_CRM, "app": KEY_APP, "till": "till-key-00000000000000"}
# A real iPhone Safari user agent (iOS 17.0), as ua-parser's own test corpus has them.
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def minimal(**fields: Any) -> dict[str, Any]:
    return {"name": "purchase", "id": "ord-1", "time": 1_763_632_800, "action_source": "physical_store", **fields}


def batch(*events: dict[str, Any]) -> bytes:
    return orjson.dumps({"events": list(events) or [minimal()]})


def refused(raw: bytes) -> HitError:
    with pytest.raises(HitError) as info:
        parse_server_events(raw, "crm", S, NOW)
    return info.value


# -- parse_api_keys ---------------------------------------------------------


def test_api_keys_setting_maps_each_source_to_its_key():
    """``source:key`` entries, with spaces and a trailing comma, give a source-to-key map."""
    keys = parse_api_keys(f" crm:{KEY_CRM} , app : {KEY_APP},")

    assert keys == {"crm": KEY_CRM, "app": KEY_APP}


def test_api_keys_setting_empty_means_no_keys():
    """An empty setting configures no source (the API accepts nobody)."""
    assert parse_api_keys("") == {}


def test_api_key_of_16_characters_is_accepted():
    """Sixteen characters is the shortest key accepted."""
    assert parse_api_keys("crm:" + "k" * 16) == {"crm": "k" * 16}


@pytest.mark.parametrize(
    "raw, expected",
    [
        (f"crm:{KEY_CRM},crm:{KEY_APP}", "source 'crm': given twice"),
        ("crm:", "source 'crm': the key is empty"),
        ("crm:" + "k" * 15, "source 'crm': the key has 15 characters; at least 16"),
        (f"crm:{KEY_CRM},{KEY_APP}", "entry 2: expected source:key"),
        (f"CRM:{KEY_CRM}", "entry 1: source 'CRM' must be a lower-case letter"),
        (f"browser:{KEY_CRM}", "source 'browser': reserved"),
        (f"crm:{KEY_CRM},app:{KEY_CRM}", "sources 'crm' and 'app': same key"),
        ("crm:" + "k" * 15 + "!", "source 'crm': the key must be at most 512 characters of"),
    ],
    ids=["duplicate-source", "empty-key", "short-key", "no-colon", "bad-name", "reserved", "shared-key", "bad-chars"],
)
def test_api_keys_setting_refuses_bad_entries_without_showing_keys(raw, expected):
    """Each bad entry is a SettingsError naming the setting and source, and never the key."""
    with pytest.raises(SettingsError) as info:
        parse_api_keys(raw)

    message = str(info.value)
    assert message.startswith("TAGRELAY_API_KEYS ")
    assert expected in message
    assert KEY_CRM not in message and KEY_APP not in message and "k" * 15 not in message


# -- authenticate -----------------------------------------------------------


def test_bearer_key_names_its_source():
    """``Authorization: Bearer <key>`` authenticates as the source that key belongs to."""
    assert authenticate(f"Bearer {KEY_APP}", KEYS) == "app"


def test_bearer_scheme_is_case_insensitive():
    """The auth scheme is case-insensitive (RFC 7235), the key is not."""
    assert authenticate(f"bearer {KEY_CRM}", KEYS) == "crm"
    assert authenticate(f"Bearer {KEY_CRM.upper()}", KEYS) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"Basic {KEY_CRM}",
        "Bearer",
        "Bearer ",
        f"Bearer {KEY_CRM}x",
        f"Bearer {KEY_CRM} extra",
        "Bearer é" * 3,
    ],
    ids=["absent", "empty", "basic-scheme", "no-token", "blank-token", "wrong-key", "two-tokens", "non-ascii"],
)
def test_anything_but_a_configured_bearer_key_is_refused(header):
    """A missing, malformed or unknown credential authenticates nobody."""
    assert authenticate(header, KEYS) is None


def test_no_configured_keys_authenticate_nobody():
    """With no keys configured, even a well-formed bearer token is refused."""
    assert authenticate(f"Bearer {KEY_CRM}", {}) is None


@pytest.mark.parametrize("presented", [KEY_CRM, KEY_APP, "till-key-00000000000000", "unknown-key-000000000"])
def test_every_key_is_compared_whichever_matches(monkeypatch, presented):
    """The presented key is compared with all configured keys, on equal-length digests, match or not."""
    calls: list[tuple[int, int]] = []

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(events_api, "compare_digest", counting)

    authenticate(f"Bearer {presented}", KEYS)

    assert calls == [(32, 32)] * len(KEYS)


# -- parse_server_events: accepted ------------------------------------------


def test_minimal_event_is_stamped_with_the_authenticated_source():
    """Name, id, time and action_source are enough; the source comes from the key, not the body."""
    [event] = parse_server_events(batch(), "crm", S, NOW)

    assert event == ServerEvent(
        name="purchase", id="ord-1", time=1_763_632_800.0, action_source="physical_store", source="crm"
    )


@pytest.mark.parametrize(
    "when", ["2025-11-20T10:00:00Z", "2025-11-20T11:00:00+01:00", "2025-11-20 10:00:00.000+00:00", "1763632800"]
)
def test_iso_8601_times_with_a_zone_are_unix_seconds(when):
    """ISO 8601 with Z or an offset, or a string of digits, all give 2025-11-20T10:00:00Z = 1763632800."""
    [event] = parse_server_events(batch(minimal(time=when)), "crm", S, NOW)

    assert event.time == 1_763_632_800.0


def test_offline_conversion_sixty_days_old_keeps_its_time():
    """A time well in the past (an offline conversion) is kept, not replaced by server time."""
    when = NOW - 60 * 86400

    [event] = parse_server_events(batch(minimal(time=when)), "crm", S, NOW)

    assert event.time == when


def test_time_at_the_edges_of_the_window_is_accepted():
    """Exactly 90 days old and exactly the allowed skew ahead are both still accepted."""
    raw = batch(minimal(id="old", time=NOW - MAX_AGE_SECS), minimal(id="ahead", time=NOW + MAX_FUTURE_SECS))

    assert [e.time for e in parse_server_events(raw, "crm", S, NOW)] == [NOW - MAX_AGE_SECS, NOW + MAX_FUTURE_SECS]


def test_full_event_carries_every_field():
    """Page, user, user_id, params and context arrive as sent; the IP is normalised."""
    doc = minimal(
        action_source="website",
        page={"url": "https://shop.example.com/thanks", "referrer": "https://shop.example.com/cart", "title": "Thanks"},
        user={"email": "Anna@Example.com", "phone": "+49 30 1234567", "external_id": "c-9", "last_name": None},
        user_id="u-17",
        params={"value": 129.9, "currency": "EUR", "items": [{"item_id": "sku-1", "quantity": 2}]},
        context={
            "ip": "::ffff:81.2.69.160",
            "user_agent": IPHONE_UA,
            "consent": {"ads": True, "analytics": False},
            "click_ids": {"gclid": "Cj0KCQiA-test", "fbclid": "IwAR0aBc-_X"},
            "ids": {
                "fbp": "fb.1.1763632800000.1234567890",
                "ga_client_id": "1234567890.1763632800",
                "ga_session_id": "1763632800",
            },
        },
    )

    [event] = parse_server_events(batch(doc), "app", S, NOW)

    assert (event.page.url, event.page.referrer, event.page.title) == (
        "https://shop.example.com/thanks",
        "https://shop.example.com/cart",
        "Thanks",
    )
    assert event.user.present() == {"email": "Anna@Example.com", "phone": "+49 30 1234567", "external_id": "c-9"}
    assert event.user_id == "u-17"
    assert event.params == {"value": 129.9, "currency": "EUR", "items": [{"item_id": "sku-1", "quantity": 2}]}
    assert event.ip == "81.2.69.160"  # IPv4-mapped IPv6 is the IPv4 address
    assert event.user_agent == IPHONE_UA
    assert event.consent == {"ads": True, "analytics": False}
    assert event.click_ids == {"gclid": "Cj0KCQiA-test", "fbclid": "IwAR0aBc-_X"}
    assert event.ids == {
        "fbp": "fb.1.1763632800000.1234567890",
        "ga_client_id": "1234567890.1763632800",
        "ga_session_id": "1763632800",
    }


@pytest.mark.parametrize(
    "source",
    [
        "app",
        "physical_store",
        "phone_call",
        "email",
        "chat",
        "system_generated",
        "other",
        "website",
        "business_messaging",
    ],
)
def test_every_meta_action_source_is_accepted(source):
    """The action_source vocabulary is Meta's list of values for the same field."""
    [event] = parse_server_events(batch(minimal(action_source=source)), "crm", S, NOW)

    assert event.action_source == source


def test_a_full_batch_is_accepted():
    """As many events as the per-hit limit allows fit in one request."""
    raw = batch(*(minimal(id=f"ord-{i}") for i in range(S.max_events_per_hit)))

    assert len(parse_server_events(raw, "crm", S, NOW)) == S.max_events_per_hit


def test_same_id_under_another_name_is_another_event():
    """Dedup is by name and id (as at Meta), so a lead and a purchase may share an order number."""
    raw = batch(minimal(name="generate_lead"), minimal(name="purchase"))

    assert [e.name for e in parse_server_events(raw, "crm", S, NOW)] == ["generate_lead", "purchase"]


# -- parse_server_events: refused -------------------------------------------


def with_field(path: str, value: Any) -> bytes:
    """A one-event batch with ``value`` set at the dotted ``path`` inside the event."""
    doc = copy.deepcopy(minimal())
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return batch(doc)


def without(key: str) -> bytes:
    doc = minimal()
    del doc[key]
    return batch(doc)


DEEP: Any = {"a": {"b": {"c": {"d": 1}}}}


@pytest.mark.parametrize(
    "raw, status, expected",
    [
        (b"x" * (S.max_body_bytes + 1), 413, "body: 65537 bytes is over the limit of 65536"),
        (b"  ", 400, "body: empty"),
        (b'{"events": [', 400, "body: not valid JSON"),
        (b"[]", 400, "body: must be a JSON object"),
        (b'{"events": [], "batch": 1}', 400, "body: unknown key 'batch'"),
        (b"{}", 400, "events: must be a non-empty list"),
        (b'{"events": []}', 400, "events: must be a non-empty list"),
        (
            orjson.dumps({"events": [minimal(id=f"e{i}") for i in range(51)]}),
            413,
            "events: 51 events is over the limit of 50",
        ),
        (b'{"events": [1]}', 400, "events[0]: must be an object"),
        (with_field("parms", {}), 400, "events[0]: unknown key 'parms'"),
        (without("name"), 400, "events[0].name: required"),
        (without("id"), 400, "events[0].id: required"),
        (without("time"), 400, "events[0].time: required"),
        (without("action_source"), 400, "events[0].action_source: required"),
        (with_field("name", "9lives"), 400, "events[0].name: not an event name"),
        (with_field("id", "order #1"), 400, "events[0].id: must be 1 to 64 characters"),
        (with_field("action_source", "store"), 400, "events[0].action_source: 'store' is not one of"),
        (with_field("time", True), 400, "events[0].time: must be unix seconds"),
        (with_field("time", "yesterday"), 400, "events[0].time: 'yesterday' is neither unix seconds nor an ISO 8601"),
        (with_field("page", "https://x"), 400, "events[0].page: must be an object"),
        (with_field("page.path", "/"), 400, "events[0].page: unknown key 'path'"),
        (with_field("page.url", "u" * 2049), 413, "events[0].page.url: 2049 characters is over the limit of 2048"),
        (with_field("user", []), 400, "events[0].user: must be an object"),
        (with_field("user_id", ""), 400, "events[0].user_id: must be a printable string of 1 to 512"),
        (with_field("user_id", "  "), 400, "events[0].user_id: blank; leave user_id out when the user is not known"),
        (with_field("params", [1]), 400, "events[0].params: must be an object"),
        (
            with_field("params", {f"p{i}": i for i in range(101)}),
            413,
            "events[0].params: 101 parameters is over the limit of 100",
        ),
        (
            with_field("params", {"k" * 129: 1}),
            413,
            "events[0].params: a key of 129 characters is over the limit of 128",
        ),
        (with_field("params.x", DEEP), 400, "events[0].params.'x'.'a'.'b'.'c': nested deeper than 4 levels"),
        (with_field("context", "ctx"), 400, "events[0].context: must be an object"),
        (with_field("context.cookies", {}), 400, "events[0].context: unknown key 'cookies'"),
        (with_field("context.user_agent", "Mozilla\n"), 400, "events[0].context.user_agent: must be printable"),
        (with_field("context.user_agent", "M" * 2049), 413, "events[0].context.user_agent: 2049 characters is over"),
        (with_field("context.consent", ["ads"]), 400, "events[0].context.consent: must be an object"),
        (with_field("context.consent.marketing", True), 400, "events[0].context.consent.'marketing': unknown purpose"),
        (with_field("context.consent.ads", "yes"), 400, "events[0].context.consent.ads: must be true or false"),
        (
            with_field("context.click_ids.utm_source", "x"),
            400,
            "events[0].context.click_ids.'utm_source': unknown click ID",
        ),
        (
            with_field("context.click_ids.gclid", ""),
            400,
            "events[0].context.click_ids.gclid: must be a printable string",
        ),
        (with_field("context.ids.session", "1"), 400, "events[0].context.ids.'session': unknown identifier"),
        (with_field("context.ids.fbc", "fb.1.abc.IwAR0"), 400, "events[0].context.ids.fbc: not a Meta cookie value"),
        (
            with_field("context.ids.ga_session_id", "17636x"),
            400,
            "events[0].context.ids.ga_session_id: must be 1 to 20 digits",
        ),
        (with_field("context.ids.ttp", "has space"), 400, "events[0].context.ids.ttp: must be 1 to 256 visible ASCII"),
    ],
    ids=[
        "body-too-big",
        "body-empty",
        "body-not-json",
        "body-not-object",
        "body-unknown-key",
        "events-missing",
        "events-empty",
        "too-many-events",
        "event-not-object",
        "event-unknown-key",
        "name-missing",
        "id-missing",
        "time-missing",
        "action-source-missing",
        "bad-name",
        "bad-id",
        "unknown-action-source",
        "time-bool",
        "time-words",
        "page-not-object",
        "page-unknown-key",
        "page-url-too-long",
        "user-not-object",
        "user-id-empty",
        "user-id-blank",
        "params-not-object",
        "too-many-params",
        "param-key-too-long",
        "params-too-deep",
        "context-not-object",
        "context-unknown-key",
        "user-agent-control-char",
        "user-agent-too-long",
        "consent-not-object",
        "consent-unknown-purpose",
        "consent-not-bool",
        "click-id-unknown",
        "click-id-empty",
        "id-unknown",
        "fbc-malformed",
        "ga-session-id-not-digits",
        "ttp-with-space",
    ],
)
def test_bad_batch_is_refused_naming_the_place(raw, status, expected):
    """Every malformed batch is a HitError with a 4xx status whose message starts at the failing place."""
    error = refused(raw)

    assert error.status == status
    assert str(error).startswith(expected)


def test_problem_in_a_later_event_names_its_index():
    """The place of a problem is the index of the event that has it."""
    error = refused(batch(minimal(id="a"), minimal(id="b", name="")))

    assert str(error).startswith("events[1].name:")


def test_time_in_milliseconds_is_refused_with_a_hint():
    """A millisecond timestamp (as the browser collector sends) is refused, saying so, and names the event."""
    error = refused(batch(minimal(time=1_763_632_800_000)))

    assert str(error) == "events[0].time: 1763632800000 looks like milliseconds; send unix seconds (event 'ord-1')"


def test_time_without_a_zone_is_refused():
    """An ISO time without Z or an offset could be any zone, so it is refused, naming the event."""
    error = refused(batch(minimal(time="2025-11-20T10:00:00")))

    assert str(error) == (
        "events[0].time: '2025-11-20T10:00:00' has no time zone; add Z or an offset such as +01:00 (event 'ord-1')"
    )


def test_time_beyond_the_clock_skew_is_refused():
    """An event more than the allowed skew in the future is refused, naming the event."""
    error = refused(batch(minimal(time=int(NOW) + MAX_FUTURE_SECS + 1)))

    assert str(error) == (
        "events[0].time: 1764000601 is 601 s in the future; at most 600 s of clock skew is accepted (event 'ord-1')"
    )


def test_time_older_than_ninety_days_is_refused():
    """An event more than 90 days old is refused, naming the event."""
    error = refused(batch(minimal(time="2025-08-20T00:00:00Z")))

    assert str(error) == (
        "events[0].time: '2025-08-20T00:00:00Z' is 96 days old; events older than 90 days are refused (event 'ord-1')"
    )


def test_same_event_twice_in_a_batch_is_refused():
    """The same name and id twice in one batch is refused at the second, naming the first."""
    error = refused(batch(minimal(), minimal(id="ord-2"), minimal()))

    assert str(error).startswith("events[2].id: purchase 'ord-1' is already events[0]")


@pytest.mark.parametrize(
    "path, value",
    [
        ("user.email", "x" * 513 + "@example.com"),
        ("user.anna@example.com", "anna@example.com"),
        ("user_id", "anna@example.com\n"),
        ("context.ip", "anna@example.com"),
    ],
    ids=["long-email", "pii-as-key", "pii-user-id", "pii-as-ip"],
)
def test_refusals_never_echo_personal_data(path, value):
    """A refused user field, user ID or IP is named by its place, and its value is not repeated."""
    error = refused(with_field(path, value))

    assert "anna@example.com" not in str(error) and "xxxx" not in str(error)


def test_invalid_ip_is_refused():
    """A context IP that is not an address is refused by its place."""
    assert str(refused(with_field("context.ip", "10.0.0.256"))) == "events[0].context.ip: not an IPv4 or IPv6 address"


# -- parse_event_time -------------------------------------------------------


def test_event_time_accepts_a_fractional_unix_second():
    """Sub-second unix times are kept (vendors that want integers round them)."""
    assert parse_event_time(1_763_632_800.25, "t", NOW) == 1_763_632_800.25


def test_event_time_refuses_nan_or_infinity():
    """A non-finite number (Python callers; JSON has none) is refused."""
    with pytest.raises(HitError, match="t: must be a finite number"):
        parse_event_time(float("inf"), "t", NOW)


# -- to_events and to_wire --------------------------------------------------


def test_server_events_are_enriched_from_their_own_user_agent_and_ip():
    """Each event's own user agent is parsed and its IP kept; consent, IDs and source carry over."""
    doc = minimal(
        context={"ip": "81.2.69.160", "user_agent": IPHONE_UA, "consent": {"ads": True}, "ids": {"visitor_id": "v1"}}
    )
    items = parse_server_events(batch(doc), "app", S, NOW)

    [event] = to_events(items, Enricher(S))

    assert (event.source, event.action_source, event.context.ip) == ("app", "physical_store", "81.2.69.160")
    assert (event.context.ua.os, event.context.ua.os_version, event.context.ua.category) == ("iOS", "17.0", "mobile")
    assert (event.context.consent, event.context.ids) == ({"ads": True}, {"visitor_id": "v1"})


def test_server_event_without_user_agent_is_not_a_bot():
    """A CRM event has no user agent; routes see no bot, unlike for a browser hit's empty one."""
    [event] = to_events(parse_server_events(batch(), "crm", S, NOW), ENRICHER)

    assert (event_view(event)["bot"], event.context.ip) == (False, "")


def test_server_event_without_user_agent_has_no_device_category():
    """No user agent, no device: the category is empty, not the 'desktop' a parsed browser gets."""
    [event] = to_events(parse_server_events(batch(), "crm", S, NOW), ENRICHER)

    assert event_view(event)["ua"]["category"] == ""


def test_server_event_is_not_judged_by_missing_browser_headers():
    """A real phone's user agent from a back end is no bot, though the request has no Accept headers."""
    [event] = to_events(parse_server_events(batch(minimal(context={"user_agent": IPHONE_UA})), "app", S, NOW), ENRICHER)

    assert event_view(event)["bot"] is False


def test_crawler_user_agent_from_a_back_end_is_still_a_bot():
    """The user agent's own verdict stands: a crawler's UA passed on by a back end is a bot."""
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    [event] = to_events(parse_server_events(batch(minimal(context={"user_agent": googlebot})), "app", S, NOW), ENRICHER)

    assert event_view(event)["bot"] is True


def test_server_event_ip_in_a_trusted_proxy_range_is_kept():
    """The given IP is the person's: trusted-proxy settings (which read forwarding headers) do not change it."""
    settings = Settings.from_env({}, trusted_proxies=["10.0.0.0/8"])
    items = parse_server_events(batch(minimal(context={"ip": "10.1.2.3"})), "crm", settings, NOW)

    [event] = to_events(items, Enricher(settings))

    assert event.context.ip == "10.1.2.3"


def test_wire_form_parses_back_to_the_same_event():
    """``to_wire`` writes the API's JSON, so an import can be posted and arrive unchanged."""
    doc = minimal(
        page={"url": "https://shop.example.com/"},
        user={"email": "anna@example.com"},
        user_id="u-1",
        params={"value": 5.0},
        context={
            "ip": "81.2.69.160",
            "consent": {"ads": False},
            "click_ids": {"gclid": "g"},
            "ids": {"fbc": "fb.1.1763632800000.IwAR0"},
        },
    )
    [event] = parse_server_events(batch(doc), "crm", S, NOW)

    assert parse_server_events(batch(event.to_wire()), "crm", S, NOW) == [event]


def test_far_future_iso_time_is_refused_as_future_not_as_milliseconds():
    """Only numbers get the milliseconds hint; an ISO time in year 9999 is simply in the future."""
    with pytest.raises(HitError, match=r"^t: '9999-12-31T00:00:00Z' is \d+ s in the future"):
        parse_event_time("9999-12-31T00:00:00Z", "t", NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_FULL = minimal(
    page={"url": "u"},
    user={"email": "e"},
    user_id="u",
    params={"value": 1, "items": [{"a": 1}]},
    context={
        "ip": "1.2.3.4",
        "user_agent": "M",
        "consent": {"ads": True},
        "click_ids": {"gclid": "g"},
        "ids": {"ttp": "t"},
    },
)
_PLACES = [
    ("name",), ("id",), ("time",), ("action_source",), ("page",), ("page", "url"), ("user",), ("user", "email"),
    ("user_id",), ("params",), ("params", "items"), ("context",), ("context", "ip"), ("context", "user_agent"),
    ("context", "consent"), ("context", "consent", "ads"), ("context", "click_ids"), ("context", "click_ids", "gclid"),
    ("context", "ids"), ("context", "ids", "ttp"),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(place=st.sampled_from(_PLACES), value=_JSON)
def test_any_value_anywhere_is_accepted_or_refused_never_a_crash(place, value):
    """Whatever JSON stands at any place of an event, the outcome is events or a 4xx HitError."""
    doc = copy.deepcopy(_FULL)
    node = doc
    for part in place[:-1]:
        node = node[part]
    node[place[-1]] = value

    try:
        to_events(parse_server_events(batch(doc), "crm", S, NOW), ENRICHER)
    except HitError as exc:
        assert exc.status in (400, 413)
