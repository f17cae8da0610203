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
import math
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ..model import Event
from ..privacy import tiktok_user
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
from .meta import _check_endpoint, _json_object, _number

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
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}\Z")
_PIXEL_RE = re.compile(r"^[A-Za-z0-9]{8,40}\Z")
_VERSION_RE = re.compile(r"^v\d+\.\d+\Z")
_REGION_RE = re.compile(r"^[A-Za-z]{2}\Z")


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

        pixel = settings.get("pixel_code")
        if not isinstance(pixel, str) or not _PIXEL_RE.match(pixel.strip()):
            problems.append(
                (
                    "pixel_code",
                    f"{pixel!r}: required, the pixel code (letters and digits)",
                )
            )
            pixel = ""

        token = settings.get("access_token")
        if not isinstance(token, str) or not token.strip():
            # The value is a secret: never echo it.
            problems.append(
                ("access_token", "required: a non-empty Events API access token")
            )
            token = ""

        test_code = settings.get("test_event_code")
        if test_code is not None and (
            not isinstance(test_code, str) or not test_code.strip()
        ):
            problems.append(
                (
                    "test_event_code",
                    f"{test_code!r}: must be a non-empty string when set",
                )
            )
            test_code = None

        region = settings.get("default_region")
        if region is not None and (
            not isinstance(region, str) or not _REGION_RE.match(region)
        ):
            problems.append(
                (
                    "default_region",
                    f"{region!r}: must be a two-letter country code like 'US'",
                )
            )
            region = None

        version = settings.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            problems.append(
                ("api_version", f"{version!r} is not a version like 'v1.3'")
            )
            version = DEFAULT_API_VERSION

        endpoint = _check_endpoint(settings.get("endpoint", DEFAULT_ENDPOINT), problems)

        if problems:
            raise ConfigError(problems)

        self.pixel_code = pixel.strip()
        self.access_token = token.strip()
        self.test_event_code: str | None = (
            test_code.strip() if isinstance(test_code, str) else None
        )
        self.default_region: str | None = (
            region.upper() if isinstance(region, str) else None
        )
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
        if not math.isfinite(event.time):
            raise RenderError(f"event time {event.time!r}: not a finite unix time")

        out: dict[str, Any] = {
            "event": STANDARD_EVENTS.get(event.name, event.name),
            # Unix seconds; a client clock ahead of ours is sent as "now".
            "event_time": int(min(event.time, time.time())),
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
        ttclid = ctx.ids.get("ttclid") or ctx.click_ids.get("ttclid")
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
        if not 1 <= len(payloads) <= self.max_batch:
            raise ValueError(
                f"tiktok_capi {self.name!r}: batch of {len(payloads)} events; must be 1..{self.max_batch}"
            )
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
        doc = _json_object(answer.body)
        code = doc.get("code") if doc else None

        if status == 429 or status >= 500:
            return default_classify(answer)
        if isinstance(code, int) and not isinstance(code, bool):
            reason = f"http {status} code {code}"
            message = doc.get("message") if doc else None
            if code == 0 and 200 <= status < 300:
                return Outcome(Verdict.OK, reason)
            if isinstance(message, str) and message:
                reason += ": " + message[:120]
            if code == _RATE_LIMIT_CODE or code >= 50000:
                return Outcome(Verdict.RETRY, reason, retry_after(answer.headers))
            return Outcome(Verdict.FINAL, reason)
        if 200 <= status < 300:
            # Not TikTok's envelope. Resending is safe (TikTok deduplicates on
            # event + event_id), so retry and let the budget end it.
            return Outcome(Verdict.RETRY, f"http {status} without code")
        return default_classify(answer)


def _properties(params: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if params.get("value") is not None:
        props["value"] = _number("params.value", params["value"])
    currency = params.get("currency")
    if currency is not None and currency != "":
        if not isinstance(currency, str) or not _CURRENCY_RE.match(currency.strip()):
            raise RenderError(
                f"params.currency {currency!r}: not an ISO 4217 three-letter code"
            )
        props["currency"] = currency.strip().upper()

    items = params.get("items")
    if items is not None:
        if not isinstance(items, list):
            raise RenderError(
                f"params.items: expected a list of items, got {type(items).__name__}"
            )
        contents: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise RenderError(
                    f"params.items[{i}]: expected an object, got {type(item).__name__}"
                )
            item_id = item.get("item_id")
            if item_id is None or item_id == "":
                log.debug("tiktok: item %d has no item_id, left out of contents", i)
                continue
            entry: dict[str, Any] = {
                "content_id": str(item_id),
                "content_type": "product",
            }
            if item.get("item_name"):
                entry["content_name"] = str(item["item_name"])
            quantity = item.get("quantity")
            entry["quantity"] = (
                int(_number(f"params.items[{i}].quantity", quantity))
                if quantity is not None
                else 1
            )
            if item.get("price") is not None:
                entry["price"] = _number(f"params.items[{i}].price", item["price"])
            contents.append(entry)
        if contents:
            props["contents"] = contents
            props["content_type"] = "product"

    if params.get("transaction_id") not in (None, ""):
        props["order_id"] = str(params["transaction_id"])
    if params.get("search_term") not in (None, ""):
        props["query"] = str(params["search_term"])
    return props
