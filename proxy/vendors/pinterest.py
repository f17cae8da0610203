"""Pinterest Conversions API (API for Conversions, v5): render, batch, classify.

One destination is one ad account. Events go to
``POST {endpoint}/v5/ad_accounts/{ad_account_id}/events`` with
``Authorization: Bearer <conversion token>`` and a JSON body
``{"data": [...]}``; with ``test = true`` the query carries ``?test=true`` and
Pinterest validates without recording. Pinterest answers
``{"num_events_received", "num_events_processed", "events": [{"status",
"error_message", "warning_message"}]}`` or its error envelope
``{"code": n, "message": "..."}``.

Vendor facts were checked against Pinterest's OpenAPI-generated client docs
(``pinterest/pinterest-python-generated-api-client``: ConversionEventsApi,
ConversionEventsData, ConversionEventsUserData, ConversionEventsCustomData,
ConversionApiResponse), Pinterest's generated models for ``click_id``
("stored in _epik cookie ... or &epik= query parameter") and the event-name and
action-source lists of the Segment destination Pinterest documents.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from ..model import Event, UserData
from ..privacy import is_hashed, normalize_meta, sha256_hex
from ._common import (
    check_batch,
    client_fields,
    copy_texts,
    currency_param,
    decimal_string,
    digits_setting,
    endpoint_setting,
    event_time,
    flag_setting,
    item_id,
    item_list,
    json_object,
    quantity,
    refused,
    secret_setting,
    unexpected_success,
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
    "ACTION_SOURCES",
    "DEFAULT_ENDPOINT",
    "STANDARD_EVENTS",
    "PinterestCAPI",
    "hash_pinterest",
]

log = logging.getLogger("proxy.vendors.pinterest")

DEFAULT_ENDPOINT = "https://api.pinterest.com"

# Canonical (GA4) names -> Pinterest ``event_name``. Pinterest has no field
# for a custom event's own name, so anything else goes as "custom".
STANDARD_EVENTS: dict[str, str] = {
    "page_view": "page_visit",
    # Pinterest's page_visit covers "primary pages, such as product pages".
    "view_item": "page_visit",
    "view_item_list": "view_category",
    "search": "search",
    "add_to_cart": "add_to_cart",
    "add_to_wishlist": "add_to_wishlist",
    "add_payment_info": "add_payment_info",
    "purchase": "checkout",
    "generate_lead": "lead",
    "sign_up": "signup",
    "contact": "contact",
}

# Canonical action_source -> Pinterest's (``web``, ``app_android``,
# ``app_ios``, ``offline``). An app event needs its platform, which the
# canonical event does not carry, so "app" is refused rather than guessed.
ACTION_SOURCES: dict[str, str] = {
    "website": "web",
    "physical_store": "offline",
    "phone_call": "offline",
}

_WHITESPACE_RE = re.compile(r"\s+")
# Not confirmed in Pinterest's own pages (vendors.md [U], and a partner page
# says "events that occurred within the previous seven days").
# TODO(vendor facts): confirm both limits once Pinterest's conversions guide is readable here.
_MAX_EVENTS = 1000
_MAX_AGE = 7 * 24 * 3600.0


def hash_pinterest(field: str, value: Any) -> str | None:
    """SHA-256 hex of ``value`` normalised as Pinterest documents for ``user_data[field]``.

    ``em``: trimmed, lowercased e-mail (strict syntax, as for Meta).
    ``ph``: digits only, leading zeros removed ("only digits with country
    code, area code, and number. Remove any symbols, letters, spaces and
    leading zeros"). ``fn``/``ln``: lowercase with white space removed.
    ``external_id``: the trimmed value as given (Pinterest asks for no
    normalisation). Already hashed values pass through lowercased; rejected
    values give None.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 512:
        return None
    if is_hashed(value):
        return value.strip().lower()
    normalized: str | None
    if field == "em":
        normalized = normalize_meta("em", value)
    elif field == "ph":
        normalized = normalize_meta("ph", value)
    elif field in ("fn", "ln"):
        normalized = _WHITESPACE_RE.sub("", value.lower()) or None
    elif field == "external_id":
        normalized = value.strip()
    else:
        raise ValueError(f"Pinterest user_data field {field!r}: not normalised here")
    return sha256_hex(normalized) if normalized else None


class PinterestCAPI(Adapter):
    """Pinterest Conversions API destination (``type = "pinterest_capi"``).

    Settings:
        ad_account_id: the ad account ID, digits only. Required.
        access_token: the conversion access token from Ads Manager. Required, secret.
        test: when true, requests carry ``?test=true``: Pinterest validates
            and answers as usual but records nothing. Default false.
        endpoint: base URL, default ``https://api.pinterest.com``; http(s)
            only (tests point it at a local stand-in).
    """

    type: ClassVar[str] = "pinterest_capi"
    max_batch: ClassVar[int] = _MAX_EVENTS
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        account = digits_setting(
            settings,
            "ad_account_id",
            "the Pinterest ad account ID",
            "an ad account ID",
            problems,
        )
        token = secret_setting(
            settings, "access_token", "a non-empty conversion access token", problems
        )
        test = flag_setting(settings, "test", problems)
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.ad_account_id = account
        self.access_token = token
        self.test = test
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One Pinterest event: name, source, time, id, URL, hashed ``user_data``, ``custom_data``."""
        source = ACTION_SOURCES.get(event.action_source)
        if source is None:
            raise RenderError(
                f"action_source {event.action_source!r}: Pinterest takes only "
                f"{sorted(ACTION_SOURCES)} from tagrelay (app events need their platform)"
            )
        sent_at = event_time(event)
        if not event.id:
            # Pinterest requires event_id; it is also the dedup key with the Tag.
            raise RenderError("event id: empty, and Pinterest requires event_id")

        out: dict[str, Any] = {
            "event_name": STANDARD_EVENTS.get(event.name, "custom"),
            "action_source": source,
            "event_time": sent_at,
            "event_id": event.id,
        }
        if event.page.url:
            out["event_source_url"] = event.page.url
        user = _user_data(event)
        if not user.get("em") and not (
            user.get("client_ip_address") and user.get("client_user_agent")
        ):
            raise RenderError(
                "user_data: Pinterest needs an e-mail or both client IP and user agent; this event has neither"
            )
        out["user_data"] = user
        custom = _custom_data(event.params)
        if custom:
            out["custom_data"] = custom
        return out

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST .../v5/ad_accounts/{id}/events`` carrying ``payloads`` as ``data``."""
        check_batch(self, payloads)
        url = f"{self.endpoint}/v5/ad_accounts/{quote(self.ad_account_id, safe='')}/events"
        if self.test:
            url += "?test=true"
        return Request(
            "POST",
            url,
            {
                "Authorization": f"Bearer {self.access_token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            orjson.dumps({"data": payloads}),
            secrets=(self.access_token,),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok when every event was processed; final when Pinterest refused any; retry on outages."""
        if answer.status is None:
            return default_classify(answer)
        status = answer.status
        doc = json_object(answer.body)

        if doc is not None and isinstance(doc.get("events"), list):
            failed = [
                e
                for e in doc["events"]
                if not isinstance(e, dict) or e.get("status") != "processed"
            ]
            received = doc.get("num_events_received")
            if not failed and 200 <= status < 300:
                return Outcome(
                    Verdict.OK,
                    f"http {status} processed {len(doc['events'])}/{received}",
                )
            if failed:
                first = failed[0] if isinstance(failed[0], dict) else {}
                message = str(first.get("error_message") or "no message")[:120]
                reason = f"http {status} failed {len(failed)}/{received}: {message}"
                # Unless Pinterest is overloaded, the refused events will be
                # refused again; processed ones are deduplicated by event_id if
                # a replay resends them.
                retry = status == 429 or status >= 500
                return refused(reason, answer.headers, retry=retry)

        if 200 <= status < 300:
            # Not Pinterest's success shape; Pinterest deduplicates on event_id.
            return unexpected_success(status, "events")

        outcome = default_classify(answer)
        if doc is not None and "code" in doc:
            reason = f"http {status} code {doc.get('code')}"
            # Unlike message_reason(), an empty message still adds ": " here.
            if isinstance(doc.get("message"), str):
                reason += ": " + doc["message"][:120]
            return with_reason(outcome, reason)
        return outcome


def _user_data(event: Event) -> dict[str, Any]:
    ctx = event.context
    user: dict[str, Any] = {}
    user.update(_hashed_user(event.user))
    user.update(client_fields(ctx))
    # The server-kept last-seen epik first, then the Tag's _epik cookie, then
    # this hit's landing URL.
    click = (
        ctx.ids.get("epik") or ctx.ids.get("epik_cookie") or ctx.click_ids.get("epik")
    )
    if click:
        user["click_id"] = click
    return user


def _hashed_user(user: UserData) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for attr, key in (
        ("email", "em"),
        ("phone", "ph"),
        ("first_name", "fn"),
        ("last_name", "ln"),
        ("external_id", "external_id"),
    ):
        hashed = hash_pinterest(key, getattr(user, attr))
        if hashed:
            out[key] = [hashed]
    return out


def _custom_data(params: Mapping[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    value = params.get("value")
    if value is not None and value != "":
        # Pinterest takes value as a string and parses it as a double.
        custom["value"] = decimal_string("params.value", value)
    currency = currency_param(params)
    if currency is not None:
        custom["currency"] = currency

    items = params.get("items")
    if items is not None:
        contents = []
        # Every item is checked before any is used; one without an ID still
        # counts (Pinterest's contents take no required id).
        for i, item in enumerate(item_list(items)):
            ident = item_id(item)
            entry: dict[str, Any] = {}
            if ident is not None:
                entry["id"] = ident
            price = item.get("price")
            if price is not None:
                entry["item_price"] = decimal_string(f"params.items[{i}].price", price)
            entry["quantity"] = quantity(
                f"params.items[{i}].quantity", item.get("quantity")
            )
            contents.append(entry)
        if contents:
            custom["contents"] = contents
            ids = [c["id"] for c in contents if "id" in c]
            if ids:
                custom["content_ids"] = ids
            custom["num_items"] = sum(c["quantity"] for c in contents)

    copy_texts(
        params, custom, {"transaction_id": "order_id", "search_term": "search_string"}
    )
    return custom

