"""Per-destination workers that send what the outbox holds.

Each destination has one lane: a task that takes the rows this process has
just committed (leased to it at commit, handed over in memory) and claims
the others that are due from the outbox (retries, rows left by a stopped
process, backlog), groups them by the adapter's ``batch_key`` into requests of at most
``batch_size`` payloads (and ``max_batch_bytes``), and sends them with at most
``concurrency`` requests in flight, over one pooled HTTP session. The
adapter classifies each answer; :class:`~proxy.delivery.retry.RetryPolicy`
says when to try again; a :class:`Breaker` stops a failing vendor from
soaking up attempts while it is down. A batch the vendor refuses as a whole
is split and each event sent alone, so one bad event does not bury the good
ones beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit

import aiohttp

from .. import __version__
from ..telemetry import Metrics
from ..vendors.base import Adapter, Answer, Outcome, Verdict
from .outbox import LedgerRow, Outbox, OutboxError, QueuedRow, Row
from .retry import RetryPolicy

__all__ = ["Breaker", "Delivery"]

log = logging.getLogger("proxy.delivery")

_MAX_ANSWER_BYTES = 64 * 1024
_LINGER_SECS = 0.05
# Rows a lane holds in memory at most; beyond it new rows wait in the outbox
# to be claimed (a vendor down for long must not grow the heap).
_FRESH_CAP = 10_000
_LOG_ANSWER_CHARS = 300
@dataclass(slots=True)
class Breaker:
    """Opens after ``threshold`` failed requests in a row; probes with one event after a cool-down.

    While open, a destination's events wait in the outbox without using up
    attempts, and the other destinations are not slowed.
    """

    threshold: int = 5
    base_secs: float = 5.0
    cap_secs: float = 300.0
    failures: int = 0
    opened: int = 0  # how many times in a row it opened; doubles the cool-down
    open_until: float = 0.0

    def blocked(self, now: float) -> float:
        """Seconds to wait before sending again (0: go ahead)."""
        return max(0.0, self.open_until - now)

    @property
    def probing(self) -> bool:
        return self.opened > 0 and self.failures >= self.threshold

    def success(self) -> None:
        self.failures = 0
        self.opened = 0
        self.open_until = 0.0

    def failure(self, now: float) -> bool:
        """Count a failed request; True when this opened the breaker.

        Failures of requests that were already in flight when it opened do
        not open it again: four requests failing together are one outage,
        not four doublings of the pause.
        """
        if now < self.open_until:
            return False
        self.failures += 1
        if self.failures < self.threshold:
            return False
        cool = min(self.cap_secs, self.base_secs * (2**self.opened))
        self.opened += 1
        self.open_until = now + cool
        return True


@dataclass(slots=True)
class _Lane:
    name: str
    adapter: Adapter
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    breaker: Breaker = field(default_factory=Breaker)
    task: asyncio.Task[None] | None = None
    retired: bool = False  # the rules no longer have this destination
    fresh: deque[Row] = field(default_factory=deque)  # committed, leased to us, not yet sent
    ready: deque[list[Row]] = field(default_factory=deque)  # batched, waiting for a free request slot
    claim_due: float = 0.0  # when to look in the outbox for rows not held in memory


class Delivery:
    """Accepts payloads into the outbox and delivers them from it."""

    def __init__(
        self,
        adapters: dict[str, Adapter],
        outbox: Outbox,
        *,
        timeout_secs: float = 10.0,
        concurrency: int = 4,
        policy: RetryPolicy | None = None,
        poll_secs: float = 0.5,
        breaker: Breaker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._breaker = breaker or Breaker()
        self.metrics = metrics or Metrics()
        self._lanes = {name: self._new_lane(name, a) for name, a in adapters.items()}
        self.outbox = outbox
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._concurrency = concurrency
        self._policy = policy or RetryPolicy()
        self._poll = poll_secs
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False

    def _new_lane(self, name: str, adapter: Adapter) -> _Lane:
        """A lane with its own breaker, configured like the template given at construction.

        Its counters start at 0, so that an alert on them has a series before the first event.
        """
        self.metrics.destination(name)
        t = self._breaker
        return _Lane(name, adapter, breaker=Breaker(t.threshold, t.base_secs, t.cap_secs))

    @property
    def destinations(self) -> list[str]:
        return list(self._lanes)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=self._concurrency, ttl_dns_cache=300)
        # Adapters may set their own (Reddit's asks for a descriptive one).
        agent = {"User-Agent": f"tagrelay/{__version__}"}
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=agent)
        for lane in self._lanes.values():
            lane.task = asyncio.create_task(self._work(lane), name=f"delivery:{lane.name}")

    async def accept(self, rows: Sequence[QueuedRow], ledger: Sequence[LedgerRow] = ()) -> None:
        """Make ``rows`` durable, then hand them to their lanes. Raises OutboxFull/OutboxError."""
        now = time.time()
        lease = [name for name, lane in self._lanes.items() if self._takes_fresh(lane, now)]
        mine = await self.outbox.put(rows, ledger, lease)
        stray: list[Row] = []
        for row in mine:
            lane = self._lanes.get(row.destination)
            if lane is None or lane.retired or self._stopping:
                stray.append(row)  # the rules changed or we are stopping meanwhile
            else:
                lane.fresh.append(row)
        if stray:
            await self.outbox.release(stray)
        for name in {r.destination for r in rows}:
            lane = self._lanes.get(name)
            if lane is not None:
                lane.wake.set()

    def _takes_fresh(self, lane: _Lane, now: float) -> bool:
        return not (self._stopping or lane.retired or lane.breaker.blocked(now)) and len(lane.fresh) < _FRESH_CAP

    def _take_fresh(self, lane: _Lane, most: int, now: float) -> list[Row]:
        """Up to ``most`` rows from memory, skipping any whose lease is half over.

        Such a row stays in the outbox, leased to us; once its lease ends it
        is claimed like any other, so it is never sent by two processes.
        """
        rows: list[Row] = []
        fresh = lane.fresh
        while fresh and len(rows) < most:
            row = fresh.popleft()
            if self._time_to_send(row, now):
                rows.append(row)
        return rows

    def _time_to_send(self, row: Row, now: float) -> bool:
        """Whether at least half the row's lease is left: time for a request and its acknowledgement."""
        return row.leased_until - now >= self.outbox.lease_secs / 2

    def breaker_open(self) -> dict[str, float]:
        now = time.time()
        return {name: lane.breaker.blocked(now) for name, lane in self._lanes.items()}

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox holds nothing due and nothing is in flight (tests, drain)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            depth = await self.outbox.depth()
            if not self._inflight and not any(n for n, _ in depth.values()):
                return True
            await asyncio.sleep(0.02)
        return False

    async def stop(self, drain_secs: float | None = None) -> None:
        """Stop claiming; let requests in flight finish for up to ``drain_secs``; release the rest.

        Nothing is lost: whatever was not sent stays in the outbox for the
        next start. By default a request in flight gets its whole timeout:
        cut short, one the vendor had taken would be sent again after the
        restart, a duplicate for a vendor that does not deduplicate (GA4).
        """
        self._stopping = True
        for lane in self._lanes.values():
            lane.wake.set()
        if drain_secs is None:
            drain_secs = (self._timeout.total or 10.0) + 1
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=drain_secs)
        for task in [*self._inflight, *(lane.task for lane in self._lanes.values() if lane.task)]:
            task.cancel()
        await asyncio.gather(
            *self._inflight, *(lane.task for lane in self._lanes.values() if lane.task), return_exceptions=True
        )
        if self._session is not None:
            await self._session.close()
        # Rows claimed but not yet sent when the lanes stopped go back now,
        # not when their lease runs out.
        await self.outbox.release_mine()
        depth = await self.outbox.depth()
        left = sum(n for n, _ in depth.values())
        if left:
            # The outbox is shared: every worker sees the same rows.
            log.info("stopped; the outbox (shared by all workers) keeps %d event(s) for the next start", left)

    # -- the lane --------------------------------------------------------

    async def update(self, adapters: dict[str, Adapter]) -> None:
        """Take a new set of destinations (rules reloaded) without stopping delivery.

        New destinations get a lane; removed ones finish what they claimed and
        stop; changed ones send with the new adapter from the next batch on.
        Old adapters are closed once the requests in flight are done.
        """
        retired: list[Adapter] = []
        for name, lane in list(self._lanes.items()):
            if name not in adapters:
                lane.retired = True
                lane.wake.set()
                retired.append(lane.adapter)
                if lane.task is not None:
                    await lane.task
                del self._lanes[name]
        for name, adapter in adapters.items():
            current = self._lanes.get(name)
            if current is None:
                fresh = self._new_lane(name, adapter)
                fresh.task = asyncio.create_task(self._work(fresh), name=f"delivery:{name}")
                self._lanes[name] = fresh
            elif current.adapter is not adapter:
                retired.append(current.adapter)
                current.adapter = adapter
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=(self._timeout.total or 10.0) + 5)
        for old in retired:
            await old.close()

    async def _work(self, lane: _Lane) -> None:
        limit = asyncio.Semaphore(self._concurrency)
        while not self._stopping and not lane.retired:
            wait = lane.breaker.blocked(time.time())
            if wait > 0:
                await self._nap(lane, wait)
                continue
            if not lane.ready and not await self._gather(lane):
                continue
            # One request per free slot, checked when it is about to go: a
            # batch that waited for a slot (a slow vendor, a vendor with one
            # event per request) must still hold its lease with time to spare,
            # or someone may have claimed it again and it would go twice.
            await limit.acquire()
            chunk = lane.ready.popleft()
            if self._stopping or lane.retired or lane.breaker.blocked(time.time()):
                limit.release()
                lane.ready.appendleft(chunk)
                continue
            now = time.time()
            if not all(self._time_to_send(r, now) for r in chunk):
                limit.release()
                log.debug("destination %s: %d event(s) waited too long to send; claimed again after their lease", lane.name, len(chunk))
                continue
            task = asyncio.create_task(self._send(lane, chunk), name=f"send:{lane.name}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(lambda _t: limit.release())
        held = [r for chunk in lane.ready for r in chunk] + list(lane.fresh)
        lane.ready.clear()
        lane.fresh = deque()
        if held and not self._stopping:
            # Retired by a rules reload: give back what it held (at a stop,
            # Delivery.stop gives back everything this process leased).
            await self.outbox.release(held)

    async def _gather(self, lane: _Lane) -> bool:
        """Take due rows (from the outbox when a look is due, then from memory) and batch them into ``lane.ready``."""
        adapter = lane.adapter
        now = time.time()
        want = 1 if lane.breaker.probing else adapter.batch_size * self._concurrency
        rows: list[Row] = []
        if now >= lane.claim_due:
            # Oldest first: rows that only the outbox holds (retries,
            # backlog, rows of a stopped process), then those in memory.
            try:
                rows = await self.outbox.claim(lane.name, want, now)
            except OutboxError:
                rows = []
            lane.claim_due = now if len(rows) == want else now + self._poll
        rows += self._take_fresh(lane, want - len(rows), now)
        if not rows:
            await self._nap(lane, max(0.0, lane.claim_due - time.time()))
            return False
        if len(rows) < want:
            # The lane has caught up: let the next events gather for a
            # moment, so that under load each request and acknowledgement
            # carries many events, not one.
            await asyncio.sleep(_LINGER_SECS)
            rows += self._take_fresh(lane, want - len(rows), time.time())
        try:
            lane.ready.extend(_plan(rows, adapter))
        except Exception:  # an adapter bug must not stop the lane
            log.exception("destination %s: cannot batch %d event(s); keeping them as dead letters", lane.name, len(rows))
            await self._bury(lane, rows, _adapter_bug(lane, "batching"), "")
            return False
        return bool(lane.ready)

    async def _nap(self, lane: _Lane, secs: float) -> None:
        lane.wake.clear()
        try:
            await asyncio.wait_for(lane.wake.wait(), timeout=secs)
        except asyncio.TimeoutError:
            pass

    async def _send(self, lane: _Lane, rows: list[Row]) -> None:
        adapter = lane.adapter
        payloads = [r.payload for r in rows]
        answer_text = ""
        try:
            outcome = await adapter.deliver_local(payloads)
            if outcome is None:
                outcome, answer_text = await self._http(adapter, payloads)
        except asyncio.CancelledError:
            await asyncio.shield(self.outbox.release(rows))
            raise
        except Exception as exc:  # an adapter bug must not kill the lane
            log.exception("destination %s: adapter failed on a batch of %d", lane.name, len(rows))
            outcome = Outcome(Verdict.FINAL, _adapter_bug(lane, type(exc).__name__))
        await self._settle(lane, rows, outcome, answer_text)

    async def _settle(self, lane: _Lane, rows: list[Row], outcome: Outcome, answer: str) -> None:
        name = lane.name
        m = self.metrics
        m.requests.labels(name, outcome.verdict.value).inc()
        now = time.time()
        if outcome.verdict is Verdict.OK:
            lane.breaker.success()
            m.sent.labels(name).inc(len(rows))
            latency = m.latency.labels(name)
            for r in rows:
                latency.observe(max(0.0, now - r.created))
            await self.outbox.ack(rows, _entries(rows, now, name, "sent", outcome.reason))
            return
        if outcome.verdict is Verdict.FINAL:
            if len(rows) > 1 and not outcome.whole:
                # The vendor refused the batch as a whole; find out which
                # events it objects to by sending each alone.
                log.warning("destination %s: batch of %d refused (%s); sending each event alone", name, len(rows), outcome.reason)
                for row in rows:
                    await self._send(lane, [row])
                return
            lane.breaker.success()  # the vendor answered: it is up
            await self._bury(lane, rows, outcome.reason, answer)
            return
        # Retry.
        if lane.breaker.failure(now):
            log.warning(
                "destination %s: %d failed requests in a row; pausing it for %.0fs (other destinations go on)",
                name, lane.breaker.failures, lane.breaker.blocked(now),
            )
        attempts = max(r.attempts for r in rows) + 1
        delay = self._policy.delay(attempts, outcome.retry_after_secs)
        keep: list[Row] = []
        for r in rows:
            why = self._policy.gives_up(r.attempts + 1, now - r.event_time, lane.adapter.max_age_secs, delay)
            if why:
                await self._bury(lane, [r], f"{outcome.reason}; {why}", answer)
            else:
                keep.append(r)
        if keep:
            m.retried.labels(name).inc(len(keep))
            log.warning(
                "destination %s: %d event(s) will be retried in %.1fs (attempt %d): %s",
                name, len(keep), delay, attempts, f"{outcome.reason} {answer}".strip(),
            )
            await self.outbox.retry(keep, now + delay, _entries(keep, now, name, "retry", f"attempt {attempts}: {outcome.reason}"))

    async def _bury(self, lane: _Lane, rows: list[Row], reason: str, answer: str) -> None:
        self.metrics.dead.labels(lane.name).inc(len(rows))
        why = f"{reason} {answer}".strip()
        log.error("destination %s: %d event(s) not delivered, kept as dead letters (tagrelay deadletters): %s", lane.name, len(rows), why)
        await self.outbox.bury(rows, reason, answer, _entries(rows, time.time(), lane.name, "dead", why))

    async def _http(self, adapter: Adapter, payloads: list[dict[str, Any]]) -> tuple[Outcome, str]:
        assert self._session is not None, "Delivery.start() was not awaited"
        request = adapter.build(payloads)
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
            ) as resp:
                body = await resp.content.read(_MAX_ANSWER_BYTES)
                answer = Answer(resp.status, dict(resp.headers), body)
        except asyncio.TimeoutError:
            answer = Answer(None, error="timeout")
        except aiohttp.ClientError as exc:
            # The host and port, never the whole URL: GA4's api_secret is in its query.
            parts = urlsplit(request.url)
            answer = Answer(None, error=f"connection: {type(exc).__name__} ({parts.hostname}:{parts.port or parts.scheme})")
        outcome = adapter.classify(answer)
        text = ""
        if outcome.verdict is not Verdict.OK:
            text = answer.body[:_LOG_ANSWER_CHARS].decode("utf-8", "replace")
            for secret in request.secrets:
                # Only secrets long enough to be themselves: replacing a short
                # one everywhere would garble the answer (and tokens are long).
                if len(secret) >= 8:
                    text = text.replace(secret, "***")
        return outcome, text


