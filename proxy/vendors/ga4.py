"""GA4 Measurement Protocol: render, batch and classify web-stream events.

Each rendered payload is one request body with a single event: the
request-level fields (``client_id``, ``user_location``, ``device``, ...) plus
``events: [{name, params, timestamp_micros}]``. Payloads with equal
request-level fields share a request (up to 25 events), so :meth:`GA4.build`
only concatenates ``events`` lists.

Vendor facts were checked in December 2026 against Google's Measurement
Protocol pages ("Measurement Protocol reference", "Send Measurement Protocol
events", "Validate events") and the GA4 "Event collection limits" help page.
Corrections to ``vendors.md`` are marked "vendors.md says".
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, ClassVar, Mapping
from urllib.parse import urlencode

import orjson

from ..model import Event, Geo, UAInfo
from ..privacy import google_user_data
from ._common import (
    endpoint_setting,
    event_time,
    flag_setting,
    matched_setting,
    secret_setting,
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
    "DEFAULT_ENDPOINT",
    "EU_ENDPOINT",
    "GA4",
    "RESERVED_EVENT_NAMES",
    "RESERVED_PARAM_NAMES",
    "RESERVED_PARAM_PREFIXES",
    "client_id_from_cookie",
]

log = logging.getLogger("proxy.vendors.ga4")

DEFAULT_ENDPOINT = "https://www.google-analytics.com"
# "If you want your data to be collected in the EU, use region1" (reference).
EU_ENDPOINT = "https://region1.google-analytics.com"

# Reserved event names of the Measurement Protocol reference. vendors.md says
# ``app_background`` is reserved (the reference does not list it) and misses
# the three names the reference allows "only for App streams", which a web
# stream therefore cannot use: ad_impression, in_app_purchase, screen_view.
RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "firebase_campaign",
        "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression",
        "first_open",
        "first_visit",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "notification_send",
        "os_update",
        "session_start",
        "user_engagement",
        # App streams only:
        "ad_impression",
        "in_app_purchase",
        "screen_view",
    }
)
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
# vendors.md lists firebase_, google_, ga_ only; the reference also reserves
# a leading underscore and "gtag.".
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
# The reference reserves no event-name prefixes, but Google reserves these for
# its own (Firebase) event names; GA's naming rules say not to use them.
_RESERVED_EVENT_PREFIXES = ("firebase_", "ga_", "google_")

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}\Z")
_MEASUREMENT_ID_RE = re.compile(r"^G-[A-Z0-9]{4,}\Z")
_CLIENT_ID_RE = re.compile(r"^\d+\.\d+\Z")
_GA_COOKIE_RE = re.compile(r"^GA\d+\.\d+(?:-\d+)?\.(\d+\.\d+)\Z")

MAX_EVENTS = 25  # "Requests can have a maximum of 25 events."
MAX_PARAMS = 25  # "Events can have a maximum of 25 parameters."
MAX_VALUE_CHARS = 100  # "Parameter values ... must be 100 characters or fewer" (standard property)
MAX_ITEMS = 200  # GA4 ecommerce: up to 200 items per event
MAX_ITEM_CUSTOM_PARAMS = 10  # "Item parameters can have a maximum of 10 custom parameters."
MAX_USER_ID_CHARS = 256  # collection limits: User-ID value length
# GA4's collection-limits page makes these three exceptions to the 100-char rule.
# TODO(issue: ga4 page limits): not confirmed for the Measurement Protocol;
# drop the exceptions if /debug/mp/collect flags longer page values.
_LONG_VALUE_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
_MAX_AGE = 72 * 3600.0  # "Events can be backdated up to 72 hours."

# Item parameters GA4 defines for ecommerce items; any other key is custom.
_STANDARD_ITEM_PARAMS = frozenset(
    {
        "item_id",
        "item_name",
        "affiliation",
        "coupon",
        "discount",
        "index",
        "item_brand",
        "item_category",
        "item_category2",
        "item_category3",
        "item_category4",
        "item_category5",
        "item_list_id",
        "item_list_name",
        "item_variant",
        "location_id",
        "price",
        "quantity",
        "promotion_id",
        "promotion_name",
        "creative_name",
        "creative_slot",
    }
)

# MaxMind continent codes -> UN M49 continent codes as GA wants them. M49 has
# one "Americas" (019) for both NA and SA; Antarctica has no M49 continent.
_M49_CONTINENT = {"AF": "002", "AS": "142", "EU": "150", "NA": "019", "SA": "019", "OC": "009"}

_REQUEST_KEYS = (
    "client_id",
    "user_id",
    "user_location",
    "ip_override",
    "device",
    "user_agent",
    "user_data",
    "consent",
)


def client_id_from_cookie(value: str) -> str:
    """The MP ``client_id`` for a ``_ga`` cookie value or a bare client ID.

    ``GA1.1.1234567890.1700000000`` -> ``1234567890.1700000000``; a bare
    ``1234567890.1700000000`` is returned unchanged; anything else raises
    ``ValueError``.
    """
    value = value.strip()
    if _CLIENT_ID_RE.match(value):
        return value
    match = _GA_COOKIE_RE.match(value)
    if match:
        return match.group(1)
    raise ValueError(f"GA client id {value!r}: expected '<random>.<seconds>' or a _ga cookie 'GA1.<n>.<random>.<seconds>'")


class GA4(Adapter):
    """GA4 Measurement Protocol destination for a web data stream (``type = "ga4"``).

    Settings:
        measurement_id: the stream's measurement ID, ``G-XXXXXXX``. Required.
        api_secret: a Measurement Protocol API secret of that stream. Required, secret.
        endpoint: base URL, default ``https://www.google-analytics.com``; use
            ``https://region1.google-analytics.com`` to have data collected in the EU.
        validate: when true, send to ``/debug/mp/collect`` and treat any
            validation message as a final error (the events do not reach reports).
    """

    type: ClassVar[str] = "ga4"
    max_batch: ClassVar[int] = MAX_EVENTS
    max_batch_bytes: ClassVar[int | None] = 130_000  # "The post body must be smaller than 130kB."
    max_age_secs: ClassVar[float | None] = _MAX_AGE
    secret_keys: ClassVar[tuple[str, ...]] = ("api_secret",)

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems: list[tuple[str, str]] = []

        mid = matched_setting(
            settings,
            "measurement_id",
            _MEASUREMENT_ID_RE,
            " is not a GA4 measurement ID like 'G-ABC123DEF4'",
            problems,
        )
        secret = secret_setting(settings, "api_secret", "a Measurement Protocol API secret of the stream", problems)
        validate = flag_setting(settings, "validate", problems)
        endpoint = endpoint_setting(settings, DEFAULT_ENDPOINT, problems)

        if problems:
            raise ConfigError(problems)

        self.measurement_id = mid
        self.api_secret = secret
        self.validate = validate
        self.endpoint = endpoint

    # -- render ----------------------------------------------------------

    def render(self, event: Event) -> dict[str, Any]:
        """A one-event MP body: request-level fields plus ``events: [{...}]``."""
        name = event.name
        if not _NAME_RE.match(name):
            raise RenderError(
                f"event name {name!r}: GA4 needs 1-40 letters, digits or '_', starting with a letter"
            )
        if name in RESERVED_EVENT_NAMES or name.startswith(_RESERVED_EVENT_PREFIXES):
            raise RenderError(f"event name {name!r}: reserved by GA4 for its own events")
        # timestamp_micros is "only to record events that happened in the
        # past": event_time() never gives a future time.
        micros = event_time(event, 1_000_000)

        ctx = event.context
        raw_cid = ctx.ids.get("ga_client_id", "")
        if not raw_cid:
            raise RenderError("no GA client id (context.ids['ga_client_id']): a web stream needs client_id")
        try:
            client_id = client_id_from_cookie(raw_cid)
        except ValueError as exc:
            raise RenderError(str(exc)) from None

        payload: dict[str, Any] = {"client_id": client_id}
        if event.user_id:
            payload["user_id"] = event.user_id[:MAX_USER_ID_CHARS]

        location = _user_location(ctx.geo)
        if location:
            payload["user_location"] = location
        elif ctx.ip:
            # GA ignores ip_override when user_location is present, so the IP
            # only leaves when our own geo lookup had nothing.
            payload["ip_override"] = ctx.ip

        device = _device(ctx.ua, ctx.language, ctx.screen)
        if device is not None:
            payload["device"] = device
        elif ctx.user_agent:
            # GA ignores user_agent when device is present; send it only when
            # our parser could not read the UA, so GA's own parser may try.
            payload["user_agent"] = ctx.user_agent
            extra = {k: v for k, v in (("language", ctx.language), ("screen_resolution", ctx.screen)) if v}
            if extra:
                # TODO(issue: ga4 device): language and screen are lost here,
                # because sending them in `device` would make GA drop user_agent;
                # ends once the UA parser recognises every browser we see.
                log.debug("ga4: device language/screen left out in favour of user_agent")

        region = ctx.geo.country if ctx.geo and ctx.geo.country else None
        user_data = google_user_data(event.user, region)
        if user_data:
            payload["user_data"] = user_data

        consent = _consent(ctx.consent)
        if consent:
            payload["consent"] = consent

        payload["events"] = [{"name": name, "params": self._params(event), "timestamp_micros": micros}]
        return payload

    def _params(self, event: Event) -> dict[str, Any]:
        ctx = event.context
        params: dict[str, Any] = {}
        session_id = ctx.ids.get("ga_session_id")
        if session_id:
            # Both must be present for the user to appear in Realtime.
            params["session_id"] = session_id
        engagement = event.params.get("engagement_time_msec", 1)
        params["engagement_time_msec"] = engagement if _is_number(engagement) else 1
        # GA4 has no dedup key, but carrying tagrelay's event ID (the one Meta
        # and the other vendors deduplicate on) lets reports be joined across
        # vendors and with the ledger. It is an ordinary custom parameter.
        params["event_id"] = event.id[:MAX_VALUE_CHARS]
        for key, value in (
            ("page_location", event.page.url),
            ("page_referrer", event.page.referrer),
            ("page_title", event.page.title),
        ):
            if value:
                params[key] = value[: _LONG_VALUE_LIMITS[key]]

        for key, value in event.params.items():
            if key in params or key == "engagement_time_msec":
                continue
            if not _param_name_ok(key):
                log.debug("ga4: param %r dropped: invalid or reserved name", key)
                continue
            if len(params) >= MAX_PARAMS:
                log.debug("ga4: param %s dropped: more than %d params", key, MAX_PARAMS)
                continue
            if key == "items":
                items = _items(value)
                if items:
                    params["items"] = items
                continue
            cleaned = _value(value)
            if cleaned is None:
                log.debug("ga4: param %s dropped: not a string or number", key)
                continue
            params[key] = cleaned
        return params

    # -- batch / build ---------------------------------------------------

    def batch_key(self, payload: Mapping[str, Any]) -> str:
        """Equal for payloads whose request-level fields (client, user, geo, device, consent) match."""
        top = {k: payload[k] for k in _REQUEST_KEYS if k in payload}
        return orjson.dumps(top, option=orjson.OPT_SORT_KEYS).decode()

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        """One MP request: the first payload's request fields and every payload's events."""
        if not payloads:
            raise ValueError(f"ga4 {self.name!r}: empty batch")
        keys = {self.batch_key(p) for p in payloads}
        if len(keys) != 1:
            raise ValueError(f"ga4 {self.name!r}: payloads with different request-level fields in one batch")
        events: list[Any] = []
        for payload in payloads:
            events.extend(payload.get("events", []))
        if not 1 <= len(events) <= MAX_EVENTS:
            raise ValueError(f"ga4 {self.name!r}: {len(events)} events; a request carries 1..{MAX_EVENTS}")

        body = {k: v for k, v in payloads[0].items() if k != "events"}
        body["events"] = events
        data = orjson.dumps(body)
        if len(data) >= 130_000:
            # Delivery splits batches by max_batch_bytes, so only a single
            # oversized event gets here; GA will drop it.
            log.warning("ga4 %s: request body of %d bytes exceeds GA's 130kB limit", self.name, len(data))
        path = "/debug/mp/collect" if self.validate else "/mp/collect"
        query = urlencode({"measurement_id": self.measurement_id, "api_secret": self.api_secret})
        return Request(
            "POST",
            f"{self.endpoint}{path}?{query}",
            {"Content-Type": "application/json"},
            data,
            secrets=(self.api_secret,),
        )

    # -- classify --------------------------------------------------------

    def classify(self, answer: Answer) -> Outcome:
        """2xx is ok (GA never reports bad payloads there); in validate mode messages are final."""
        if answer.status is not None and 200 <= answer.status < 300 and self.validate:
            try:
                doc = orjson.loads(answer.body) if answer.body else {}
            except orjson.JSONDecodeError:
                return Outcome(Verdict.RETRY, f"http {answer.status} unreadable validation answer")
            messages = doc.get("validationMessages") if isinstance(doc, dict) else None
            if messages:
                first = messages[0] if isinstance(messages[0], dict) else {}
                reason = (
                    f"http {answer.status} {len(messages)} validation messages: "
                    f"{first.get('validationCode', '?')} {first.get('fieldPath', '')}"
                )
                return Outcome(Verdict.FINAL, reason[:200])
            return Outcome(Verdict.OK, f"http {answer.status} valid")
        # Non-2xx: the request itself was wrong (final) unless 408/429/5xx.
        return default_classify(answer)


def _user_location(geo: Geo | None) -> dict[str, str]:
    if geo is None:
        return {}
    out: dict[str, str] = {}
    if geo.city:
        out["city"] = geo.city
    country = geo.country.upper()
    if country:
        out["country_id"] = country
        if geo.region:
            # ISO 3166-2: country, dash, subdivision ("US-CA").
            out["region_id"] = f"{country}-{geo.region.upper()}"
    continent = _M49_CONTINENT.get(geo.continent.upper())
    if continent:
        out["continent_id"] = continent
    # TODO(issue: ga4 subcontinent): subcontinent_id needs a country -> M49
    # sub-region table; add it with a tested copy of the UN M49 list.
    return out


def _device(ua: UAInfo, language: str, screen: str) -> dict[str, str] | None:
    if ua.browser == "Other" and ua.os == "Other":
        return None
    fields = {
        "category": ua.category if ua.category in ("desktop", "mobile", "tablet") else "",
        "language": _language_tag(language),
        "screen_resolution": screen,
        "operating_system": "" if ua.os == "Other" else ua.os,
        "operating_system_version": ua.os_version,
        "model": ua.device_model,
        "brand": ua.device_brand,
        "browser": "" if ua.browser == "Other" else ua.browser,
        "browser_version": ua.browser_version,
    }
    return {k: v for k, v in fields.items() if v}


def _language_tag(language: str) -> str:
    # GA's examples are ISO 639-1 with an upper-case region ("en", "en-US").
    lang, _, region = language.strip().replace("_", "-").partition("-")
    if not lang:
        return ""
    return f"{lang.lower()}-{region.upper()}" if region else lang.lower()


def _consent(consent: Mapping[str, bool]) -> dict[str, str]:
    # Our consent purposes -> GA's two signals. A specific purpose wins over
    # the general "marketing" one; no signal means we say nothing, and GA
    # then uses the consent of the client's online events.
    out: dict[str, str] = {}
    for key in ("ad_user_data", "ad_personalization"):
        value = consent.get(key, consent.get("marketing"))
        if isinstance(value, bool):
            out[key] = "GRANTED" if value else "DENIED"
    return out


def _param_name_ok(name: str) -> bool:
    return (
        bool(_NAME_RE.match(name))
        and name not in RESERVED_PARAM_NAMES
        and not name.startswith(RESERVED_PARAM_PREFIXES)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value(value: Any) -> str | int | float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        # GA params are strings or numbers; keep the meaning readable.
        return "true" if value else "false"
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    return None


def _items(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        log.debug("ga4: items dropped: not a list")
        return []
    if len(value) > MAX_ITEMS:
        log.debug("ga4: %d items, keeping the first %d", len(value), MAX_ITEMS)
    items: list[dict[str, Any]] = []
    for raw in value[:MAX_ITEMS]:
        if not isinstance(raw, Mapping):
            continue
        item: dict[str, Any] = {}
        custom = 0
        for key, val in raw.items():
            if not isinstance(key, str) or not _param_name_ok(key):
                continue
            cleaned = _value(val)
            if cleaned is None:
                continue
            if key not in _STANDARD_ITEM_PARAMS:
                if custom >= MAX_ITEM_CUSTOM_PARAMS:
                    continue
                custom += 1
            item[key] = cleaned
        if item:
            items.append(item)
    return items
