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
import re
from typing import Any, ClassVar, Mapping
from urllib.parse import quote, urlencode

import orjson

from ..model import Event
from ..privacy import meta_user_data
from ._common import (
    check_batch,
    client_fields,
    copy_texts,
    digits_setting,
    endpoint_setting,
    event_time,
    identified_items,
    json_object,
    loose_quantity,
    message_reason,
    money_params,
    number,
    optional_text_setting,
    refused,
    secret_setting,
    unexpected_success,
    version_setting,
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

        pixel = digits_setting(settings, "pixel_id", "the pixel (dataset) ID", "a pixel ID", problems)
        token = secret_setting(settings, "access_token", "a non-empty Conversions API access token", problems)
        version = version_setting(
            settings.get("api_version", DEFAULT_API_VERSION), DEFAULT_API_VERSION, "Graph API version", problems
        )
        test_code = optional_text_setting(settings, "test_event_code", problems)
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_id = pixel
        self.access_token = token
        self.api_version = version
        self.test_event_code: str | None = test_code
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One CAPI server event: name, time, ids, URLs, hashed ``user_data``, ``custom_data``."""
        if event.action_source not in ACTION_SOURCES:
            raise RenderError(
                f"action_source {event.action_source!r}: Meta accepts only {sorted(ACTION_SOURCES)}"
            )
        # A future event_time fails Meta's whole batch; event_time() sends "now" instead.
        sent_at = event_time(event)

        out: dict[str, Any] = {
            "event_name": STANDARD_EVENTS.get(event.name, event.name),
            "event_time": sent_at,
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

    def check(self, payload: Mapping[str, Any]) -> None:
        """Website events need event_source_url and user_data.client_user_agent ("Server event parameters")."""
        if payload.get("action_source") != "website":
            return
        user = payload.get("user_data")
        missing = [name for name, value in (
            ("event_source_url", payload.get("event_source_url")),
            ("user_data.client_user_agent", user.get("client_user_agent") if isinstance(user, Mapping) else None),
        ) if not value]  # fmt: skip
        if missing:
            raise RenderError(f"action_source website: Meta requires {' and '.join(missing)}")

    def _user_data(self, event: Event) -> dict[str, Any]:
        ctx = event.context
        user: dict[str, Any] = dict(meta_user_data(event.user))
        # Meta wants these four as-is (never hashed).
        user.update(client_fields(ctx))
        for key in ("fbp", "fbc"):
            value = ctx.ids.get(key)
            if value:
                user[key] = value
        return {k: v for k, v in user.items() if v not in ("", [], None)}

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST .../{pixel_id}/events`` carrying ``payloads`` as ``data``."""
        check_batch(self, payloads)
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
        doc = json_object(answer.body)
        error = doc.get("error") if doc else None

        if isinstance(error, dict):
            return _classify_error(status, error, answer.headers)
        if 200 <= status < 300:
            if doc is not None and isinstance(doc.get("events_received"), int):
                return Outcome(Verdict.OK, f"http {status} events_received {doc['events_received']}")
            # Not Meta's success shape; Meta deduplicates on event_name + event_id.
            return unexpected_success(status, "events_received")
        return default_classify(answer)


def _classify_error(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> Outcome:
    code = error.get("code")
    subcode = error.get("error_subcode")
    reason = f"http {status} code {code}"
    if subcode is not None:
        reason += f" subcode {subcode}"
    # Meta's text names the bad field.
    reason = message_reason(reason, error.get("error_user_title") or error.get("message"))

    transient = error.get("is_transient") is True
    retry = status >= 500 or status == 429 or transient or code in _TRANSIENT_CODES or code in _THROTTLE_CODES
    return refused(reason, headers, retry=retry, whole=_about_the_request(status, code, subcode))


def _about_the_request(status: int, code: Any, subcode: Any) -> bool:
    """Graph errors no event of the batch causes: the token (190, 102), permissions (10, 200-299), the pixel (100/33)."""
    if status in (401, 403) or code in (190, 102, 10):
        return True
    if isinstance(code, int) and 200 <= code <= 299:
        return True
    return bool(code == 100 and subcode == 33)


def _custom_data(params: Mapping[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}

    # The value is named "value" (not "params.value") in errors, as it always was here.
    money_params(params, custom, "value")

    items = params.get("items")
    if items is not None:
        contents: list[dict[str, Any]] = []
        # Meta's contents need an id; an item without one is useless there.
        for i, item, item_id in identified_items(items, log, "meta", "contents"):
            entry: dict[str, Any] = {
                "id": item_id,
                "quantity": loose_quantity(f"params.items[{i}].quantity", item.get("quantity")),
            }
            price = item.get("price", item.get("item_price"))
            if price is not None:
                entry["item_price"] = number(f"params.items[{i}].price", price)
            contents.append(entry)
        if contents:
            custom["contents"] = contents
            custom["content_ids"] = [c["id"] for c in contents]
            custom["content_type"] = "product"
            custom["num_items"] = sum(int(c["quantity"]) for c in contents)

    copy_texts(
        params,
        custom,
        {"transaction_id": "order_id", "content_name": "content_name", "search_term": "search_string"},
    )

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


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value != ""

