"""LinkedIn Conversions API: render, batch and classify conversion events.

One destination is one set of conversion rules (created with
``conversionMethod = CONVERSIONS_API`` in Campaign Manager). Events go to
``POST {endpoint}/rest/conversionEvents`` as a Rest.li batch create:
headers ``Authorization: Bearer``, ``LinkedIn-Version: YYYYMM``,
``X-Restli-Protocol-Version: 2.0.0``, ``X-RestLi-Method: BATCH_CREATE`` and
the body ``{"elements": [...]}``. LinkedIn answers 200 with
``{"elements": [{"status": 201}, ...]}``, one entry per event, or a Rest.li
error ``{"status": n, "message": "...", "serviceErrorCode": n}``.

LinkedIn has no test mode for conversion events, so this adapter has none.

Vendor facts were checked against Microsoft Learn (LinkedIn Marketing
"Conversions API", "Conversions API Schema" for li-lms-2026-03, "Marketing API
Versioning"), LinkedIn's Postman collection ("Stream multiple conversion
events") and, where marked, the Salesforce Data Cloud LinkedIn CAPI connector
page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ..model import Event
from ..privacy import is_hashed, normalize_meta, sha256_hex
from ._common import (
    check_batch,
    click_id,
    currency_code,
    decimal_string,
    endpoint_setting,
    event_time,
    json_object,
    refused,
    secret_setting,
    unexpected_success,
    version_setting,
    with_reason,
)
from .base import (
    Adapter,
    Answer,
    ConfigError,
    Outcome,
    RenderError,
    Request,
    Verdict,
    default_classify,
)

__all__ = [
    "CONVERSION_URN_PREFIX",
    "DEFAULT_API_VERSION",
    "DEFAULT_ENDPOINT",
    "LinkedInCAPI",
    "hash_linkedin_email",
]

log = logging.getLogger("proxy.vendors.linkedin")

DEFAULT_ENDPOINT = "https://api.linkedin.com"
# Versions are "YYYYMM", monthly, each "supported and stable for a minimum of
# one year before sunset" (Marketing API Versioning). 202603 is the newest
# version whose Conversions API schema page we could read.
# TODO(issue: vendor versions): bump when LinkedIn's versioning page lists a newer version.
DEFAULT_API_VERSION = "202603"
CONVERSION_URN_PREFIX = "urn:lla:llaPartnerConversion:"

_VERSION_RE = re.compile(r"^20[0-9]{2}(0[1-9]|1[0-2])\Z")
_RULE_RE = re.compile(r"^[0-9]+\Z")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")
# Salesforce's LinkedIn CAPI connector page: "up to 5,000 events in one
# batch"; "If you send data for an event older than 90 days, it's
# automatically rejected". Not on LinkedIn's own pages we could read.
# TODO(vendor facts): confirm both once LinkedIn's schema page states them.
_MAX_EVENTS = 5000
_MAX_AGE = 90 * 24 * 3600.0


def hash_linkedin_email(value: Any) -> str | None:
    """``SHA256_EMAIL``: SHA-256 hex of the trimmed, lowercased e-mail, or None when malformed.

    LinkedIn asks for no provider-specific rewriting (no Gmail dot removal).
    An already hashed value passes through lowercased.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    if is_hashed(value):
        return value.strip().lower()
    normalized = normalize_meta("em", value)
    return sha256_hex(normalized) if normalized else None


