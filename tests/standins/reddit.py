"""A stand-in for Reddit's Conversions API v3 (``POST /api/v3/pixels/{pixel_id}/conversion_events``).

Rules enforced, from Reddit's v2-to-v3 migration guide, "Direct
Integration" and error tables (as captured in the Reddit-maintained Segment
destination's ``V3-API-REFERENCE.md``):

- ``Authorization: Bearer <token>``: missing gives 401 "No bearer token
  provided", wrong gives 401 "UNAUTHORIZED"; an unknown pixel gives 403
  "You're not authorized to post conversions to Pixel ID ...";
- the body is ``{"data": {"events": [...], "test_id"?: str}}``; an unknown
  field anywhere in ``data`` or an event is refused (Reddit: ``JSON error
  "unknown field"``); more than 1,000 events is 400 "Bad Request";
- each event has integer ``event_at`` in unix milliseconds (not in the
  future, at most 7 days old), ``action_source`` in WEBSITE, APP,
  PHYSICAL_STORE, OTHER, and ``type.tracking_type`` from the v3 enum;
  ``CUSTOM`` needs ``custom_event_name`` of at most 64 characters;
- ``user.email``, ``phone_number`` and ``external_id`` are 64-hex SHA-256
  digests here (Reddit also takes raw values; our adapter never sends them);
  ``user.uuid`` is the ``_rdt_uuid`` form ``<ms>.<uuid>`` or a plain UUID;
- ``metadata.value`` is a number and ``products[].id`` is present.

Any invalid event fails the request: 400 ``{"error": {"code": 400, "message":
"There were N invalid conversion events. None were processed.", "fields":
[{"field", "message"}]}}``. Success is ``{"data": {"message": "Successfully
processed N conversion events."}}``. :data:`RATE_LIMITED` is Reddit's 429.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import (
    Canned,
    Recorded,
    StandIn,
    has_bearer,
    is_integer,
    is_number,
    is_sha256,
    standin_app,
)

__all__ = [
    "ACTION_SOURCES",
    "RATE_LIMITED",
    "TRACKING_TYPES",
    "RedditStandIn",
    "reddit_app",
    "reddit_error",
]

TRACKING_TYPES = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
        "CUSTOM",
    }
)
ACTION_SOURCES = frozenset({"WEBSITE", "APP", "PHYSICAL_STORE", "OTHER"})
MAX_EVENTS = 1000
MAX_AGE_SECS = 7 * 24 * 3600

_DATA_KEYS = frozenset({"events", "test_id", "partner"})
_EVENT_KEYS = frozenset(
    {
        "event_at",
        "action_source",
        "type",
        "click_id",
        "event_source_url",
        "user",
        "metadata",
    }
)
_USER_KEYS = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "ip_address",
        "user_agent",
        "uuid",
        "idfa",
        "aaid",
        "screen_dimensions",
        "data_processing_options",
    }
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RDT_UUID_RE = re.compile(rf"^(?:[0-9]{{13}}\.)?{_UUID}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")

#: Reddit's answer when the request/event budget is spent.
RATE_LIMITED = Canned(
    429,
    {"Retry-After": "10"},
    {"error": {"code": 429, "message": "Too many requests/events within timeframe."}},
)


def reddit_error(
    status: int, message: str, fields: list[dict[str, str]] | None = None
) -> web.Response:
    """Reddit's v3 error envelope ``{"error": {"code", "message"[, "fields"]}}``."""
    error: dict[str, Any] = {"code": status, "message": message}
    if fields:
        error["fields"] = fields
    return web.json_response({"error": error}, status=status)


