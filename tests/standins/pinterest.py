"""A stand-in for Pinterest's Conversions API (``POST /v5/ad_accounts/{id}/events``).

Rules enforced, from Pinterest's OpenAPI-generated client docs
(ConversionEventsApi, ConversionEventsData, ConversionEventsUserData,
ConversionEventsCustomData, ConversionApiResponse):

- ``Authorization: Bearer <token>`` must carry the configured token, else
  401 ``{"code": 2, "message": "Authentication failed."}``;
- the ad account in the path is digits (and, when given, a known account),
  else 403 with Pinterest's error envelope;
- the body is ``{"data": [...]}`` with 1..1000 events, else 400;
- each event has ``event_name`` from Pinterest's list, ``action_source`` in
  ``web``/``app_android``/``app_ios``/``offline``, integer ``event_time`` in
  unix seconds (not in the future, not older than 7 days), a non-empty
  ``event_id`` and a ``user_data`` object with ``em``, ``hashed_maids`` or
  both ``client_ip_address`` and ``client_user_agent``;
- hashed ``user_data`` keys are arrays of lowercase SHA-256 hex digests;
- ``custom_data.value`` is a string holding a number, ``currency`` three letters,
  ``contents[].item_price`` a numeric string and ``quantity`` an integer.

Answers: 200 with ``{"num_events_received", "num_events_processed",
"events": [{"status": "processed", ...}]}``; when any event is invalid, 422
with the same shape and ``status: "failed"`` plus ``error_message`` for it
(vendors.md's shape; Pinterest's generated docs list only 200/400/503, so the
422 status is not confirmed). ``?test=true`` answers the same and records
nothing. :data:`RATE_LIMITED` is Pinterest's 429 answer for scripting.
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
    is_sha256,
    standin_app,
)

__all__ = [
    "ACTION_SOURCES",
    "EVENT_NAMES",
    "HASHED_KEYS",
    "RATE_LIMITED",
    "PinterestStandIn",
    "pinterest_app",
    "pinterest_error",
]

EVENT_NAMES = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "app_install",
        "app_open",
        "checkout",
        "contact",
        "custom",
        "customize_product",
        "find_location",
        "initiate_checkout",
        "lead",
        "page_visit",
        "schedule",
        "search",
        "signup",
        "start_trial",
        "submit_application",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
    }
)
ACTION_SOURCES = frozenset({"web", "app_android", "app_ios", "offline"})
HASHED_KEYS = (
    "em",
    "hashed_maids",
    "ph",
    "ge",
    "db",
    "ln",
    "fn",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)
MAX_EVENTS = 1000
MAX_AGE_SECS = 7 * 24 * 3600

_NUMBER_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")

#: Pinterest's answer when the ad account's call budget is spent.
RATE_LIMITED = Canned(
    429,
    {"Retry-After": "60"},
    {"code": 8, "message": "You have exceeded your rate limit. Try again later."},
)


def pinterest_error(status: int, code: int, message: str) -> web.Response:
    """Pinterest's error envelope ``{"code": n, "message": "..."}``."""
    return web.json_response({"code": code, "message": message}, status=status)


