"""First-party identifiers: cookie domain, Meta _fbp/_fbc, GA _ga and session, visitor ID.

Cookie formats, the subdomain index and the appendix come from Meta's
Parameter Builder tests in ``tests/data/vectors/meta_fbc_fbp_param_builder.json``
(see the README there). tagrelay mints the legacy 4-part values (no appendix:
the appendix names Meta's SDK language and version), so the vectors' regexes
are checked with their appendix suffix removed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from proxy.enrich.ids import (
    FB_COOKIE_MAX_AGE_SECS,
    GA_SESSION_TIMEOUT_SECS,
    ID_COOKIE_MAX_AGE_SECS,
    SESSION_COOKIE,
    CookieSpec,
    build_fbc,
    cookie_domain,
    fbc_payload,
    ga_client_id,
    is_valid_fb_cookie,
    mint_fbp,
    mint_ga,
    new_visitor_id,
    resolve_ids,
    subdomain_index,
)

FB_VECTORS = json.loads(
    (
        Path(__file__).parent / "data" / "vectors" / "meta_fbc_fbp_param_builder.json"
    ).read_text("utf-8")
)
APPENDIX_CASES = [row for row in FB_VECTORS if row["field"] == "appendix"]
COOKIE_CASES = {row["case"]: row for row in FB_VECTORS if row["field"] == "_fbc/_fbp"}
NOW = 1_700_000_000.0
# RFC 6265 cookie-octet: what a Set-Cookie value may hold unquoted.
COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")


def _without_appendix(regex: str) -> str:
    """A vector regex for an appendixed value, turned into one for our 4-part value."""
    return re.sub(r"\\\.AQ[A-Za-z0-9_-]{6}(\$?)$", r"\1", regex)


def _by_name(specs: list[CookieSpec]) -> dict[str, CookieSpec]:
    return {spec.name: spec for spec in specs}


def _jar(specs: list[CookieSpec]) -> dict[str, str]:
    return {spec.name: spec.value for spec in specs}


# ---------------------------------------------------------------------------
# cookie_domain and subdomain_index


@pytest.mark.parametrize(
    ("host", "configured", "expected"),
    [
        ("t.shop.example.com", "shop.example.com", "shop.example.com"),
        ("t.shop.example.com", "", "example.com"),
        ("www.example.co.uk", "", "example.co.uk"),
        ("127.0.0.1", "", None),
        ("localhost", "", None),
        ("[::1]", "", None),
        ("[::1]:8080", "", None),
        ("example.com:8080", "", "example.com"),
        ("WWW.Example.COM.", "", "example.com"),
        ("intranet", "", None),
        ("co.uk", "", None),
        ("", "", None),
        ("bad host.example.com", "", None),
    ],
)
def test_cookie_domain(host: str, configured: str, expected: str | None) -> None:
    """The cookie domain is the configured one when it covers the host, else eTLD+1, else host-only."""
    assert cookie_domain(host, configured) == expected


def test_cookie_domain_treats_private_suffixes_as_public() -> None:
    """github.io-style hosts: the user's site is the registrable domain, the shared suffix itself gets none.

    Browsers refuse Domain=github.io like Domain=com (the private section of
    the public suffix list), so a cookie there would be dropped.
    """
    assert cookie_domain("a.user.github.io") == "user.github.io"
    assert cookie_domain("github.io") is None


def test_cookie_domain_ignores_configured_domain_that_does_not_cover_host() -> None:
    """A configured domain for another site does not apply; the host's own eTLD+1 does."""
    assert cookie_domain("www.other.org", "example.com") == "other.org"


def test_cookie_domain_ignores_configured_public_suffix() -> None:
    """A configured domain that is a public suffix would be refused by browsers, so it is not used."""
    assert cookie_domain("shop.example.co.uk", "co.uk") == "example.co.uk"


@pytest.mark.parametrize(
    ("domain", "index"),
    [
        ("example.com", 1),
        ("example.co.uk", 2),
        ("www.example.com", 2),
        (None, 0),
        ("localhost", 0),
        ("127.0.0.1", 0),
    ],
)
def test_subdomain_index(domain: str | None, index: int) -> None:
    """The subdomain index is the number of dots in the cookie domain; 0 for host-only, IP and localhost."""
    assert subdomain_index(domain) == index


# ---------------------------------------------------------------------------
# _fbp / _fbc values


