"""Meta Conversions API (CAPI): render, batch and classify server events.

One destination is one pixel (dataset). Events go to
``POST {endpoint}/{api_version}/{pixel_id}/events?access_token=...`` as a JSON
body ``{"data": [...]}``; Meta answers ``{"events_received": n, ...}`` or a
Graph error envelope. Vendor facts below were checked against Meta's
developer docs (Conversions API "Using the API", "Server event parameters",
Graph API "Handling errors", "Rate limiting", changelog) in December 2026.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, ClassVar, Mapping
from urllib.parse import quote, urlencode, urlsplit

import orjson

from ..model import Event
from ..privacy import meta_user_data
from .base import (
    Adapter,
    Answer,
    ConfigError,
    Outcome,
    RenderError,
    Request,
    Verdict,
    default_classify,
    retry_after,
)

__all__ = [
    "ACTION_SOURCES",
    "DEFAULT_API_VERSION",
    "DEFAULT_ENDPOINT",
    "STANDARD_EVENTS",
    "MetaCAPI",
]

log = logging.getLogger("proxy.vendors.meta")

DEFAULT_ENDPOINT = "https://graph.facebook.com"
# The newest Graph API version in Meta's changelog (released 2026-07-29). CAPI
# keeps every version for at least two years, so a pinned default stays valid.
# TODO(issue: vendor versions): bump when Meta's changelog lists a newer version.
DEFAULT_API_VERSION = "v26.0"

# Canonical (GA4 recommended) names -> Meta standard events. Anything else is
# sent under its canonical name as a custom event.
STANDARD_EVENTS: dict[str, str] = {
    "page_view": "PageView",
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "Purchase",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "search": "Search",
    "contact": "Contact",
    "customize_product": "CustomizeProduct",
    "donate": "Donate",
    "find_location": "FindLocation",
    "schedule": "Schedule",
    "start_trial": "StartTrial",
    "submit_application": "SubmitApplication",
    "subscribe": "Subscribe",
}

ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)

# Graph error codes (Graph API "Handling errors" and "Rate limiting" pages):
# 1 unknown / 2 service: temporary, wait and retry; 4 app, 17 account, 32 page,
# 613 custom-level throttling and 341 application limit: wait and retry; 368
# temporarily blocked for policy: wait and retry. Everything else (100 invalid
# parameter, 190/102 token, 3/10/200-299 permissions, ...) needs a human.
_TRANSIENT_CODES = frozenset({1, 2})
_THROTTLE_CODES = frozenset({4, 17, 32, 341, 368, 613})

# Params consumed into dedicated custom_data fields (or not Meta's business).
_CONSUMED = frozenset(
    {
        "value",
        "currency",
        "items",
        "transaction_id",
        "search_term",
        "content_name",
        "session_id",
        "engagement_time_msec",
    }
)
# Param names that carry contact data; never copied into custom_data, which
# Meta stores unhashed.
_PII_KEYS = frozenset(
    {
        "email",
        "e_mail",
        "mail",
        "em",
        "phone",
        "phone_number",
        "ph",
        "mobile",
        "first_name",
        "last_name",
        "fn",
        "ln",
        "name",
        "full_name",
        "address",
        "street",
        "zip",
        "postal_code",
        "birthday",
        "date_of_birth",
        "dob",
        "ip",
        "ip_address",
    }
)
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# An international number ("+44 20 7946 0958"); bare digit strings are SKUs.
_PHONE_RE = re.compile(r"^\+\d[\d\s().-]{6,}\Z")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}\Z")
_VERSION_RE = re.compile(r"^v\d+\.\d+\Z")
_MAX_AGE = 7 * 24 * 3600.0


class MetaCAPI(Adapter):
    """Meta Conversions API destination (``type = "meta_capi"``).

    Settings:
        pixel_id: the pixel (dataset) ID, digits only. Required.
        access_token: the CAPI system-user token. Required, secret.
        api_version: Graph API version such as ``"v26.0"``; default
            :data:`DEFAULT_API_VERSION`.
        test_event_code: optional; events then show under Events Manager >
            Test Events instead of counting.
        endpoint: base URL, default ``https://graph.facebook.com``; http(s)
            only (tests point it at a local stand-in).
    """

    type: ClassVar[str] = "meta_capi"
    # "You can send up to 1,000 events in data" (Using the API).
    max_batch: ClassVar[int] = 1000
    # "event_time can be up to 7 days before you send an event"; one older
    # event fails the whole request.
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        raw_pixel = settings.get("pixel_id")
        if isinstance(raw_pixel, bool) or not isinstance(raw_pixel, (str, int)):
            problems.append(("pixel_id", "required: the pixel (dataset) ID, digits only"))
            pixel = ""
        else:
            pixel = str(raw_pixel).strip()
            if not pixel.isdigit() or not pixel.isascii():
                problems.append(("pixel_id", f"{pixel!r} is not a pixel ID: digits only"))

        token = settings.get("access_token")
        if not isinstance(token, str) or not token.strip():
            # The value is a secret: never echo it.
            problems.append(("access_token", "required: a non-empty Conversions API access token"))
            token = ""

        version = settings.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            problems.append(("api_version", f"{version!r} is not a Graph API version like 'v26.0'"))
            version = DEFAULT_API_VERSION

        test_code = settings.get("test_event_code")
        if test_code is not None and (not isinstance(test_code, str) or not test_code.strip()):
            problems.append(("test_event_code", f"{test_code!r}: must be a non-empty string when set"))
            test_code = None

        endpoint = _check_endpoint(settings.get("endpoint", DEFAULT_ENDPOINT), problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_id = pixel
        self.access_token = token.strip()
        self.api_version = version
        self.test_event_code: str | None = test_code.strip() if isinstance(test_code, str) else None
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One CAPI server event: name, time, ids, URLs, hashed ``user_data``, ``custom_data``."""
        if event.action_source not in ACTION_SOURCES:
            raise RenderError(
                f"action_source {event.action_source!r}: Meta accepts only {sorted(ACTION_SOURCES)}"
            )
        if not math.isfinite(event.time):
            raise RenderError(f"event time {event.time!r}: not a finite unix time")

        # A client clock a little ahead of ours gives a future event_time,
        # which Meta refuses for the whole batch; send "now" instead.
        event_time = int(min(event.time, time.time()))

        out: dict[str, Any] = {
            "event_name": STANDARD_EVENTS.get(event.name, event.name),
            "event_time": event_time,
            "action_source": event.action_source,
        }
        if event.id:
            out["event_id"] = event.id
        if event.page.url:
            out["event_source_url"] = event.page.url
        if event.page.referrer:
            out["referrer_url"] = event.page.referrer

        out["user_data"] = self._user_data(event)
        custom = _custom_data(event.params)
        if custom:
            out["custom_data"] = custom
        return out

    def _user_data(self, event: Event) -> dict[str, Any]:
        ctx = event.context
        user: dict[str, Any] = dict(meta_user_data(event.user))
        # Meta wants these four as-is (never hashed).
        if ctx.ip:
            user["client_ip_address"] = ctx.ip
        if ctx.user_agent:
            user["client_user_agent"] = ctx.user_agent
        for key in ("fbp", "fbc"):
            value = ctx.ids.get(key)
            if value:
                user[key] = value
        return {k: v for k, v in user.items() if v not in ("", [], None)}

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST .../{pixel_id}/events`` carrying ``payloads`` as ``data``."""
        if not 1 <= len(payloads) <= self.max_batch:
            raise ValueError(
                f"meta_capi {self.name!r}: batch of {len(payloads)} events; "
                f"must be 1..{self.max_batch}"
            )
        body: dict[str, Any] = {"data": payloads}
        if self.test_event_code:
            body["test_event_code"] = self.test_event_code
        # The documented way to authenticate is the access_token query
        # parameter; Request.secrets keeps it out of anything printed.
        url = (
            f"{self.endpoint}/{self.api_version}/{quote(self.pixel_id, safe='')}/events?"
            + urlencode({"access_token": self.access_token})
        )
        return Request(
            "POST",
            url,
            {"Content-Type": "application/json"},
            orjson.dumps(body),
            secrets=(self.access_token, quote(self.access_token, safe="")),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok when Meta counted the events; retry on outages and throttling; final otherwise."""
        if answer.status is None:
            return default_classify(answer)
        status = answer.status
        doc = _json_object(answer.body)
        error = doc.get("error") if doc else None

        if isinstance(error, dict):
            return _classify_error(status, error, answer.headers)
        if 200 <= status < 300:
            if doc is not None and isinstance(doc.get("events_received"), int):
                return Outcome(Verdict.OK, f"http {status} events_received {doc['events_received']}")
            # A 2xx without the count is not Meta's success shape. Resending is
            # safe (Meta deduplicates on event_name + event_id), so retry and
            # let the retry budget turn a lasting oddity into a dead letter.
            return Outcome(Verdict.RETRY, f"http {status} without events_received")
        return default_classify(answer)


