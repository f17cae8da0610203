"""The client's IP address, read from forwarding headers only behind trusted proxies.

Once the TCP peer is in a trusted network, one header is read: the one the
operator names (setting ``client_ip_header``; ``X-Forwarded-For`` by
default). Naming one matters: a proxy passes a client's own copies of the
headers it does not set through unchanged. With ``auto``, the first present
of these wins, in this order:

1. ``CF-Connecting-IP``: one address, set by Cloudflare for the connecting
   client. It is not a chain, so it is taken as it is.
2. ``Forwarded`` (RFC 7239): the standard chain, ``for=`` of each element.
3. ``X-Forwarded-For``: the de-facto chain most load balancers append to.

Only the first header present is read; chains from different headers are
never merged, because one proxy's chain says nothing about another's hops.

A chain is walked from the right (the hop nearest to us) to the left. Hops
that are themselves trusted proxies are skipped; the first untrusted hop is
the client. Everything left of it was written by the client and is ignored,
so a client cannot choose its own address by sending a forged header. If a
hop is not an address (garbage, ``unknown``, an obfuscated ``_name``) the
walk stops there and the last good address is used: the claim of the
nearest trusted hop, or the peer itself.

With ``auto``, trusting a proxy means trusting *every* header above from
it: a trusted proxy that passes a client's own ``CF-Connecting-IP`` or
``Forwarded`` header through unchanged lets the client pick its address.

Addresses come back normalised: ports and brackets stripped, IPv4-mapped
IPv6 (``::ffff:81.2.69.160``) turned into IPv4, real IPv6 in compressed
lower-case form.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence

from multidict import MultiMapping

__all__ = ["IPNetwork", "client_ip", "is_trusted", "normalize_ip"]

log = logging.getLogger("proxy.enrich")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# "1.2.3.4:5678": an IPv4 address with a port (one colon, digits after it).
_V4_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\Z")
# "[2001:db8::1]" or "[2001:db8::1]:443".
_V6_BRACKETS = re.compile(r"^\[([^\[\]]+)\](?::(\d{1,5}))?\Z")


def normalize_ip(value: str) -> str | None:
    """The address in ``value`` in canonical form, or None if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]`` and ``[2001:db8::1]:443``. IPv4-mapped IPv6 becomes
    IPv4. Zone IDs (``fe80::1%eth0``) are refused: they only mean something
    on the host that wrote them.
    """
    addr = _parse(value)
    return str(addr) if addr is not None else None


def is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    """Whether ``address`` (in any form :func:`normalize_ip` takes) is trusted."""
    addr = _parse(address)
    return addr is not None and _in(addr, trusted)


CLIENT_IP_HEADERS = ("x-forwarded-for", "forwarded", "cf-connecting-ip", "auto")


def client_ip(
    peer: str | None,
    headers: Mapping[str, str],
    trusted: Sequence[IPNetwork],
    header: str = "x-forwarded-for",
) -> str:
    """The client's address for a request from TCP peer ``peer``.

    ``headers`` is a case-insensitive mapping (aiohttp's ``CIMultiDictProxy``);
    repeated headers are read in order through ``getall``. Returns "" when
    the peer is unknown or not an address (a Unix socket) and no trusted
    header can be read. See the module docstring for the rules.

    ``header`` names the one header the trusted proxy sets; the others are
    ignored, since a proxy passes a client's own copies of them through
    unchanged. ``auto`` reads them in the module docstring's order, for
    set-ups where the proxy strips what it does not set.
    """
    peer_addr, peer_text = _peer(peer) if peer else (None, "")
    if peer_addr is None:
        return ""
    if not trusted or not _in(peer_addr, trusted):
        return peer_text

    cf = _values(headers, "CF-Connecting-IP") if header in ("cf-connecting-ip", "auto") else []
    if cf:
        # Cloudflare sends exactly one; several copies mean someone added one.
        addr = _parse(cf[0]) if len(cf) == 1 else None
        if addr is None:
            log.debug("CF-Connecting-IP is not one address; using the peer")
            return peer_text
        return str(addr)

    forwarded = _values(headers, "Forwarded") if header in ("forwarded", "auto") else []
    if forwarded:
        return _walk(
            _forwarded_for(",".join(forwarded)), peer_addr, trusted, "Forwarded"
        )

    xff = _values(headers, "X-Forwarded-For") if header in ("x-forwarded-for", "auto") else []
    if xff:
        return _walk(",".join(xff).split(","), peer_addr, trusted, "X-Forwarded-For")

    return peer_text


def _walk(
    hops: Sequence[str | None],
    peer: IPAddress,
    trusted: Sequence[IPNetwork],
    header: str,
) -> str:
    """The first untrusted hop from the right, or the last good one before garbage."""
    last_good = peer
    for position, hop in enumerate(reversed(hops)):
        addr = _parse(hop) if hop is not None else None
        if addr is None:
            # The value is client-controlled data; its position is enough to debug.
            log.debug(
                "%s hop %d from the right is not an address; using the one after it",
                header,
                position,
            )
            return str(last_good)
        if not _in(addr, trusted):
            return str(addr)
        last_good = addr
    # Every hop was a trusted proxy: the left-most one is as far as we can see.
    return str(last_good)


def _forwarded_for(value: str) -> list[str | None]:
    """The ``for=`` of each RFC 7239 element; None where it has none or several."""
    result: list[str | None] = []
    for element in _split_outside_quotes(value, ","):
        # An empty element ("a, , b") is not skipped: the hop that wrote it
        # told us nothing, so walking past it would trust what lies left of it.
        found: list[str] = []
        for pair in _split_outside_quotes(element, ";"):
            name, sep, raw = pair.partition("=")
            if not sep:
                continue
            if name.strip().lower() == "for":
                found.append(_unquote(raw.strip()))
        result.append(found[0] if len(found) == 1 else None)
    return result


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    """``value`` split at ``sep``, leaving separators inside quoted strings alone."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


@functools.lru_cache(maxsize=4096)
def _peer(peer: str) -> tuple[IPAddress | None, str]:
    """The TCP peer's address and its text, per peer (the same clients come back; peers are short)."""
    addr = _parse(peer)
    return addr, str(addr) if addr is not None else ""


def _parse(value: str | None) -> IPAddress | None:
    """The address in one header item (port and brackets allowed), or None."""
    if value is None:
        return None
    host = value.strip()
    match = _V6_BRACKETS.match(host) or _V4_PORT.match(host)
    if match:
        host, port = match.groups()
        if port is not None and int(port) > 65535:
            return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        # Also covers RFC 7239 "unknown" and obfuscated "_hidden" identifiers.
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            return None
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
    return addr


def _in(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    # A v4 address is never in a v6 network and vice versa (ipaddress checks).
    return any(addr in net for net in trusted)


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, MultiMapping):
        return list(headers.getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]