def test_mint_fbp_matches_vector_format() -> None:
    """A minted _fbp is fb.1.<13-digit ms>.<random> on example.com, random within 0..2147483647."""
    value = mint_fbp("example.com", int(NOW * 1000))
    regex = _without_appendix(
        COOKIE_CASES["test_process_request_empty_constructor"]["expected"][
            "cookies_set"
        ]["_fbp"]["value_regex"]
    )

    assert re.search(regex, value)
    assert 0 <= int(value.split(".")[3]) <= 2147483647


def test_build_fbc_matches_vector_format() -> None:
    """fbclid "testtest" on example.com gives fb.1.<ms>.testtest."""
    regex = _without_appendix(
        COOKIE_CASES["test_process_request_empty_constructor_with_fbc"]["expected"][
            "cookies_set"
        ]["_fbc"]["value_regex"]
    )

    assert re.search(regex, build_fbc("testtest", "example.com", int(NOW * 1000)))


def test_build_fbc_keeps_fbclid_exactly() -> None:
    """fbclid is case-sensitive: its case and percent signs are never changed."""
    assert (
        build_fbc("IwAR2xYz_-%41", "example.com", 1700000000000)
        == "fb.1.1700000000000.IwAR2xYz_-%41"
    )


@pytest.mark.parametrize(
    "fbclid", ["", "a.b", "a;b", "a b", 'a"b', "a,b", "é", "x" * 1001]
)
def test_build_fbc_refuses_fbclid_unsafe_in_a_cookie(fbclid: str) -> None:
    """An fbclid that cannot stand in a cookie value is refused with an error naming it."""
    with pytest.raises(ValueError, match="fbclid"):
        build_fbc(fbclid, "example.com", 1)


@pytest.mark.parametrize("row", APPENDIX_CASES, ids=lambda r: r["expected"])
def test_fb_cookie_with_vector_appendix_is_valid(row: dict) -> None:
    """Every appendix the Parameter Builder produces makes a valid 5-part cookie."""
    assert is_valid_fb_cookie(f"fb.1.1700000000000.IwAR1.{row['expected']}")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("fb.1.1700000000000.IwAR1", True),  # legacy 4 parts
        ("fb.1.123.fbptest.Ag", True),  # vector: language token, kept
        ("fb.1.123.old_payload.Bg", True),  # vector
        ("fb.1.123.test123.test", False),  # vector: unknown 5th part
        ("abcd", False),  # vector: too few parts
        ("fbptest", False),  # vector
        ("fb.1.123", False),
        ("fb.1.123.a.AQIAAQAB.x", False),
        ("xx.1.123.abc", False),
        ("fb.1.123.a b", False),
        ("fb.1.123.abc.AQkAAQAB", False),  # language index 9 does not exist
        # The Parameter Builder keeps this one (creation time not checked); we
        # refuse it because Meta rejects a malformed fbc and with it the batch.
        ("fb.1.xxx.abcd", False),
    ],
)
def test_is_valid_fb_cookie(value: str, valid: bool) -> None:
    """Valid: fb.<digits>.<digits>.<payload>, optionally with a Parameter Builder appendix."""
    assert is_valid_fb_cookie(value) is valid


def test_fbc_payload_is_the_fbclid() -> None:
    """The payload of fb.1.123.old_payload.Bg is old_payload."""
    assert fbc_payload("fb.1.123.old_payload.Bg") == "old_payload"


def test_fbc_payload_of_invalid_cookie_is_an_error() -> None:
    """Asking for the payload of a malformed cookie raises an error that names the value."""
    with pytest.raises(ValueError, match="'abcd'"):
        fbc_payload("abcd")


# ---------------------------------------------------------------------------
# _ga and visitor ID


@pytest.mark.parametrize(
    ("cookie", "client_id"),
    [
        ("GA1.1.1234567890.1700000000", "1234567890.1700000000"),
        ("GA1.2.286403989.1366364567", "286403989.1366364567"),
        ("GA1.4-2.286403989.1366364567", "286403989.1366364567"),
        ("GA1.1", None),
        ("GA1.1.abc.1700000000", None),
        ("", None),
        ("GA1.1.1.2; x=y", None),
    ],
)
def test_ga_client_id(cookie: str, client_id: str | None) -> None:
    """The client ID is the _ga cookie's random number and first-visit time."""
    assert ga_client_id(cookie) == client_id


