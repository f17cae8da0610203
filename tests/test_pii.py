"""proxy.pii: PII stripped from URLs, params and titles; IPs truncated; a safe access log."""

from __future__ import annotations

import logging
import string

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import pii
from proxy.pii import (
    REDACTED,
    AccessLogger,
    is_pii_name,
    scrub_params,
    scrub_text,
    strip_url,
    truncate_ip,
)

# Derandomised so a CI run is the same run every time; no deadline, because a
# test here states behaviour, never speed; no example database in the repo.
PROPERTY = settings(derandomize=True, deadline=None, database=None, max_examples=200)


class TestStripUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "https://shop.example/thanks?order=123&email=Jo.Bloggs%40Example.com&utm_source=news",
                "https://shop.example/thanks?order=123&utm_source=news",
            ),
            (
                "https://shop.example/?EMAIL=x&E-Mail=y&mail=z&q=1",
                "https://shop.example/?q=1",
            ),
            (
                "https://shop.example/?phone=1&tel=2&mobile=3&q=1",
                "https://shop.example/?q=1",
            ),
            (
                "https://shop.example/?first_name=Jo&firstName=Jo&lname=B&surname=B&name=Jo&q=1",
                "https://shop.example/?q=1",
            ),
            (
                "https://shop.example/?address=1&zip=2&postcode=3&dob=4&birthday=5&q=1",
                "https://shop.example/?q=1",
            ),
            (
                "https://shop.example/?ssn=1&password=2&token=3&q=1",
                "https://shop.example/?q=1",
            ),
            (
                "https://shop.example/?customer_phone=1&billingAddress=2&q=1",
                "https://shop.example/?q=1",
            ),
        ],
    )
    def test_parameters_with_pii_names_are_removed(self, url, expected):
        """Parameters named for contact data, names, addresses, birth dates, IDs or credentials go, whatever the case."""
        assert strip_url(url) == expected

    def test_bracketed_keys_are_read_by_their_inner_name(self):
        """``user[email]`` (raw or percent-encoded brackets) is an email parameter."""
        url = "https://shop.example/?user[email]=a&user%5Bphone%5D=b&cart[id]=7"
        assert strip_url(url) == "https://shop.example/?cart[id]=7"

    @pytest.mark.parametrize(
        "value",
        [
            "jo.bloggs@example.com",
            "Jo.Bloggs%40Example.com",
            "jo.bloggs%2540example.com",  # encoded twice, as inside a redirect URL
            "https%3A%2F%2Fx.example%2F%3Fe%3Djo%40example.com",
            "%2B44%2020%207946%200958",
            "+44+20+7946+0958",  # form encoding: "+" for spaces
            "%2B4915112345678",
        ],
    )
    def test_parameters_whose_value_is_contact_data_are_removed_whatever_their_name(
        self, value
    ):
        """A value holding an e-mail address or an international phone number goes, under any name."""
        assert (
            strip_url(f"https://shop.example/p?ref={value}&q=1")
            == "https://shop.example/p?q=1"
        )

    @pytest.mark.parametrize(
        "value", ["1733312345678", "42", "%2B12.50", "a+b", "summer+sale", "user%40"]
    )
    def test_values_that_only_resemble_contact_data_stay(self, value):
        """Bare digit runs (timestamps, order numbers), prices and text with a lone "@" are not PII."""
        url = f"https://shop.example/p?ref={value}"
        assert strip_url(url) == url

    def test_everything_else_keeps_its_bytes_order_and_encoding(self):
        """Other parameters keep their order and their exact encoding; nothing is re-encoded."""
        url = "https://shop.example/a%20b/c?z=%7e1&a=1+2&email=x&utm_campaign=Summer%2FSale&empty=&flag"
        expected = "https://shop.example/a%20b/c?z=%7e1&a=1+2&utm_campaign=Summer%2FSale&empty=&flag"
        assert strip_url(url) == expected

    def test_click_ids_arrive_unchanged(self):
        """fbclid, gclid and ttclid keep their exact value and case (vendors.md: fbclid is case-sensitive)."""
        url = "https://shop.example/?fbclid=IwAR2_e2e-TestCase-9xYz&gclid=Cj0KCQ%2BabC&ttclid=E.C.P.Ab_c&phone=1"
        expected = "https://shop.example/?fbclid=IwAR2_e2e-TestCase-9xYz&gclid=Cj0KCQ%2BabC&ttclid=E.C.P.Ab_c"
        assert strip_url(url) == expected

    def test_query_that_loses_every_parameter_loses_its_question_mark(self):
        """``?email=x`` alone leaves no dangling ``?``; the fragment stays."""
        assert (
            strip_url("https://shop.example/p?email=x#reviews")
            == "https://shop.example/p#reviews"
        )

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "https://shop.example/users/jo@example.com/orders",
                f"https://shop.example/users/{REDACTED}/orders",
            ),
            (
                "https://shop.example/users/jo%40example.com/orders",
                f"https://shop.example/users/{REDACTED}/orders",
            ),
            (
                "https://shop.example/u/JO@EXAMPLE.CO.UK",
                f"https://shop.example/u/{REDACTED}",
            ),
        ],
    )
    def test_email_in_the_path_is_replaced(self, url, expected):
        """An e-mail address in a path segment, encoded or not, becomes ``(redacted)``; the route stays."""
        assert strip_url(url) == expected

    def test_handles_in_paths_are_not_emails(self):
        """``/@jo`` (a profile handle) has no local part and stays."""
        assert (
            strip_url("https://social.example/@jo.bloggs/posts")
            == "https://social.example/@jo.bloggs/posts"
        )

    def test_user_info_in_the_authority_is_removed(self):
        """``https://jo:secret@host/`` loses ``jo:secret@``."""
        assert (
            strip_url("https://jo:secret@shop.example:8443/p?q=1")
            == "https://shop.example:8443/p?q=1"
        )

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "https://app.example/#/account?email=jo@x.example&tab=2",
                "https://app.example/#/account?tab=2",
            ),
            (
                "https://app.example/#access_token=abc&state=1",
                "https://app.example/#state=1",
            ),
            (
                "https://app.example/#/users/jo@x.example",
                f"https://app.example/#/users/{REDACTED}",
            ),
            ("https://app.example/#reviews", "https://app.example/#reviews"),
        ],
    )
    def test_fragment_parameters_and_routes_are_stripped_too(self, url, expected):
        """Hash routes (``#/path?query``) and OAuth fragments (``#access_token=``) are stripped like the query."""
        assert strip_url(url) == expected

    def test_relative_urls_are_stripped(self):
        """A path-only URL is stripped the same way."""
        assert strip_url("/search?q=shoes&email=jo@x.example") == "/search?q=shoes"

    @PROPERTY
    @given(st.text(max_size=300))
    def test_never_raises_and_is_idempotent(self, url):
        """Any text comes back as a string, and stripping it again changes nothing."""
        once = strip_url(url)
        assert isinstance(once, str) and strip_url(once) == once

    @PROPERTY
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["q", "page", "utm_source", "ref", "sort", "color", "fbclid"]
                ),
                st.text(
                    alphabet=string.ascii_letters + string.digits + "-_.~%", max_size=20
                ),
            ),
            max_size=6,
        )
    )
    def test_urls_without_pii_are_unchanged(self, pairs):
        """A URL whose parameters carry no PII comes back byte for byte."""
        url = "https://shop.example/c/shoes?" + "&".join(f"{k}={v}" for k, v in pairs)
        assert strip_url(url) == url


