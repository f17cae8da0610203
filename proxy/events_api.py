"""The server events API: authenticated batches of events from back ends, CRMs and apps.

A back end sends ``POST`` with ``Authorization: Bearer <key>``; the key says
which source the events come from (setting ``TAGRELAY_API_KEYS``, one key per
source, see :func:`parse_api_keys`). Body::

    {"events": [{"name": "purchase",
                 "id": "order-1042",
                 "time": 1733312345,                 # unix seconds, or "2024-12-04T11:39:05Z"
                 "action_source": "physical_store",
                 "page": {"url": "…", "referrer": "…", "title": "…"},
                 "user": {"email": "…", "phone": "…", "first_name": "…",
                          "last_name": "…", "external_id": "…"},
                 "user_id": "u-17",
                 "params": {"value": 42.5, "currency": "EUR", "transaction_id": "1042"},
                 "context": {"ip": "81.2.69.160", "user_agent": "…",
                             "consent": {"ads": true, "analytics": true},
                             "click_ids": {"gclid": "…"},
                             "ids": {"fbp": "…", "fbc": "…", "ga_client_id": "…",
                                     "ga_session_id": "…"}}}]}

``name``, ``id`` (the dedup key: a back end always knows its own order or
lead number), ``time`` and ``action_source`` are required; the rest is
optional. Unlike the collector, which ignores what a newer collector script
may add, unknown keys are refused: the sender is a developer, and a typo
(``"parms"``) should fail loudly rather than lose data quietly.

The limits are the collection endpoint's (body size, events per request,
string lengths, parameter count, nesting depth). ``time`` may lie in the past
(offline conversions), down to :data:`MAX_AGE_SECS`; each vendor adapter
applies its own, often shorter, window. A time more than
:data:`MAX_FUTURE_SECS` ahead is refused: back ends have synchronised clocks,
so such a time is a bug (milliseconds, a local time sent as UTC).

Every problem raises :class:`~proxy.collect.HitError` ``"<where>: <what>"``
with a 4xx status. Raw PII is never echoed in a message.

:func:`parse_server_events` returns :class:`ServerEvent` items, not yet
enriched; :func:`to_events` runs the enricher (user agent, geo) over each
one's own IP and user agent and returns canonical :class:`~proxy.model.Event`
objects ready for :func:`proxy.pipeline.plan_rows`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from hmac import compare_digest
from typing import TYPE_CHECKING, Any

import orjson

# The collector's checks and limits are reused on purpose: the same value is
# accepted or refused the same way whichever endpoint it came through.
from .collect import (
    _EVENT_ID,
    _EVENT_NAME,
    _MAX_USER_VALUE,
    HitError,
    _bool,
    _click_id,
    _key,
    _printable,
    _purpose,
    _show,
    _string,
    _user,
    _value,
    check_count,
    refusing,
)
from .enrich.client_ip import normalize_ip
from .enrich.ids import is_valid_fb_cookie
from .model import CLICK_IDS, Context, Event, Page, UAInfo, UserData
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .enrich import Enricher

__all__ = [
    "ACTION_SOURCES",
    "ID_KEYS",
    "MAX_AGE_SECS",
    "MAX_FUTURE_SECS",
    "MIN_KEY_CHARS",
    "ServerEvent",
    "authenticate",
    "parse_api_keys",
    "parse_event_time",
    "parse_server_events",
    "to_events",
]

#: Where a conversion happened: Meta's ``action_source`` vocabulary, the
#: broadest of the vendors'; adapters map it to their own (Snap, Pinterest,
#: Reddit) or refuse what they cannot carry.
ACTION_SOURCES = frozenset(
    {
        "website",
        "app",
        "physical_store",
        "phone_call",
        "email",
        "chat",
        "business_messaging",
        "system_generated",
        "other",
    }
)
#: Identifiers a back end may pass in ``context.ids`` (the names the
#: enricher uses for the cookies it reads or mints).
ID_KEYS = frozenset(
    {
        "visitor_id",
        "fbp",
        "fbc",
        "ga_client_id",
        "ga_session_id",
        "ga_session_number",
        "ttp",
        "scid",
        "rdt_uuid",
        "epik_cookie",
    }
)
#: Oldest event time accepted: 90 days, the longest window of the supported
#: vendors (LinkedIn); Meta, Reddit and Pinterest take 7 days, Snap 37.
MAX_AGE_SECS = 90 * 24 * 3600
#: How far ahead of our clock an event time may be.
MAX_FUTURE_SECS = 10 * 60
#: Shortest API key accepted (16 random characters are ~95 bits in base64).
MIN_KEY_CHARS = 16

# Source names end up in Event.source and rule matches: keep them plain.
_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# "browser" is what the collection endpoints stamp; an API key must not be
# able to pass its events off as browser hits.
_RESERVED_SOURCES = frozenset({"browser"})
# RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_TOKEN_CHARS = 512
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+) *")
_UNIX = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
# A unix time in seconds passes this in the year 5138; milliseconds pass it
# since 1973.
_MILLIS_FROM = 100_000_000_000
_EVENT_KEYS = ("name", "id", "time", "action_source", "page", "user", "user_id", "params", "context")
_PAGE_KEYS = ("url", "referrer", "title")
_CONTEXT_KEYS = ("ip", "user_agent", "consent", "click_ids", "ids")
_MAX_ID = 256
_ID_VALUE = re.compile(rf"[\x21-\x7e]{{1,{_MAX_ID}}}")
_DIGITS = re.compile(r"[0-9]{1,20}")


@dataclass(slots=True)
class ServerEvent:
    """One checked event from the events API or an import, before enrichment.

    ``ip`` and ``user_agent`` are the person's (not the sending server's);
    :func:`to_events` enriches from them. ``user`` holds raw PII: never log
    or persist it.
    """

    name: str
    id: str
    time: float  # unix seconds
    action_source: str
    source: str
    page: Page = field(default_factory=Page)
    user: UserData = field(default_factory=UserData)
    user_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    ip: str = ""
    user_agent: str = ""
    consent: dict[str, bool] = field(default_factory=dict)
    click_ids: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def to_event(self, context: Context | None = None) -> Event:
        """The canonical event, with ``context`` (enriched) or a bare one from these fields."""
        if context is None:
            context = Context(
                ip=self.ip,
                user_agent=self.user_agent,
                consent=dict(self.consent),
                click_ids=dict(self.click_ids),
                ids=dict(self.ids),
            )
        return Event(
            name=self.name,
            id=self.id,
            time=self.time,
            source=self.source,
            action_source=self.action_source,
            page=self.page,
            user=self.user,
            context=context,
            params=self.params,
            user_id=self.user_id,
        )

    def to_wire(self) -> dict[str, Any]:
        """This event in the API's JSON form (``time`` in unix seconds), e.g. to POST an import.

        Holds raw PII: send it over TLS to our own API only; never log or store it.
        """
        doc: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "time": self.time,
            "action_source": self.action_source,
        }
        page = {k: getattr(self.page, k) for k in _PAGE_KEYS if getattr(self.page, k)}
        if page:
            doc["page"] = page
        if self.user.present():
            doc["user"] = self.user.present()
        if self.user_id is not None:
            doc["user_id"] = self.user_id
        if self.params:
            doc["params"] = self.params
        context: dict[str, Any] = {}
        for key in _CONTEXT_KEYS:
            value = getattr(self, key)
            if value:
                context[key] = value
        if context:
            doc["context"] = context
        return doc


# -- keys and authentication ----------------------------------------------


def parse_api_keys(raw: str, *, setting: str = "TAGRELAY_API_KEYS") -> dict[str, str]:
    """Read ``"crm:KEY1,app:KEY2"`` into ``{source: key}``; an empty setting means no keys.

    Refuses (:class:`~proxy.settings.SettingsError`) an entry without
    ``source:``, a source name that is not ``[a-z][a-z0-9_-]*`` (at most 32)
    or is ``browser``, a source named twice, an empty key, a key shorter than
    :data:`MIN_KEY_CHARS`, a key with characters an ``Authorization: Bearer``
    header cannot carry, and one key given to two sources (the key is what
    tells the sources apart). Messages never show a key.
    """
    keys: dict[str, str] = {}
    for number, entry in enumerate(raw.split(","), 1):
        entry = entry.strip()
        if not entry:
            continue  # a trailing comma or an empty setting
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not colon:
            # The entry itself is not shown: it may be a key without its source.
            raise SettingsError(f"{setting} entry {number}: expected source:key (e.g. crm:<key>), found no ':'")
        if not _SOURCE_NAME.fullmatch(name):
            raise SettingsError(
                f"{setting} entry {number}: source {_show(name)} must be a lower-case letter, then"
                " lower-case letters, digits, _ or - (at most 32)"
            )
        if name in _RESERVED_SOURCES:
            raise SettingsError(
                f"{setting} source {name!r}: reserved for the collection endpoints; choose another name"
            )
        if name in keys:
            raise SettingsError(f"{setting} source {name!r}: given twice; one key per source")
        if not key:
            raise SettingsError(f"{setting} source {name!r}: the key is empty")
        if len(key) < MIN_KEY_CHARS:
            raise SettingsError(
                f"{setting} source {name!r}: the key has {len(key)} characters; at least {MIN_KEY_CHARS} are"
                " needed (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if len(key) > _MAX_TOKEN_CHARS or not _B64TOKEN.fullmatch(key):
            raise SettingsError(
                f"{setting} source {name!r}: the key must be at most {_MAX_TOKEN_CHARS} characters of"
                " A-Z a-z 0-9 - . _ ~ + / (then = padding), as a Bearer token"
            )
        for other, other_key in keys.items():
            if compare_digest(other_key.encode(), key.encode()):
                raise SettingsError(f"{setting} sources {other!r} and {name!r}: same key; each source needs its own")
        keys[name] = key
    return keys


def authenticate(header_value: str | None, keys: Mapping[str, str]) -> str | None:
    """The source whose key ``Authorization: Bearer <key>`` carries, or None.

    The presented key is compared with every configured key, always all of
    them and in constant time (``hmac.compare_digest`` over SHA-256
    digests, so that even key lengths do not show), so the time taken says
    neither whether nor which key matched.
    """
    if not header_value or len(header_value) > _MAX_TOKEN_CHARS + 16:
        return None
    match = _BEARER.fullmatch(header_value)
    if match is None or not _B64TOKEN.fullmatch(match.group(1)):
        return None
    presented = hashlib.sha256(match.group(1).encode()).digest()
    found: str | None = None
    for source, key in keys.items():
        # No break and no short-circuit before the comparison: every key costs the same.
        same = compare_digest(presented, hashlib.sha256(key.encode()).digest())
        if same and found is None:
            found = source
    return found


# -- parsing ----------------------------------------------------------------


def parse_server_events(body: bytes, source: str, settings: Settings, now: float) -> list[ServerEvent]:
    """Check an events API body and return its events, stamped ``source``; raise :class:`HitError`."""
    if len(body) > settings.max_body_bytes:
        raise HitError(f"body: {len(body)} bytes is over the limit of {settings.max_body_bytes}", 413)
    if not body.strip():
        raise HitError("body: empty; expected a JSON object with an 'events' list")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HitError(f"body: not valid JSON (UTF-8): {exc}") from None
    if not isinstance(doc, dict):
        raise HitError("body: must be a JSON object with an 'events' list")
    events = doc.get("events")
    with refusing(len(events) if isinstance(events, list) else 1, settings.max_events_per_hit):
        for key in doc:
            if key != "events":
                raise HitError(f"body: unknown key {_show(key)} (known: events)")
        if not isinstance(events, list) or not events:
            raise HitError("events: must be a non-empty list")
        return _server_events(events, source, settings, now)


def _server_events(events: list[Any], source: str, settings: Settings, now: float) -> list[ServerEvent]:
    check_count(len(events), settings.max_events_per_hit, "events", "request")

    out: list[ServerEvent] = []
    seen: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(events):
        where = f"events[{i}]"
        event = _server_event(raw, where, source, settings, now)
        first = seen.setdefault((event.name, event.id), i)
        if first != i:
            raise HitError(
                f"{where}.id: {event.name} {event.id!r} is already events[{first}]; the id is the"
                " dedup key, so send each event once"
            )
        out.append(event)
    return out


def parse_event_time(value: Any, where: str, now: float) -> float:
    """Unix seconds from a number, a string of digits, or ISO 8601 with a UTC offset.

    Refuses a time more than :data:`MAX_FUTURE_SECS` after ``now``, older than
    :data:`MAX_AGE_SECS`, in milliseconds, or without a time zone (which
    could be any of them).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HitError(f"{where}: must be unix seconds (a number) or an ISO 8601 string")
    if isinstance(value, str):
        text = value.strip()
        numeric = bool(_UNIX.fullmatch(text))
        if numeric:
            t = float(text)
        else:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                raise HitError(
                    f"{where}: {_show(value)} is neither unix seconds nor an ISO 8601 time (e.g. 2024-12-04T11:39:05Z)"
                ) from None
            if when.tzinfo is None:
                raise HitError(f"{where}: {_show(value)} has no time zone; add Z or an offset such as +01:00")
            t = when.timestamp()
    else:
        numeric = True
        t = float(value)
        if not math.isfinite(t):
            raise HitError(f"{where}: must be a finite number of seconds")
    if numeric and t >= _MILLIS_FROM:
        raise HitError(f"{where}: {_show(value)} looks like milliseconds; send unix seconds")
    if t > now + MAX_FUTURE_SECS:
        raise HitError(
            f"{where}: {_show(value)} is {t - now:.0f} s in the future; at most {MAX_FUTURE_SECS} s of clock"
            " skew is accepted"
        )
    if t < now - MAX_AGE_SECS:
        raise HitError(
            f"{where}: {_show(value)} is {int((now - t) // 86400)} days old; events older than"
            f" {MAX_AGE_SECS // 86400} days are refused"
        )
    return t


