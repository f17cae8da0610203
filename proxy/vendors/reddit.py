"""Reddit Conversions API v3: render, batch and classify conversion events.

One destination is one Reddit pixel. Events go to
``POST {endpoint}/api/v3/pixels/{pixel_id}/conversion_events`` with
``Authorization: Bearer <conversion access token>`` and a JSON body
``{"data": {"events": [...], "test_id": "..."}}``. Reddit answers
``{"data": {"message": "Successfully processed N conversion events."}}`` or
``{"error": {"code", "message", "fields": [{"field", "message"}]}}``.

v2.0 (``/api/v2.0/conversions/events/{id}``) is deprecated and not used.
vendors.md lists ``/api/v3/accounts/{account_id}/conversions/events`` as a
second candidate path: it comes from a generated API catalogue, not Reddit;
Reddit's v2-to-v3 migration guide names only the pixels path.

Vendor facts come from Reddit's v3 migration guide, "Direct Integration" and
error pages as captured verbatim in the Reddit-maintained Segment destination
(``segmentio/action-destinations``, ``reddit-conversions-api/V3-API-REFERENCE.md``),
and the v3 error body recorded against the live API in the same project.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from .. import __version__
from ..model import Event, UserData
from ..privacy import is_hashed, sha256_hex
from ._common import (
    check_batch,
    click_id,
    currency_param,
    endpoint_setting,
    event_time,
    identified_items,
    item_list,
    json_object,
    matched_setting,
    message_reason,
    number,
    optional_text_setting,
    quantity,
    secret_setting,
    unexpected_success,
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
    retry_after,
)

__all__ = [
    "ACTION_SOURCES",
    "DEFAULT_ENDPOINT",
    "MAX_CUSTOM_NAME",
    "STANDARD_EVENTS",
    "RedditCAPI",
    "hash_reddit",
]

log = logging.getLogger("proxy.vendors.reddit")

DEFAULT_ENDPOINT = "https://ads-api.reddit.com"

# Canonical (GA4) names -> v3 ``type.tracking_type`` (UPPER_SNAKE_CASE in v3).
STANDARD_EVENTS: dict[str, str] = {
    "page_view": "PAGE_VISIT",
    "view_item": "VIEW_CONTENT",
    "search": "SEARCH",
    "add_to_cart": "ADD_TO_CART",
    "add_to_wishlist": "ADD_TO_WISHLIST",
    "purchase": "PURCHASE",
    "generate_lead": "LEAD",
    "sign_up": "SIGN_UP",
}

# Canonical action_source -> v3 ``action_source`` (required per event).
# PHYSICAL_STORE is the value Reddit's v3 changelog gives for "Offline
# (physical store)"; everything without a Reddit channel is OTHER.
ACTION_SOURCES: dict[str, str] = {
    "website": "WEBSITE",
    "app": "APP",
    "physical_store": "PHYSICAL_STORE",
}

#: "custom_event_name ... free-form, case-sensitive, UTF-8, <= 64 chars".
MAX_CUSTOM_NAME = 64

_PIXEL_RE = re.compile(r"^[A-Za-z0-9_]+\Z")
_SCREEN_RE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})\Z")
_EXTENSION_RE = re.compile(r"(ext|x|#)", re.IGNORECASE)
_NOT_DIGIT_RE = re.compile(r"[^0-9]")
# Reddit: "events must be sent within seven days after they occur";
# "1,000 events/request".
_MAX_EVENTS = 1000
_MAX_AGE = 7 * 24 * 3600.0


def hash_reddit(field: str, value: Any) -> str | None:
    """SHA-256 hex of ``value`` canonicalised as Reddit documents for ``user[field]``.

    ``email``: trimmed, lowercased, dots removed from the local part and
    anything after "+" dropped (Reddit: ``Al.ice+Apple@Example.Com`` and
    ``alice@example.com`` hash alike). ``phone_number``: "+" then the digits,
    extension removed; the number must carry its country code ("+" or "00"
    prefix), else None. ``external_id`` and ``ip_address``: trimmed value.
    Already hashed values pass through lowercased; rejected values give None.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 512:
        return None
    text = value.strip()
    if is_hashed(text):
        return text.lower()
    normalized: str | None
    if field == "email":
        normalized = _reddit_email(text)
    elif field == "phone_number":
        normalized = _reddit_phone(text)
    elif field in ("external_id", "ip_address"):
        normalized = text
    else:
        raise ValueError(f"Reddit user field {field!r}: not normalised here")
    return sha256_hex(normalized) if normalized else None