class TestIsPiiName:
    @pytest.mark.parametrize(
        "name",
        [
            "item_name",
            "utm_medium",
            "hotel_id",
            "mailchimp_campaign",
            "campaign_name",
            "page",
            "content_name",
        ],
    )
    def test_names_that_only_contain_a_pii_word_inside_another_word_are_not_pii(
        self, name
    ):
        """Words are matched whole: ``hotel`` is not ``tel``, ``item_name`` is not a person."""
        assert not is_pii_name(name, in_url=True)

    def test_a_bare_name_is_a_person_in_urls_but_an_item_in_params(self):
        """``?name=Jo`` is treated as a person; ``{"name": "Blue shirt"}`` in params as an item."""
        assert is_pii_name("name", in_url=True) and not is_pii_name("name")


class TestScrubParams:
    def test_pii_named_and_pii_valued_params_are_dropped_at_any_depth(self):
        """Keys named for PII and values holding an e-mail or a phone number go, in nested objects and lists."""
        params = {
            "value": 42.5,
            "currency": "EUR",
            "email": "jo@example.com",
            "customer_phone": "+44 20 7946 0958",
            "note": "call me on +49 151 12345678",
            "coupon": "jo@example.com",
            "items": [
                {"item_id": "SKU1", "name": "Blue shirt", "buyer": "jo@example.com"},
                "jo@example.com",
                3,
            ],
            "shipping": {"method": "express", "address": "1 Main St", "is_gift": False},
        }
        assert scrub_params(params) == {
            "value": 42.5,
            "currency": "EUR",
            "items": [{"item_id": "SKU1", "name": "Blue shirt"}, 3],
            "shipping": {"method": "express", "is_gift": False},
        }

    def test_pii_named_keys_go_whatever_the_type_of_their_value(self):
        """A phone number sent as a JSON number still goes: the name decides."""
        assert scrub_params({"phone": 442079460958, "n": 1}) == {"n": 1}

    def test_keys_that_are_email_addresses_go(self):
        """A key that is itself an address is dropped (and never logged)."""
        assert scrub_params({"jo@example.com": True, "n": 1}) == {"n": 1}

    def test_url_values_are_stripped_not_dropped(self):
        """A URL in a param keeps its non-PII parts, like a page URL."""
        params = {"link_url": "https://shop.example/p?email=jo%40example.com&color=red"}
        assert scrub_params(params) == {"link_url": "https://shop.example/p?color=red"}

    def test_input_is_not_changed(self):
        """The caller's dict is left as it was; a new one comes back."""
        params = {"email": "jo@example.com", "items": [{"buyer": "jo@example.com"}]}
        scrub_params(params)
        assert params == {
            "email": "jo@example.com",
            "items": [{"buyer": "jo@example.com"}],
        }

    @PROPERTY
    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=40),
            lambda kids: (
                st.lists(kids, max_size=4)
                | st.dictionaries(st.text(max_size=12), kids, max_size=4)
            ),
            max_leaves=20,
        ).filter(lambda v: isinstance(v, dict))
    )
    def test_never_raises_and_is_idempotent(self, params):
        """Any JSON object comes back as a dict, and scrubbing it again changes nothing."""
        once = scrub_params(params)
        assert isinstance(once, dict) and scrub_params(once) == once


