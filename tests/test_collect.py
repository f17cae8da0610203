"""The hit format: what the collection endpoint accepts and how it refuses the rest."""

from __future__ import annotations

import orjson
import pytest

from proxy.collect import HitError, hit_from_query, parse_hit
from proxy.settings import Settings

NOW = 1_764_000_000.0
S = Settings()


def body(**top: object) -> bytes:
    doc = {"events": [{"name": "page_view", "id": "e1", "time": NOW * 1000}], **top}
    return orjson.dumps(doc)


def refused(raw: bytes) -> HitError:
    with pytest.raises(HitError) as info:
        parse_hit(raw, S, NOW)
    return info.value


def test_minimal_hit_gives_one_event_with_client_time():
    """An event's time is the client's milliseconds, read as unix seconds."""
    hit = parse_hit(body(), S, NOW)
    assert [(e.name, e.id, e.time) for e in hit.events] == [("page_view", "e1", NOW)]


def test_missing_id_is_minted_by_the_server():
    """An event without an id still gets a dedup key."""
    hit = parse_hit(b'{"events":[{"name":"page_view"}]}', S, NOW)
    assert len(hit.events[0].id) == 32


def test_client_time_far_from_server_time_is_replaced():
    """A clock more than the allowed skew off is replaced by server time."""
    raw = orjson.dumps({"events": [{"name": "x", "time": (NOW - 3 * 86400) * 1000}]})
    assert parse_hit(raw, S, NOW).events[0].time == NOW


def test_an_integer_param_past_64_bits_is_kept_as_the_double_javascript_holds():
    """quantity 18446744073709551615 (orjson reads it as an int) is 2**64 as a float, which adapters can multiply."""
    raw = b'{"events":[{"name":"purchase","params":{"quantity":18446744073709551615,"n":[-9223372036854775809]}}]}'
    params = parse_hit(raw, S, NOW).events[0].params
    assert (params["quantity"], params["n"]) == (1.8446744073709552e19, [-9.223372036854776e18])


def test_user_consent_and_click_ids_are_read():
    """User data, consent and click IDs arrive as sent, click IDs unchanged in case."""
    hit = parse_hit(
        body(user={"email": "A@B.co"}, consent={"ads": False}, click_ids={"fbclid": "IwAR0aBc-_X", "other": "x"}),
        S,
        NOW,
    )
    assert (hit.user.email, hit.consent, hit.click_ids) == ("A@B.co", {"ads": False}, {"fbclid": "IwAR0aBc-_X"})


@pytest.mark.parametrize(
    "raw, status, where",
    [
        (b"", 400, "body"),
        (b"{", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"events": []}', 400, "events"),
        (b'{"events": [1]}', 400, "events[0]"),
        (b'{"events": [{"name": 5}]}', 400, "events[0].name"),
        (b'{"events": [{"name": "a b"}]}', 400, "events[0].name"),
        (b'{"events": [{"name": "x", "id": "../../etc"}]}', 400, "events[0].id"),
        (b'{"events": [{"name": "x", "time": "yesterday"}]}', 400, "events[0].time"),
        (b'{"events": [{"name": "x", "time": true}]}', 400, "events[0].time"),
        (b'{"events": [{"name": "x", "params": []}]}', 400, "events[0].params"),
        (b'{"events": [{"name": "x", "page": {"url": 3}}]}', 400, "events[0].page.url"),
        (b'{"events": [{"name": "x"}], "consent": {"ads": "yes"}}', 400, "consent.ads"),
        (b'{"events": [{"name": "x"}], "consent": {"everything": true}}', 400, "consent"),
        (b'{"events": [{"name": "x"}], "user": {"ssn": "1"}}', 400, "user"),
        (b'{"events": [{"name": "x"}], "user": {"email": 7}}', 400, "user.email"),
        (b'{"events": [{"name": "x"}], "click_ids": {"fbclid": ""}}', 400, "click_ids.fbclid"),
        (b'{"events": [{"name": "x", "time": 1e999}]}', 400, "not valid JSON"),
    ],
)
def test_malformed_hits_are_refused_with_the_failing_path(raw, status, where):
    """Each malformed hit names where it is wrong and gets a 4xx."""
    err = refused(raw)
    assert err.status == status and where in str(err)


def test_invalid_utf8_is_refused():
    """Bytes that are not UTF-8 are a 400, not a crash."""
    assert refused(b'{"events": [{"name": "x", "page": {"title": "\xff\xfe"}}]}').status == 400


def test_lone_surrogate_escape_is_refused():
    """A JSON escape of a lone UTF-16 surrogate cannot become text: 400."""
    assert refused(b'{"events": [{"name": "x", "page": {"title": "\\ud800"}}]}').status == 400


def test_body_over_the_limit_is_413():
    """A body larger than max_body_bytes is refused as too large."""
    assert refused(b" " * (S.max_body_bytes + 1)).status == 413


def test_too_many_events_is_413():
    """More events than max_events_per_hit in one hit are refused."""
    raw = orjson.dumps({"events": [{"name": "x"}] * (S.max_events_per_hit + 1)})
    assert refused(raw).status == 413


def test_huge_string_is_413_and_named():
    """A string over max_string_chars is refused, naming the field."""
    raw = orjson.dumps({"events": [{"name": "x", "params": {"q": "a" * (S.max_string_chars + 1)}}]})
    err = refused(raw)
    assert err.status == 413 and "events[0].params.'q'" in str(err)


def test_deep_nesting_is_refused():
    """Params nested beyond the depth limit are refused."""
    raw = orjson.dumps({"events": [{"name": "x", "params": {"a": {"b": {"c": {"d": {"e": 1}}}}}}]})
    assert "nested deeper" in str(refused(raw))


def test_pii_value_is_never_echoed_in_the_error():
    """The error for a bad user field does not repeat the value (it may be PII)."""
    raw = orjson.dumps({"events": [{"name": "x"}], "user": {"email": "secret@example.com" * 40}})
    assert "secret@example.com" not in str(refused(raw))


def test_noscript_pixel_takes_the_page_from_referer():
    """GET ?n=page_view makes one event whose page is the Referer."""
    hit = hit_from_query({"n": "page_view"}, "https://shop.example/a", S, NOW)
    assert [(e.name, e.page.url) for e in hit.events] == [("page_view", "https://shop.example/a")]


def test_image_fallback_carries_a_whole_hit_in_d():
    """GET ?d=<json> is parsed like a POST body."""
    hit = hit_from_query({"d": body().decode()}, "", S, NOW)
    assert hit.events[0].id == "e1"


def test_get_without_d_or_n_is_refused():
    """A GET with neither form is a 400 that says what is expected."""
    with pytest.raises(HitError, match="expected 'd'"):
        hit_from_query({}, "", S, NOW)


def test_event_name_with_a_trailing_newline_is_refused():
    """'purchase\\n' is not 'purchase': refused, not routed as something else."""
    assert refused(b'{"events": [{"name": "purchase\\n"}]}').status == 400


def test_event_id_with_a_trailing_newline_is_refused():
    """An id ending in a newline is refused."""
    assert "events[0].id" in str(refused(b'{"events": [{"name": "x", "id": "a\\n"}]}'))


def test_overlong_param_key_is_refused():
    """A parameter name longer than 128 characters is refused."""
    raw = orjson.dumps({"events": [{"name": "x", "params": {"k" * 129: 1}}]})
    assert refused(raw).status == 413