def _reddit_email(text: str) -> str | None:
    local, at, domain = text.lower().rpartition("@")
    local = local.replace(".", "").split("+", 1)[0]
    if (
        not at
        or not local
        or "." not in domain
        or any(c.isspace() for c in local + domain)
    ):
        return None
    return f"{local}@{domain}"


def _reddit_phone(text: str) -> str | None:
    # Without "+" or "00" we cannot know the country code Reddit requires,
    # and a wrong one matches someone else: send nothing.
    if text.startswith("+"):
        rest = text[1:]
    elif text.startswith("00"):
        rest = text[2:]
    else:
        return None
    rest = _EXTENSION_RE.split(rest, 1)[0]
    digits = _NOT_DIGIT_RE.sub("", rest)
    return "+" + digits if 7 <= len(digits) <= 15 else None


class RedditCAPI(Adapter):
    """Reddit Conversions API v3 destination (``type = "reddit_capi"``).

    Settings:
        pixel_id: the Reddit pixel ID (``a2_...`` or ``t2_...``). Required.
        access_token: the conversion access token from Events Manager. Required, secret.
        test_id: optional; the ID shown under Events Manager > Event Testing.
            Requests then carry ``data.test_id`` and show there instead of counting.
        endpoint: base URL, default ``https://ads-api.reddit.com``; http(s)
            only (tests point it at a local stand-in).
    """

    type: ClassVar[str] = "reddit_capi"
    max_batch: ClassVar[int] = _MAX_EVENTS
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        pixel = matched_setting(
            settings,
            "pixel_id",
            _PIXEL_RE,
            " is not a pixel ID: letters, digits and '_' only",
            problems,
            required="required: the Reddit pixel ID, like 'a2_abcdef123456'",
        )
        token = secret_setting(
            settings, "access_token", "a non-empty conversion access token", problems
        )
        test_id = optional_text_setting(settings, "test_id", problems)
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_id = pixel
        self.access_token = token
        self.test_id: str | None = test_id
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One v3 conversion event: time in ms, source, type, click ID, hashed ``user``, ``metadata``."""
        # v3: unix epoch milliseconds.
        sent_at = event_time(event, 1000)

        tracking = STANDARD_EVENTS.get(event.name)
        kind: dict[str, Any]
        if tracking:
            kind = {"tracking_type": tracking}
        else:
            if len(event.name) > MAX_CUSTOM_NAME:
                raise RenderError(
                    f"event name {event.name[:80]!r}: Reddit custom event names are at most {MAX_CUSTOM_NAME} characters"
                )
            kind = {"tracking_type": "CUSTOM", "custom_event_name": event.name}

        source = ACTION_SOURCES.get(event.action_source, "OTHER")
        out: dict[str, Any] = {
            "event_at": sent_at,
            "action_source": source,
            "type": kind,
        }
        if event.page.url and source == "WEBSITE":
            out["event_source_url"] = event.page.url
        click = click_id(event.context, "rdt_cid")
        if click:
            out["click_id"] = click
        user = _user(event)
        if user:
            out["user"] = user
        out["metadata"] = _metadata(event)
        return out

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST .../api/v3/pixels/{pixel}/conversion_events`` with ``data.events``."""
        check_batch(self, payloads)
        data: dict[str, Any] = {"events": payloads}
        if self.test_id:
            data["test_id"] = self.test_id
        return Request(
            "POST",
            f"{self.endpoint}/api/v3/pixels/{quote(self.pixel_id, safe='')}/conversion_events",
            {
                "Authorization": f"Bearer {self.access_token}",
                "Content-Type": "application/json",
                # Reddit throttles requests with default user agents ("Your
                # user agent was automatically ratelimited"): name ourselves.
                "User-Agent": f"tagrelay/{__version__} (server-side conversions)",
            },
            orjson.dumps({"data": data}),
            secrets=(self.access_token,),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok on Reddit's success message; final on 4xx refusals; retry on 429, 5xx and outages."""
        if answer.status is None:
            return default_classify(answer)
        status = answer.status
        doc = json_object(answer.body)
        error = doc.get("error") if doc else None

        if isinstance(error, dict):
            reason = message_reason(f"http {status}", error.get("message"))
            fields = error.get("fields")
            if isinstance(fields, list) and fields and isinstance(fields[0], dict):
                # The first field-scoped problem says what to fix.
                reason += f" ({str(fields[0].get('field'))[:60]}: {str(fields[0].get('message'))[:80]})"
            verdict = default_classify(answer).verdict
            if verdict is Verdict.OK:
                # An error envelope under a 2xx is still a refusal.
                verdict = Verdict.FINAL
            return Outcome(
                verdict,
                reason,
                retry_after(answer.headers) if verdict is Verdict.RETRY else None,
            )

        if 200 <= status < 300:
            data = doc.get("data") if doc else None
            if isinstance(data, dict) and isinstance(data.get("message"), str):
                return Outcome(Verdict.OK, f"http {status}: {data['message'][:120]}")
            # Not Reddit's success shape; Reddit deduplicates on conversion_id.
            return unexpected_success(status, "data.message")
        return default_classify(answer)


def _user(event: Event) -> dict[str, Any]:
    ctx = event.context
    user: dict[str, Any] = dict(_hashed_user(event.user))
    ip = hash_reddit("ip_address", ctx.ip) if ctx.ip else None
    if ip:
        # Reddit takes the IP hashed or not and recommends SHA-256.
        user["ip_address"] = ip
    if ctx.user_agent:
        user["user_agent"] = ctx.user_agent
    uuid = ctx.ids.get("rdt_uuid")
    if uuid:
        user["uuid"] = uuid
    screen = _SCREEN_RE.match(ctx.screen or "")
    if screen:
        user["screen_dimensions"] = {
            "width": int(screen.group(1)),
            "height": int(screen.group(2)),
        }
    return user


def _hashed_user(user: UserData) -> dict[str, str]:
    out: dict[str, str] = {}
    for attr, key in (
        ("email", "email"),
        ("phone", "phone_number"),
        ("external_id", "external_id"),
    ):
        hashed = hash_reddit(key, getattr(user, attr))
        if hashed:
            out[key] = hashed
    return out


def _metadata(event: Event) -> dict[str, Any]:
    params = event.params
    meta: dict[str, Any] = {}
    if event.id:
        # The Pixel's conversionId: Reddit deduplicates Pixel and CAPI on it.
        meta["conversion_id"] = event.id
    value = params.get("value")
    if value is not None and value != "":
        # v3: a double in the currency's base unit (v2's value_decimal).
        meta["value"] = number("params.value", value)
    currency = currency_param(params)
    if currency is not None:
        meta["currency"] = currency
    items = params.get("items")
    if items is not None:
        products = []
        # Reddit v3 refuses products without an id. Every item is checked
        # (item_list) before any is used, as this adapter always did.
        for i, item, item_id in identified_items(
            item_list(items), log, "reddit", "products"
        ):
            product: dict[str, Any] = {"id": item_id}
            if item.get("item_name") not in (None, ""):
                product["name"] = str(item["item_name"])
            if item.get("item_category") not in (None, ""):
                product["category"] = str(item["item_category"])
            product["quantity"] = quantity(
                f"params.items[{i}].quantity", item.get("quantity")
            )
            if item.get("price") is not None:
                product["item_price"] = number(
                    f"params.items[{i}].price", item["price"]
                )
            products.append(product)
        if products:
            meta["products"] = products
            meta["item_count"] = sum(p["quantity"] for p in products)
    return meta
