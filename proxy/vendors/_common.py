"""What the vendor adapters share: settings checks, numbers and items, answer pieces.

Private to :mod:`proxy.vendors`. Each helper is the one copy of logic that
several adapters used to write out alike. Where adapters differ on purpose
(a vendor rule) the difference stays in the adapter; where they differ for
no vendor reason but changing it would change what is sent, the difference
is a named parameter or a second helper here, with a comment that says so.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..model import Context, Event
from .base import Adapter, Outcome, RenderError, Verdict, retry_after

__all__ = [
    "DOTTED_VERSION_RE",
    "check_batch",
    "checked_items",
    "click_id",
    "client_fields",
    "copy_texts",
    "currency_code",
    "currency_param",
    "decimal_string",
    "digits_setting",
    "endpoint_setting",
    "event_time",
    "flag_setting",
    "identified_items",
    "item_id",
    "item_list",
    "json_object",
    "loose_quantity",
    "matched_setting",
    "message_reason",
    "money_params",
    "number",
    "optional_text_setting",
    "quantity",
    "refused",
    "region_setting",
    "secret_setting",
    "unexpected_success",
    "version_setting",
    "with_reason",
]

Problems = list[tuple[str, str]]

#: API versions written ``v<major>.<minor>`` (Meta's Graph API, TikTok's Business API).
DOTTED_VERSION_RE = re.compile(r"^v\d+\.\d+\Z")

_DIGITS_RE = re.compile(r"^[0-9]+\Z")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}\Z")
_REGION_RE = re.compile(r"^[A-Za-z]{2}\Z")
# Vendor messages are copied into outcome reasons; this keeps a ledger row small.
_MESSAGE_CHARS = 120


# -- settings ----------------------------------------------------------------
# Each check appends (key, message) to ``problems`` and returns a usable value,
# so an adapter reports every problem at once before raising ConfigError.


def secret_setting(
    settings: Mapping[str, Any], key: str, what: str, problems: Problems
) -> str:
    """``settings[key]`` trimmed; missing or blank is reported as ``required: <what>``."""
    value = settings.get(key)
    if not isinstance(value, str) or not value.strip():
        # The value is a secret: never echo it.
        problems.append((key, f"required: {what}"))
        return ""
    return value.strip()


def optional_text_setting(
    settings: Mapping[str, Any], key: str, problems: Problems
) -> str | None:
    """``settings[key]`` trimmed, or None when unset; set, it must be a non-empty string."""
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append((key, f"{value!r}: must be a non-empty string when set"))
        return None
    return value.strip()


def flag_setting(settings: Mapping[str, Any], key: str, problems: Problems) -> bool:
    """``settings[key]`` as a boolean, default false; anything but true or false is a problem."""
    value = settings.get(key, False)
    if not isinstance(value, bool):
        problems.append((key, f"{value!r}: must be true or false"))
        return False
    return value


def digits_setting(
    settings: Mapping[str, Any], key: str, what: str, kind: str, problems: Problems
) -> str:
    """An ID of ASCII digits, trimmed; a TOML integer is taken as its digits.

    Missing or not text: ``required: <what>, digits only``; other characters:
    ``'<value>' is not <kind>: digits only``.
    """
    raw = settings.get(key)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        problems.append((key, f"required: {what}, digits only"))
        return ""
    text = str(raw).strip()
    if not _DIGITS_RE.match(text):
        problems.append((key, f"{text!r} is not {kind}: digits only"))
    return text


def matched_setting(
    settings: Mapping[str, Any],
    key: str,
    pattern: re.Pattern[str],
    problem: str,
    problems: Problems,
    *,
    required: str | None = None,
) -> str:
    """``settings[key]`` trimmed when it matches ``pattern``, else ``""``.

    A mismatch is reported as the value's repr followed by ``problem``. With
    ``required``, a missing or blank value is reported as that message instead.
    """
    value = settings.get(key)
    if required is not None and (not isinstance(value, str) or not value.strip()):
        problems.append((key, required))
        return ""
    if not isinstance(value, str) or not pattern.match(value.strip()):
        problems.append((key, f"{value!r}{problem}"))
        return ""
    return value.strip()


def version_setting(
    value: Any,
    default: str,
    label: str,
    problems: Problems,
    *,
    pattern: re.Pattern[str] = DOTTED_VERSION_RE,
    hint: str = "",
) -> str:
    """``value`` as an ``api_version`` matching ``pattern``, else ``default`` and a problem."""
    if not isinstance(value, str) or not pattern.match(value):
        problems.append(("api_version", f"{value!r} is not a {label} like {default!r}{hint}"))
        return default
    return value


def region_setting(
    settings: Mapping[str, Any], default: str | None, problems: Problems
) -> str | None:
    """``default_region``: a two-letter country code in capitals, or None when set to none."""
    region = settings.get("default_region", default)
    if region is None:
        return None
    if not isinstance(region, str) or not _REGION_RE.match(region):
        problems.append(
            ("default_region", f"{region!r}: must be a two-letter country code like 'US'")
        )
        return default
    return region.upper()


def endpoint_setting(
    settings: Mapping[str, Any], default: str, problems: Problems
) -> str:
    """``endpoint`` as an http(s) base URL without trailing slash."""
    value = settings.get("endpoint", default)
    if not isinstance(value, str):
        problems.append(("endpoint", f"{value!r}: must be an http(s) URL"))
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(("endpoint", f"{value!r}: must be an http(s) URL with a host"))
    elif parts.query or parts.fragment:
        problems.append(
            ("endpoint", f"{value!r}: must be a base URL without query or fragment")
        )
    return value.rstrip("/")


# -- render ------------------------------------------------------------------


def event_time(event: Event, per_second: int = 1) -> int:
    """The event's time as an integer in ``per_second`` units, never later than now.

    A client clock ahead of ours would give a future time, which vendors
    refuse; "now" goes instead. A time that is not finite is a RenderError.
    """
    if not math.isfinite(event.time):
        raise RenderError(f"event time {event.time!r}: not a finite unix time")
    return int(min(event.time, time.time()) * per_second)


def client_fields(ctx: Context) -> dict[str, str]:
    """``client_ip_address`` and ``client_user_agent`` as they are (never hashed), when known."""
    out: dict[str, str] = {}
    if ctx.ip:
        out["client_ip_address"] = ctx.ip
    if ctx.user_agent:
        out["client_user_agent"] = ctx.user_agent
    return out


def click_id(ctx: Context, key: str) -> str | None:
    """A click ID: the server-kept one first, then the one on this hit's landing URL."""
    return ctx.ids.get(key) or ctx.click_ids.get(key) or None