def test_mint_ga_is_read_back_by_ga_client_id() -> None:
    """A minted _ga is GA1.1.<random>.<seconds> and yields <random>.<seconds>."""
    value = mint_ga(NOW)

    assert re.fullmatch(r"GA1\.1\.[0-9]+\.1700000000", value)
    assert ga_client_id(value) == value.removeprefix("GA1.1.")


def test_new_visitor_id_is_128_bit_url_safe_and_fresh() -> None:
    """Visitor IDs are 22 URL-safe characters (128 bits) and never repeat."""
    ids = {new_visitor_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)


# ---------------------------------------------------------------------------
# resolve_ids


def test_resolve_ids_mints_every_id_for_a_new_browser() -> None:
    """A browser without cookies gets a visitor ID, _fbp, _ga and session 1, but no _fbc."""
    ids, cookies = resolve_ids({}, "shop.example.com", {}, NOW)

    assert set(ids) == {
        "visitor_id",
        "fbp",
        "ga_client_id",
        "ga_session_id",
        "ga_session_number",
    }
    assert ids["ga_session_id"] == "1700000000"
    assert ids["ga_session_number"] == "1"
    assert set(_by_name(cookies)) == {"trid", "_fbp", "_ga", SESSION_COOKIE}


def test_resolve_ids_mints_once() -> None:
    """Sending back the cookies set on the first hit yields the same IDs on the next."""
    ids, cookies = resolve_ids({}, "shop.example.com", {"fbclid": "IwAR1"}, NOW)
    again, _ = resolve_ids(_jar(cookies), "shop.example.com", {}, NOW + 60)

    assert again == ids


def test_resolve_ids_sets_cookie_attributes() -> None:
    """Visitor and session cookies are HttpOnly for 400 days; _fbp/_fbc 90 days and _ga 400 days, readable by pixels."""
    _, cookies = resolve_ids({}, "www.example.co.uk", {"fbclid": "IwAR1"}, NOW)
    by_name = _by_name(cookies)

    assert {(c.name, c.http_only, c.max_age_secs) for c in cookies} == {
        ("trid", True, ID_COOKIE_MAX_AGE_SECS),
        ("_fbp", False, FB_COOKIE_MAX_AGE_SECS),
        ("_fbc", False, FB_COOKIE_MAX_AGE_SECS),
        ("_ga", False, ID_COOKIE_MAX_AGE_SECS),
        (SESSION_COOKIE, True, ID_COOKIE_MAX_AGE_SECS),
    }
    assert (
        ID_COOKIE_MAX_AGE_SECS == 400 * 86400 and FB_COOKIE_MAX_AGE_SECS == 90 * 86400
    )
    assert {c.domain for c in by_name.values()} == {"example.co.uk"}


def test_resolve_ids_keeps_valid_cookies_and_refreshes_them() -> None:
    """Existing valid IDs are kept as they are and set again, so their lifetime runs from this visit."""
    jar = {
        "trid": "AAAAAAAAAAAAAAAAAAAAAA",
        "_fbp": "fb.1.123.fbptest.Ag",
        "_fbc": "fb.1.123.IwAR1",
        "_ga": "GA1.2.286403989.1366364567",
    }
    ids, cookies = resolve_ids(jar, "test.example.com", {}, NOW)

    assert ids["visitor_id"] == "AAAAAAAAAAAAAAAAAAAAAA"
    assert ids["fbp"] == "fb.1.123.fbptest.Ag"
    assert ids["fbc"] == "fb.1.123.IwAR1"
    assert ids["ga_client_id"] == "286403989.1366364567"
    assert {name: value for name, value in _jar(cookies).items() if name in jar} == jar


def test_resolve_ids_replaces_fbc_on_new_fbclid() -> None:
    """Vector fbc_modified: a new fbclid replaces an _fbc with another payload; _fbp is kept."""
    row = COOKIE_CASES["test_process_request_fbc_modified"]
    ids, cookies = resolve_ids(
        row["input"]["cookies"], row["input"]["host"], {"fbclid": "new_payload"}, NOW
    )
    fbc = _by_name(cookies)["_fbc"]

    assert re.search(
        _without_appendix(row["expected"]["cookies_set"]["_fbc"]["value_regex"]),
        fbc.value,
    )
    assert fbc.domain == row["expected"]["cookies_set"]["_fbc"]["domain"]
    assert ids["fbp"] == row["expected"]["get_fbp"]


