"""The canonical event and the facts the server attaches to it.

An :class:`Event` is built by a source (the collection endpoint, later the
server events API), completed by the enrichment steps, matched by routes and
rendered by adapters. Raw PII lives only in :class:`UserData` in memory;
adapters hash it before anything leaves the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CLICK_IDS", "USER_FIELDS", "Event", "Page", "UserData", "Context", "UAInfo", "Geo", "event_view", "sample_event"]


#: The person's fields a site may send (raw; hashed by adapters before leaving).
USER_FIELDS: tuple[str, ...] = ("email", "phone", "first_name", "last_name", "external_id")

#: Ad-click IDs read from landing URLs, kept as sent (case and encoding).
CLICK_IDS: frozenset[str] = frozenset(
    {"fbclid", "gclid", "gbraid", "wbraid", "ttclid", "msclkid", "li_fat_id", "ScCid", "epik", "rdt_cid", "twclid"}
)


@dataclass(slots=True)
class Page:
    url: str = ""
    referrer: str = ""
    title: str = ""


@dataclass(slots=True)
class UserData:
    """What the site told us about the person. Raw values: never log or persist."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    external_id: str | None = None

    def present(self) -> dict[str, str]:
        return {k: v for k in USER_FIELDS if (v := getattr(self, k))}


@dataclass(slots=True, frozen=True)
class UAInfo:
    """A parsed user agent (uap-core taxonomy) and the bot verdict."""

    browser: str = "Other"
    browser_version: str = ""
    os: str = "Other"
    os_version: str = ""
    device: str = "Other"
    device_brand: str = ""
    device_model: str = ""
    category: str = "desktop"  # desktop, mobile, tablet, bot
    is_bot: bool = False
    bot_reason: str = ""


@dataclass(slots=True, frozen=True)
class Geo:
    """Where the client IP is, as far as the configured database knows."""

    country: str = ""  # ISO 3166-1 alpha-2
    region: str = ""  # first subdivision ISO code, e.g. "CA" (country prefix not included)
    region_name: str = ""
    city: str = ""
    postal_code: str = ""
    continent: str = ""  # two-letter MaxMind continent code, e.g. "EU"
    time_zone: str = ""


@dataclass(slots=True)
class Context:
    ip: str = ""
    user_agent: str = ""
    ua: UAInfo = field(default_factory=UAInfo)
    geo: Geo | None = None
    language: str = ""
    screen: str = ""  # "1280x800"
    consent: dict[str, bool] = field(default_factory=dict)  # purpose -> granted, as decided
    # The decision with its reasons (proxy.consent.Consent); None where no
    # policy was applied (an event built by hand): then only an explicit
    # denial in ``consent`` blocks.
    consent_state: Any = None
    click_ids: dict[str, str] = field(default_factory=dict)  # fbclid, gclid, ttclid, ...
    # Identifiers the server read or minted: visitor_id, fbp, fbc, ga_client_id.
    ids: dict[str, str] = field(default_factory=dict)
    # The bot verdict from user agent, headers and network (proxy.enrich.bots).
    bot: bool = False
    bot_score: int = 0
    bot_reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class Event:
    name: str
    id: str
    time: float  # unix seconds
    source: str = "browser"
    action_source: str = "website"
    page: Page = field(default_factory=Page)
    user: UserData = field(default_factory=UserData)
    context: Context = field(default_factory=Context)
    params: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None


def event_view(event: Event) -> dict[str, Any]:
    """The read-only view of an event that routes match on and templates see.

    PII is absent on purpose: a route or template that could read the raw
    email could also copy it into a plain field. ``user.has`` lists which PII
    fields are present.
    """
    ctx = event.context
    geo = ctx.geo
    host, path, query = _url_parts(event.page.url)
    return {
        "event": event.name,
        "name": event.name,
        "id": event.id,
        "time": event.time,
        "source": event.source,
        "action_source": event.action_source,
        "page": {
            "url": event.page.url,
            "referrer": event.page.referrer,
            "title": event.page.title,
            "host": host,
            "path": path,
            "query": query,
        },
        "user": {
            "id": event.user_id or "",
            "anonymous_id": ctx.ids.get("visitor_id", ""),
            "has": sorted(event.user.present()),
        },
        "params": event.params,
        "context": {
            "ip": ctx.ip,
            "user_agent": ctx.user_agent,
            "language": ctx.language,
            "consent": ctx.consent,
            "click_ids": ctx.click_ids,
            "ids": ctx.ids,
        },
        "ua": _slots_dict(ctx.ua),
        "geo": _slots_dict(geo) if geo else {},
        "bot": ctx.bot,
        "bot_score": ctx.bot_score,
        "bot_reasons": list(ctx.bot_reasons),
    }


def sample_event() -> Event:
    """An event with every optional table present, to read the shape of its views off."""
    event = Event(name="x", id="x", time=0.0, user=UserData(email="sample@example.com"))
    event.context.geo = Geo()
    return event


def _url_parts(url: str) -> tuple[str, str, str]:
    """A page URL's host, path and query; empty for no URL or one urlsplit refuses ("http://[::1")."""
    if not url:
        return "", "", ""
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.path, parts.query
    except ValueError:
        return "", "", ""


def _slots_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
