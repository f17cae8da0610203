"""Metrics (Prometheus) and logging set-up.

Each app owns a :class:`Metrics` with its own registry, so tests see only
their own numbers. With ``--workers N`` the serve command points
``PROMETHEUS_MULTIPROC_DIR`` at a shared folder before anything imports
``prometheus_client``; every worker then writes its counters there and
``/metrics`` adds up all workers (prometheus_client's multiprocess mode).
Outbox depth and age are read from the outbox at scrape time, so they are
the same whichever worker answers.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import Metric

__all__ = ["Metrics", "Throttle", "setup_logging", "LATENCY_BUCKETS", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds from acceptance to the vendor's ok.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Throttle:
    """At most one log line a minute per kind, for what can happen per hit or per retry.

    A full disk or a broken route fails thousands of times a minute; one
    line says it, with how many were held back since the last.
    """

    def __init__(self, period_secs: float = 60.0) -> None:
        self.period_secs = period_secs
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, held back since)

    def due(self, kind: str) -> int | None:
        """How many lines of ``kind`` were held back, if one may be logged now; None (and one more held) if not."""
        now = time.monotonic()
        last, held = self._last.get(kind, (-math.inf, 0))
        if now - last < self.period_secs:
            self._last[kind] = (last, held + 1)
            return None
        self._last[kind] = (now, 0)
        return held


class _OutboxGauges(Collector):
    """Outbox depth and oldest age per destination, read when scraped."""

    def __init__(self) -> None:
        self.snapshot: dict[str, tuple[int, float]] = {}
        self.breakers: dict[str, float] = {}
        self.full = ""

    def collect(self) -> Iterator["Metric"]:
        depth = GaugeMetricFamily("tagrelay_outbox_depth", "Events waiting in the outbox", labels=["destination"])
        age = GaugeMetricFamily(
            "tagrelay_outbox_oldest_age_seconds", "Age of the oldest waiting event", labels=["destination"]
        )
        for dest, (n, oldest) in sorted(self.snapshot.items()):
            depth.add_metric([dest], n)
            age.add_metric([dest], oldest)
        breaker = GaugeMetricFamily(
            "tagrelay_destination_paused_seconds",
            "Seconds until a paused (circuit-open) destination is tried again; 0 when flowing",
            labels=["destination"],
        )
        for dest, secs in sorted(self.breakers.items()):
            breaker.add_metric([dest], secs)
        full = GaugeMetricFamily("tagrelay_outbox_full", "1 while the outbox refuses new events")
        full.add_metric([], 1 if self.full else 0)
        yield from (depth, age, breaker, full)


# Why events are refused (tagrelay_events_rejected_total{reason}).
REJECT_REASONS = ("invalid", "too_large", "timeout", "outbox_full", "outbox_error")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("tagrelay_hits", "Hits received", ["status"], registry=r)
        self.events_accepted = Counter("tagrelay_events_accepted", "Events accepted into the outbox", registry=r)
        self.events_rejected = Counter(
            "tagrelay_events_rejected",
            "Events refused, by reason (a hit refused before its events could be read counts as one)",
            ["reason"],
            registry=r,
        )
        self.sent = Counter("tagrelay_delivery_sent", "Events a vendor accepted", ["destination"], registry=r)
        self.retried = Counter("tagrelay_delivery_retried", "Events scheduled for another attempt", ["destination"], registry=r)
        self.dead = Counter("tagrelay_delivery_dead", "Events a vendor refused for good (dead letters)", ["destination"], registry=r)
        self.dropped = Counter(
            "tagrelay_events_dropped",
            "Events a route sent to a destination that could not be rendered for it (tagrelay trace says why)",
            ["destination"],
            registry=r,
        )
        self.requests = Counter(
            "tagrelay_delivery_requests", "Requests to vendors by outcome", ["destination", "outcome"], registry=r
        )
        self.latency = Histogram(
            "tagrelay_delivery_latency_seconds",
            "From acceptance to the vendor's ok",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox = _OutboxGauges()
        r.register(self.outbox)
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason)

    def destination(self, name: str) -> None:
        """Start a destination's counters at 0."""
        for counter in (self.sent, self.retried, self.dead, self.dropped):
            counter.labels(name)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent); for tests and the CLI."""
        got = self.registry.get_sample_value(name, labels)
        return got or 0.0

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            shared = CollectorRegistry()
            multiprocess.MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
            shared.register(self.outbox)
            return generate_latest(shared)
        return generate_latest(self.registry)


def setup_logging(level_name: str | None = None) -> None:
    """One line per record on stderr: time, level, logger, message."""
    level_name = (level_name or os.environ.get("TAGRELAY_LOG_LEVEL", "INFO")).upper()
    level = getattr(logging, level_name, logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's access log is a line per hit, and its server log reports each
    # malformed request a client sends (with a traceback): both only at DEBUG.
    # Our own handlers' bugs are logged by proxy.app.
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("aiohttp.access").setLevel(quiet)
    logging.getLogger("aiohttp.server").setLevel(quiet)
