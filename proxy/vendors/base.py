"""The adapter contract: what one vendor protocol must provide.

An adapter does three things and nothing else:

1. ``render(event)``: turn one enriched canonical event into this vendor's
   per-event payload (a JSON-able dict). PII is normalised and hashed here,
   so a rendered payload is safe to queue, persist and show. Routes may then
   overwrite keys of the payload (``set`` in rule files).
2. ``build(payloads)``: turn up to ``max_batch`` rendered payloads that share
   a ``batch_key`` into one HTTP request.
3. ``classify(answer)``: read the vendor's answer and say ok, retry or final.

Delivery owns batching, concurrency, retries and accounting; adapters never
send anything themselves.

Exceptions::

    ConfigError (ValueError)      a destination's settings are unusable
    RenderError (ValueError)      this event cannot be expressed for the vendor
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Mapping

from ..model import Event

__all__ = [
    "Adapter",
    "Answer",
    "ConfigError",
    "Outcome",
    "Request",
    "RenderError",
    "Verdict",
]


class ConfigError(ValueError):
    """Settings of one destination are wrong. ``problems`` holds (key, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


class RenderError(ValueError):
    """The event cannot be sent to this vendor (for example a GA4 name it rejects)."""


@dataclass(slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Strings that must never be printed (tokens in the URL or headers).
    secrets: tuple[str, ...] = ()

    def redacted(self) -> "Request":
        """A copy safe to print: every secret replaced by ``***``."""

        def scrub(text: str) -> str:
            for s in self.secrets:
                if s:
                    text = text.replace(s, "***")
            return text

        body = self.body
        if self.secrets:
            body = scrub(body.decode("utf-8", "replace")).encode()
        return Request(
            self.method,
            scrub(self.url),
            {k: scrub(v) for k, v in self.headers.items()},
            body,
        )


@dataclass(slots=True)
class Answer:
    """What came back from the vendor, or why nothing did."""

    status: int | None  # None: no HTTP answer (timeout, connection error)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""  # "timeout", "connection: <class name>" when status is None


class Verdict(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    FINAL = "final"  # the vendor rejected it for good: dead letter, keep the reason


@dataclass(slots=True, frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""  # short, bounded: "http 400 code 100", "timeout"
    retry_after_secs: float | None = None


class Adapter:
    """Base class: subclasses set ``type`` and ``max_batch`` and implement the three steps."""

    type: ClassVar[str]
    max_batch: ClassVar[int] = 1
    # Events older than this are refused by the vendor (seconds); None: no limit.
    max_age_secs: ClassVar[float | None] = None
    # Settings keys whose values are secrets (never printed).
    secret_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        """Validate ``settings``; raise :class:`ConfigError` with every problem at once."""
        self.name = name
        self.settings = dict(settings)

    @property
    def batch_size(self) -> int:
        """Most payloads one request may carry (a destination setting may lower it)."""
        return self.max_batch

    def render(self, event: Event) -> dict[str, Any]:
        raise NotImplementedError

    def batch_key(self, payload: Mapping[str, Any]) -> str:
        """Payloads with equal keys may share one request."""
        return ""

    def build(self, payloads: list[dict[str, Any]]) -> Request:
        raise NotImplementedError

    def classify(self, answer: Answer) -> Outcome:
        return default_classify(answer)

    async def deliver_local(self, payloads: list[dict[str, Any]]) -> Outcome | None:
        """For destinations that are not HTTP (a local file): do the work, return the outcome.

        HTTP adapters return None and delivery sends ``build(payloads)``.
        """
        return None

    async def close(self) -> None:
        """Release what the adapter holds (files). Called once at shutdown."""


def default_classify(answer: Answer) -> Outcome:
    """Generic HTTP rules: 2xx ok; timeouts, connection errors, 408, 429 and 5xx retry."""
    if answer.status is None:
        return Outcome(Verdict.RETRY, answer.error or "no answer")
    status = answer.status
    if 200 <= status < 300:
        return Outcome(Verdict.OK, f"http {status}")
    if status in (408, 425, 429) or status >= 500:
        return Outcome(Verdict.RETRY, f"http {status}", retry_after(answer.headers))
    return Outcome(Verdict.FINAL, f"http {status}")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped at one hour."""
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return min(float(raw), 3600.0)
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, min(when - time.time(), 3600.0))
