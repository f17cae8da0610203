"""Snapchat Conversions API v3 (web events): render, batch and classify.

One destination is one Snap Pixel. Events go to
``POST {endpoint}/v3/{pixel_id}/events?access_token=...`` as a JSON body
``{"data": [...]}``; with ``test_mode`` they go to ``.../events/validate``,
Snap's Test Event Tool, which checks them without recording them.

Vendor facts were checked against Snap's developer docs (Conversions API
"Introduction", "Using the API", "Parameters", "Verify Set Up"), Snap's
business SDKs (phone and email normalisation, their unit-test vectors, the
``status``/``reason`` answer) and Snap's server-side GTM template
(Snapchat/capi-google-tag-manager-serverside-tag: GA4 name mapping, the
``_scid`` cookie). Corrections to ``vendors.md`` are marked "vendors.md says".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import orjson

from ..model import Event
from ..privacy import snap_user_data
from ._common import (
    check_batch,
    click_id,
    client_fields,
    copy_texts,
    endpoint_setting,
    event_time,
    flag_setting,
    identified_items,
    json_object,
    loose_quantity,
    matched_setting,
    message_reason,
    money_params,
    number,
    region_setting,
    secret_setting,
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
    "EVENT_NAMES",
    "STANDARD_EVENTS",
    "SnapchatCAPI",
]

log = logging.getLogger("proxy.vendors.snapchat")

DEFAULT_ENDPOINT = "https://tr.snapchat.com"

# Snap's v3 event names. Snap takes no free-form names: a custom event is
# one of CUSTOM_EVENT_1..5, chosen per destination in ``event_names``.
EVENT_NAMES = frozenset(
    {
        "PAGE_VIEW", "VIEW_CONTENT", "ADD_CART", "ADD_TO_WISHLIST", "SIGN_UP",
        "SEARCH", "PURCHASE", "ADD_BILLING", "COMPLETE_TUTORIAL", "SUBSCRIBE",
        "AD_CLICK", "AD_VIEW", "START_CHECKOUT", "RATE", "LIST_VIEW",
        "LEVEL_COMPLETE", "ACHIEVEMENT_UNLOCKED", "SPENT_CREDITS", "SAVE",
        "SHARE", "INVITE", "LOGIN", "RESERVE", "START_TRIAL", "APP_INSTALL",
        "APP_OPEN", "CUSTOM_EVENT_1", "CUSTOM_EVENT_2", "CUSTOM_EVENT_3",
        "CUSTOM_EVENT_4", "CUSTOM_EVENT_5",
    }
)  # fmt: skip

# Canonical names -> Snap names, as Snap's own server-side GTM template maps
# GA4 names (generate_lead -> SIGN_UP included: Snap has no lead event).
STANDARD_EVENTS: dict[str, str] = {
    "page_view": "PAGE_VIEW",
    "view_item": "VIEW_CONTENT",
    "view_item_list": "LIST_VIEW",
    "add_to_cart": "ADD_CART",
    "add_to_wishlist": "ADD_TO_WISHLIST",
    "begin_checkout": "START_CHECKOUT",
    "add_payment_info": "ADD_BILLING",
    "purchase": "PURCHASE",
    "generate_lead": "SIGN_UP",
    "sign_up": "SIGN_UP",
    "search": "SEARCH",
    "tutorial_complete": "COMPLETE_TUTORIAL",
    "login": "LOGIN",
    "share": "SHARE",
}

# tagrelay action_source -> Snap's WEB / MOBILE_APP / OFFLINE. App events go
# to a Snap App ID, not a pixel, so they are refused here.
ACTION_SOURCES: dict[str, str] = {
    "website": "WEB",
    "system_generated": "WEB",
    "other": "WEB",
    "physical_store": "OFFLINE",
    "phone_call": "OFFLINE",
}

_PIXEL_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# "events can have a date (timestamp) of maximum 37 days back" (Introduction).
_MAX_AGE = 37 * 24 * 3600.0


class SnapchatCAPI(Adapter):
    """Snapchat Conversions API v3 destination (``type = "snapchat_capi"``).

    Settings:
        pixel_id: the Snap Pixel ID (a UUID). Required.
        access_token: the Conversions API token. Required, secret.
        test_mode: when true, events go to Snap's validate endpoint and are
            checked but not recorded. Default false.
        default_region: country for phone numbers written without ``+``/``00``;
            default ``"US"``, as Snap's SDKs assume country code 1.
        event_names: optional table of canonical name -> Snap name, added to
            (and overriding) :data:`STANDARD_EVENTS`; values must be Snap names.
        endpoint: base URL, default ``https://tr.snapchat.com``.
    """

    type: ClassVar[str] = "snapchat_capi"
    # vendors.md [U] "up to 2,000 events per request"; Snap's published v3
    # request schema (maxItems 2000) and Tealium's connector agree.
    max_batch: ClassVar[int] = 2000
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        pixel = matched_setting(
            settings, "pixel_id", _PIXEL_RE, ": required, the Snap Pixel ID (a UUID)", problems
        )
        token = secret_setting(
            settings, "access_token", "a non-empty Conversions API token", problems
        )
        test_mode = flag_setting(settings, "test_mode", problems)
        # Snap's SDKs assume country code 1 for numbers without one.
        region = region_setting(settings, "US", problems)

        names = dict(STANDARD_EVENTS)
        extra = settings.get("event_names", {})
        if not isinstance(extra, Mapping):
            problems.append(
                (
                    "event_names",
                    f"{extra!r}: must be a table of canonical name = Snap name",
                )
            )
        else:
            for key, value in extra.items():
                if value not in EVENT_NAMES:
                    problems.append(
                        (f"event_names.{key}", f"{value!r} is not a Snap event name")
                    )
                else:
                    names[str(key)] = value

        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_id = pixel.lower()
        self.access_token = token
        self.test_mode: bool = test_mode
        self.default_region: str | None = region
        self.event_names = names
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One Snap v3 event: name, time, id, source, URL, hashed ``user_data``, ``custom_data``."""
        name = self.event_names.get(
            event.name, event.name if event.name in EVENT_NAMES else None
        )
        if name is None:
            raise RenderError(
                f"event {event.name!r}: Snap takes only its own event names; "
                "map it in the destination's event_names (e.g. to CUSTOM_EVENT_1)"
            )
        source = ACTION_SOURCES.get(event.action_source)
        if source is None:
            raise RenderError(
                f"action_source {event.action_source!r}: a Snap pixel takes only "
                f"{', '.join(sorted(ACTION_SOURCES))}"
            )
        sent_at = event_time(event)

        out: dict[str, Any] = {
            "event_name": name,
            "event_time": sent_at,  # unix seconds
            "action_source": source,
        }
        if event.id:
            out["event_id"] = event.id
        if event.page.url:
            out["event_source_url"] = event.page.url
        out["user_data"] = self._user_data(event)
        custom = _custom_data(event.params)
        if name == "PURCHASE" and not {"value", "currency"} <= custom.keys():
            # Snap's validator: "Missing price and/or currency in Purchase
            # events" is INVALID; fail this event, not the batch.
            raise RenderError("purchase: Snap needs params.value and params.currency")
        if custom:
            out["custom_data"] = custom
        return out

    def _user_data(self, event: Event) -> dict[str, Any]:
        ctx = event.context
        user: dict[str, Any] = dict(snap_user_data(event.user, self.default_region))
        # Sent as they are (never hashed).
        user.update(client_fields(ctx))
        click = click_id(ctx, "ScCid")
        if click:
            user["sc_click_id"] = click
        if ctx.ids.get("scid"):
            user["sc_cookie1"] = ctx.ids["scid"]
        return user

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST /v3/{pixel}/events`` (or ``/events/validate`` in test mode)."""
        check_batch(self, payloads)
        path = "events/validate" if self.test_mode else "events"
        # Snap documents the token as the access_token query parameter.
        url = f"{self.endpoint}/v3/{quote(self.pixel_id, safe='')}/{path}?" + urlencode(
            {"access_token": self.access_token}
        )
        return Request(
            "POST",
            url,
            {"Content-Type": "application/json"},
            orjson.dumps({"data": payloads}),
            secrets=(self.access_token, quote(self.access_token, safe="")),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok on 2xx unless Snap's ``status`` says otherwise; generic HTTP rules else."""
        if answer.status is None or not 200 <= answer.status < 300:
            outcome = default_classify(answer)
            doc = json_object(answer.body)
            reason = doc.get("reason") if doc else None
            return with_reason(outcome, message_reason(outcome.reason, reason))
        doc = json_object(answer.body)
        status = doc.get("status") if doc else None
        if isinstance(status, str) and status.upper() in ("INVALID", "FAILED", "ERROR"):
            text = f"http {answer.status} status {status}"
            return Outcome(Verdict.FINAL, message_reason(text, doc.get("reason") if doc else None))
        return Outcome(
            Verdict.OK,
            f"http {answer.status}" + (f" status {status}" if status else ""),
        )


def _custom_data(params: Mapping[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    money_params(params, custom)

    items = params.get("items")
    if items is not None:
        contents: list[dict[str, Any]] = []
        # Only item_id names an item here, never the "id" alias the Meta,
        # Pinterest and Reddit adapters also read (not a Snap rule).
        for i, item, item_id in identified_items(
            items, log, "snapchat", "contents", id_alias=False
        ):
            entry: dict[str, Any] = {
                "id": item_id,
                "quantity": loose_quantity(
                    f"params.items[{i}].quantity", item.get("quantity")
                ),
            }
            if item.get("price") is not None:
                entry["item_price"] = number(f"params.items[{i}].price", item["price"])
            if item.get("item_brand"):
                entry["brand"] = str(item["item_brand"])
            contents.append(entry)
        if contents:
            custom["contents"] = contents
            custom["num_items"] = sum(int(c["quantity"]) for c in contents)

    copy_texts(
        params, custom, {"transaction_id": "order_id", "search_term": "search_string"}
    )
    return custom
