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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

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
        """A copy safe to print: every secret replaced by ``***``.

        Secrets are replaced where they stand as a whole (a query value, a
        JSON string) or inside header values, never as loose substrings of
        the body, so a short secret cannot mangle unrelated text.
        """
        secrets = {s for s in self.secrets if s}
        if not secrets:
            return Request(self.method, self.url, dict(self.headers), self.body)
        parts = urlsplit(self.url)
        query = urlencode(
            [(k, "***" if v in secrets else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
            safe="*",
        )
        url = urlunsplit(parts._replace(query=query))
        headers = {}
        for k, v in self.headers.items():
            for secret in secrets:
                v = v.replace(secret, "***")
            headers[k] = v
        body = self.body
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
        if doc is not None:
            body = orjson.dumps(_scrub(doc, secrets))
        return Request(self.method, url, headers, body)


def _scrub(node: Any, secrets: set[str]) -> Any:
    if isinstance(node, str):
        return "***" if node in secrets else node
    if isinstance(node, list):
        return [_scrub(x, secrets) for x in node]
    if isinstance(node, dict):
        return {k: _scrub(v, secrets) for k, v in node.items()}
    return node


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
    # FINAL for the request itself (a bad token, a missing pixel), not for an
    # event in it: sending each event alone would only repeat the refusal.
    whole: bool = False


class Adapter:
    """Base class: subclasses set ``type`` and ``max_batch`` and implement the three steps."""

    type: ClassVar[str]
    max_batch: ClassVar[int] = 1
    # Largest request body the vendor takes (bytes); None: no limit. Delivery
    # splits batches so that the sum of payload sizes stays under it.
    max_batch_bytes: ClassVar[int | None] = None
    # Events older than this are refused by the vendor (seconds); None: no limit.
    max_age_secs: ClassVar[float | None] = None
    # Settings keys whose values are secrets (never printed).
    secret_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        """Validate ``settings``; raise :class:`ConfigError` with every problem at once."""
        self.name = name
        self.settings = dict(settings)
        # Values this destination's settings took from the environment: hidden
        # wherever a request is shown (``tagrelay try``), like secrets.
        self.env_values: tuple[str, ...] = ()

    @property
    def batch_size(self) -> int:
        """Most payloads one request may carry (a destination setting may lower it)."""
        return self.max_batch

    def render(self, event: Event) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, payload: Mapping[str, Any]) -> None:
        """Raise :class:`RenderError` for a payload the vendor is known to refuse, routes' ``set`` applied.

        Refused here, it is a "dropped" ledger entry at once (and ``tagrelay
        import`` counts it) rather than a dead letter after a request.
        """

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
    return Outcome(Verdict.FINAL, f"http {status}", whole=status in (401, 403))


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