class PinterestStandIn(StandIn):
    """State of a Pinterest stand-in: the token, known accounts, a clock, what was recorded."""

    def __init__(
        self,
        access_token: str,
        ad_account_ids: set[str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.ad_account_ids = ad_account_ids
        self.now = now
        self.received: list[dict[str, Any]] = []  # events recorded (never in test mode)
        self.tested: list[dict[str, Any]] = []  # events validated under ?test=true

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        if not has_bearer(request, self.access_token):
            return self._reject(rec, 401, 2, "Authentication failed.", "Authorization")
        account = request.match_info["ad_account_id"]
        if not account.isdigit() or (
            self.ad_account_ids is not None and account not in self.ad_account_ids
        ):
            return self._reject(
                rec,
                403,
                29,
                f"You are not permitted to access ad account {account}.",
                "ad_account_id",
            )

        data = rec.json_field("data")
        if not isinstance(data, list) or not data:
            return self._reject(
                rec,
                400,
                1,
                "Invalid request body: data must be a non-empty array.",
                "data",
            )
        if len(data) > MAX_EVENTS:
            return self._reject(
                rec,
                400,
                1,
                f"Invalid request body: at most {MAX_EVENTS} events.",
                "data",
            )

        results: list[dict[str, Any]] = []
        for index, event in enumerate(data):
            problem = self._event_problem(event)
            if problem:
                field, message = problem
                rec.problem(f"data[{index}].{field}", 422, message)
                results.append(
                    {
                        "status": "failed",
                        "error_message": f"{field}: {message}",
                        "warning_message": None,
                    }
                )
            else:
                results.append(
                    {
                        "status": "processed",
                        "error_message": None,
                        "warning_message": None,
                    }
                )
        processed = [
            e for e, r in zip(data, results, strict=True) if r["status"] == "processed"
        ]
        if request.query.get("test") == "true":
            self.tested.extend(processed)
        else:
            self.received.extend(processed)
        answer = {
            "num_events_received": len(data),
            "num_events_processed": len(processed),
            "events": results,
        }
        return web.json_response(
            answer, status=200 if len(processed) == len(data) else 422
        )

    def _event_problem(self, event: Any) -> tuple[str, str] | None:
        if not isinstance(event, dict):
            return "", "each event must be an object"
        if event.get("event_name") not in EVENT_NAMES:
            return (
                "event_name",
                f"{event.get('event_name')!r} is not a Pinterest event name",
            )
        if event.get("action_source") not in ACTION_SOURCES:
            return (
                "action_source",
                f"{event.get('action_source')!r} is not one of {sorted(ACTION_SOURCES)}",
            )
        event_time = event.get("event_time")
        if not is_integer(event_time):
            return "event_time", "required, an integer unix time in seconds"
        now = self.now()
        if event_time > now:
            return "event_time", "in the future"
        if event_time < now - MAX_AGE_SECS:
            return "event_time", "more than 7 days in the past"
        if not isinstance(event.get("event_id"), str) or not event["event_id"]:
            return "event_id", "required, a non-empty string"

        user = event.get("user_data")
        if not isinstance(user, dict):
            return "user_data", "required, an object"
        for key in HASHED_KEYS:
            if key not in user:
                continue
            values = user[key]
            # Pinterest wants arrays here, even for one value.
            if not isinstance(values, list) or not all(is_sha256(v) for v in values):
                return (
                    f"user_data.{key}",
                    "must be an array of lowercase hex SHA-256 digests",
                )
        if not (
            user.get("em")
            or user.get("hashed_maids")
            or (user.get("client_ip_address") and user.get("client_user_agent"))
        ):
            return (
                "user_data",
                "needs em, hashed_maids, or client_ip_address with client_user_agent",
            )
        for key in ("client_ip_address", "client_user_agent", "click_id", "partner_id"):
            if key in user and not isinstance(user[key], str):
                return f"user_data.{key}", "must be a string"

        custom = event.get("custom_data")
        if custom is not None:
            if not isinstance(custom, dict):
                return "custom_data", "must be an object"
            value = custom.get("value")
            if value is not None and (
                not isinstance(value, str) or not _NUMBER_RE.match(value)
            ):
                return (
                    "custom_data.value",
                    f"{value!r}: must be a string holding a number",
                )
            currency = custom.get("currency")
            if currency is not None and (
                not isinstance(currency, str) or not _CURRENCY_RE.match(currency)
            ):
                return "custom_data.currency", f"{currency!r} is not an ISO 4217 code"
            for i, content in enumerate(custom.get("contents") or []):
                price = content.get("item_price") if isinstance(content, dict) else None
                if price is not None and (
                    not isinstance(price, str) or not _NUMBER_RE.match(price)
                ):
                    return (
                        f"custom_data.contents[{i}].item_price",
                        f"{price!r}: must be a numeric string",
                    )
                qty = content.get("quantity") if isinstance(content, dict) else None
                if qty is not None and not is_integer(qty):
                    return (
                        f"custom_data.contents[{i}].quantity",
                        f"{qty!r}: must be an integer",
                    )
            num_items = custom.get("num_items")
            if num_items is not None and not is_integer(num_items):
                return "custom_data.num_items", f"{num_items!r}: must be an integer"
        return None

    def _reject(
        self, rec: Recorded, status: int, code: int, message: str, field: str
    ) -> web.Response:
        rec.problem(field, code, message)
        return pinterest_error(status, code, message)


def pinterest_app(
    access_token: str = "standin-token",
    ad_account_ids: set[str] | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like Pinterest's Conversions API; state at ``app[STANDIN]``."""
    state = PinterestStandIn(access_token, ad_account_ids, now)
    return standin_app(
        state, {"/v5/ad_accounts/{ad_account_id}/events": state.handle}
    )