def to_events(items: Iterable[ServerEvent], enricher: Enricher) -> list[Event]:
    """Enrich each server event from its own IP and user agent and return canonical events.

    The sending server is not the person, so its address and user agent are
    never used; no cookies are read or minted (no :meth:`Enricher.identify`): the IDs are
    the ones the sender gave. An event without a user agent is not judged a
    bot (the browser rule), since back ends often have none.
    """
    events: list[Event] = []
    for item in items:
        ctx = enricher.context(
            peer=item.ip or None,
            headers={"User-Agent": item.user_agent},
            click_ids=item.click_ids,
        )
        if not item.user_agent:
            # For a browser hit an empty user agent marks a bot; a back end
            # (a CRM, a till) often has none to give, and its key vouches for
            # the event, so "no user agent" here is no verdict at all, and no
            # device either: not the "desktop" a parsed browser would get.
            ctx.ua = UAInfo(category="")
        _judge_by_user_agent_only(ctx)
        ctx.consent = dict(item.consent)
        ctx.ids = dict(item.ids)
        events.append(item.to_event(ctx))
    return events


def _judge_by_user_agent_only(ctx: Context) -> None:
    """Keep only the user agent's bot verdict: the request-header checks are about browsers.

    A back end's request has no ``Accept`` or ``Accept-Language`` of the
    person's, so the header-consistency score would call every server event a
    bot and ``bot = false`` routes would drop them all.
    """
    reason = f"ua_{ctx.ua.bot_reason}" if ctx.ua.bot_reason else "ua_bot"
    ctx.bot = ctx.ua.is_bot
    ctx.bot_score = 100 if ctx.ua.is_bot else 0
    ctx.bot_reasons = (reason,) if ctx.ua.is_bot else ()