def test_resolve_ids_keeps_fbc_when_same_fbclid_comes_again() -> None:
    """A reload with the same fbclid keeps the cookie, and so the time of the click."""
    ids, _ = resolve_ids(
        {"_fbc": "fb.1.1600000000000.IwAR1"}, "example.com", {"fbclid": "IwAR1"}, NOW
    )

    assert ids["fbc"] == "fb.1.1600000000000.IwAR1"


@pytest.mark.parametrize(
    ("case", "fbclid", "domain"),
    [
        ("test_process_request_empty_constructor_with_fbc", "testtest", "example.com"),
        (
            "test_process_request_empty_constructor_with_fbc_cookie",
            "testtest",
            "example.com",
        ),
        (
            "test_process_request_domain_list_constructor_with_fbclid",
            "test123321",
            "example.com",
        ),
        (
            "test_process_request_domain_list_constructor_with_protocol",
            "test123321",
            "example.co.uk",
        ),
        # IP hosts: the Builder sets Domain=[::1]; browsers refuse a Domain
        # attribute on an IP, so we set a host-only cookie (domain None).
        ("test_process_request_ipv6", "test123", None),
        ("test_process_request_ipv6_test", "test123", None),
    ],
)
def test_resolve_ids_fbc_vector(case: str, fbclid: str, domain: str | None) -> None:
    """Parameter Builder cookie cases: the _fbc built from the hit's fbclid matches the vector's format."""
    row = COOKIE_CASES[case]
    host = row["input"]["host"].removeprefix("https://")
    configured = (
        row["input"]["constructor"][-1].split("://")[-1]
        if isinstance(row["input"]["constructor"], list)
        else ""
    )
    _, cookies = resolve_ids(
        row["input"]["cookies"] or {},
        host,
        {"fbclid": fbclid},
        NOW,
        configured_domain=configured,
    )
    fbc = _by_name(cookies)["_fbc"]

    assert re.search(
        _without_appendix(row["expected"]["cookies_set"]["_fbc"]["value_regex"]),
        fbc.value,
    )
    assert fbc.domain == domain


def test_resolve_ids_localhost_uses_subdomain_index_zero() -> None:
    """Vector localhost: single-label hosts give fb.0. values and host-only cookies."""
    ids, cookies = resolve_ids({}, "localhost", {"fbclid": "test123"}, NOW)

    assert ids["fbp"].startswith("fb.0.") and ids["fbc"].startswith("fb.0.")
    assert {c.domain for c in cookies} == {None}


def test_resolve_ids_replaces_invalid_fbp() -> None:
    """Vector ipv4: an invalid _fbp ("fbptest") is replaced by a fresh one."""
    ids, _ = resolve_ids({"_fbp": "fbptest"}, "192.168.0.1", {}, NOW)

    assert re.fullmatch(r"fb\.0\.1700000000000\.[0-9]+", ids["fbp"])


def test_resolve_ids_drops_invalid_fbc_without_fbclid() -> None:
    """A malformed _fbc and no fbclid: no fbc is sent and no _fbc cookie is set."""
    ids, cookies = resolve_ids(
        {"_fbc": "fb.1.123.test123.test"}, "example.com", {}, NOW
    )

    assert "fbc" not in ids
    assert "_fbc" not in _by_name(cookies)


def test_resolve_ids_ignores_fbclid_unsafe_in_a_cookie() -> None:
    """An fbclid with ';' cannot go into a cookie: it is ignored, not an error."""
    ids, _ = resolve_ids({}, "example.com", {"fbclid": "a;b"}, NOW)

    assert "fbc" not in ids


def test_resolve_ids_session_continues_within_timeout() -> None:
    """A hit 30 minutes after the last one stays in the same session."""
    _, cookies = resolve_ids({}, "example.com", {}, NOW)
    ids, _ = resolve_ids(
        _jar(cookies), "example.com", {}, NOW + GA_SESSION_TIMEOUT_SECS
    )

    assert (ids["ga_session_id"], ids["ga_session_number"]) == ("1700000000", "1")


def test_resolve_ids_session_timeout_starts_next_session() -> None:
    """A hit more than 30 minutes after the last one starts session number + 1 at its own time."""
    _, first = resolve_ids({}, "example.com", {}, NOW)
    _, second = resolve_ids(_jar(first), "example.com", {}, NOW + 1200)
    ids, _ = resolve_ids(
        _jar(second), "example.com", {}, NOW + 1200 + GA_SESSION_TIMEOUT_SECS + 1
    )

    assert ids["ga_session_id"] == str(int(NOW) + 1200 + GA_SESSION_TIMEOUT_SECS + 1)
    assert ids["ga_session_number"] == "2"


