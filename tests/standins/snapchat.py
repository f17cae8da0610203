"""A stand-in for Snap's Conversions API v3 (``POST /v3/{pixel_id}/events[/validate]``).

Rules enforced, from Snap's docs ("Using the API", "Parameters", "Verify Set
Up", "Introduction"):

- ``access_token`` query parameter (or ``Authorization: Bearer``) must be the
  configured token, else HTTP 401;
- ``data`` is an array of 1..2000 events;
- each event has a known ``event_name``, integer ``event_time`` in seconds
  not older than 37 days nor in the future, ``action_source`` WEB,
  MOBILE_APP or OFFLINE, ``event_source_url`` for WEB, and ``user_data`` with
  at least one match key ("Insufficient PII");
- hashed keys (``em``, ``ph``, ``fn``, ``ln``, ``external_id``, ...) hold
  lowercase SHA-256 hex ("Unhashed PII");
- PURCHASE carries ``custom_data.value`` and ``currency``.

A bad request is answered HTTP 400 ``{"status": "INVALID", "reason": ...}``;
success is HTTP 200 ``{"status": "VALID", "reason": ...}``. Test events
(``/validate``) are checked the same way and not recorded in ``received``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import Recorded, StandIn, is_integer, sha256_values, standin_app

__all__ = ["SnapStandIn", "snap_app"]

MAX_EVENTS = 2000
# Snap's v3 event names (kept apart from the adapter's list on purpose: the
# stand-in must not trust the code it checks).
EVENT_NAMES = frozenset(
    [
        "PAGE_VIEW",
        "VIEW_CONTENT",
        "ADD_CART",
        "ADD_TO_WISHLIST",
        "SIGN_UP",
        "SEARCH",
        "PURCHASE",
        "ADD_BILLING",
        "COMPLETE_TUTORIAL",
        "SUBSCRIBE",
        "AD_CLICK",
        "AD_VIEW",
        "START_CHECKOUT",
        "RATE",
        "LIST_VIEW",
        "LEVEL_COMPLETE",
        "ACHIEVEMENT_UNLOCKED",
        "SPENT_CREDITS",
        "SAVE",
        "SHARE",
        "INVITE",
        "LOGIN",
        "RESERVE",
        "START_TRIAL",
        "APP_INSTALL",
        "APP_OPEN",
        "CUSTOM_EVENT_1",
        "CUSTOM_EVENT_2",
        "CUSTOM_EVENT_3",
        "CUSTOM_EVENT_4",
        "CUSTOM_EVENT_5",
    ]
)
MAX_AGE_SECS = 37 * 24 * 3600
HASHED_KEYS = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)
MATCH_KEYS = ("em", "ph", "sc_click_id", "sc_cookie1", "madid", "external_id")


class SnapStandIn(StandIn):
    def __init__(self, access_token: str, now: Callable[[], float]) -> None:
        super().__init__()
        self.access_token = access_token
        self.now = now
        self.received: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        status, reason = self._check(request, rec)
        if status != 200:
            # Snap's answer names no field, so neither does the problem.
            rec.problems.append({"status": str(status), "message": reason})
            return web.json_response(
                {"status": "INVALID", "reason": reason}, status=status
            )
        target = self.validated if request.path.endswith("/validate") else self.received
        target.extend(rec.json["data"])
        return web.json_response({"status": "VALID", "reason": reason})

    def _check(self, request: web.Request, rec: Recorded) -> tuple[int, str]:
        auth = request.headers.get("Authorization", "")
        token = rec.query.get("access_token") or auth.removeprefix("Bearer ")
        if token != self.access_token:
            return 401, "Unauthorized: invalid access token"
        data = rec.json_field("data")
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
            return 400, f"data: 1..{MAX_EVENTS} events required"
        for i, event in enumerate(data):
            problem = self._event_problem(event)
            if problem:
                return 400, f"data[{i}].{problem}"
        return 200, f"{len(data)} events processed"

    def _event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return ": each event must be an object"
        if event.get("event_name") not in EVENT_NAMES:
            return f"event_name {event.get('event_name')!r}: not a Snap event name"
        t = event.get("event_time")
        now = self.now()
        if not is_integer(t) or not now - MAX_AGE_SECS <= t <= now + 1:
            return "event_time: timestamp invalid or out of range"
        source = event.get("action_source")
        if source not in ("WEB", "MOBILE_APP", "OFFLINE"):
            return f"action_source {source!r}: WEB, MOBILE_APP or OFFLINE"
        if source == "WEB" and not event.get("event_source_url"):
            return "event_source_url: required for WEB events"
        user = event.get("user_data")
        if not isinstance(user, dict):
            return "user_data: required"
        for key in HASHED_KEYS:
            if key in user and not sha256_values(user[key]):
                return f"user_data.{key}: unhashed PII"
        if not any(user.get(k) for k in MATCH_KEYS) and not (
            user.get("client_ip_address") and user.get("client_user_agent")
        ):
            return "user_data: insufficient PII"
        custom = event.get("custom_data", {})
        if event["event_name"] == "PURCHASE" and not (
            isinstance(custom, dict)
            and custom.get("value") is not None
            and custom.get("currency")
        ):
            return "custom_data: missing price and/or currency in Purchase events"
        return None


def snap_app(
    access_token: str = "standin-token", now: Callable[[], float] = time.time
) -> web.Application:
    """An aiohttp app answering like Snap's Conversions API v3; state at ``app[STANDIN]``."""
    state = SnapStandIn(access_token, now)
    return standin_app(
        state,
        {
            "/v3/{pixel_id}/events": state.handle,
            "/v3/{pixel_id}/events/validate": state.handle,
        },
    )