class RedditStandIn(StandIn):
    """State of a Reddit stand-in: the token, known pixels, a clock, what was recorded."""

    def __init__(
        self,
        access_token: str,
        pixel_ids: set[str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.pixel_ids = pixel_ids
        self.now = now
        self.received: list[dict[str, Any]] = []  # counted events
        self.tested: list[
            dict[str, Any]
        ] = []  # events sent with a test_id (Event Testing)

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._reject(rec, 401, "No bearer token provided", "Authorization")
        if not has_bearer(request, self.access_token):
            return self._reject(rec, 401, "UNAUTHORIZED", "Authorization")
        pixel = request.match_info["pixel_id"]
        if self.pixel_ids is not None and pixel not in self.pixel_ids:
            return self._reject(
                rec,
                403,
                f"You're not authorized to post conversions to Pixel ID {pixel}.",
                "pixel_id",
            )

        data = rec.json_field("data")
        if not isinstance(data, dict):
            return self._reject(
                rec, 400, 'JSON error "missing field" on field "data"', "data"
            )
        unknown = sorted(set(data) - _DATA_KEYS)
        if unknown:
            return self._reject(
                rec,
                400,
                f'JSON error "unknown field" on field "{unknown[0]}"',
                f"data.{unknown[0]}",
            )
        events = data.get("events")
        if not isinstance(events, list) or not events:
            return self._reject(
                rec,
                400,
                "There were 0 conversion events. None were processed.",
                "data.events",
            )
        if len(events) > MAX_EVENTS:
            return self._reject(rec, 400, "Bad Request", "data.events")
        test_id = data.get("test_id")
        if test_id is not None and (not isinstance(test_id, str) or not test_id):
            return self._reject(
                rec, 400, "test_id must be a non-empty string", "data.test_id"
            )

        fields = []
        for index, event in enumerate(events):
            problem = self._event_problem(event)
            if problem:
                field, message = problem
                fields.append(
                    {
                        "field": f"$.data.events[{index}].{field}",
                        "message": f"{field}: {message}",
                    }
                )
        if fields:
            for f in fields:
                rec.problem(f["field"], 400, f["message"])
            return reddit_error(
                400,
                f"There were {len(fields)} invalid conversion events. None were processed.",
                fields,
            )

        (self.tested if test_id else self.received).extend(events)
        return web.json_response(
            {
                "data": {
                    "message": f"Successfully processed {len(events)} conversion events."
                }
            }
        )

    def _event_problem(self, event: Any) -> tuple[str, str] | None:
        if not isinstance(event, dict):
            return "", "each event must be an object"
        unknown = sorted(set(event) - _EVENT_KEYS)
        if unknown:
            return unknown[0], "unknown field"
        event_at = event.get("event_at")
        if not is_integer(event_at):
            return "event_at", "required, an integer unix time in milliseconds"
        now_ms = self.now() * 1000
        if event_at > now_ms:
            return "event_at", "in the future"
        if event_at < now_ms - MAX_AGE_SECS * 1000:
            return "event_at", "timestamp must be less than 168h0m0s old"
        if event.get("action_source") not in ACTION_SOURCES:
            return (
                "action_source",
                f"invalid action_source: {event.get('action_source')}",
            )

        kind = event.get("type")
        if (
            not isinstance(kind, dict)
            or kind.get("tracking_type") not in TRACKING_TYPES
        ):
            return "type.tracking_type", f"{kind!r}: not a v3 tracking type"
        if kind["tracking_type"] == "CUSTOM":
            name = kind.get("custom_event_name")
            if not isinstance(name, str) or not name or len(name) > 64:
                return "type.custom_event_name", "required for CUSTOM, 1..64 characters"

        user = event.get("user")
        if user is not None:
            if not isinstance(user, dict):
                return "user", "must be an object"
            unknown = sorted(set(user) - _USER_KEYS)
            if unknown:
                return f"user.{unknown[0]}", "unknown field"
            for key in ("email", "phone_number", "external_id"):
                if key in user and not is_sha256(user[key]):
                    return f"user.{key}", "expected a lowercase hex SHA-256 digest"
            uuid = user.get("uuid")
            if uuid is not None and (
                not isinstance(uuid, str) or not _RDT_UUID_RE.match(uuid)
            ):
                return "user.UUID", "invalid UUID: UUID must be RFC-4122 compliant"
            screen = user.get("screen_dimensions")
            if screen is not None and not (
                isinstance(screen, dict)
                and all(isinstance(screen.get(k), int) for k in ("width", "height"))
            ):
                return "user.screen_dimensions", "width and height must be integers"

        meta = event.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict):
                return "metadata", "must be an object"
            value = meta.get("value")
            if value is not None and not is_number(value):
                return "metadata.value", "must be a number (double)"
            currency = meta.get("currency")
            if currency is not None and (
                not isinstance(currency, str) or not _CURRENCY_RE.match(currency)
            ):
                return "metadata.currency", f"{currency!r} is not an ISO 4217 code"
            for i, product in enumerate(meta.get("products") or []):
                if not isinstance(product, dict) or not product.get("id"):
                    return f"metadata.products[{i}].id", "required"
        return None

    def _reject(
        self, rec: Recorded, status: int, message: str, field: str
    ) -> web.Response:
        rec.problem(field, status, message)
        return reddit_error(status, message)


def reddit_app(
    access_token: str = "standin-token",
    pixel_ids: set[str] | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like Reddit's Conversions API v3; state at ``app[STANDIN]``."""
    state = RedditStandIn(access_token, pixel_ids, now)
    return standin_app(
        state, {"/api/v3/pixels/{pixel_id}/conversion_events": state.handle}
    )
