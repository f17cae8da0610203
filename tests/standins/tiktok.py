"""A stand-in for TikTok's Events API (``POST /open_api/v1.3/event/track/``).

Rules enforced, from TikTok's server GTM template, TikTok's Business API
response envelope and the integrator pages cited in ``proxy/vendors/tiktok.py``:

- header ``Access-Token`` must be the configured token: missing -> code
  40104, wrong -> code 40105 (both with HTTP 200, as TikTok answers);
- ``event_source`` is ``"web"`` and ``event_source_id`` the configured pixel,
  ``data`` an array of 1..1000 events; a bad event fails the whole request
  with code 40002 (invalid parameter);
- each event has a non-empty ``event`` and an integer ``event_time`` in unix
  seconds (not in the future, not in milliseconds);
- ``user.email``/``phone``/``external_id`` hold lowercase SHA-256 hex;
- ``properties.currency`` is three letters, ``value`` a number, each content
  has a string ``content_id``.

Success: ``{"code": 0, "message": "OK", "request_id": ..., "data": {}}``.
Rate limit (scripted): :func:`tiktok_answer` with code 40100.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import Recorded, StandIn, is_integer, is_number, sha256_values, standin_app

__all__ = ["TikTokStandIn", "tiktok_answer", "tiktok_app"]

MAX_EVENTS = 1000
_HASHED = ("email", "phone", "external_id")


def tiktok_answer(code: int, message: str) -> dict[str, Any]:
    """TikTok's envelope: ``{"code", "message", "request_id", "data": {}}``."""
    return {
        "code": code,
        "message": message,
        "request_id": secrets.token_hex(8),
        "data": {},
    }


class TikTokStandIn(StandIn):
    def __init__(
        self, access_token: str, pixel_code: str, now: Callable[[], float]
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.pixel_code = pixel_code
        self.now = now
        self.received: list[dict[str, Any]] = []

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        code, message = self._check(request, rec)
        if code:
            # TikTok's answer names no field, so neither does the problem.
            rec.problems.append({"code": str(code), "message": message})
        else:
            self.received.extend(rec.json["data"])
        # TikTok answers HTTP 200 whatever the code says.
        return web.json_response(tiktok_answer(code, message))

    def _check(self, request: web.Request, rec: Recorded) -> tuple[int, str]:
        token = request.headers.get("Access-Token")
        if not token:
            return 40104, "Access token is null"
        if token != self.access_token:
            return 40105, "Access token is incorrect or has been revoked"
        body = rec.json
        if not isinstance(body, dict):
            return 40002, "request body must be a JSON object"
        if body.get("event_source") != "web":
            return 40002, f"event_source {body.get('event_source')!r}: expected 'web'"
        if body.get("event_source_id") != self.pixel_code:
            return (
                40002,
                f"event_source_id {body.get('event_source_id')!r}: unknown pixel",
            )
        test_code = body.get("test_event_code")
        if test_code is not None and not isinstance(test_code, str):
            return 40002, "test_event_code must be a string"
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
            return 40002, f"data: 1..{MAX_EVENTS} events required"
        for i, event in enumerate(data):
            problem = self._event_problem(event)
            if problem:
                return 40002, f"data[{i}].{problem}"
        return 0, "OK"

    def _event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return ": each event must be an object"
        if not isinstance(event.get("event"), str) or not event["event"]:
            return "event: required"
        t = event.get("event_time")
        if not is_integer(t) or t > self.now() + 1 or t > 10**10:
            return "event_time: integer unix seconds, not in the future"
        user = event.get("user", {})
        if not isinstance(user, dict):
            return "user: must be an object"
        for key in _HASHED:
            if key in user and not sha256_values(user[key]):
                return f"user.{key}: must be SHA-256 hex"
        props = event.get("properties", {})
        if not isinstance(props, dict):
            return "properties: must be an object"
        currency = props.get("currency")
        if currency is not None and not (
            isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)
        ):
            return f"properties.currency {currency!r}: ISO 4217 code"
        value = props.get("value")
        if value is not None and not is_number(value):
            return "properties.value: must be a number"
        for j, content in enumerate(props.get("contents", [])):
            if not isinstance(content, dict) or not isinstance(
                content.get("content_id"), str
            ):
                return f"properties.contents[{j}].content_id: required string"
        return None


def tiktok_app(
    access_token: str = "standin-token",
    pixel_code: str = "CABCDEFGHIJ1234567890",
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like TikTok's Events API; state at ``app[STANDIN]``."""
    state = TikTokStandIn(access_token, pixel_code, now)
    return standin_app(state, {"/open_api/{version}/event/track/": state.handle})
