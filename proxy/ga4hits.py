"""GA4 hits: ``/g/collect`` requests, as an unmodified gtag.js sends them, into events.

A site that points gtag.js at tagrelay (``server_container_url`` or
``transport_url``) sends the GA4 collection protocol unchanged::

    POST /g/collect?v=2&tid=G-XXXX&cid=…&sid=…&dl=…&en=page_view&ep.x=…
    (body empty: one event from the query)

    POST /g/collect?v=2&tid=G-XXXX&cid=…&dl=…
    en=page_view&_ee=1
    en=scroll&epn.percent_scrolled=90&_et=11
    (one event per body line, ``\\n`` or ``\\r\\n``; the query applies to every line)

:func:`parse_gcollect` turns one such request into a :class:`GA4Hit`: a
:class:`proxy.collect.Hit` (so it builds :class:`proxy.model.Event` s the same
way) plus GA's identifiers. It is pure: no I/O, no clock, no logging above DEBUG.

Mapping (parameter names as in ``tests/data/hits/ga4_params.md``):

==============================  =============================================
``en``                          event name
``ep.X`` / ``epn.X``            ``params[X]`` as string / number
``dl`` ``dr`` ``dt``            page url, referrer, title
``_et``                         ``params["engagement_time_msec"]`` (``NaN`` ignored)
``cu``                          ``params["currency"]``
``pr1`` … ``pr200``             ``params["items"]`` as GA4 item objects
``ep.value``                    ``params["value"]`` as a number when it is one
``ep.event_id``                 the event's id (the dedup key shared with pixels)
``_fv`` ``_ss`` ``_c``          :class:`GA4Event` first_visit, session_start, conversion
``cid`` ``sid`` ``sct`` ``seg``  client id, session id, number, engaged
``uid`` ``up.X`` ``upn.X``      user id, user properties
``ul`` ``sr``                   language, screen
``gcs`` ``gcd`` ``npa``         consent (see :func:`google_consent`)
dl's ``gclid``, ``fbclid``, …   click IDs
==============================  =============================================

Everything else gtag sends (``gtm``, ``_p``, ``tfd``, client hints, ``sst.*``,
``tag_exp``, …) is accepted and not used.

Every problem raises :class:`proxy.collect.HitError` whose message starts with
the place (``query``, ``body line 2``) and the parameter; nothing in a request
can raise anything else.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .collect import _MAX_CLICK_ID, _MAX_LANGUAGE, _MAX_SCREEN, Hit, HitError, HitEvent, check_count, refusing
from .model import CLICK_IDS, Page
from .settings import Settings

__all__ = [
    "GCD_LETTERS",
    "GA4Event",
    "GA4Hit",
    "google_consent",
    "parse_gcollect",
    "parse_item",
]

log = logging.getLogger("proxy.ga4hits")

# The same rules as the JSON collect endpoint, so a GA4 event routes like any other.
_EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}\Z")
_MEASUREMENT_ID = re.compile(r"^G-[A-Za-z0-9]{1,30}\Z")
_DIGITS = re.compile(r"^[0-9]{1,20}\Z")
# A number as JavaScript's String(number) writes it. Python's float() would
# also take "nan", "inf", "1_000" and surrounding blanks, which gtag never sends.
_JS_NUMBER = re.compile(r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_JS_INTEGER = re.compile(r"^-?[0-9]+\Z")
_ITEM_KEY = re.compile(r"^pr([0-9]+)\Z")
_CUSTOM_ITEM = re.compile(r"^([kv])([0-9])(.*)$", re.DOTALL)

_MAX_ITEMS = (
    200  # pr1 … pr200 (d8a: "supports up to 200 items"); GA4's item limit per event
)
_MAX_ID = 128  # cid: gtag's is "<31-bit random>.<seconds>"; sites may set their own
_MAX_USER_ID = 256  # GA4 collection limit on the User-ID value length
_MAX_PARAM_NAME = 100

# Item fields of the /g/collect item string (two-letter key + value, "~"-joined).
# Sources: d8a-tech/d8a docs/docs/articles/tracking-protocols/ga4-gtag.md "Item
# Parameters"; foomo/sesamy-go pkg/encoding/gtag/item.go (gtag:"…" tags);
# Google's Ecommerce Migration Helper GA4 parser (GA4_PRODUCT_FIELDS), which
# also names ``lp`` as GA4's ``index``. Custom item parameters come as pairs
# ``k<n><name>`` / ``v<n><value>`` (capture 24: ``k0currency~v0TWD``).
_ITEM_FIELDS = {
    "id": "item_id",
    "nm": "item_name",
    "br": "item_brand",
    "ca": "item_category",
    "c2": "item_category2",
    "c3": "item_category3",
    "c4": "item_category4",
    "c5": "item_category5",
    "va": "item_variant",
    "pr": "price",
    "qt": "quantity",
    "cp": "coupon",
    "ds": "discount",
    "af": "affiliation",
    "li": "item_list_id",
    "ln": "item_list_name",
    "lp": "index",
    "lo": "location_id",
    "cn": "creative_name",
    "cs": "creative_slot",
    "pi": "promotion_id",
    "pn": "promotion_name",
}
_NUMERIC_ITEM_FIELDS = frozenset({"price", "quantity", "discount", "index"})

# Consent Mode v2 ``gcd``: one letter per signal, for ad_storage,
# analytics_storage, ad_user_data, ad_personalization, at string positions 2,
# 4, 6 and 8 (``13r3r3r2r5l1``: "13", then letter + separator four times, then
# a trailer). Separators are digits or, in newer tags, capitals
# (``13t3tPt2t5l1``, capture 13). Each letter says how the page's default and
# its later update combine:
#
#   letter  default   update    state       letter  default   update    state
#   l       -         -         not set     m       -         denied    denied
#   p       denied    -         denied      n       -         granted   granted
#   q       denied    denied    denied      u       granted   denied    denied
#   t       granted   -         granted     v       granted   granted   granted
#   r       denied    granted   granted
#
# Source: Markus Baersch, "Consent Mode V2 For Google Tags", simoahava.com
# (2024), as restated by giancampo.com (2024-02) and by several public gcd
# decoders that agree letter for letter. foomo/sesamy-go consent.go differs:
# it counts ``l`` (not set) and ``u`` (granted, then denied) as granted; we
# follow the table, since an update that denies must win over a default.
GCD_LETTERS: dict[str, bool | None] = {
    "l": None,
    "p": False,
    "q": False,
    "t": True,
    "r": True,
    "m": False,
    "n": True,
    "u": False,
    "v": True,
}
_GCD_SIGNALS = (
    ("ads", 2),
    ("analytics", 4),
    ("ad_user_data", 6),
    ("ad_personalization", 8),
)
_GCD_SHAPE = re.compile(r"^[0-9][0-9](?:[a-z][0-9A-Z]){3}[a-z][0-9A-Za-z]*\Z")
# ``gcs`` is "G1" + ad_storage + analytics_storage, each 1 (granted), 0
# (denied) or "-" (not set): sesamy-go consent.go ("Format 'G1'+'AdsStorage…'
# +'AnalyticsStorage…'"), d8a ga4-gtag.md, giancampo.com; "G1--" is seen when
# the page sets no consent state.
_GCS_SHAPE = re.compile(r"^G1[01\-]{2}\Z")
_GCS_STATE = {"1": True, "0": False, "-": None}


@dataclass(slots=True)
class GA4Event(HitEvent):
    """A :class:`HitEvent` with the per-event flags GA4 hits carry."""

    first_visit: bool = False  # _fv: GA creates a first_visit event from it
    session_start: bool = False  # _ss: GA creates a session_start event from it
    conversion: bool = False  # _c: the event is a key event (conversion)


@dataclass(slots=True)
class GA4Hit(Hit):
    """A parsed ``/g/collect`` request: a :class:`Hit` plus GA's identifiers.

    ``events`` holds :class:`GA4Event` s; it is empty for the Google-signals
    ping that has no ``en`` (accept it, route nothing).
    """

    measurement_id: str = ""  # tid
    client_id: str = ""  # cid: the _ga cookie's "<random>.<seconds>"
    session_id: str = ""  # sid: session start, unix seconds
    session_number: int | None = None  # sct
    session_engaged: bool | None = None  # seg
    user_id: str | None = None  # uid; an empty uid= is None
    user_properties: dict[str, str | int | float] = field(default_factory=dict)
    first_visit: bool = False  # some event carries _fv
    session_start: bool = False  # some event carries _ss
    debug: bool = False  # _dbg=1 or ep.debug_mode=true: GA shows it in DebugView only


def parse_gcollect(query: str, body: bytes, settings: Settings, now: float) -> GA4Hit:
    """Parse one ``/g/collect`` request into a :class:`GA4Hit`; raise :class:`HitError`.

    ``query`` is the raw, still percent-encoded query string (aiohttp:
    ``request.rel_url.raw_query_string``); ``body`` the raw request body.
    Values are decoded as ``application/x-www-form-urlencoded`` UTF-8.
    Request-level parameters (``v tid cid sid sct seg uid ul sr gcs gcd npa``)
    are read from the query; every other parameter of a body line overrides
    the query's for that line's event. Events get ``now`` as their time:
    the protocol carries no event timestamp.
    """
    if len(query) > settings.max_body_bytes:
        raise HitError(
            f"query: {len(query)} bytes is over the limit of {settings.max_body_bytes}",
            413,
        )
    if len(body) > settings.max_body_bytes:
        raise HitError(
            f"body: {len(body)} bytes is over the limit of {settings.max_body_bytes}",
            413,
        )
    lines = _body_lines(body)
    with refusing(len(lines), settings.max_events_per_hit):
        return _gcollect(_form(query, "query"), lines, settings, now)


def _gcollect(shared: dict[str, str], lines: list[tuple[int, str]], settings: Settings, now: float) -> GA4Hit:
    check_count(len(lines), settings.max_events_per_hit, "body")

    hit = GA4Hit(events=[])
    _request_level(hit, shared)
    line_params = [_form(text, f"body line {n}") for n, text in lines]
    places = [f"body line {n}" for n, _ in lines] or ["query"]
    merged = [{**shared, **p} for p in line_params] or [shared]
    if not lines and "en" not in shared:
        # Google-signals / Ads-link ping: the /g/collect path, no event (capture 27).
        log.debug("ga4: hit for %s without an event", hit.measurement_id)
        merged = []

    for index, (params, where) in enumerate(zip(merged, places)):
        event = _event(params, where, index, hit, settings, now)
        hit.events.append(event)
        hit.first_visit |= event.first_visit
        hit.session_start |= event.session_start
        for key, value in params.items():
            _user_property(hit, key, value, where, settings)
        if not hit.click_ids:
            hit.click_ids = _click_ids(event.page.url)
        if params.get("ep.debug_mode") == "true":
            hit.debug = True
    return hit


def google_consent(
    gcs: str | None, gcd: str | None, npa: str | None = None
) -> dict[str, bool]:
    """Our consent purposes from Google's ``gcs``, ``gcd`` and ``npa`` parameters.

    ``ads`` is ad_storage, ``analytics`` analytics_storage, plus
    ``ad_user_data`` and ``ad_personalization``. A signal that is not set is
    left out, so the configured policy decides what no signal means. Where
    ``gcs`` and ``gcd`` disagree, the denial wins: a gate must not open on a
    contradictory signal. ``npa=1`` (non-personalised ads) denies
    ``ad_personalization``; ``npa=0`` grants nothing.
    Raises :class:`HitError` when ``gcs`` or ``gcd`` is not in its format.
    """
    states: dict[str, list[bool]] = {}
    if gcs is not None:
        if not _GCS_SHAPE.match(gcs):
            raise HitError(f"query: gcs {_show(gcs)} is not 'G1' + two of 0, 1, -")
        for purpose, char in (("ads", gcs[2]), ("analytics", gcs[3])):
            state = _GCS_STATE[char]
            if state is not None:
                states.setdefault(purpose, []).append(state)
    if gcd is not None:
        if not _GCD_SHAPE.match(gcd):
            raise HitError(
                f"query: gcd {_show(gcd)} is not a Consent Mode string like 13r3r3r2r5l1"
            )
        for purpose, pos in _GCD_SIGNALS:
            letter = gcd[pos]
            if letter not in GCD_LETTERS:
                # A letter Google added after our table: treat as no signal,
                # so the policy decides, rather than lose the hit.
                log.debug(
                    "ga4: gcd letter %r for %s is unknown; treated as not set",
                    letter,
                    purpose,
                )
                continue
            state = GCD_LETTERS[letter]
            if state is not None:
                states.setdefault(purpose, []).append(state)
    if npa == "1":
        states.setdefault("ad_personalization", []).append(False)
    return {purpose: all(values) for purpose, values in states.items()}


def parse_item(raw: str, where: str) -> dict[str, Any]:
    """One ``prN`` item string (``id…~nm…~pr…~qt…``) as a GA4 item object.

    Numeric fields (price, quantity, discount, index) become numbers; custom
    parameters ``k<n>name~v<n>value`` become ``item[name] = value``. A literal
    ``~`` inside a value is written ``~~`` (Google's own GA4 ecommerce parser
    reads it so). Raises :class:`HitError` naming ``where`` for a field it
    cannot read.
    """
    item: dict[str, Any] = {}
    custom_keys: dict[str, str] = {}
    custom_values: dict[str, str] = {}
    for part in _split_item(raw):
        if not part:
            continue
        code, value = part[:2], part[2:]
        name = _ITEM_FIELDS.get(code)
        if name is not None:
            if name in _NUMERIC_ITEM_FIELDS:
                number = _number(value)
                if number is None:
                    raise HitError(
                        f"{where}: item field {code} {_show(value)} is not a number"
                    )
                item[name] = number
            else:
                item[name] = value
            continue
        custom = _CUSTOM_ITEM.match(part)
        if custom:
            kind, n, text = custom.groups()
            (custom_keys if kind == "k" else custom_values)[n] = text
            continue
        # An item field newer than our table: skip it rather than lose the event.
        log.debug("ga4: unknown item field %r in %s", code, where)
    for n, key in custom_keys.items():
        if not key or key in item:
            continue
        item[key] = custom_values.get(n, "")
    return item


# -- request level ---------------------------------------------------------------


def _request_level(hit: GA4Hit, q: dict[str, str]) -> None:
    version = q.get("v")
    if version != "2":
        got = "missing" if version is None else _show(version)
        raise HitError(f"query: v {got}: GA4 hits have v=2")
    tid = q.get("tid", "")
    if not _MEASUREMENT_ID.match(tid):
        raise HitError(
            f"query: tid {_show(tid)} is not a GA4 measurement ID (G- and letters or digits)"
        )
    hit.measurement_id = tid
    hit.client_id = _token(q.get("cid", ""), "cid", _MAX_ID)
    sid = q.get("sid", "")
    if sid and not _DIGITS.match(sid):
        raise HitError(f"query: sid {_show(sid)} is not a session id (unix seconds)")
    hit.session_id = sid
    sct = q.get("sct", "")
    if sct:
        if not _DIGITS.match(sct):
            raise HitError(f"query: sct {_show(sct)} is not a session count")
        hit.session_number = int(sct)
    seg = q.get("seg")
    if seg is not None:
        if seg not in ("0", "1"):
            raise HitError(f"query: seg {_show(seg)} must be 0 or 1")
        hit.session_engaged = seg == "1"
    uid = q.get("uid", "")
    if len(uid) > _MAX_USER_ID or not uid.isprintable():
        # The value is not echoed: a user id can be PII.
        raise HitError(
            f"query: uid must be printable and at most {_MAX_USER_ID} characters"
        )
    # gtag sends "uid=" when user_id is set to empty; a blank one names no one
    # either, and sent on it would make all such visitors one user.
    hit.user_id = uid if uid.strip() else None
    hit.language = _short(q.get("ul", ""), "ul", _MAX_LANGUAGE)
    hit.screen = _short(q.get("sr", ""), "sr", _MAX_SCREEN)
    hit.consent = google_consent(q.get("gcs"), q.get("gcd"), q.get("npa"))
    hit.debug = q.get("_dbg") == "1"
    # TODO(issue ga4-batch-identity): a body line's own cid/uid/sid/gcs/gcd
    # are ignored; read them per event once a capture shows gtag putting
    # request-level parameters in body lines and HitEvent can carry them.


# -- events ---------------------------------------------------------------------


def _event(
    p: dict[str, str], where: str, index: int, hit: GA4Hit, s: Settings, now: float
) -> GA4Event:
    name = p.get("en")
    if name is None:
        raise HitError(f"{where}: en (the event name) is missing")
    if not _EVENT_NAME.match(name):
        raise HitError(
            f"{where}: en {_show(name)} is not an event name (a letter, then letters, digits or _; at most 64)"
        )
    page = Page(
        url=_text(p.get("dl", ""), where, "dl", s),
        referrer=_text(p.get("dr", ""), where, "dr", s),
        title=_text(p.get("dt", ""), where, "dt", s),
    )

    params: dict[str, Any] = {}
    items: dict[int, dict[str, Any]] = {}
    for key, value in p.items():
        if key.startswith("ep."):
            params[_param_name(key, 3, where)] = _text(value, where, key, s)
        elif key.startswith("epn."):
            number = _number(value)
            if number is None:
                if value.lower() not in ("nan", "infinity", "-infinity"):
                    raise HitError(
                        f"{where}: {_show(key)} {_show(value)} is not a number"
                    )
                # String(NaN) from a site's own arithmetic; GA drops it too.
                log.debug("ga4: %s=%s dropped in %s", key, value, where)
                continue
            params[_param_name(key, 4, where)] = number
        elif (match := _ITEM_KEY.match(key)) is not None:
            n = int(match.group(1)) if len(match.group(1)) <= 6 else _MAX_ITEMS + 1
            if n == 0:
                raise HitError(f"{where}: {key}: items are numbered from pr1")
            if n > _MAX_ITEMS:
                raise HitError(
                    f"{where}: {key}: items are numbered up to pr{_MAX_ITEMS}", 413
                )
            items[n] = parse_item(_text(value, where, key, s), f"{where}: {key}")
    if len(params) > s.max_params:
        raise HitError(
            f"{where}: {len(params)} parameters is over the limit of {s.max_params}",
            413,
        )

    if isinstance(params.get("value"), str):
        # ep.value: the site passed the value as a string; vendors want a number.
        number = _number(params["value"].strip())
        if number is not None:
            params["value"] = number
    if "cu" in p:
        params["currency"] = _text(p["cu"], where, "cu", s)
    if items:
        params["items"] = [items[n] for n in sorted(items)]
    engagement = p.get("_et")
    if engagement is not None and engagement != "NaN":
        # "_et=NaN" is real (captures 6, 7): a broken timer in gtag; ignore it.
        if not _DIGITS.match(engagement):
            raise HitError(f"{where}: _et {_show(engagement)} is not milliseconds")
        params["engagement_time_msec"] = int(engagement)

    event_id = params.pop("event_id", None)
    if not (isinstance(event_id, str) and _EVENT_ID.match(event_id)):
        if event_id is not None:
            params["event_id"] = (
                event_id  # not a usable dedup key; keep it as a plain parameter
            )
        event_id = _derived_id(p, hit, index)
    return GA4Event(
        name=name,
        id=event_id,
        time=now,
        page=page,
        params=params,
        first_visit=p.get("_fv") in ("1", "2"),
        session_start=p.get("_ss") in ("1", "2"),
        conversion=p.get("_c") == "1",
    )


def _derived_id(p: dict[str, str], hit: GA4Hit, index: int) -> str:
    """A dedup key stable across resends of the same request.

    ``_p`` (page load) and ``_s`` (hit counter within it) with the client and
    the line make an event unique; when gtag sent neither, a random id.
    """
    page_load, counter = p.get("_p", ""), p.get("_s", "")
    if not (hit.client_id and page_load and counter):
        return uuid.uuid4().hex
    key = "\x1f".join(
        (hit.measurement_id, hit.client_id, page_load, counter, str(index))
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _user_property(hit: GA4Hit, key: str, value: str, where: str, s: Settings) -> None:
    if key.startswith("up."):
        hit.user_properties[_param_name(key, 3, where)] = _text(value, where, key, s)
    elif key.startswith("upn."):
        number = _number(value)
        if number is None:
            raise HitError(f"{where}: {_show(key)} {_show(value)} is not a number")
        hit.user_properties[_param_name(key, 4, where)] = number
    else:
        return
    if len(hit.user_properties) > s.max_params:
        raise HitError(f"{where}: more than {s.max_params} user properties", 413)


def _click_ids(url: str) -> dict[str, str]:
    """Click IDs in a page URL's query; malformed ones are skipped, not fatal."""
    try:
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=False, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for key, value in pairs:
        if (
            key in CLICK_IDS
            and key not in found
            and len(value) <= _MAX_CLICK_ID
            and value.isprintable()
        ):
            found[key] = value
    return found


