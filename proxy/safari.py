"""Will Safari cap the collector's server-set cookies to 7 days? (``tagrelay check``)

tagrelay sets its first-party IDs with ``Set-Cookie`` so that ITP's 7-day cap
on script-set cookies does not apply. WebKit caps those too when the
collector host looks like a third party hiding under the site's name:

* **CNAME cloaking** (Safari 14, WebKit blog "CNAME Cloaking and Bounce
  Tracking Defense", 2020): a same-site subresource whose host resolves
  through a CNAME. WebKit takes the registrable domain of the *last* name in
  the CNAME chain; the cookies are capped unless the page's host is that
  domain or under it, or the page's own host resolves through a CNAME to the
  same registrable domain.
* **IP address cloaking** (WebKit bug 246477, PR #5347, 2022; widely
  reported as shipped in Safari 16.4): when the collector host has no CNAME,
  the address Safari connected to is compared with the address of the page's
  host. Unless the first half matches (the first 16 bits of IPv4, the first
  64 bits of IPv6: ``4 * sizeof(in_addr)`` and ``4 * sizeof(in6_addr)`` bits
  in ``shouldCapCookieExpiryForThirdPartyIPAddress``), the cookies are
  capped. An IPv4 and an IPv6 address never match.

Both rules live in WebKit's ``NetworkTaskCocoa::setCookieTransformForFirstPartyRequest``
(read at trunk, 2026). Only the first that applies counts: with a CNAME the
IP addresses are not compared. Top-level navigations are exempt, and a
collector on another registrable domain is not "capped": its cookies are
third-party and blocked outright.

Safari picks one of a name's addresses; :func:`collector_cap_warning` does
not know which, so it warns when *any* pairing could be capped, including a
site reachable over IPv6 with a collector reachable only over IPv4 (Happy
Eyeballs would then compare addresses of different families).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

__all__ = [
    "IPV4_PREFIX_BITS",
    "IPV6_PREFIX_BITS",
    "Resolution",
    "ResolveError",
    "Resolver",
    "collector_cap_warning",
    "system_resolver",
]

IPV4_PREFIX_BITS = 16
"""Leading IPv4 bits WebKit requires to match: 4 * sizeof(struct in_addr)."""
IPV6_PREFIX_BITS = 64
"""Leading IPv6 bits WebKit requires to match: 4 * sizeof(struct in6_addr)."""

# The bundled list only: PublicSuffixList() never fetches a newer copy.
_PSL = PublicSuffixList()


class ResolveError(Exception):
    """A host name could not be resolved; the message names it and says why."""


@dataclass(slots=True, frozen=True)
class Resolution:
    """What DNS says about one name.

    ``cnames`` is the CNAME chain from the name towards its addresses, in
    order and without trailing dots (empty when the name has A/AAAA records
    itself); ``addresses`` are the A and AAAA addresses it ends at.
    """

    cnames: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


Resolver = Callable[[str], Resolution]
"""Resolves one host name; raises :class:`ResolveError` when it cannot."""


def system_resolver(host: str) -> Resolution:
    """Resolve ``host`` with the standard library (the system's resolver and hosts file).

    The stdlib cannot ask for CNAME records. What it can give is the
    canonical name (``getaddrinfo`` with ``AI_CANONNAME``): the name at the
    end of the CNAME chain. That is the only name of the chain WebKit looks
    at, so a one-element ``cnames`` is enough for :func:`collector_cap_warning`;
    the intermediate names are not reported.
    """
    # TODO(issue 4): report the whole CNAME chain once tagrelay depends on a
    # DNS library (dnspython); the check itself only needs its last name.
    if _ip_literal(host):
        return Resolution((), (str(ipaddress.ip_address(host)),))
    try:
        infos = socket.getaddrinfo(
            host, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"{host!r} does not resolve: {exc}") from None

    canonical = next((info[3] for info in infos if info[3]), "")
    canonical = canonical.rstrip(".").lower()
    cnames = (canonical,) if canonical and canonical != host.rstrip(".").lower() else ()
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    return Resolution(cnames, tuple(addresses))


def collector_cap_warning(
    collector_host: str, site_host: str, resolve: Resolver = system_resolver
) -> str | None:
    """Why Safari would cap cookies set by ``collector_host`` on pages of ``site_host``, or None.

    Both arguments are host names (a URL or a ``host:port`` is accepted and
    reduced to its host). The message names the hosts and the DNS facts and
    says what to do instead: serve the collector on a same-origin path, or
    give the collector host an A/AAAA record in the site's own address range.
    Raises ValueError for something that is not a host name.
    """
    collector = _host(collector_host, "collector_host")
    site = _host(site_host, "site_host")
    if collector == site:
        # The same host is compared with itself: same CNAME, same connection.
        return None

    collector_site = _registrable(collector)
    site_site = _registrable(site)
    if collector_site != site_site:
        return (
            f"collector {collector} is not on the site's own domain {site_site} "
            f"(it is on {collector_site}): Safari treats it as a third party and "
            f"blocks its cookies outright, not just for 7 days. Instead, serve the "
            f"collector on a path of the site itself (https://{site}/<path>, proxied to "
            f"tagrelay), or on a subdomain of {site_site} with an A/AAAA record in "
            f"{site}'s address range."
        )

    fix = _fix(collector, site)

    try:
        collector_dns = resolve(collector)
        site_dns = resolve(site)
    except ResolveError as exc:
        return (
            f"cannot check Safari's 7-day cookie cap for collector {collector}: {exc}; "
            "run the check again once DNS is set up"
        )

    if collector_dns.cnames:
        return _cname_warning(collector, site, collector_dns, site_dns, fix)
    return _address_warning(collector, site, collector_dns, site_dns, fix)


def _cname_warning(
    collector: str, site: str, collector_dns: Resolution, site_dns: Resolution, fix: str
) -> str | None:
    """WebKit's CNAME rule, on the last name of the collector's CNAME chain."""
    target = collector_dns.cnames[-1].rstrip(".").lower()
    target_site = _registrable(target)
    if site == target_site or site.endswith("." + target_site):
        return None
    if (
        site_dns.cnames
        and _registrable(site_dns.cnames[-1].rstrip(".").lower()) == target_site
    ):
        # The page itself is served through the same provider's domain.
        return None
    return (
        f"collector {collector} is a CNAME to {target} (domain {target_site}), not to "
        f"{_registrable(site)}: Safari caps cookies set by its responses to 7 days "
        f"(ITP CNAME cloaking defence). {fix}"
    )


def _address_warning(
    collector: str, site: str, collector_dns: Resolution, site_dns: Resolution, fix: str
) -> str | None:
    """WebKit's IP address rule: the first half of the addresses must match."""
    collector_ips = _addresses(collector_dns)
    site_ips = _addresses(site_dns)
    if not collector_ips or not site_ips:
        missing = collector if not collector_ips else site
        return (
            f"cannot check Safari's 7-day cookie cap for collector {collector}: "
            f"{missing} has no A or AAAA address"
        )

    problems: list[str] = []
    for family, bits in ((4, IPV4_PREFIX_BITS), (6, IPV6_PREFIX_BITS)):
        ours = [ip for ip in collector_ips if ip.version == family]
        theirs = [ip for ip in site_ips if ip.version == family]
        record = "A" if family == 4 else "AAAA"
        if theirs and not ours:
            problems.append(
                f"{site} has an {record} record but {collector} has none, so over "
                f"IPv{family} Safari compares addresses of different families"
            )
        elif ours and not theirs:
            problems.append(
                f"{collector} has an {record} record but {site} has none, so over "
                f"IPv{family} Safari compares addresses of different families"
            )
        else:
            for mine in ours:
                other = next(
                    (t for t in theirs if not _same_prefix(mine, t, bits)), None
                )
                if other is not None:
                    problems.append(
                        f"{collector} resolves to {mine} and {site} to {other}: "
                        f"the first {bits} bits differ"
                    )
                    break
    if not problems:
        return None
    return (
        f"Safari caps cookies set by collector {collector} to 7 days (ITP IP address "
        f"cloaking defence): {'; '.join(problems)}. {fix}"
    )


def _fix(collector: str, site: str) -> str:
    return (
        f"Instead, serve the collector on a path of the site itself "
        f"(https://{site}/<path>, proxied to tagrelay), or point {collector} at the "
        f"site's own servers with an A/AAAA record whose first half (IPv4 /{IPV4_PREFIX_BITS}, "
        f"IPv6 /{IPV6_PREFIX_BITS}) matches {site}'s address and no CNAME."
    )


def _same_prefix(
    a: ipaddress.IPv4Address | ipaddress.IPv6Address,
    b: ipaddress.IPv4Address | ipaddress.IPv6Address,
    bits: int,
) -> bool:
    width = a.max_prefixlen
    return (int(a) >> (width - bits)) == (int(b) >> (width - bits))


def _addresses(
    resolution: Resolution,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of ``resolution``, IPv4-mapped IPv6 as IPv4, unparsable ones skipped."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in resolution.addresses:
        try:
            address = ipaddress.ip_address(str(text).split("%", 1)[0])
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address not in found:
            found.append(address)
    return found


def _registrable(host: str) -> str:
    """The registrable domain (eTLD+1) of ``host``; an IP literal or a bare suffix is itself."""
    if _ip_literal(host):
        return host
    return _PSL.privatesuffix(host) or host


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _host(value: object, what: str) -> str:
    """The lower-case host name in ``value`` (a name, ``name:port`` or URL)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{what} {value!r}: expected a host name such as t.shop.example"
        )
    text = value.strip()
    if _ip_literal(text):
        return str(ipaddress.ip_address(text))
    parts = urlsplit(text if "://" in text else "//" + text)
    try:
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        host = ""
    if not host:
        raise ValueError(
            f"{what} {value!r}: expected a host name such as t.shop.example"
        )
    if _ip_literal(host):
        return str(ipaddress.ip_address(host))
    if any(not label for label in host.split(".")):
        raise ValueError(
            f"{what} {value!r}: not a host name (empty label between dots)"
        )
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(
            f"{what} {value!r}: not a valid international domain name"
        ) from None
    labels = host.split(".")
    if any(
        not label or len(label) > 63 or not set(label) <= _LABEL_CHARS
        for label in labels
    ):
        raise ValueError(
            f"{what} {value!r}: not a host name (letters, digits, '-' and dots only)"
        )
    return host
