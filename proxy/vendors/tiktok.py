"""TikTok Events API (web events): render, batch and classify.

One destination is one TikTok pixel. Events go to
``POST {endpoint}/open_api/{api_version}/event/track/`` with the header
``Access-Token`` and a JSON body ``{"event_source": "web",
"event_source_id": <pixel code>, "data": [...]}``. TikTok answers HTTP 200
with ``{"code": 0, "message": "OK", "request_id": ..., "data": {}}``; any
other ``code`` is a failure even though the HTTP status is 200.

Vendor facts were checked against TikTok's own server-side GTM template
(tiktok/gtm-template-eapi ``template.js``: endpoint, header, body, event
names, hashing), TikTok's Business API SDK docs (response envelope ``code``,
``message``, ``request_id``), Segment's TikTok Conversions destination
(``formatter.ts`` and its test: phone hashed as ``+`` and digits) and
Hightouch's TikTok page (1,000 events per call, one bad event fails the
batch). Corrections to ``vendors.md`` are marked "vendors.md says".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ..model import Event
from ..privacy import tiktok_user
from ._common import (
    check_batch,
    click_id,
    copy_texts,
    endpoint_setting,
    event_time,
    identified_items,
    json_object,
    loose_quantity,
    matched_setting,
    message_reason,
    money_params,
    number,
    optional_text_setting,
    refused,
    region_setting,
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
    "DEFAULT_API_VERSION",
    "DEFAULT_ENDPOINT",
    "STANDARD_EVENTS",
    "TikTokEventsAPI",
]

log = logging.getLogger("proxy.vendors.tiktok")

DEFAULT_ENDPOINT = "https://business-api.tiktok.com"
DEFAULT_API_VERSION = "v1.3"

# Canonical names -> TikTok standard events, as TikTok's own GTM template maps
# GA4 names. vendors.md says "PageView"; TikTok's template sends "Pageview".
# generate_lead has no entry in the template; "SubmitForm" is the standard
# event every TikTok list we found carries (vendors.md's "Lead" is newer and
# was not confirmed). Other names go as custom events under their own name.
STANDARD_EVENTS: dict[str, str] = {
    "page_view": "Pageview",
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "CompletePayment",
    "generate_lead": "SubmitForm",
    "sign_up": "CompleteRegistration",
    "search": "Search",
    "contact": "Contact",
    "subscribe": "Subscribe",
}

# Web events belong to a pixel. App and offline events need an app ID or an
# offline event set as event_source_id, which this adapter does not take.
# TODO(issue: tiktok offline): accept "offline"/"crm" event sources once a
# destination can name an offline event set.
_WEB_SOURCES = frozenset({"website", "system_generated", "other"})

# Business API return codes: 40100 is "too many requests" (QPS/QPM limit);
# 5xxxx are TikTok-side errors. Everything else (40001 no permission, 40002
# invalid parameter, 40104/40105 missing or wrong token, ...) needs a human.
_RATE_LIMIT_CODE = 40100
_PIXEL_RE = re.compile(r"^[A-Za-z0-9]{8,40}\Z")


class TikTokEventsAPI(Adapter):
    """TikTok Events API destination (``type = "tiktok_capi"``).

    Settings:
        pixel_code: the TikTok pixel code (letters and digits). Required.
        access_token: the Events API access token. Required, secret.
        test_event_code: optional; events then show under Events Manager >
            Test Events instead of counting.
        default_region: ISO 3166-1 alpha-2 country for phone numbers written
            without ``+``; without it such numbers are not sent.
        api_version: default ``"v1.3"``.
        endpoint: base URL, default ``https://business-api.tiktok.com``.
    """

    type: ClassVar[str] = "tiktok_capi"
    # Hightouch: batch size "up to 1,000 per call"; TikTok fails the whole
    # batch when one event is bad.
    max_batch: ClassVar[int] = 1000
    # TODO(issue: vendor limits): set max_age_secs once TikTok's oldest
    # accepted event_time is confirmed in TikTok's own docs.
    max_age_secs: ClassVar[float | None] = None
    secret_keys: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        pixel = matched_setting(
            settings,
            "pixel_code",
            _PIXEL_RE,
            ": required, the pixel code (letters and digits)",
            problems,
        )
        token = secret_setting(
            settings, "access_token", "a non-empty Events API access token", problems
        )
        test_code = optional_text_setting(settings, "test_event_code", problems)
        region = region_setting(settings, None, problems)
        version = version_setting(
            settings.get("api_version", DEFAULT_API_VERSION),
            DEFAULT_API_VERSION,
            "version",
            problems,
        )
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_code = pixel
        self.access_token = token
        self.test_event_code: str | None = test_code
        self.default_region: str | None = region
        self.api_version = version
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """One TikTok event: name, time, id, hashed ``user``, ``page``, ``properties``."""
        if event.action_source not in _WEB_SOURCES:
            raise RenderError(
                f"action_source {event.action_source!r}: a TikTok pixel takes only web events "
                f"({', '.join(sorted(_WEB_SOURCES))})"
            )
        sent_at = event_time(event)

        out: dict[str, Any] = {
            "event": STANDARD_EVENTS.get(event.name, event.name),
            "event_time": sent_at,  # unix seconds
        }
        if event.id:
            out["event_id"] = event.id
        out["user"] = self._user(event)
        page = {
            k: v
            for k, v in (("url", event.page.url), ("referrer", event.page.referrer))
            if v
        }
        if page:
            out["page"] = page
        properties = _properties(event.params)
        if properties:
            out["properties"] = properties
        return out

    def _user(self, event: Event) -> dict[str, Any]:
        ctx = event.context
        user: dict[str, Any] = dict(tiktok_user(event.user, self.default_region))
        # Sent as they are (TikTok: "non-hashed").
        ttclid = click_id(ctx, "ttclid")
        if ttclid:
            user["ttclid"] = ttclid
        if ctx.ids.get("ttp"):
            user["ttp"] = ctx.ids["ttp"]
        if ctx.ip:
            user["ip"] = ctx.ip
        if ctx.user_agent:
            user["user_agent"] = ctx.user_agent
        return user

    # -- build -----------------------------------------------------------

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One ``POST .../event/track/`` carrying ``payloads`` as ``data`` for this pixel."""
        check_batch(self, payloads)
        body: dict[str, Any] = {
            "event_source": "web",
            "event_source_id": self.pixel_code,
            "data": payloads,
        }
        if self.test_event_code:
            body["test_event_code"] = self.test_event_code
        return Request(
            "POST",
            f"{self.endpoint}/open_api/{self.api_version}/event/track/",
            {"Content-Type": "application/json", "Access-Token": self.access_token},
            orjson.dumps(body),
            secrets=(self.access_token,),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """Ok on ``code`` 0; retry on rate limits and TikTok-side errors; final otherwise."""
        if answer.status is None:
            return default_classify(answer)
        status = answer.status
        doc = json_object(answer.body)
        code = doc.get("code") if doc else None

        if status == 429 or status >= 500:
            return default_classify(answer)
        if isinstance(code, int) and not isinstance(code, bool):
            reason = f"http {status} code {code}"
            if code == 0 and 200 <= status < 300:
                return Outcome(Verdict.OK, reason)
            reason = message_reason(reason, doc.get("message") if doc else None)
            retry = code == _RATE_LIMIT_CODE or code >= 50000
            return refused(reason, answer.headers, retry=retry)
        if 200 <= status < 300:
            # Not TikTok's envelope; TikTok deduplicates on event + event_id.
            return unexpected_success(status, "code")
        return default_classify(answer)


def _properties(params: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    money_params(params, props)

    items = params.get("items")
    if items is not None:
        contents: list[dict[str, Any]] = []
        # Only item_id names an item here, never the "id" alias the Meta,
        # Pinterest and Reddit adapters also read (not a TikTok rule).
        for i, item, item_id in identified_items(
            items, log, "tiktok", "contents", id_alias=False
        ):
            entry: dict[str, Any] = {"content_id": item_id, "content_type": "product"}
            if item.get("item_name"):
                entry["content_name"] = str(item["item_name"])
            entry["quantity"] = loose_quantity(
                f"params.items[{i}].quantity", item.get("quantity")
            )
            if item.get("price") is not None:
                entry["price"] = number(f"params.items[{i}].price", item["price"])
            contents.append(entry)
        if contents:
            props["contents"] = contents
            props["content_type"] = "product"

    copy_texts(params, props, {"transaction_id": "order_id", "search_term": "query"})
    return props