# -- the parts of one event -------------------------------------------------


def _server_event(raw: Any, where: str, source: str, s: Settings, now: float) -> ServerEvent:
    if not isinstance(raw, dict):
        raise HitError(f"{where}: must be an object")
    _known_keys(raw, where, _EVENT_KEYS)
    for key in ("name", "id", "time", "action_source"):
        if raw.get(key) is None:
            raise HitError(f"{where}.{key}: required")
    name = _name(raw["name"], f"{where}.name")
    eid = _event_id(raw["id"], f"{where}.id")
    event = ServerEvent(
        name=name,
        id=eid,
        time=_time(raw["time"], f"{where}.time", eid, now),
        action_source=_action_source(raw["action_source"], f"{where}.action_source"),
        source=source,
    )

    page = raw.get("page")
    if page is not None:
        if not isinstance(page, dict):
            raise HitError(f"{where}.page: must be an object with url, referrer, title")
        _known_keys(page, f"{where}.page", _PAGE_KEYS)
        event.page = Page(*(_string(page.get(k, ""), f"{where}.page.{k}", s) for k in _PAGE_KEYS))
    user = raw.get("user")
    if user is not None:
        event.user = _user(user, f"{where}.user")
    if raw.get("user_id") is not None:
        event.user_id = _user_id(raw["user_id"], f"{where}.user_id")
    params = raw.get("params")
    if params is not None:
        event.params = _params(params, f"{where}.params", s)
    context = raw.get("context")
    if context is not None:
        _context(event, context, f"{where}.context", s)
    return event


