"""Enrichment: the facts only the server knows, added in one visible order.

1. client IP   (:mod:`.client_ip`: trusted forwarding headers, else the peer)
2. user agent  (:mod:`.useragent`: ua-parser + bot verdict)
3. geo         (:mod:`.geo`: MaxMind DB, when one is configured)
4. identifiers (:mod:`.ids`: first-party visitor ID, ``_fbp``/``_fbc``, GA client and session)

The result is one :class:`~proxy.model.Context` shared by every event of a
hit, and the cookies to set on the answer.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from ..model import Context
from ..settings import Settings
from .client_ip import client_ip
from .geo import GeoReader
from .ids import CookieSpec, resolve_ids
from .useragent import UserAgentParser

__all__ = ["Enricher", "CookieSpec"]

log = logging.getLogger("proxy.enrich")


class Enricher:
    """Holds what enrichment opens once (UA parser and cache, geo database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ua = UserAgentParser()
        self.geo = GeoReader(settings.geo_db) if settings.geo_db else None
        self._warned_untrusted = False

    def close(self) -> None:
        if self.geo is not None:
            self.geo.close()

    def context(
        self,
        *,
        peer: str | None,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        host: str,
        click_ids: Mapping[str, str],
        now: float | None = None,
        set_ids: bool = True,
    ) -> tuple[Context, list[CookieSpec]]:
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
        user_agent = headers.get("User-Agent", "")
        ctx = Context(ip=ip, user_agent=user_agent, ua=self.ua.parse(user_agent))
        if self.geo is not None and ip:
            ctx.geo = self.geo.lookup(ip)
        ctx.click_ids = dict(click_ids)
        cookies_out: list[CookieSpec] = []
        if set_ids:
            ctx.ids, cookies_out = resolve_ids(
                cookies,
                host,
                click_ids,
                time.time() if now is None else now,
                configured_domain=s.cookie_domain,
                visitor_cookie=s.visitor_cookie,
            )
        return ctx, cookies_out
