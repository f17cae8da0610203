"""Client IP from the TCP peer and trusted forwarding headers.

Header examples for ``Forwarded`` are the ones in RFC 7239 section 4 and 7;
CF-Connecting-IP holds the one client address Cloudflare saw (Cloudflare
"HTTP headers" reference). Addresses are from the documentation ranges
(RFC 5737, RFC 3849) unless a test needs a private one.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.enrich.client_ip import client_ip, is_trusted, normalize_ip


def auto_ip(peer, headers, trusted):
    """client_ip with header = "auto": every forwarding header is read, in the documented order."""
    return client_ip(peer, headers, trusted, header="auto")

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
LB = "10.0.0.1"  # a trusted load balancer, the TCP peer in most tests


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


class TestUntrustedPeer:
    def test_no_trusted_proxies_means_the_peer_is_the_client(self):
        """Without trusted proxies every forwarding header is ignored."""
        headers = h(
            ("X-Forwarded-For", "198.51.100.7"), ("CF-Connecting-IP", "198.51.100.8")
        )

        assert auto_ip("203.0.113.5", headers, ()) == "203.0.113.5"

    def test_client_supplied_xff_from_untrusted_peer_is_ignored(self):
        """A client talking to us directly cannot claim another address with X-Forwarded-For."""
        headers = h(("X-Forwarded-For", "198.51.100.7"))

        assert auto_ip("203.0.113.5", headers, PROXIES) == "203.0.113.5"

    def test_client_supplied_cf_connecting_ip_from_untrusted_peer_is_ignored(self):
        """CF-Connecting-IP is believed only from a trusted peer."""
        headers = h(("CF-Connecting-IP", "198.51.100.7"))

        assert auto_ip("203.0.113.5", headers, PROXIES) == "203.0.113.5"

    def test_client_supplied_forwarded_from_untrusted_peer_is_ignored(self):
        """Forwarded is believed only from a trusted peer."""
        headers = h(("Forwarded", "for=198.51.100.7"))

        assert auto_ip("203.0.113.5", headers, PROXIES) == "203.0.113.5"

    def test_unknown_peer_gives_empty_string(self):
        """No peer address (a Unix socket) and nothing trusted gives ""."""
        assert auto_ip(None, h(("X-Forwarded-For", "198.51.100.7")), PROXIES) == ""

    def test_garbage_peer_gives_empty_string(self):
        """A peer that is not an address is never returned."""
        assert auto_ip("not-an-ip", h(), PROXIES) == ""

    def test_ipv4_mapped_peer_becomes_ipv4(self):
        """A dual-stack socket's ::ffff:a.b.c.d peer is reported as a.b.c.d."""
        assert auto_ip("::ffff:81.2.69.160", h(), ()) == "81.2.69.160"

    def test_ipv4_mapped_peer_matches_an_ipv4_trusted_network(self):
        """A trusted proxy seen through a dual-stack socket is still trusted."""
        headers = h(("X-Forwarded-For", "198.51.100.7"))

        assert auto_ip("::ffff:10.0.0.1", headers, PROXIES) == "198.51.100.7"