def _context(event: ServerEvent, context: Any, where: str, s: Settings) -> None:
    if not isinstance(context, dict):
        raise HitError(f"{where}: must be an object")
    _known_keys(context, where, _CONTEXT_KEYS)
    if context.get("ip") is not None:
        event.ip = _ip(context["ip"], f"{where}.ip")
    if context.get("user_agent") is not None:
        event.user_agent = _user_agent(context["user_agent"], f"{where}.user_agent", s)
    consent = context.get("consent")
    if consent is not None:
        if not isinstance(consent, dict):
            raise HitError(f"{where}.consent: must be an object of purpose: true/false")
        event.consent = {_purpose(k, f"{where}.consent"): _bool(v, f"{where}.consent.{k}") for k, v in consent.items()}
    clicks = context.get("click_ids")
    if clicks is not None:
        if not isinstance(clicks, dict):
            raise HitError(f"{where}.click_ids: must be an object")
        event.click_ids = {
            _click_key(k, f"{where}.click_ids"): _click_id(v, f"{where}.click_ids.{k}") for k, v in clicks.items()
        }
    ids = context.get("ids")
    if ids is not None:
        if not isinstance(ids, dict):
            raise HitError(f"{where}.ids: must be an object")
        event.ids = {_id_key(k, f"{where}.ids"): _id_value(k, v, f"{where}.ids.{k}") for k, v in ids.items()}