def test_resolve_ids_session_restarts_for_new_ga_client() -> None:
    """A freshly minted GA client starts at session 1 even if a session cookie is left over."""
    ids, _ = resolve_ids(
        {SESSION_COOKIE: "1600000000.7.1699999999"}, "example.com", {}, NOW
    )

    assert ids["ga_session_number"] == "1"


@pytest.mark.parametrize(
    "jar",
    [
        {
            "trid": "x",
            "_fbp": "fb.1.2.3.4.5.6",
            "_fbc": "",
            "_ga": "GA1",
            SESSION_COOKIE: "a.b.c",
        },
        {
            "trid": "é" * 30,
            "_fbp": "fb.1.1.1;x",
            "_ga": "GA1.1.1.1\r\nSet-Cookie: x",
            SESSION_COOKIE: "9" * 40,
        },
    ],
)
def test_resolve_ids_hostile_cookies_give_safe_values(jar: dict[str, str]) -> None:
    """Garbage cookies are replaced, never crash, and every value set is a plain cookie-octet string."""
    _, cookies = resolve_ids(jar, "example.com", {"fbclid": "IwAR1"}, NOW)

    assert all(COOKIE_OCTETS.fullmatch(c.value) for c in cookies)
    assert [c.name for c in cookies if c.name in jar and c.value == jar[c.name]] == []


class TestClickCookie:
    """Click IDs other than fbclid survive in the server-set ``trc`` cookie."""

    def test_click_ids_are_kept_for_later_hits(self):
        """A ttclid and gclid seen on landing are still known on a later hit without them."""
        _, first = resolve_ids({}, "shop.example.com", {"ttclid": "E.C.P.x1", "gclid": "Cj0K-_a"}, 1_700_000_000)
        jar = {c.name: c.value for c in first}
        ids, later = resolve_ids(jar, "shop.example.com", {}, 1_700_086_400)
        assert (ids["ttclid"], ids["gclid"]) == ("E.C.P.x1", "Cj0K-_a")
        trc = next(c for c in later if c.name == "trc")
        assert trc.http_only and trc.max_age_secs == 90 * 86400

    def test_a_new_click_replaces_the_old_one_of_its_kind(self):
        """The latest click of a vendor wins; other vendors' clicks stay."""
        _, first = resolve_ids({}, "shop.example.com", {"ttclid": "old", "gclid": "g1"}, 1_700_000_000)
        jar = {c.name: c.value for c in first}
        ids, _ = resolve_ids(jar, "shop.example.com", {"ttclid": "new"}, 1_700_000_100)
        assert (ids["ttclid"], ids["gclid"]) == ("new", "g1")

    def test_unreadable_click_cookie_counts_as_none(self):
        """A tampered trc cookie is ignored, not an error."""
        ids, cookies = resolve_ids({"trc": "%%%not-base64"}, "shop.example.com", {}, 1_700_000_000)
        assert "gclid" not in ids and "trc" not in {c.name for c in cookies}

    def test_vendor_browser_cookies_are_read_not_minted(self):
        """_ttp and _scid from a pixel kept beside are passed on; absent ones are not invented."""
        ids, _ = resolve_ids({"_ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH"}, "shop.example.com", {}, 1_700_000_000)
        assert ids["ttp"] == "2F7h37YkS1j57AYSKTI7IHhJPYH" and "scid" not in ids


def test_set_cookie_header_is_written_directly_for_plain_values():
    """A plain value gets the header aiohttp would write; the attributes are RFC 6265's."""
    spec = CookieSpec("_fbc", "fb.1.1700000000000.IwAR2x", "example.com", 7776000, False)
    assert spec.header(secure=True) == "_fbc=fb.1.1700000000000.IwAR2x; Domain=example.com; Max-Age=7776000; Path=/; SameSite=Lax; Secure"
    host_only = CookieSpec("tr_vid", "abc", None, 100, True)
    assert host_only.header(secure=False) == "tr_vid=abc; HttpOnly; Max-Age=100; Path=/; SameSite=Lax"


@pytest.mark.parametrize("value", ["a b", 'x"y', "", "caf\u00e9"])
def test_set_cookie_header_leaves_values_that_need_quoting_to_aiohttp(value):
    """Values http.cookies would quote are not written by hand (the caller falls back to set_cookie)."""
    assert CookieSpec("_fbc", value, None, 100, False).header(secure=True) is None