def _entries(rows: list[Row], now: float, destination: str, what: str, detail: str) -> list[LedgerRow]:
    """The ledger entries of an outcome, one per row, each pointing at its event's anchor."""
    return [LedgerRow(r.event_id, now, destination, what, detail, r.ledger_ref) for r in rows]


def _adapter_bug(lane: _Lane, what: str) -> str:
    """The dead-letter reason for an adapter that failed (only the exception's type: its text may hold payload values)."""
    return (
        f"tagrelay bug in the {lane.adapter.type} adapter ({what}; traceback in the log): please report it;"
        f" after upgrading, tagrelay replay --destination {lane.name}"
    )


def _plan(rows: list[Row], adapter: Adapter) -> list[list[Row]]:
    """Group claimed rows by batch key, then cut each group into requests."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row.batch_key].append(row)
    return [c for g in groups.values() for c in _chunks(g, adapter.batch_size, adapter.max_batch_bytes)]


def _chunks(rows: list[Row], most: int, max_bytes: int | None) -> list[list[Row]]:
    """Split into requests of at most ``most`` payloads and about ``max_bytes`` bytes.

    The byte bound leaves 10% for the request envelope; a single payload over
    it still goes alone (the vendor's answer then says what is wrong).
    """
    if max_bytes is None:
        return [rows[i : i + most] for i in range(0, len(rows), most)]
    budget = int(max_bytes * 0.9)
    out: list[list[Row]] = []
    current: list[Row] = []
    size = 0
    for row in rows:
        n = row.size + 1
        if current and (len(current) >= most or size + n > budget):
            out.append(current)
            current, size = [], 0
        current.append(row)
        size += n
    if current:
        out.append(current)
    return out
