"""A stand-in for the GA4 Measurement Protocol (``/mp/collect``, ``/debug/mp/collect``).

GA answers ``/mp/collect`` with 2xx (204) even for invalid payloads; this
stand-in does the same and records the validation messages it would have
given on the request (``app[STANDIN].requests[i].problems``) so tests can
assert there were none. ``/debug/mp/collect`` answers
``{"validationMessages": [{fieldPath, description, validationCode}]}`` with
Google's codes (VALUE_INVALID, VALUE_REQUIRED, NAME_INVALID, NAME_RESERVED,
VALUE_OUT_OF_BOUNDS, EXCEEDED_MAX_ENTITIES, NAME_DUPLICATED).

Rules, from Google's "Measurement Protocol reference", "Send Measurement
Protocol events" (Limitations) and "Validate events":

- query: ``measurement_id`` and ``api_secret`` present (and equal to the
  configured ones, if any). Google's validator does not check them, so
  ``/debug`` leaves them out of its answer; the stand-in still records them;
- body: JSON object with ``client_id`` (web stream) and 1..25 ``events``;
- event names: 1-40 chars, letters/digits/underscore, starting with a letter,
  not reserved;
- params: at most 25; names like event names and not reserved
  (``firebase_conversion``; prefixes ``_``, ``firebase_``, ``ga_``,
  ``google_``, ``gtag.``); values 100 chars or fewer (GA's collection limits
  allow page_location 1000, page_referrer 420, page_title 300); string or number;
- items: at most 200, each an object with at most 10 custom parameters;
- user_properties: at most 25, names 24 chars, values 36 chars;
- timestamp_micros: a number; with ``validation_behavior``
  ``ENFORCE_RECOMMENDATIONS`` it must be within the last 72 hours;
- ``consent`` values GRANTED or DENIED; ``user_location`` ids in ISO/M49 form;
- post body smaller than 130kB.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from aiohttp import web

from . import Recorded, StandIn, is_sha256, standin_app

__all__ = ["GA4StandIn", "RESERVED_EVENT_NAMES", "ga4_app"]

RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure",
        "app_clear_data", "app_exception", "app_install", "app_remove", "app_store_refund",
        "app_update", "app_upgrade", "dynamic_link_app_open", "dynamic_link_app_update",
        "dynamic_link_first_open", "error", "firebase_campaign", "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss", "firebase_in_app_message_impression", "first_open",
        "first_visit", "notification_dismiss", "notification_foreground", "notification_open",
        "notification_receive", "notification_send", "os_update", "session_start", "user_engagement",
        # "only allowed for App streams": reserved for the web streams we stand in for.
        "ad_impression", "in_app_purchase", "screen_view",
    }
)  # fmt: skip
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_USER_PROPERTIES = frozenset(
    {"first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id", "first_open_after_install"}
)
STANDARD_ITEM_PARAMS = frozenset(
    {
        "item_id", "item_name", "affiliation", "coupon", "discount", "index", "item_brand",
        "item_category", "item_category2", "item_category3", "item_category4", "item_category5",
        "item_list_id", "item_list_name", "item_variant", "location_id", "price", "quantity",
        "promotion_id", "promotion_name", "creative_name", "creative_slot",
    }
)  # fmt: skip
LONG_VALUE_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_REGION_RE = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_M49_RE = re.compile(r"^\d{3}$")


class GA4StandIn(StandIn):
    """State of a GA4 stand-in: optional expected credentials and a clock."""

    def __init__(
        self,
        measurement_id: str | None = None,
        api_secret: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.now = now
        # Events from valid /mp/collect requests, as GA would have counted them.
        self.collected: list[dict[str, Any]] = []

    @property
    def validation_messages(self) -> list[dict[str, str]]:
        """Every validation message recorded for every request."""
        return self.problems

    async def collect(self, request: web.Request) -> web.StreamResponse:
        """``/mp/collect``: always 204, the validation messages recorded only."""
        return await self.respond(request, self._collect)

    async def debug(self, request: web.Request) -> web.StreamResponse:
        """``/debug/mp/collect``: 200 with the body's validation messages."""
        return await self.respond(request, self._debug)

    def _collect(self, request: web.Request, rec: Recorded) -> web.Response:
        rec.problems.extend(self._query_messages(rec))
        rec.problems.extend(self.validate(rec))
        if not rec.problems and isinstance(rec.json, dict):
            self.collected.extend(rec.json.get("events", []))
        return web.Response(status=204)

    def _debug(self, request: web.Request, rec: Recorded) -> web.Response:
        body_messages = self.validate(rec)
        rec.problems.extend(self._query_messages(rec))
        rec.problems.extend(body_messages)
        # Google's validator does not check api_secret or measurement_id.
        return web.json_response({"validationMessages": body_messages})

    def _query_messages(self, rec: Recorded) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for key, expected in (("measurement_id", self.measurement_id), ("api_secret", self.api_secret)):
            value = rec.query.get(key)
            if not value:
                out.append(_msg(key, f"query parameter {key} is required", "VALUE_REQUIRED"))
            elif expected is not None and value != expected:
                out.append(_msg(key, f"query parameter {key} does not match the stream", "VALUE_INVALID"))
        return out

    def validate(self, rec: Recorded) -> list[dict[str, str]]:
        """The validation messages GA would give for this request body."""
        body = rec.json
        if not isinstance(body, dict):
            return [_msg("", "the body must be a JSON object", "VALUE_INVALID")]
        out: list[dict[str, str]] = []
        if len(rec.body) >= 130_000:
            out.append(_msg("", "the post body must be smaller than 130kB", "VALUE_OUT_OF_BOUNDS"))

        client_id = body.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            out.append(_msg("client_id", "client_id is required for a web stream", "VALUE_REQUIRED"))

        enforce = body.get("validation_behavior") == "ENFORCE_RECOMMENDATIONS"
        out.extend(self._timestamp("timestamp_micros", body.get("timestamp_micros"), enforce))
        out.extend(_consent(body.get("consent")))
        out.extend(_location(body.get("user_location")))
        out.extend(_user_properties(body.get("user_properties")))
        out.extend(_user_data(body.get("user_data")))

        events = body.get("events")
        if not isinstance(events, list) or not events:
            out.append(_msg("events", "events is required: a non-empty array", "VALUE_REQUIRED"))
            return out
        if len(events) > 25:
            out.append(_msg("events", f"at most 25 events per request, got {len(events)}", "EXCEEDED_MAX_ENTITIES"))
        for i, event in enumerate(events):
            out.extend(self._event(f"events[{i}]", event, enforce))
        return out

    def _event(self, path: str, event: Any, enforce: bool) -> list[dict[str, str]]:
        if not isinstance(event, dict):
            return [_msg(path, "each event must be an object", "VALUE_INVALID")]
        out: list[dict[str, str]] = []
        name = event.get("name")
        if not isinstance(name, str) or not name:
            out.append(_msg(f"{path}.name", "event name is required", "VALUE_REQUIRED"))
        elif not _NAME_RE.match(name) or len(name) > 40:
            out.append(_msg(f"{path}.name", f"event name {name!r} is invalid", "NAME_INVALID"))
        elif name in RESERVED_EVENT_NAMES:
            out.append(_msg(f"{path}.name", f"event name {name!r} is reserved", "NAME_RESERVED"))
        out.extend(self._timestamp(f"{path}.timestamp_micros", event.get("timestamp_micros"), enforce))

        params = event.get("params", {})
        if not isinstance(params, dict):
            return out + [_msg(f"{path}.params", "params must be an object", "VALUE_INVALID")]
        if len(params) > 25:
            out.append(_msg(f"{path}.params", f"at most 25 params, got {len(params)}", "EXCEEDED_MAX_ENTITIES"))
        for key, value in params.items():
            ppath = f"{path}.params.{key}"
            problem = _name_problem(ppath, key)
            if problem:
                out.append(problem)
                continue
            if key == "items":
                out.extend(_items(ppath, value))
                continue
            out.extend(_value(ppath, value, LONG_VALUE_LIMITS.get(key, 100)))
        return out

    def _timestamp(self, path: str, value: Any, enforce: bool) -> list[dict[str, str]]:
        if value is None:
            return []
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [_msg(path, "timestamp_micros must be a number", "VALUE_INVALID")]
        if enforce:
            now_micros = self.now() * 1_000_000
            if value < now_micros - 72 * 3600 * 1_000_000 or value > now_micros:
                return [_msg(path, "timestamp must be within the last 72 hours", "VALUE_OUT_OF_BOUNDS")]
        return []