class LinkedInCAPI(Adapter):
    """LinkedIn Conversions API destination (``type = "linkedin_capi"``).

    Settings:
        access_token: OAuth token with ``rw_conversions``. Required, secret.
        conversion_rule_id: the conversion rule (digits) for every event
            routed here that ``conversion_rules`` does not name.
        conversion_rules: map of canonical event name to conversion rule ID,
            e.g. ``{purchase = "123", generate_lead = "456"}``. At least one
            of the two settings is required.
        api_version: ``LinkedIn-Version`` header, ``YYYYMM``; default
            :data:`DEFAULT_API_VERSION`.
        endpoint: base URL, default ``https://api.linkedin.com``; http(s)
            only (tests point it at a local stand-in).
    """

    type: ClassVar[str] = "linkedin_capi"
    max_batch: ClassVar[int] = _MAX_EVENTS
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        token = secret_setting(
            settings,
            "access_token",
            "a non-empty OAuth access token with rw_conversions",
            problems,
        )

        default_rule = settings.get("conversion_rule_id")
        rule: str | None = None
        if default_rule is not None:
            rule = _rule_id(default_rule)
            if rule is None:
                problems.append(
                    (
                        "conversion_rule_id",
                        f"{default_rule!r} is not a conversion rule ID: digits only",
                    )
                )

        rules: dict[str, str] = {}
        raw_rules = settings.get("conversion_rules")
        if raw_rules is not None:
            if not isinstance(raw_rules, Mapping):
                problems.append(
                    (
                        "conversion_rules",
                        f"{raw_rules!r}: must be a table of event name = rule ID",
                    )
                )
            else:
                for event_name, raw in raw_rules.items():
                    rule_id = _rule_id(raw)
                    if not isinstance(event_name, str) or not _NAME_RE.match(
                        event_name
                    ):
                        problems.append(
                            (
                                f"conversion_rules.{event_name}",
                                "not a snake_case event name",
                            )
                        )
                    elif rule_id is None:
                        problems.append(
                            (
                                f"conversion_rules.{event_name}",
                                f"{raw!r} is not a conversion rule ID: digits only",
                            )
                        )
                    else:
                        rules[event_name] = rule_id
        if default_rule is None and raw_rules is None:
            problems.append(
                (
                    "conversion_rule_id",
                    "required: set conversion_rule_id or conversion_rules (event name = rule ID)",
                )
            )

        raw_version = settings.get("api_version", DEFAULT_API_VERSION)
        if isinstance(raw_version, int) and not isinstance(raw_version, bool):
            # YYYYMM written as a TOML integer.
            raw_version = str(raw_version)
        version = version_setting(
            raw_version,
            DEFAULT_API_VERSION,
            "LinkedIn-Version",
            problems,
            pattern=_VERSION_RE,
            hint=" (YYYYMM)",
        )
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.access_token = token
        self.conversion_rule_id = rule
        self.conversion_rules = rules
        self.api_version = version
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One conversion event: rule URN, time in ms, event ID, value, hashed user IDs."""
        rule = self.conversion_rules.get(event.name, self.conversion_rule_id)
        if rule is None:
            raise RenderError(
                f"event {event.name!r}: no LinkedIn conversion rule (add it to conversion_rules or set conversion_rule_id)"
            )
        # Epoch milliseconds.
        sent_at = event_time(event, 1000)

        user_ids: list[dict[str, str]] = []
        email = hash_linkedin_email(event.user.email)
        if email:
            user_ids.append({"idType": "SHA256_EMAIL", "idValue": email})
        fat_id = click_id(event.context, "li_fat_id")
        if fat_id:
            user_ids.append(
                {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": fat_id}
            )
        if not user_ids:
            # userInfo (first/last name, company, title) would match too, but
            # LinkedIn takes it only in clear text and raw PII never leaves.
            raise RenderError(
                "user: LinkedIn needs an e-mail or li_fat_id to match; this event has neither"
            )

        out: dict[str, Any] = {
            "conversion": CONVERSION_URN_PREFIX + rule,
            "conversionHappenedAt": sent_at,
            "user": {"userIds": user_ids},
        }
        if event.id:
            # Deduplicates with the Insight Tag's event_id.
            out["eventId"] = event.id
        value = event.params.get("value")
        currency = event.params.get("currency")
        if value is not None and value != "" and currency not in (None, ""):
            out["conversionValue"] = {
                "currencyCode": currency_code(currency),
                # "Value of the conversion in decimal string", e.g. "1500.0".
                "amount": decimal_string("params.value", value),
            }
        return out

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One Rest.li ``BATCH_CREATE`` on ``/rest/conversionEvents`` with ``elements``."""
        check_batch(self, payloads)
        return Request(
            "POST",
            f"{self.endpoint}/rest/conversionEvents",
            {
                "Authorization": f"Bearer {self.access_token}",
                "Content-Type": "application/json",
                "LinkedIn-Version": self.api_version,
                "X-Restli-Protocol-Version": "2.0.0",
                "X-RestLi-Method": "BATCH_CREATE",
            },
            orjson.dumps({"elements": payloads}),
            secrets=(self.access_token,),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok when every element was created; final on refusals; retry on 429, 5xx and outages."""
        if answer.status is None:
            return default_classify(answer)
        status = answer.status
        doc = json_object(answer.body)

        if 200 <= status < 300:
            elements = doc.get("elements") if doc else None
            if not isinstance(elements, list):
                # Not a batch answer; LinkedIn deduplicates on eventId.
                return unexpected_success(status, "elements")
            bad = [
                (i, e)
                for i, e in enumerate(elements)
                if not isinstance(e, dict)
                or not isinstance(e.get("status"), int)
                or not 200 <= e["status"] < 300
            ]
            if not bad:
                return Outcome(Verdict.OK, f"http {status} created {len(elements)}")
            index, element = bad[0]
            detail = element if isinstance(element, dict) else {}
            error = detail.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            reason = f"http {status} element {index} status {detail.get('status')}"
            # Unlike message_reason(), an empty message still adds ": " here.
            if isinstance(message, str):
                reason += ": " + message[:120]
            if len(bad) > 1:
                reason += f" (+{len(bad) - 1} more)"
            element_status = detail.get("status")
            retry = isinstance(element_status, int) and (
                element_status == 429 or element_status >= 500
            )
            return refused(reason, answer.headers, retry=retry)

        outcome = default_classify(answer)
        if doc is not None and isinstance(doc.get("message"), str):
            reason = f"http {status}"
            if doc.get("serviceErrorCode") is not None:
                reason += f" code {doc['serviceErrorCode']}"
            reason += ": " + doc["message"][:120]
            return with_reason(outcome, reason)
        return outcome


def _rule_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    # Accept the full URN as Campaign Manager shows it.
    text = text.removeprefix(CONVERSION_URN_PREFIX)
    return text if _RULE_RE.match(text) else None