def copy_texts(
    params: Mapping[str, Any], out: dict[str, Any], names: Mapping[str, str]
) -> None:
    """``out[vendor name] = str(params[canonical name])`` for each param set to something."""
    for canonical, vendor in names.items():
        if params.get(canonical) not in (None, ""):
            out[vendor] = str(params[canonical])


def number(field: str, value: Any) -> float:
    """``value`` as a finite float, or :class:`RenderError` naming ``field``."""
    if isinstance(value, bool):
        raise RenderError(f"{field} {value!r}: expected a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise RenderError(f"{field} {value!r}: expected a number") from None
    if not math.isfinite(result):
        raise RenderError(f"{field} {value!r}: expected a finite number")
    return result


def decimal_string(field: str, value: Any) -> str:
    """A number written as a plain decimal string ("59.9", "20.0"), never in exponent form."""
    result = number(field, value)
    text = repr(result)
    if "e" in text or "E" in text:
        text = f"{result:.6f}".rstrip("0")
        if text.endswith("."):
            text += "0"
    return text


def quantity(field: str, value: Any) -> int:
    """An item quantity: a whole number of at least 1; absent means 1."""
    if value is None:
        return 1
    result = number(field, value)
    if result != int(result) or result < 1:
        raise RenderError(f"{field} {value!r}: expected a whole number of at least 1")
    return int(result)


def loose_quantity(field: str, value: Any) -> int:
    """An item quantity as the Meta, TikTok and Snap adapters take it: any number, truncated; absent means 1.

    Unlike :func:`quantity` it lets 0, negatives and fractions through. No
    vendor rule asks for that; it is kept so that what those adapters send
    does not change.
    """
    return int(number(field, value)) if value is not None else 1


def currency_code(value: Any) -> str:
    """An ISO 4217 code in capitals, or :class:`RenderError`."""
    if not isinstance(value, str) or not _CURRENCY_RE.match(value.strip()):
        raise RenderError(f"params.currency {value!r}: not an ISO 4217 three-letter code")
    return value.strip().upper()


def currency_param(params: Mapping[str, Any]) -> str | None:
    """``params.currency`` checked and in capitals, or None when unset or empty."""
    currency = params.get("currency")
    if currency is None or currency == "":
        return None
    return currency_code(currency)


def money_params(
    params: Mapping[str, Any], out: dict[str, Any], value_field: str = "params.value"
) -> None:
    """``out["value"]`` (a float) and ``out["currency"]`` from params that are set.

    An empty-string value is an error here, where the Pinterest and Reddit
    adapters skip it; ``value_field`` names the value in that error.
    """
    if params.get("value") is not None:
        out["value"] = number(value_field, params["value"])
    currency = currency_param(params)
    if currency is not None:
        out["currency"] = currency


def checked_items(items: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``params.items`` as (index, item), each checked to be an object when it is reached."""
    if not isinstance(items, list):
        raise RenderError(f"params.items: expected a list of items, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RenderError(f"params.items[{i}]: expected an object, got {type(item).__name__}")
        yield i, item


def item_list(items: Any) -> list[Mapping[str, Any]]:
    """``params.items`` checked to be a list of objects, every one before any is used."""
    return [item for _, item in checked_items(items)]


def item_id(item: Mapping[str, Any], *, id_alias: bool = True) -> str | None:
    """The item's ``item_id`` (or, with ``id_alias``, its ``id``) as text; None when absent or empty."""
    value = item.get("item_id", item.get("id")) if id_alias else item.get("item_id")
    if value is None or value == "":
        return None
    return str(value)


def identified_items(
    items: Any,
    log: logging.Logger,
    vendor: str,
    into: str,
    *,
    id_alias: bool = True,
) -> Iterator[tuple[int, Mapping[str, Any], str]]:
    """(index, item, id) for each checked item that has an ID; the others are logged and left out.

    For vendors whose item lists need an ID per item (Meta ``contents``,
    Reddit ``products``, ...). ``into`` names that list in the debug line.
    """
    for i, item in checked_items(items):
        ident = item_id(item, id_alias=id_alias)
        if ident is None:
            log.debug("%s: item %d has no item_id, left out of %s", vendor, i, into)
            continue
        yield i, item, ident


# -- build -------------------------------------------------------------------


def check_batch(adapter: Adapter, payloads: list[dict[str, Any]]) -> None:
    """ValueError unless there are 1..``max_batch`` payloads for one request."""
    if not 1 <= len(payloads) <= adapter.max_batch:
        raise ValueError(
            f"{adapter.type} {adapter.name!r}: batch of {len(payloads)} events; "
            f"must be 1..{adapter.max_batch}"
        )


# -- classify ----------------------------------------------------------------


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body parsed as a JSON object, or None."""
    if not body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def message_reason(reason: str, message: Any) -> str:
    """``reason`` followed by the vendor's message (bounded), when it is non-empty text."""
    if isinstance(message, str) and message:
        return f"{reason}: {message[:_MESSAGE_CHARS]}"
    return reason


def with_reason(outcome: Outcome, reason: str) -> Outcome:
    """``outcome`` with its reason replaced by one that says more."""
    return Outcome(outcome.verdict, reason, outcome.retry_after_secs)


def refused(reason: str, headers: Mapping[str, str], *, retry: bool, whole: bool = False) -> Outcome:
    """A failure: retried (after ``Retry-After``, if given) when ``retry``, final otherwise (see Outcome.whole)."""
    if retry:
        return Outcome(Verdict.RETRY, reason, retry_after(headers))
    return Outcome(Verdict.FINAL, reason, whole=whole)


def unexpected_success(status: int, missing: str) -> Outcome:
    """A 2xx without the vendor's success shape: retried, not trusted.

    Every vendor using this deduplicates on the event ID, so a resend is
    safe, and the retry budget turns a lasting oddity into a dead letter.
    """
    return Outcome(Verdict.RETRY, f"http {status} without {missing}")