def _known_keys(obj: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
    for key in obj:
        if key not in known:
            raise HitError(f"{where}: unknown key {_show(key)} (known: {', '.join(known)})")


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _EVENT_NAME.fullmatch(value):
        raise HitError(f"{where}: not an event name (a letter, then letters, digits or _; at most 64)")
    return value


def _event_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise HitError(f"{where}: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    return value


def _time(value: Any, where: str, event_id: str, now: float) -> float:
    try:
        return parse_event_time(value, where, now)
    except HitError as exc:
        # Name the event as well as its place: the sender looks it up by id.
        raise HitError(f"{exc} (event {event_id!r})", exc.status) from None


def _action_source(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ACTION_SOURCES:
        raise HitError(f"{where}: {_show(value)} is not one of {', '.join(sorted(ACTION_SOURCES))}")
    return value


def _user_id(value: Any, where: str) -> str:
    text = _printable(value, where, _MAX_USER_VALUE)
    if not text.strip():
        # Sent on as an ID, it would make every such event one person to the vendors.
        raise HitError(f"{where}: blank; leave user_id out when the user is not known")
    return text


def _params(params: Any, where: str, s: Settings) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise HitError(f"{where}: must be an object")
    if len(params) > s.max_params:
        raise HitError(f"{where}: {len(params)} parameters is over the limit of {s.max_params}", 413)
    return {_key(k, where): _value(v, f"{where}.{_show(k)}", s, 1) for k, v in params.items()}


def _ip(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HitError(f"{where}: must be a string")
    if not value:
        return ""
    ip = normalize_ip(value)
    if ip is None:
        # Not echoed: an address is personal data.
        raise HitError(f"{where}: not an IPv4 or IPv6 address")
    return ip


def _user_agent(value: Any, where: str, s: Settings) -> str:
    text = _string(value, where, s)
    if not text.isprintable():
        raise HitError(f"{where}: must be printable (no control characters)")
    return text


def _click_key(key: str, where: str) -> str:
    if key not in CLICK_IDS:
        raise HitError(f"{where}.{_show(key)}: unknown click ID (known: {', '.join(sorted(CLICK_IDS))})")
    return key

def _id_key(key: str, where: str) -> str:
    if key not in ID_KEYS:
        raise HitError(f"{where}.{_show(key)}: unknown identifier (known: {', '.join(sorted(ID_KEYS))})")
    return key


def _id_value(key: str, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HitError(f"{where}: must be a string")
    if key in ("fbp", "fbc"):
        # Meta refuses a whole batch over one malformed fbc: stop it here.
        if not is_valid_fb_cookie(value):
            raise HitError(f"{where}: not a Meta cookie value (fb.<subdomain index>.<creation ms>.<value>)")
    elif key in ("ga_session_id", "ga_session_number"):
        if not _DIGITS.fullmatch(value):
            raise HitError(f"{where}: must be 1 to 20 digits")
    elif not _ID_VALUE.fullmatch(value):
        raise HitError(f"{where}: must be 1 to {_MAX_ID} visible ASCII characters")
    return value