class TestScrubText:
    def test_emails_in_titles_are_replaced(self):
        """Every address in free text becomes ``(redacted)``; the rest of the text stays."""
        assert scrub_text("Orders of Jo.Bloggs@Example.com and a@b.example | Shop") == (
            f"Orders of {REDACTED} and {REDACTED} | Shop"
        )

    def test_text_without_addresses_is_unchanged(self):
        """A title with a lone "@" or none is returned as it is."""
        assert scrub_text("Tickets @ 20% off") == "Tickets @ 20% off"


class TestTruncateIp:
    # Google Analytics' IP anonymisation (support.google.com/analytics/answer/2763052):
    # the last octet of an IPv4 address and the last 80 bits of an IPv6 address are zeroed.
    @pytest.mark.parametrize(
        ("ip", "expected"),
        [
            ("81.2.69.160", "81.2.69.0"),
            ("203.0.113.255", "203.0.113.0"),
            ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
            ("2001:0db8:abcd:ffff:ffff:ffff:ffff:ffff", "2001:db8:abcd::"),
            ("::ffff:81.2.69.160", "81.2.69.0"),
            ("fe80::1%eth0", "fe80::"),
        ],
    )
    def test_truncated_keeps_the_24_or_the_48(self, ip, expected):
        """IPv4 keeps its /24 and IPv6 its /48; an IPv4-mapped address is truncated as IPv4."""
        assert truncate_ip(ip, "truncated") == expected

    def test_full_sends_the_address_as_it_is(self):
        """``full`` passes a valid address through (trimmed)."""
        assert truncate_ip(" 2001:db8::1 ", "full") == "2001:db8::1"

    def test_none_sends_nothing(self):
        """``none`` gives None even for a valid address."""
        assert truncate_ip("81.2.69.160", "none") is None

    @pytest.mark.parametrize("ip", ["", "not an ip", "81.2.69", "1.2.3.4.5", "::g"])
    @pytest.mark.parametrize("mode", ["full", "truncated"])
    def test_a_value_that_is_not_an_ip_sends_nothing(self, ip, mode):
        """Empty or unparseable input gives None, never an error."""
        assert truncate_ip(ip, mode) is None

    def test_unknown_mode_is_a_clear_error(self):
        """A mode other than full, truncated, none names itself and the known modes."""
        with pytest.raises(
            ValueError,
            match=r"IP mode 'anonymous': unknown \(known: full, none, truncated\)",
        ):
            truncate_ip("81.2.69.160", "anonymous")

    @PROPERTY
    @given(st.ip_addresses())
    def test_truncated_lies_in_the_same_network_and_is_idempotent(self, address):
        """The truncated address is in the original's /24 or /48, and truncating it again changes nothing."""
        import ipaddress

        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        cut = truncate_ip(str(address), "truncated")
        assert cut is not None
        prefix = 24 if address.version == 4 else 48
        assert ipaddress.ip_address(cut) in ipaddress.ip_network(
            f"{address}/{prefix}", strict=False
        )
        assert truncate_ip(cut, "truncated") == cut


async def test_access_log_leaves_out_the_query_and_strips_the_referer(
    aiohttp_client, caplog
):
    """The access line has method, path, status and a stripped Referer, but no query string and no full IP."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/e", answer)
    # TestServer drops its constructor's runner options; start_server passes them on.
    server = TestServer(app)
    await server.start_server(access_log_class=AccessLogger)
    client = await aiohttp_client(server)
    caplog.set_level(logging.DEBUG)

    await client.get(
        "/e?d=%7B%22user%22%3A%7B%22email%22%3A%22jo%40example.com%22%7D%7D",
        headers={
            "Referer": "https://shop.example/thanks?email=jo%40example.com&order=7"
        },
    )

    (line,) = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert '"GET /e?..." 204' in line
    assert '"https://shop.example/thanks?order=7"' in line
    assert "jo" not in line.lower() and "%40" not in line
    assert line.startswith("127.0.0.0 ")


def test_every_public_name_exists():
    """Every name in ``__all__`` is defined in the module."""
    assert [name for name in pii.__all__ if not hasattr(pii, name)] == []
