"""A stand-in for Meta's Conversions API (``POST /{version}/{pixel_id}/events``).

Rules enforced, each from Meta's documentation (Conversions API "Using the
API", "Server event parameters", "Customer information parameters", "fbp and
fbc"; Graph API "Handling errors"):

- the access token (query ``access_token`` or body) must be the configured
  one, else Graph error 190 (``OAuthException``) with HTTP 400;
- the path names a Graph version and a numeric pixel ID (else code 100,
  subcode 33, like Graph's "object does not exist");
- ``data`` is an array of 1..1000 events; any bad event fails the whole
  request with code 100 (invalid parameter), HTTP 400;
- each event has ``event_name``, integer ``event_time`` (not older than 7
  days, not in the future), a known ``action_source`` and a ``user_data``
  object; website events also need ``event_source_url`` and
  ``user_data.client_user_agent``;
- hashed ``user_data`` keys hold 64-char lowercase hex SHA-256 digests
  (string or list); ``fbc``/``fbp`` follow ``fb.<n>.<ms>.<payload>[.<appendix>]``;
- ``custom_data.currency``, when present, is three letters (ISO 4217).

Success is ``{"events_received": n, "messages": [], "fbtrace_id": "..."}``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Callable, Mapping

from aiohttp import web

from . import Recorded, StandIn, is_integer, sha256_values, standin_app

__all__ = ["ACTION_SOURCES", "HASHED_KEYS", "MetaStandIn", "meta_app", "graph_error"]

ACTION_SOURCES = frozenset(
    {"email", "website", "app", "phone_call", "chat", "physical_store", "system_generated", "business_messaging", "other"}
)
# Keys Meta requires hashed. external_id is only "recommended" hashed.
HASHED_KEYS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")
MAX_EVENTS = 1000
MAX_AGE_SECS = 7 * 24 * 3600

_VERSION_RE = re.compile(r"^v\d+\.\d+$")
# Appendix: a 2-char language token or 8 base64url chars (6 bytes), per the
# Parameter Builder; cookies without it are valid legacy values.
_APPENDIX = r"(?:\.(?:AQ|Ag|Aw|BA|BQ|Bg|[A-Za-z0-9_-]{8}))?"
_FBC_RE = re.compile(r"^fb\.\d+\.\d+\.[^.\s]+" + _APPENDIX + "$")
_FBP_RE = re.compile(r"^fb\.\d+\.\d+\.\d+" + _APPENDIX + "$")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")


def graph_error(
    code: int,
    message: str,
    *,
    type_: str = "OAuthException",
    subcode: int | None = None,
    status: int = 400,
) -> web.Response:
    """A Graph API error answer: ``{"error": {message, type, code, [error_subcode], fbtrace_id}}``."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = _trace_id()
    return web.json_response({"error": error}, status=status)


class MetaStandIn(StandIn):
    """State of a Meta stand-in: the accepted token and pixels, and a clock."""

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
        # Events accepted (not test events counted separately: Meta counts both).
        self.received: list[dict[str, Any]] = []

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        version = request.match_info["version"]
        pixel = request.match_info["pixel_id"]

        body = rec.json
        form: Mapping[str, Any] = body if isinstance(body, dict) else {}
        token = rec.query.get("access_token") or form.get("access_token")
        if token != self.access_token:
            return self._reject(rec, 190, "Invalid OAuth access token - Cannot parse access token", "access_token")

        if not _VERSION_RE.match(version):
            return self._reject(rec, 100, f"Unknown Graph API version {version!r}", "path")
        if not pixel.isdigit() or (self.pixel_ids is not None and pixel not in self.pixel_ids):
            return self._reject(
                rec,
                100,
                f"Unsupported post request. Object with ID '{pixel}' does not exist",
                "pixel_id",
                type_="GraphMethodException",
                subcode=33,
            )
        if not isinstance(body, dict):
            return self._reject(rec, 100, "The parameter data is required", "data")

        data = body.get("data")
        if not isinstance(data, list) or not data:
            return self._reject(rec, 100, "The parameter data is required", "data")
        if len(data) > MAX_EVENTS:
            return self._reject(rec, 100, f"data: at most {MAX_EVENTS} events per request, got {len(data)}", "data")
        test_code = body.get("test_event_code")
        if test_code is not None and not isinstance(test_code, str):
            return self._reject(rec, 100, "test_event_code must be a string", "test_event_code")

        for index, event in enumerate(data):
            problem = self._event_problem(event)
            if problem:
                field, message = problem
                return self._reject(rec, 100, f"Invalid parameter: data[{index}].{field}: {message}", f"data[{index}].{field}")

        self.received.extend(data)
        return web.json_response({"events_received": len(data), "messages": [], "fbtrace_id": _trace_id()})

    def _event_problem(self, event: Any) -> tuple[str, str] | None:
        if not isinstance(event, dict):
            return "", "each event must be an object"
        name = event.get("event_name")
        if not isinstance(name, str) or not name:
            return "event_name", "required, a non-empty string"

        event_time = event.get("event_time")
        if not is_integer(event_time):
            return "event_time", "required, an integer unix time in seconds"
        now = self.now()
        if event_time < now - MAX_AGE_SECS:
            return "event_time", "more than 7 days in the past"
        if event_time > now:
            return "event_time", "in the future"

        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            return "action_source", f"{source!r} is not one of {sorted(ACTION_SOURCES)}"

        user = event.get("user_data")
        if not isinstance(user, dict):
            return "user_data", "required, an object"
        if source == "website":
            if not isinstance(event.get("event_source_url"), str) or not event["event_source_url"]:
                return "event_source_url", "required for website events"
            if not isinstance(user.get("client_user_agent"), str) or not user["client_user_agent"]:
                return "user_data.client_user_agent", "required for website events"

        for key in HASHED_KEYS:
            if key not in user:
                continue
            if not sha256_values(user[key]):
                return f"user_data.{key}", "must be a lowercase hex SHA-256 digest"
        for key, pattern in (("fbc", _FBC_RE), ("fbp", _FBP_RE)):
            value = user.get(key)
            if value is not None and (not isinstance(value, str) or not pattern.match(value)):
                return f"user_data.{key}", f"malformed {key} {value!r}"

        custom = event.get("custom_data")
        if custom is not None:
            if not isinstance(custom, dict):
                return "custom_data", "must be an object"
            currency = custom.get("currency")
            if currency is not None and (not isinstance(currency, str) or not _CURRENCY_RE.match(currency)):
                return "custom_data.currency", f"{currency!r} is not an ISO 4217 code"
        return None

    def _reject(
        self,
        rec: Recorded,
        code: int,
        message: str,
        field: str,
        *,
        type_: str = "OAuthException",
        subcode: int | None = None,
    ) -> web.Response:
        rec.problem(field, code, message)
        return graph_error(code, message, type_=type_, subcode=subcode)


def meta_app(
    access_token: str = "standin-token",
    pixel_ids: set[str] | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like Meta's Conversions API; state at ``app[STANDIN]``."""
    state = MetaStandIn(access_token, pixel_ids, now)
    return standin_app(state, {"/{version}/{pixel_id}/events": state.handle})


def _trace_id() -> str:
    return secrets.token_urlsafe(8)