def _msg(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}


def _name_problem(path: str, name: str) -> dict[str, str] | None:
    if not _NAME_RE.match(name) or len(name) > 40:
        if name.startswith(RESERVED_PARAM_PREFIXES):
            return _msg(path, f"parameter name {name!r} uses a reserved prefix", "NAME_RESERVED")
        return _msg(path, f"parameter name {name!r} is invalid", "NAME_INVALID")
    if name in RESERVED_PARAM_NAMES or name.startswith(RESERVED_PARAM_PREFIXES):
        return _msg(path, f"parameter name {name!r} is reserved", "NAME_RESERVED")
    return None


def _value(path: str, value: Any, limit: int) -> list[dict[str, str]]:
    if isinstance(value, str):
        if len(value) > limit:
            return [_msg(path, f"value is {len(value)} characters; at most {limit}", "VALUE_OUT_OF_BOUNDS")]
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [_msg(path, "parameter values must be strings or numbers", "VALUE_INVALID")]
    return []


def _items(path: str, items: Any) -> list[dict[str, str]]:
    if not isinstance(items, list):
        return [_msg(path, "items must be an array", "VALUE_INVALID")]
    out: list[dict[str, str]] = []
    if len(items) > 200:
        out.append(_msg(path, f"at most 200 items, got {len(items)}", "EXCEEDED_MAX_ENTITIES"))
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]"
        if not isinstance(item, dict):
            out.append(_msg(ipath, "each item must be an object", "VALUE_INVALID"))
            continue
        custom = [k for k in item if k not in STANDARD_ITEM_PARAMS]
        if len(custom) > 10:
            out.append(_msg(ipath, f"at most 10 custom item parameters, got {len(custom)}", "EXCEEDED_MAX_ENTITIES"))
        for key, value in item.items():
            problem = _name_problem(f"{ipath}.{key}", key)
            if problem:
                out.append(problem)
                continue
            out.extend(_value(f"{ipath}.{key}", value, 100))
    return out


