"""A stand-in for LinkedIn's Conversions API (``POST /rest/conversionEvents``).

Rules enforced, from Microsoft Learn (LinkedIn Marketing "Conversions API",
"Marketing API Versioning") and LinkedIn's Postman collection:

- ``Authorization: Bearer <token>`` with the configured token, else 401
  ``{"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN"}``;
- ``X-Restli-Protocol-Version: 2.0.0`` and a ``LinkedIn-Version`` of the form
  ``YYYYMM`` that the stand-in serves, else 400 / 426;
- ``X-RestLi-Method: BATCH_CREATE`` with ``{"elements": [...]}`` (1..5000);
- each element: ``conversion`` is ``urn:lla:llaPartnerConversion:<digits>``
  of a known rule (when rules are given), ``conversionHappenedAt`` integer
  epoch milliseconds within the last 90 days and not in the future,
  ``user.userIds`` present (possibly empty: LinkedIn answers 422 without it)
  with ``idType`` from the schema list and, for ``SHA256_EMAIL``, a 64-hex
  digest; at least one user ID or a ``userInfo`` with first and last name;
  ``conversionValue`` with a three-letter ``currencyCode`` and a decimal
  string ``amount``.

Answer: 200 ``{"elements": [{"status": 201}, ...]}``; a bad element gets
``{"status": 422, "error": {"message", "status": 422}}`` in its slot (Rest.li
batch semantics). :data:`RATE_LIMITED` is LinkedIn's 429 throttle answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import Canned, Recorded, StandIn, has_bearer, is_integer, is_sha256, standin_app

__all__ = [
    "ID_TYPES",
    "RATE_LIMITED",
    "LinkedInStandIn",
    "linkedin_app",
    "restli_error",
]

# Conversions API Schema (li-lms-2026-03). ORACLE_MOAT_ID, listed in
# vendors.md, is no longer among them.
ID_TYPES = frozenset(
    {
        "SHA256_EMAIL",
        "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
        "ACXIOM_ID",
        "PLAINTEXT_IP_ADDRESS",
        "GOOGLE_AID",
    }
)
MAX_EVENTS = 5000
MAX_AGE_SECS = 90 * 24 * 3600

_URN_RE = re.compile(r"^urn:lla:llaPartnerConversion:([0-9]+)$")
_VERSION_RE = re.compile(r"^20[0-9]{2}(0[1-9]|1[0-2])$")
_AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")

#: LinkedIn's throttle answer.
RATE_LIMITED = Canned(
    429,
    {"Retry-After": "30"},
    {
        "status": 429,
        "message": "Resource level throttle limit for calls to this resource is reached.",
    },
)


def restli_error(status: int, message: str, **extra: Any) -> web.Response:
    """A Rest.li error body ``{"status", "message", ...}``."""
    return web.json_response(
        {"status": status, "message": message, **extra}, status=status
    )


class LinkedInStandIn(StandIn):
    """State of a LinkedIn stand-in: token, served versions, known rules, a clock."""

    def __init__(
        self,
        access_token: str,
        rule_ids: set[str] | None = None,
        versions: set[str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.rule_ids = rule_ids
        self.versions = versions
        self.now = now
        self.received: list[dict[str, Any]] = []

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        if not has_bearer(request, self.access_token):
            return self._reject(
                rec,
                401,
                "Invalid access token",
                "Authorization",
                serviceErrorCode=65600,
                code="INVALID_ACCESS_TOKEN",
            )
        if request.headers.get("X-Restli-Protocol-Version") != "2.0.0":
            return self._reject(
                rec,
                400,
                "X-Restli-Protocol-Version 2.0.0 is required",
                "X-Restli-Protocol-Version",
            )
        version = request.headers.get("LinkedIn-Version", "")
        if not _VERSION_RE.match(version):
            return self._reject(
                rec,
                400,
                f"Invalid LinkedIn-Version header {version!r}",
                "LinkedIn-Version",
            )
        if self.versions is not None and version not in self.versions:
            return self._reject(
                rec,
                426,
                f"Requested version {version} is not active",
                "LinkedIn-Version",
                code="NONEXISTENT_VERSION",
            )
        if request.headers.get("X-RestLi-Method", "").upper() != "BATCH_CREATE":
            return self._reject(
                rec,
                400,
                "X-RestLi-Method BATCH_CREATE is required for elements",
                "X-RestLi-Method",
            )

        elements = rec.json_field("elements")
        if not isinstance(elements, list) or not elements:
            return self._reject(
                rec, 400, "elements: a non-empty array is required", "elements"
            )
        if len(elements) > MAX_EVENTS:
            return self._reject(
                rec, 400, f"elements: at most {MAX_EVENTS} per batch", "elements"
            )

        results: list[dict[str, Any]] = []
        for index, element in enumerate(elements):
            problem = self._element_problem(element)
            if problem:
                field, message = problem
                rec.problem(f"elements[{index}].{field}", 422, message)
                results.append(
                    {
                        "status": 422,
                        "error": {"message": f"{field}: {message}", "status": 422},
                    }
                )
            else:
                self.received.append(element)
                results.append({"status": 201})
        return web.json_response({"elements": results})

    def _element_problem(self, element: Any) -> tuple[str, str] | None:
        if not isinstance(element, dict):
            return "", "each element must be an object"
        urn = element.get("conversion")
        match = _URN_RE.match(urn) if isinstance(urn, str) else None
        if not match:
            return "conversion", f"{urn!r} is not an urn:lla:llaPartnerConversion URN"
        if self.rule_ids is not None and match.group(1) not in self.rule_ids:
            return "conversion", f"conversion rule {match.group(1)} does not exist"
        happened = element.get("conversionHappenedAt")
        if not is_integer(happened):
            return "conversionHappenedAt", "required, integer epoch milliseconds"
        now_ms = self.now() * 1000
        if happened > now_ms:
            return "conversionHappenedAt", "in the future"
        if happened < now_ms - MAX_AGE_SECS * 1000:
            return "conversionHappenedAt", "older than 90 days"
        event_id = element.get("eventId")
        if event_id is not None and (not isinstance(event_id, str) or not event_id):
            return "eventId", "must be a non-empty string"

        user = element.get("user")
        if not isinstance(user, dict):
            return "user", "required, an object"
        user_ids = user.get("userIds")
        if not isinstance(user_ids, list):
            return "user.userIds", "required (send [] when matching on userInfo only)"
        for i, uid in enumerate(user_ids):
            if not isinstance(uid, dict) or uid.get("idType") not in ID_TYPES:
                return (
                    f"user.userIds[{i}].idType",
                    f"{uid!r}: idType must be one of {sorted(ID_TYPES)}",
                )
            value = uid.get("idValue")
            if not isinstance(value, str) or not value:
                return f"user.userIds[{i}].idValue", "required, a non-empty string"
            if uid["idType"] == "SHA256_EMAIL" and not is_sha256(value):
                return (
                    f"user.userIds[{i}].idValue",
                    "SHA256_EMAIL must be a lowercase hex SHA-256 digest",
                )
        info = user.get("userInfo")
        if info is not None and not (
            isinstance(info, dict) and info.get("firstName") and info.get("lastName")
        ):
            return "user.userInfo", "firstName and lastName are required in userInfo"
        if not user_ids and info is None:
            return "user", "at least one userIds entry or userInfo is required"

        value_obj = element.get("conversionValue")
        if value_obj is not None:
            if not isinstance(value_obj, dict):
                return "conversionValue", "must be an object"
            currency = value_obj.get("currencyCode")
            if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
                return (
                    "conversionValue.currencyCode",
                    f"{currency!r} is not an ISO 4217 code",
                )
            amount = value_obj.get("amount")
            if not isinstance(amount, str) or not _AMOUNT_RE.match(amount):
                return "conversionValue.amount", f"{amount!r}: must be a decimal string"
        return None

    def _reject(
        self, rec: Recorded, status: int, message: str, field: str, **extra: Any
    ) -> web.Response:
        rec.problem(field, status, message)
        return restli_error(status, message, **extra)


def linkedin_app(
    access_token: str = "standin-token",
    rule_ids: set[str] | None = None,
    versions: set[str] | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app answering like LinkedIn's Conversions API; state at ``app[STANDIN]``."""
    state = LinkedInStandIn(access_token, rule_ids, versions, now)
    return standin_app(state, {"/rest/conversionEvents": state.handle})
