"""The collection endpoint: parse and check a hit, hand its events on, answer fast.

Wire format (what ``static/collector.js`` sends; POST body, or the ``d``
query parameter of a GET)::

    {"v": 1,
     "events": [{"name": "purchase", "id": "…", "time": 1733312345678,
                 "page": {"url": "…", "referrer": "…", "title": "…"},
                 "params": {"value": 42.5, "currency": "EUR", …}}],
     "user": {"email": "…", "phone": "…", "first_name": "…", "last_name": "…", "external_id": "…"},
     "consent": {"ads": true, "analytics": true, "ad_personalization": true, "ad_user_data": true},
     "click_ids": {"fbclid": "…"},
     "tcf": "<IAB TCF TC string>", "gdpr": true,
     "screen": "1280x800", "language": "en-US"}

A GET without ``d`` but with ``n=<event name>`` is the ``<noscript>`` pixel:
one event, its page taken from the ``Referer`` header.

Every problem answers 4xx with ``{"error": "<where>: <what>"}``; nothing in a
hit can cause a 5xx.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson

from .consent import PURPOSES
from .model import CLICK_IDS, USER_FIELDS, Page, UserData
from .settings import Settings

__all__ = ["Hit", "HitEvent", "HitError", "check_count", "hit_from_query", "parse_hit", "refusing"]

_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_MAX_KEY_CHARS = 128
_PURPOSES = frozenset(PURPOSES)
_USER_KEYS = frozenset(USER_FIELDS)
_MAX_DEPTH = 4
_MAX_ITEMS = 200
_MAX_CLICK_ID = 1024
_MAX_SCREEN = 32  # "1280x800"; room for odd devices, not for payloads
_MAX_LANGUAGE = 35  # the longest BCP 47 tag a browser sends
_MAX_USER_VALUE = 512


class HitError(ValueError):
    """The hit is unusable; ``status`` is the HTTP status to answer (400, 413, 415, or 408 for a body too slow).

    ``events`` is how many events the refused hit carried, once its list of
    events was read (see :func:`refusing`); a hit refused before that, such
    as a body that is not JSON, counts as one.
    """

    def __init__(self, message: str, status: int = 400, body_unread: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.events = 1
        self.body_unread = body_unread  # the request's body was not read to its end (see app._refused)


@contextlib.contextmanager
def refusing(events: int, limit: int) -> Iterator[None]:
    """A :class:`HitError` raised inside refuses all ``events`` events of its hit, not one.

    A list over the per-hit ``limit`` counts as ``limit + 1``, however long:
    one small request of 30,000 zeros must not add 30,000 to the metric.
    """
    try:
        yield
    except HitError as exc:
        exc.events = max(1, min(events, limit + 1))
        raise


def check_count(count: int, limit: int, where: str, per: str = "hit") -> None:
    """Refuse (413) a hit that carries more events than ``limit``."""
    if count > limit:
        raise HitError(f"{where}: {count} events is over the limit of {limit} per {per}", 413)


@dataclass(slots=True)
class HitEvent:
    name: str
    id: str
    time: float
    page: Page
    params: dict[str, Any]


@dataclass(slots=True)
class Hit:
    events: list[HitEvent]
    user: UserData = field(default_factory=UserData)
    consent: dict[str, bool] = field(default_factory=dict)
    click_ids: dict[str, str] = field(default_factory=dict)
    screen: str = ""
    language: str = ""
    tcf: str | None = None  # an IAB TCF TC string from the site's CMP
    gdpr: bool | None = None  # whether the CMP says GDPR applies


_MAX_TC_STRING = 30_000


def parse_hit(body: bytes, settings: Settings, now: float | None = None) -> Hit:
    """Check a hit body and turn it into :class:`Hit`; raise :class:`HitError`."""
    if len(body) > settings.max_body_bytes:
        raise HitError(f"body: {len(body)} bytes is over the limit of {settings.max_body_bytes}", 413)
    if not body.strip():
        raise HitError("body: empty; expected a JSON object with an 'events' list")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HitError(f"body: not valid JSON (UTF-8): {exc}") from None
    return _hit(doc, settings, time.time() if now is None else now)


def hit_from_query(query: dict[str, str], referer: str, settings: Settings, now: float | None = None) -> Hit:
    """The GET forms: ``?d=<json>`` (image fallback) or ``?n=<name>`` (noscript pixel)."""
    now = time.time() if now is None else now
    if "d" in query:
        return parse_hit(query["d"].encode("utf-8", "surrogatepass"), settings, now)
    name = query.get("n")
    if name is None:
        raise HitError("query: expected 'd' (a JSON hit) or 'n' (an event name)")
    doc = {"events": [{"name": name, "page": {"url": referer[: settings.max_string_chars]}}]}
    return _hit(doc, settings, now)


def _hit(doc: Any, s: Settings, now: float) -> Hit:
    if not isinstance(doc, dict):
        raise HitError("body: must be a JSON object with an 'events' list")
    events = doc.get("events")
    if not isinstance(events, list) or not events:
        raise HitError("events: must be a non-empty list")
    with refusing(len(events), s.max_events_per_hit):
        return _hit_of(doc, events, s, now)


def _hit_of(doc: dict[str, Any], events: list[Any], s: Settings, now: float) -> Hit:
    check_count(len(events), s.max_events_per_hit, "events")
    hit = Hit([_event(e, f"events[{i}]", s, now) for i, e in enumerate(events)])
    user = doc.get("user")
    if user is not None:
        hit.user = _user(user)
    consent = doc.get("consent")
    if consent is not None:
        if not isinstance(consent, dict):
            raise HitError("consent: must be an object of purpose: true/false")
        hit.consent = {_purpose(k, "consent"): _bool(v, f"consent.{k}") for k, v in consent.items()}
    clicks = doc.get("click_ids")
    if clicks is not None:
        if not isinstance(clicks, dict):
            raise HitError("click_ids: must be an object")
        for k, v in clicks.items():
            if k not in CLICK_IDS:
                continue  # a newer collector may know more; ignoring costs nothing
            hit.click_ids[k] = _click_id(v, f"click_ids.{k}")
    tcf = doc.get("tcf")
    if tcf is not None:
        if not isinstance(tcf, str) or len(tcf) > _MAX_TC_STRING:
            raise HitError(f"tcf: must be a TC string of at most {_MAX_TC_STRING} characters")
        hit.tcf = tcf or None
    gdpr = doc.get("gdpr")
    if gdpr is not None:
        if not isinstance(gdpr, bool):
            raise HitError("gdpr: must be true or false")
        hit.gdpr = gdpr
    hit.screen = _short(doc.get("screen"), "screen", _MAX_SCREEN)
    hit.language = _short(doc.get("language"), "language", _MAX_LANGUAGE)
    return hit


def _event(e: Any, where: str, s: Settings, now: float) -> HitEvent:
    if not isinstance(e, dict):
        raise HitError(f"{where}: must be an object")
    name = e.get("name")
    if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
        raise HitError(f"{where}.name: not an event name (a letter, then letters, digits or _; at most 64)")
    eid = e.get("id")
    if eid is None:
        eid = uuid.uuid4().hex
    elif not isinstance(eid, str) or not _EVENT_ID.fullmatch(eid):
        raise HitError(f"{where}.id: must be 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    when = e.get("time")
    if when is None:
        t = now
    elif isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise HitError(f"{where}.time: must be milliseconds since 1970 (a number)")
    else:
        t = when / 1000.0
        # Client clocks are wrong often enough; a time far from ours is
        # replaced by ours rather than rejected (vendors refuse odd times).
        if abs(t - now) > s.max_clock_skew_secs:
            t = now
    page = e.get("page", {})
    if not isinstance(page, dict):
        raise HitError(f"{where}.page: must be an object with url, referrer, title")
    p = Page(
        url=_string(page.get("url", ""), f"{where}.page.url", s),
        referrer=_string(page.get("referrer", ""), f"{where}.page.referrer", s),
        title=_string(page.get("title", ""), f"{where}.page.title", s),
    )
    params = e.get("params", {})
    if not isinstance(params, dict):
        raise HitError(f"{where}.params: must be an object")
    if len(params) > s.max_params:
        raise HitError(f"{where}.params: {len(params)} parameters is over the limit of {s.max_params}", 413)
    checked = {_key(k, f"{where}.params"): _value(v, f"{where}.params.{_show(k)}", s, 1) for k, v in params.items()}
    return HitEvent(name, eid, t, p, checked)


def _value(v: Any, where: str, s: Settings, depth: int) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        # Past 64 bits (orjson reads up to 2**64 - 1), the double JavaScript
        # would hold: adapters' arithmetic and JSON encoders take no wider int.
        return v if -(2**63) <= v < 2**63 else float(v)
    if isinstance(v, float):
        return v  # orjson refuses NaN and infinities already
    if isinstance(v, str):
        return _string(v, where, s)
    if depth >= _MAX_DEPTH:
        raise HitError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(v, list):
        if len(v) > _MAX_ITEMS:
            raise HitError(f"{where}: {len(v)} entries is over the limit of {_MAX_ITEMS}", 413)
        return [_value(x, f"{where}[{i}]", s, depth + 1) for i, x in enumerate(v)]
    if isinstance(v, dict):
        if len(v) > s.max_params:
            raise HitError(f"{where}: {len(v)} keys is over the limit of {s.max_params}", 413)
        return {_key(k, where): _value(x, f"{where}.{_show(k)}", s, depth + 1) for k, x in v.items()}
    raise HitError(f"{where}: unsupported value")  # pragma: no cover - JSON has no other types


def _key(k: str, where: str) -> str:
    if len(k) > _MAX_KEY_CHARS:
        raise HitError(f"{where}: a key of {len(k)} characters is over the limit of {_MAX_KEY_CHARS}", 413)
    return k


def _string(v: Any, where: str, s: Settings) -> str:
    if not isinstance(v, str):
        raise HitError(f"{where}: must be a string")
    if len(v) > s.max_string_chars:
        raise HitError(f"{where}: {len(v)} characters is over the limit of {s.max_string_chars}", 413)
    return v


def _purpose(key: str, where: str) -> str:
    if key not in _PURPOSES:
        raise HitError(f"{where}.{_show(key)}: unknown purpose (known: {', '.join(sorted(_PURPOSES))})")
    return key


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise HitError(f"{where}: must be true or false")
    return v


def _click_id(v: Any, where: str) -> str:
    return _printable(v, where, _MAX_CLICK_ID)


def _printable(v: Any, where: str, limit: int) -> str:
    """An identifier-like value: a non-empty printable string of at most ``limit`` characters."""
    if not isinstance(v, str) or not v or len(v) > limit or not v.isprintable():
        raise HitError(f"{where}: must be a printable string of 1 to {limit} characters")
    return v


def _short(v: Any, where: str, limit: int) -> str:
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > limit or not v.isprintable():
        raise HitError(f"{where}: must be a printable string of at most {limit} characters")
    return v


def _user(user: Any, where: str = "user") -> UserData:
    if not isinstance(user, dict):
        raise HitError(f"{where}: must be an object")
    data = UserData()
    for k, v in user.items():
        if k not in _USER_KEYS:
            # The key is not echoed: a sender may put PII anywhere.
            raise HitError(f"{where}: unknown field (known: {', '.join(sorted(_USER_KEYS))})")
        if v is not None:
            setattr(data, k, _user_value(v, f"{where}.{k}"))
    return data


def _user_value(v: Any, where: str) -> str:
    if not isinstance(v, str) or len(v) > _MAX_USER_VALUE:
        # The value itself is never echoed: it may be PII.
        raise HitError(f"{where}: must be a string of at most {_MAX_USER_VALUE} characters")
    return v


def _show(value: Any) -> str:
    """A short, safe rendering of a client-supplied key or value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