def _classify_error(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> Outcome:
    code = error.get("code")
    subcode = error.get("error_subcode")
    reason = f"http {status} code {code}"
    if subcode is not None:
        reason += f" subcode {subcode}"
    message = error.get("error_user_title") or error.get("message")
    if isinstance(message, str) and message:
        # Meta's text names the bad field; bounded so a ledger row stays small.
        reason += ": " + message[:120]

    transient = error.get("is_transient") is True
    if status >= 500 or status == 429 or transient or code in _TRANSIENT_CODES or code in _THROTTLE_CODES:
        return Outcome(Verdict.RETRY, reason, retry_after(headers))
    return Outcome(Verdict.FINAL, reason)


def _custom_data(params: Mapping[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}

    if "value" in params and params["value"] is not None:
        custom["value"] = _number("value", params["value"])
    currency = params.get("currency")
    if currency is not None and currency != "":
        if not isinstance(currency, str) or not _CURRENCY_RE.match(currency.strip()):
            raise RenderError(f"params.currency {currency!r}: not an ISO 4217 three-letter code")
        custom["currency"] = currency.strip().upper()

    items = params.get("items")
    if items is not None:
        if not isinstance(items, list):
            raise RenderError(f"params.items: expected a list of items, got {type(items).__name__}")
        contents: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise RenderError(f"params.items[{i}]: expected an object, got {type(item).__name__}")
            item_id = item.get("item_id", item.get("id"))
            if item_id is None or item_id == "":
                # Meta's contents need an id; an item without one is useless there.
                log.debug("meta: item %d has no item_id, left out of contents", i)
                continue
            entry: dict[str, Any] = {"id": str(item_id)}
            quantity = item.get("quantity")
            entry["quantity"] = int(_number(f"params.items[{i}].quantity", quantity)) if quantity is not None else 1
            price = item.get("price", item.get("item_price"))
            if price is not None:
                entry["item_price"] = _number(f"params.items[{i}].price", price)
            contents.append(entry)
        if contents:
            custom["contents"] = contents
            custom["content_ids"] = [c["id"] for c in contents]
            custom["content_type"] = "product"
            custom["num_items"] = sum(int(c["quantity"]) for c in contents)

    if params.get("transaction_id") not in (None, ""):
        custom["order_id"] = str(params["transaction_id"])
    if params.get("content_name") not in (None, ""):
        custom["content_name"] = str(params["content_name"])
    if params.get("search_term") not in (None, ""):
        custom["search_string"] = str(params["search_term"])

    for key, value in params.items():
        if key in _CONSUMED or key in custom:
            continue
        if key.lower() in _PII_KEYS or not _is_scalar(value):
            continue
        if isinstance(value, str) and (_EMAIL_RE.search(value) or _PHONE_RE.match(value)):
            # Looks like contact data under an innocent name: custom_data is
            # stored unhashed, so it does not go.
            log.debug("meta: param %s left out: value looks like contact data", key)
            continue
        custom[key] = value
    return custom


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise RenderError(f"{field} {value!r}: expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RenderError(f"{field} {value!r}: expected a number") from None
    if not math.isfinite(number):
        raise RenderError(f"{field} {value!r}: expected a finite number")
    return number


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value != ""


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _check_endpoint(value: Any, problems: list[tuple[str, str]]) -> str:
    if not isinstance(value, str):
        problems.append(("endpoint", f"{value!r}: must be an http(s) URL"))
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(("endpoint", f"{value!r}: must be an http(s) URL with a host"))
    elif parts.query or parts.fragment:
        problems.append(("endpoint", f"{value!r}: must be a base URL without query or fragment"))
    return value.rstrip("/")