class TestXForwardedFor:
    def test_single_entry_from_trusted_peer_is_the_client(self):
        """A trusted proxy's X-Forwarded-For entry is the client."""
        headers = h(("X-Forwarded-For", "198.51.100.7"))

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_left_most_entries_are_ignored(self):
        """Entries left of the first untrusted hop are the client's own claims and are skipped."""
        headers = h(("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 198.51.100.7"))

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_trusted_hops_are_skipped_from_the_right(self):
        """Hops that are trusted proxies themselves are walked past."""
        headers = h(
            ("X-Forwarded-For", "203.0.113.9, 198.51.100.7, 10.0.0.3, 10.0.0.2")
        )

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_all_hops_trusted_gives_the_left_most(self):
        """When every hop is a trusted proxy the left-most one is as far as we can see."""
        headers = h(("X-Forwarded-For", "10.0.0.3, 10.0.0.2"))

        assert auto_ip(LB, headers, PROXIES) == "10.0.0.3"

    def test_repeated_headers_are_joined_in_order(self):
        """Two X-Forwarded-For headers read as one list, the later header nearer to us."""
        headers = h(
            ("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "203.0.113.9")
        )

        assert auto_ip(LB, headers, PROXIES) == "203.0.113.9"

    def test_repeated_headers_with_trusted_last_reach_back_into_the_first(self):
        """A trusted hop in the later header passes the walk on to the earlier one."""
        headers = h(
            ("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "10.0.0.2")
        )

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_header_name_is_case_insensitive(self):
        """x-forwarded-for is the same header as X-Forwarded-For."""
        headers = h(("x-forwarded-for", "198.51.100.7"))

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_plain_mapping_is_accepted(self):
        """A plain dict of headers (no getall) works too."""
        assert (
            auto_ip(LB, {"X-Forwarded-For": "198.51.100.7"}, PROXIES)
            == "198.51.100.7"
        )

    def test_ipv4_port_is_stripped(self):
        """1.2.3.4:5678 (Azure Application Gateway style) gives 1.2.3.4."""
        headers = h(("X-Forwarded-For", "198.51.100.7:5678"))

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.7"

    def test_bracketed_ipv6_with_port_is_stripped(self):
        """[2001:db8::1]:443 gives 2001:db8::1."""
        headers = h(("X-Forwarded-For", "[2001:db8::1]:443"))

        assert auto_ip(LB, headers, PROXIES) == "2001:db8::1"

    def test_bare_ipv6_is_kept_compressed_and_lower_case(self):
        """A full-length upper-case IPv6 address comes back in compressed form."""
        headers = h(("X-Forwarded-For", "2001:0DB8:0000:0000:0000:0000:0000:0001"))

        assert auto_ip(LB, headers, PROXIES) == "2001:db8::1"

    def test_ipv4_mapped_entry_becomes_ipv4(self):
        """::ffff:81.2.69.160 in the header gives 81.2.69.160."""
        headers = h(("X-Forwarded-For", "::ffff:81.2.69.160"))

        assert auto_ip(LB, headers, PROXIES) == "81.2.69.160"

    def test_trusted_ipv6_proxy_hop_is_skipped(self):
        """Trusted IPv6 networks work like IPv4 ones."""
        headers = h(("X-Forwarded-For", "2001:db8::7, fd00::2"))

        assert auto_ip("fd00::1", headers, PROXIES) == "2001:db8::7"

    @pytest.mark.parametrize(
        "value",
        [
            "evil",
            "198.51.100.7<script>",
            "999.1.1.1",
            "01.2.3.4",
            "198.51.100.7:99999",
            "198.51.100.7:port",
            "fe80::1%eth0",
            "[2001:db8::1",
            '"198.51.100.7"',
            "",
        ],
    )
    def test_garbage_hop_stops_the_walk_at_the_nearest_trusted_claim(self, value):
        """A hop that is not an address ends the walk; the trusted hop right of it is used."""
        headers = h(("X-Forwarded-For", f"198.51.100.7, {value}, 10.0.0.2"))

        assert auto_ip(LB, headers, PROXIES) == "10.0.0.2"

    def test_garbage_only_header_gives_the_peer(self):
        """An X-Forwarded-For with nothing usable falls back to the trusted peer."""
        headers = h(("X-Forwarded-For", "unknown"))

        assert auto_ip(LB, headers, PROXIES) == LB

    def test_empty_header_gives_the_peer(self):
        """An empty X-Forwarded-For falls back to the trusted peer."""
        assert auto_ip(LB, h(("X-Forwarded-For", "")), PROXIES) == LB


class TestForwarded:
    def test_for_parameter_is_the_client(self):
        """RFC 7239 example: for=192.0.2.60;proto=http;by=203.0.113.43 gives 192.0.2.60."""
        headers = h(("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"))

        assert auto_ip(LB, headers, PROXIES) == "192.0.2.60"

    def test_quoted_bracketed_ipv6_with_port(self):
        """RFC 7239 example: For="[2001:db8:cafe::17]:4711" gives 2001:db8:cafe::17."""
        headers = h(("Forwarded", 'For="[2001:db8:cafe::17]:4711"'))

        assert auto_ip(LB, headers, PROXIES) == "2001:db8:cafe::17"

    def test_walks_elements_from_the_right(self):
        """RFC 7239 example: for=192.0.2.43, for=198.51.100.17 gives the nearer 198.51.100.17."""
        headers = h(("Forwarded", "for=192.0.2.43, for=198.51.100.17"))

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.17"

    def test_trusted_elements_are_skipped(self):
        """An element whose for= is a trusted proxy is walked past."""
        headers = h(("Forwarded", 'for=192.0.2.43, for="10.0.0.2";proto=https'))

        assert auto_ip(LB, headers, PROXIES) == "192.0.2.43"

    def test_repeated_headers_are_joined_in_order(self):
        """Two Forwarded headers read as one list (RFC 7230 list rule)."""
        headers = h(("Forwarded", "for=192.0.2.43"), ("Forwarded", "for=10.0.0.2"))

        assert auto_ip(LB, headers, PROXIES) == "192.0.2.43"

    @pytest.mark.parametrize("value", ['for="_gazonk"', "for=unknown", "for=_hidden"])
    def test_obfuscated_identifier_is_not_an_address(self, value):
        """RFC 7239 obfuscated and unknown identifiers stop the walk at the nearest trusted claim."""
        headers = h(("Forwarded", f"for=192.0.2.43, {value}, for=10.0.0.2"))

        assert auto_ip(LB, headers, PROXIES) == "10.0.0.2"

    def test_element_without_for_stops_the_walk(self):
        """A hop that did not say whom it forwarded for is not skipped over."""
        headers = h(("Forwarded", "for=192.0.2.43, proto=https;by=10.0.0.3"))

        assert auto_ip(LB, headers, PROXIES) == LB

    def test_duplicate_for_in_one_element_stops_the_walk(self):
        """RFC 7239: a parameter must not occur twice in one element; such an element is garbage."""
        headers = h(("Forwarded", "for=192.0.2.43;for=198.51.100.17"))

        assert auto_ip(LB, headers, PROXIES) == LB

    def test_empty_element_stops_the_walk(self):
        """An empty list element is a hop that told us nothing, so the walk does not pass it."""
        headers = h(("Forwarded", "for=192.0.2.43, , for=10.0.0.2"))

        assert auto_ip(LB, headers, PROXIES) == "10.0.0.2"

    def test_comma_inside_quotes_does_not_split_elements(self):
        """A quoted value holding a comma is one (garbage) value, not two hops."""
        headers = h(("Forwarded", 'for=192.0.2.43, for="198.51.100.17, 203.0.113.9"'))

        assert auto_ip(LB, headers, PROXIES) == LB


class TestPrecedence:
    def test_cf_connecting_ip_wins_over_forwarded_and_xff(self):
        """With all three headers from a trusted peer, CF-Connecting-IP is used."""
        headers = h(
            ("X-Forwarded-For", "198.51.100.1"),
            ("Forwarded", "for=198.51.100.2"),
            ("CF-Connecting-IP", "198.51.100.3"),
        )

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.3"

    def test_forwarded_wins_over_xff(self):
        """Forwarded is read instead of X-Forwarded-For when both are present."""
        headers = h(
            ("X-Forwarded-For", "198.51.100.1"), ("Forwarded", "for=198.51.100.2")
        )

        assert auto_ip(LB, headers, PROXIES) == "198.51.100.2"

    def test_cf_connecting_ip_ipv6(self):
        """CF-Connecting-IP carries IPv6 clients as plain IPv6."""
        headers = h(("CF-Connecting-IP", "2001:db8::42"))

        assert auto_ip(LB, headers, PROXIES) == "2001:db8::42"

    def test_garbage_cf_connecting_ip_gives_the_peer(self):
        """A CF-Connecting-IP that is not an address is not returned."""
        headers = h(
            ("CF-Connecting-IP", "198.51.100.3, 1.1.1.1"),
            ("X-Forwarded-For", "198.51.100.1"),
        )

        assert auto_ip(LB, headers, PROXIES) == LB

    def test_repeated_cf_connecting_ip_gives_the_peer(self):
        """Cloudflare sends one CF-Connecting-IP; two copies mean one was forged."""
        headers = h(
            ("CF-Connecting-IP", "198.51.100.3"), ("CF-Connecting-IP", "198.51.100.4")
        )

        assert auto_ip(LB, headers, PROXIES) == LB


class TestHelpers:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("198.51.100.7", "198.51.100.7"),
            (" 198.51.100.7 ", "198.51.100.7"),
            ("198.51.100.7:80", "198.51.100.7"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:81.2.69.160", "81.2.69.160"),
            ("unknown", None),
            ("_hidden", None),
            ("fe80::1%eth0", None),
        ],
    )
    def test_normalize_ip(self, value, expected):
        """normalize_ip strips ports and brackets, unmaps IPv4 and refuses non-addresses."""
        assert normalize_ip(value) == expected

    def test_is_trusted(self):
        """is_trusted accepts the same forms as normalize_ip."""
        assert is_trusted("[fd00::5]:80", PROXIES)
        assert not is_trusted("198.51.100.7", PROXIES)
        assert not is_trusted("garbage", PROXIES)


@settings(deadline=None, max_examples=300)
@given(
    xff=st.text(max_size=80),
    fwd=st.text(alphabet='for=_"[]:;, 0123456789abcdef.unknow', max_size=80),
)
def test_any_header_text_gives_an_address_never_garbage(xff, fwd):
    """Whatever the headers hold, the answer is an address (never an exception, never raw text)."""
    for headers in (h(("X-Forwarded-For", xff)), h(("Forwarded", fwd))):
        result = auto_ip(LB, headers, PROXIES)

        assert normalize_ip(result) == result



class TestNamedHeader:
    """With a named header (the default: X-Forwarded-For), the others are ignored."""

    def test_default_reads_only_x_forwarded_for(self):
        """A client's own CF-Connecting-IP passed through by nginx does not win by default."""
        headers = h(("CF-Connecting-IP", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.7"))
        assert client_ip("10.0.0.1", headers, PROXIES) == "198.51.100.7"

    def test_forwarded_is_ignored_unless_named(self):
        """Forwarded counts only when the operator names it."""
        headers = h(("Forwarded", 'for="1.2.3.4"'), ("X-Forwarded-For", "198.51.100.7"))
        assert client_ip("10.0.0.1", headers, PROXIES) == "198.51.100.7"
        assert client_ip("10.0.0.1", headers, PROXIES, header="forwarded") == "1.2.3.4"

    def test_cloudflare_header_when_named(self):
        """Behind Cloudflare, naming cf-connecting-ip reads it."""
        headers = h(("CF-Connecting-IP", "198.51.100.9"), ("X-Forwarded-For", "1.2.3.4"))
        assert client_ip("10.0.0.1", headers, PROXIES, header="cf-connecting-ip") == "198.51.100.9"
