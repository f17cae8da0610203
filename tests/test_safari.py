"""Safari's 7-day cap on the collector's server-set cookies, as ``tagrelay check`` reports it.

The expected outcomes follow WebKit's own rules in
``Source/WebKit/NetworkProcess/cocoa/NetworkTaskCocoa.mm``
(``setCookieTransformForFirstPartyRequest`` and
``shouldCapCookieExpiryForThirdPartyIPAddress``, read at WebKit trunk) and
the scenarios of its layout tests ``cname-cloaking-top-*-sub-*-cname`` and
``ip-address-cloaking-*-party-address`` (WebKit PR #5661). DNS answers come
from a fake resolver: there is no network here, and the rules are about
what DNS says, not about reaching anything. Addresses are from the
documentation ranges (RFC 5737, RFC 3849) where the test allows.
"""

from __future__ import annotations

import pytest

from proxy.safari import (
    IPV4_PREFIX_BITS,
    IPV6_PREFIX_BITS,
    Resolution,
    ResolveError,
    collector_cap_warning,
    system_resolver,
)

SITE = "www.shop.example"
COLLECTOR = "t.shop.example"


def fake_dns(records: dict[str, Resolution]):
    """A resolver answering from ``records``; other names do not resolve."""
    asked: list[str] = []

    def resolve(host: str) -> Resolution:
        asked.append(host)
        if host not in records:
            raise ResolveError(f"{host!r} does not resolve: NXDOMAIN")
        return records[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def a(*addresses: str, cnames: tuple[str, ...] = ()) -> Resolution:
    return Resolution(cnames=cnames, addresses=addresses)


SITE_V4 = a("198.51.100.7")


class TestCnameCloaking:
    def test_cname_to_another_organisation_is_capped(self):
        """A collector CNAMEd to a tracker's domain gets the 7-day cap, and the message says so."""
        dns = fake_dns(
            {
                COLLECTOR: a("203.0.113.5", cnames=("shop.tracker.example.net",)),
                SITE: SITE_V4,
            }
        )

        warning = collector_cap_warning(COLLECTOR, SITE, dns)

        assert warning is not None
        assert "CNAME" in warning and "shop.tracker.example.net" in warning
        assert "7 days" in warning

    def test_warning_says_what_to_do_instead(self):
        """The message offers a same-origin path and an A/AAAA record in the site's range."""
        dns = fake_dns(
            {COLLECTOR: a("203.0.113.5", cnames=("x.tracker.net",)), SITE: SITE_V4}
        )

        warning = collector_cap_warning(COLLECTOR, SITE, dns) or ""

        assert f"https://{SITE}/" in warning
        assert "A/AAAA record" in warning

    def test_only_the_last_name_of_the_chain_counts(self):
        """WebKit takes the registrable domain of the last CNAME; earlier hops do not matter."""
        dns = fake_dns(
            {
                COLLECTOR: a(
                    "198.51.100.9", cnames=("edge.cdn.example.net", "lb.shop.example")
                ),
                SITE: SITE_V4,
            }
        )

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None

    def test_cname_within_the_sites_own_domain_is_not_capped(self):
        """A CNAME to another name under shop.example keeps cookies first-party."""
        dns = fake_dns(
            {COLLECTOR: a("198.51.100.9", cnames=("lb.shop.example",)), SITE: SITE_V4}
        )

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None

    def test_site_and_collector_cnamed_to_the_same_provider_are_not_capped(self):
        """When the page's own host is CNAMEd to the same provider domain, WebKit does not cap."""
        dns = fake_dns(
            {
                COLLECTOR: a("203.0.113.5", cnames=("t.hosting.example.net",)),
                SITE: a("203.0.113.6", cnames=("www.hosting.example.net",)),
            }
        )

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None

    def test_site_and_collector_cnamed_to_different_providers_are_capped(self):
        """A page on one provider's CNAME and a collector on another's: capped."""
        dns = fake_dns(
            {
                COLLECTOR: a("203.0.113.5", cnames=("t.tracker.example.net",)),
                SITE: a("198.51.100.7", cnames=("www.hosting.example.org",)),
            }
        )

        assert collector_cap_warning(COLLECTOR, SITE, dns) is not None

    def test_with_a_cname_the_addresses_are_not_compared(self):
        """WebKit applies the IP rule only when there is no CNAME: a first-party CNAME wins."""
        dns = fake_dns(
            {COLLECTOR: a("203.0.113.5", cnames=("lb.shop.example",)), SITE: SITE_V4}
        )

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None


class TestIPAddressCloaking:
    def test_prefix_sizes_are_webkits(self):
        """WebKit compares 4 * sizeof(in_addr) = 16 IPv4 bits and 4 * sizeof(in6_addr) = 64 IPv6 bits."""
        assert (IPV4_PREFIX_BITS, IPV6_PREFIX_BITS) == (16, 64)

    def test_same_first_16_bits_is_not_capped(self):
        """198.51.0.1 and 198.51.255.254 share their first two octets: no cap."""
        dns = fake_dns({COLLECTOR: a("198.51.255.254"), SITE: a("198.51.0.1")})

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None

    def test_different_second_octet_is_capped(self):
        """198.50.x and 198.51.x differ within the first 16 bits: capped, naming both addresses."""
        dns = fake_dns({COLLECTOR: a("198.50.100.7"), SITE: a("198.51.100.7")})

        warning = collector_cap_warning(COLLECTOR, SITE, dns) or ""

        assert "198.50.100.7" in warning and "198.51.100.7" in warning
        assert "16 bits" in warning
        assert "7 days" in warning

    def test_same_first_64_ipv6_bits_is_not_capped(self):
        """Two addresses in the same IPv6 /64 are not capped."""
        dns = fake_dns({COLLECTOR: a("2001:db8:1:2::ffff"), SITE: a("2001:db8:1:2::1")})

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None

    def test_different_ipv6_64_bit_prefix_is_capped(self):
        """Addresses in one /48 but different /64s are capped."""
        dns = fake_dns({COLLECTOR: a("2001:db8:1:3::1"), SITE: a("2001:db8:1:2::1")})

        warning = collector_cap_warning(COLLECTOR, SITE, dns) or ""

        assert "64 bits" in warning

    def test_site_with_ipv6_and_collector_without_is_capped(self):
        """Over IPv6 the site's address and the collector's IPv4 address never match."""
        dns = fake_dns(
            {COLLECTOR: a("198.51.100.9"), SITE: a("198.51.100.7", "2001:db8:1:2::1")}
        )

        warning = collector_cap_warning(COLLECTOR, SITE, dns) or ""

        assert "AAAA" in warning and "different families" in warning

    def test_collector_with_ipv6_and_site_without_is_capped(self):
        """The reverse: a collector reachable over IPv6 beside an IPv4-only site."""
        dns = fake_dns(
            {COLLECTOR: a("198.51.100.9", "2001:db8:1:2::9"), SITE: a("198.51.100.7")}
        )

        assert "different families" in (
            collector_cap_warning(COLLECTOR, SITE, dns) or ""
        )

    def test_any_collector_address_outside_the_range_is_capped(self):
        """Safari may connect to any of the collector's addresses, so one outlier is enough."""
        dns = fake_dns({COLLECTOR: a("198.51.100.9", "203.0.113.9"), SITE: SITE_V4})

        assert "203.0.113.9" in (collector_cap_warning(COLLECTOR, SITE, dns) or "")

    def test_ipv4_mapped_addresses_compare_as_ipv4(self):
        """::ffff:198.51.100.9 is 198.51.100.9."""
        dns = fake_dns({COLLECTOR: a("::ffff:198.51.100.9"), SITE: SITE_V4})

        assert collector_cap_warning(COLLECTOR, SITE, dns) is None


class TestSameOriginAndThirdParty:
    def test_collector_on_the_site_host_itself_is_never_capped(self):
        """A same-origin path compares the host with itself; DNS is not even asked."""
        dns = fake_dns({})

        assert collector_cap_warning(SITE, SITE, dns) is None
        assert dns.asked == []

    def test_collector_on_another_registrable_domain_is_third_party(self):
        """A collector on another site's domain is blocked outright, which the message says."""
        dns = fake_dns({})

        warning = collector_cap_warning("t.tracker.example.net", SITE, dns) or ""

        assert "third party" in warning and "blocks its cookies outright" in warning
        assert "shop.example" in warning
        assert dns.asked == []

    def test_public_suffix_list_decides_the_site(self):
        """t.shop.co.uk and www.shop.co.uk are one site; shop-a.co.uk and shop-b.co.uk are two."""
        same = fake_dns({"t.shop.co.uk": a("198.51.100.9"), "www.shop.co.uk": SITE_V4})

        assert collector_cap_warning("t.shop.co.uk", "www.shop.co.uk", same) is None
        assert "third party" in (
            collector_cap_warning("t.shop-a.co.uk", "www.shop-b.co.uk", fake_dns({}))
            or ""
        )


class TestInput:
    @pytest.mark.parametrize(
        "collector",
        ["https://t.shop.example/collect", "t.shop.example:8443", "T.SHOP.EXAMPLE."],
    )
    def test_urls_ports_case_and_trailing_dot_are_reduced_to_the_host(self, collector):
        """A URL, host:port, upper case or a trailing dot name the same collector host."""
        dns = fake_dns({COLLECTOR: a("203.0.113.5"), SITE: SITE_V4})

        warning = collector_cap_warning(collector, SITE, dns) or ""

        assert f"collector {COLLECTOR} " in warning

    @pytest.mark.parametrize(
        "bad", ["", "   ", "bad host", "a..b", "shop!.example", None, 42]
    )
    def test_bad_host_is_a_clear_error(self, bad):
        """Something that is not a host name raises ValueError naming the argument and value."""
        with pytest.raises(ValueError, match="collector_host"):
            collector_cap_warning(bad, SITE, fake_dns({}))  # type: ignore[arg-type]

    def test_unresolvable_collector_is_reported_not_raised(self):
        """A collector name DNS does not know yields a message, not a crash."""
        dns = fake_dns({SITE: SITE_V4})

        warning = collector_cap_warning(COLLECTOR, SITE, dns) or ""

        assert warning.startswith("cannot check")
        assert "NXDOMAIN" in warning

    def test_name_without_addresses_is_reported(self):
        """A name that resolves to no A/AAAA address cannot be compared, and the message says so."""
        dns = fake_dns({COLLECTOR: a(), SITE: SITE_V4})

        assert "no A or AAAA address" in (
            collector_cap_warning(COLLECTOR, SITE, dns) or ""
        )


class TestSystemResolver:
    def test_ip_literal_resolves_to_itself(self):
        """An IP literal needs no DNS and has no CNAME."""
        assert system_resolver("2001:db8::1") == Resolution((), ("2001:db8::1",))

    def test_localhost_resolves_from_the_hosts_file(self):
        """localhost resolves through the system resolver to loopback addresses only."""
        result = system_resolver("localhost")

        assert result.addresses
        assert set(result.addresses) <= {"127.0.0.1", "::1"}

    def test_invalid_name_raises_resolve_error(self):
        """A name the resolver refuses raises ResolveError naming it."""
        with pytest.raises(ResolveError, match="'bad..name'"):
            system_resolver("bad..name")