# -- values -----------------------------------------------------------------------


def _body_lines(body: bytes) -> list[tuple[int, str]]:
    """Body lines with their 1-based line numbers, decoded as UTF-8; blank ones are no event."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HitError(f"body: not valid UTF-8 at byte {exc.start}") from None
    return [
        (n, line.rstrip("\r"))
        for n, line in enumerate(text.split("\n"), 1)
        if line.strip()
    ]


def _form(text: str, where: str) -> dict[str, str]:
    """``a=1&b=2`` decoded as form data; the last of repeated names wins."""
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError as exc:
        raise HitError(
            f"{where}: a percent-encoded value is not valid UTF-8 ({exc.reason})"
        ) from None
    except ValueError as exc:  # pragma: no cover - parse_qsl raises it only with strict_parsing or max_num_fields
        raise HitError(f"{where}: not form data: {exc}") from None
    return dict(pairs)


def _number(text: str) -> int | float | None:
    """A JavaScript number's text as int or float; None if it is not one (or not finite).

    An integer past 64 bits becomes the double a browser holds for it: JSON
    encoders and vendors take no wider integer, and int() refuses more than
    4,300 digits outright.
    """
    if not _JS_NUMBER.match(text):
        return None
    if _JS_INTEGER.match(text) and len(text) <= 20:
        whole = int(text)
        if -(2**63) <= whole < 2**63:
            return whole
    value = float(text)
    return value if math.isfinite(value) else None


def _param_name(key: str, prefix: int, where: str) -> str:
    name = key[prefix:]
    if not name or len(name) > _MAX_PARAM_NAME or not name.isprintable():
        raise HitError(
            f"{where}: {_show(key)} is not a parameter name (1 to {_MAX_PARAM_NAME} printable characters)"
        )
    return name


def _split_item(raw: str) -> list[str]:
    """Split an item string on ``~``, reading ``~~`` as a literal ``~``."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "~" and raw.startswith("~~", i):
            current.append("~")
            i += 2
            continue
        if char == "~":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _text(value: str, where: str, key: str, s: Settings) -> str:
    if len(value) > s.max_string_chars:
        raise HitError(
            f"{where}: {_show(key)}: {len(value)} characters is over the limit of {s.max_string_chars}",
            413,
        )
    return value


def _token(value: str, key: str, limit: int) -> str:
    if len(value) > limit or not value.isprintable():
        raise HitError(f"query: {key} must be printable and at most {limit} characters")
    return value


def _short(value: str, key: str, limit: int) -> str:
    if len(value) > limit or not value.isprintable():
        raise HitError(
            f"query: {key} {_show(value)} must be printable and at most {limit} characters"
        )
    return value


def _show(value: Any) -> str:
    """A short, safe rendering of a client-supplied key or value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
