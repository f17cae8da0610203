"""Enrichment: the facts only the server knows, added in one visible order.

1. client IP   (:mod:`.client_ip`: trusted forwarding headers, else the peer)
2. user agent  (:mod:`.useragent`: ua-parser + the UA's own bot verdict)
3. geo         (:mod:`.geo`: MaxMind DB, when one is configured)
4. bot score   (:mod:`.bots`: UA verdict, header consistency, data-centre ASN)
5. identifiers (:mod:`.ids`: first-party visitor ID, ``_fbp``/``_fbc``, GA client and session)

The result is one :class:`~proxy.model.Context` shared by every event of a
hit (:meth:`Enricher.context`), then the identifiers and the cookies to set
on the answer (:meth:`Enricher.identify`), once consent says whether
cookies may be used.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Mapping

from ..model import Context
from ..settings import Settings
from .bots import ASNReader, bot_score
from .client_ip import client_ip
from .geo import GeoReader
from .ids import CLICK_COOKIE, CookieSpec, one_off_ga_client_id, resolve_ids
from .useragent import UserAgentParser

__all__ = ["Enricher", "CookieSpec", "header_text"]

log = logging.getLogger("proxy.enrich")

_FIRST_VISIT_SECS = 10.0
_FIRST_VISIT_MAX = 50_000
_NOT_SHARED = frozenset({"_fbc", CLICK_COOKIE})


def header_text(value: str) -> str:
    """A header's value as text that can be stored: bytes that are not UTF-8 become U+FFFD.

    aiohttp keeps such bytes as lone surrogates (``surrogateescape``), which
    no JSON encoder takes: one Latin-1 byte in a User-Agent made every
    payload of the hit unserialisable, dropped after a 204.
    """
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Enricher:
    """Holds what enrichment opens once (UA parser and cache, geo database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ua = UserAgentParser()
        self.geo = GeoReader(settings.geo_db) if settings.geo_db else None
        self.asn = ASNReader(settings.asn_db) if settings.asn_db else None
        self._warned_untrusted = False
        # Single flight for first visits: the cookie values minted for a
        # browser without cookies, by (host, ip, user agent, language), for a
        # few seconds, so that hits racing before the first answer set the
        # cookies get the same IDs rather than one visitor each. Click IDs are
        # not shared: they belong to the hit that carried them, and two people
        # behind one address with one browser build would otherwise swap them.
        # TODO(single flight across workers): with --workers N two racing
        # connections may reach different processes; a shared store (the
        # outbox database) would close that gap.
        self._first_visits: OrderedDict[tuple[str, str, str, str], tuple[float, dict[str, str]]] = OrderedDict()

    def close(self) -> None:
        if self.geo is not None:
            self.geo.close()
        if self.asn is not None:
            self.asn.close()

    def context(
        self,
        *,
        peer: str | None,
        headers: Mapping[str, str],
        click_ids: Mapping[str, str],
    ) -> Context:
        """Steps 1-4: who and where the client is, and whether it is a bot.

        Identifiers (step 5, :meth:`identify`) wait for the consent decision,
        which needs the geo found here.
        """
        s = self.settings
        ip = client_ip(peer, headers, s.trusted_proxies, s.client_ip_header)
        if not s.trusted_proxies and not self._warned_untrusted and "X-Forwarded-For" in headers:
            # Once per process: the usual mistake behind a proxy, which would
            # send the proxy's address to every vendor.
            self._warned_untrusted = True
            log.warning(
                "a hit came with X-Forwarded-For, but no proxy is trusted, so the peer address %s is used;"
                " behind a proxy or load balancer set TAGRELAY_TRUSTED_PROXIES",
                ip,
            )
        user_agent = header_text(headers.get("User-Agent", ""))
        ctx = Context(ip=ip, user_agent=user_agent, ua=self.ua.parse(user_agent))
        if self.geo is not None and ip:
            ctx.geo = self.geo.lookup(ip)
        asn = self.asn.lookup(ip) if self.asn is not None and ip else None
        verdict = bot_score(ctx.ua, headers, asn.number if asn else None, asn.organization if asn else None)
        ctx.bot, ctx.bot_score, ctx.bot_reasons = verdict.is_bot, verdict.score, tuple(verdict.reasons)
        ctx.click_ids = dict(click_ids)
        return ctx

    def identify(
        self,
        ctx: Context,
        cookies: Mapping[str, str],
        host: str,
        *,
        ads: bool,
        analytics: bool,
        now: float | None = None,
    ) -> list[CookieSpec]:
        """Fill ``ctx.ids`` and return the cookies to set.

        Each cookie is read and set only with the consent of the purpose it
        serves (:func:`resolve_ids`). With neither ads nor analytics, no
        cookie at all: the event gets only a one-off GA client ID (GA4
        requires one), which identifies nobody.
        """
        now = time.time() if now is None else now
        if not (ads or analytics):
            ctx.ids = {"ga_client_id": one_off_ga_client_id(now)}
            return []
        s = self.settings
        first_visit = s.visitor_cookie not in cookies
        key = (host, ctx.ip, ctx.user_agent, ctx.language)
        seen = self._first_visits.get(key) if first_visit else None
        fresh = seen is not None and seen[0] > now
        if fresh:
            assert seen is not None
            cookies = {**seen[1], **cookies}
        ctx.ids, out = resolve_ids(
            cookies,
            host,
            ctx.click_ids,
            now,
            configured_domain=s.cookie_domain,
            visitor_cookie=s.visitor_cookie,
            ads=ads,
            analytics=analytics,
        )
        if first_visit and not fresh:
            self._first_visits.pop(key, None)
            shared = {c.name: c.value for c in out if c.name not in _NOT_SHARED}
            self._first_visits[key] = (now + _FIRST_VISIT_SECS, shared)
            # Entries go in time order: drop the expired ones at the front.
            while self._first_visits and (
                len(self._first_visits) > _FIRST_VISIT_MAX or next(iter(self._first_visits.values()))[0] <= now
            ):
                self._first_visits.popitem(last=False)
        return out