def _consent(consent: Any) -> list[dict[str, str]]:
    if consent is None:
        return []
    if not isinstance(consent, dict):
        return [_msg("consent", "consent must be an object", "VALUE_INVALID")]
    return [
        _msg(f"consent.{k}", f"{v!r} is not GRANTED or DENIED", "VALUE_INVALID")
        for k, v in consent.items()
        if v not in ("GRANTED", "DENIED")
    ]


def _location(loc: Any) -> list[dict[str, str]]:
    if loc is None:
        return []
    if not isinstance(loc, dict):
        return [_msg("user_location", "user_location must be an object", "VALUE_INVALID")]
    out: list[dict[str, str]] = []
    for key, pattern in (
        ("country_id", _COUNTRY_RE),
        ("region_id", _REGION_RE),
        ("continent_id", _M49_RE),
        ("subcontinent_id", _M49_RE),
    ):
        value = loc.get(key)
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            out.append(_msg(f"user_location.{key}", f"{value!r} is not a valid {key}", "VALUE_INVALID"))
    return out


def _user_properties(props: Any) -> list[dict[str, str]]:
    if props is None:
        return []
    if not isinstance(props, dict):
        return [_msg("user_properties", "user_properties must be an object", "VALUE_INVALID")]
    out: list[dict[str, str]] = []
    if len(props) > 25:
        out.append(_msg("user_properties", "at most 25 user properties", "EXCEEDED_MAX_ENTITIES"))
    for name, prop in props.items():
        path = f"user_properties.{name}"
        if not _NAME_RE.match(name) or len(name) > 24:
            out.append(_msg(path, f"user property name {name!r} is invalid", "NAME_INVALID"))
        elif name in RESERVED_USER_PROPERTIES or name.startswith(RESERVED_PARAM_PREFIXES):
            out.append(_msg(path, f"user property name {name!r} is reserved", "NAME_RESERVED"))
        value = prop.get("value") if isinstance(prop, dict) else None
        if isinstance(value, str) and len(value) > 36:
            out.append(_msg(f"{path}.value", "user property values are at most 36 characters", "VALUE_OUT_OF_BOUNDS"))
    return out


def _user_data(data: Any) -> list[dict[str, str]]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [_msg("user_data", "user_data must be an object", "VALUE_INVALID")]
    out: list[dict[str, str]] = []
    for key in ("sha256_email_address", "sha256_phone_number"):
        values = data.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            if not is_sha256(value):
                out.append(_msg(f"user_data.{key}", "must hold lowercase hex SHA-256 digests", "VALUE_INVALID"))
    for i, address in enumerate(data.get("address", []) or []):
        if not isinstance(address, dict):
            continue
        for key, value in address.items():
            if key.startswith("sha256_") and not is_sha256(value):
                out.append(_msg(f"user_data.address[{i}].{key}", "must be a lowercase hex SHA-256 digest", "VALUE_INVALID"))
    return out


def ga4_app(
    measurement_id: str | None = None,
    api_secret: str | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like the GA4 Measurement Protocol; state at ``app[STANDIN]``."""
    state = GA4StandIn(measurement_id, api_secret, now)
    return standin_app(state, {"/mp/collect": state.collect, "/debug/mp/collect": state.debug})
