"""Per-destination queues and workers that send batches to vendors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..vendors.base import Adapter, Answer, Outcome, Verdict
from .retry import RetryPolicy

__all__ = ["Delivery", "Job", "DeadLetter"]

log = logging.getLogger("proxy.delivery")

_MAX_ANSWER_BYTES = 64 * 1024
_LOG_ANSWER_CHARS = 300


@dataclass(slots=True)
class Job:
    destination: str
    payload: dict[str, Any]
    event_id: str
    event_time: float
    attempts: int = 0


@dataclass(slots=True, frozen=True)
class DeadLetter:
    destination: str
    event_id: str
    reason: str
    answer: str  # the vendor's answer, truncated, secrets removed


@dataclass(slots=True)
class _Counters:
    events_sent: int = 0
    requests: int = 0
    retried: int = 0
    dead: int = 0


@dataclass(slots=True)
class _Lane:
    adapter: Adapter
    queue: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    pending: int = 0  # queued, in flight, or waiting to retry
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Delivery:
    """Accepts jobs and delivers them; :meth:`stop` drains what it can.

    # TODO(issue 3): jobs live in memory only; a restart loses what is queued.
    # The durable SQLite outbox replaces the queues behind the same put().
    """

    def __init__(
        self,
        adapters: dict[str, Adapter],
        *,
        timeout_secs: float = 10.0,
        concurrency: int = 4,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._lanes = {name: _Lane(adapter) for name, adapter in adapters.items()}
        for lane in self._lanes.values():
            lane.idle.set()
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._concurrency = concurrency
        self._policy = policy or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self.counters: dict[str, _Counters] = defaultdict(_Counters)
        self.dead_letters: list[DeadLetter] = []
        self._stopping = False

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=self._concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        for name, lane in self._lanes.items():
            lane.task = asyncio.create_task(self._work(name, lane), name=f"delivery:{name}")

    def put(self, job: Job) -> None:
        lane = self._lanes[job.destination]
        lane.pending += 1
        lane.idle.clear()
        lane.queue.put_nowait(job)

    def pending(self) -> dict[str, int]:
        return {name: lane.pending for name, lane in self._lanes.items()}

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued, in flight or waiting to retry."""
        waits = [lane.idle.wait() for lane in self._lanes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, drain_secs: float = 10.0) -> None:
        """Drain for up to ``drain_secs``, then cancel the workers and close the session."""
        self._stopping = True
        if not await self.wait_idle(drain_secs):
            left = sum(lane.pending for lane in self._lanes.values())
            # TODO(issue 3): persisted by the durable outbox instead of lost.
            log.error("stopping with %d undelivered event(s) still queued: they are lost", left)
        for handle in self._timers:
            handle.cancel()
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(
            *(lane.task for lane in self._lanes.values() if lane.task is not None),
            *self._inflight,
            return_exceptions=True,
        )
        if self._session is not None:
            await self._session.close()

    async def _work(self, name: str, lane: _Lane) -> None:
        limit = asyncio.Semaphore(self._concurrency)
        adapter = lane.adapter
        while True:
            jobs = [await lane.queue.get()]
            while not lane.queue.empty() and len(jobs) < adapter.batch_size * self._concurrency:
                jobs.append(lane.queue.get_nowait())
            groups: dict[str, list[Job]] = defaultdict(list)
            for job in jobs:
                groups[adapter.batch_key(job.payload)].append(job)
            for group in groups.values():
                for chunk in _chunks(group, adapter.batch_size, adapter.max_batch_bytes):
                    await limit.acquire()
                    task = asyncio.create_task(self._send(name, lane, chunk), name=f"send:{name}")
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                    task.add_done_callback(lambda _t: limit.release())

    async def _send(self, name: str, lane: _Lane, jobs: list[Job]) -> None:
        adapter = lane.adapter
        payloads = [j.payload for j in jobs]
        answer_text = ""
        try:
            outcome = await adapter.deliver_local(payloads)
            if outcome is None:
                outcome, answer_text = await self._http(adapter, payloads)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not kill the lane
            log.exception("destination %s: adapter failed on a batch of %d", name, len(jobs))
            outcome = Outcome(Verdict.FINAL, f"adapter error: {type(exc).__name__}")
        counters = self.counters[name]
        counters.requests += 1
        if outcome.verdict is Verdict.OK:
            counters.events_sent += len(jobs)
            self._done(lane, len(jobs))
            return
        now = time.time()
        retry_now: list[Job] = []
        for job in jobs:
            job.attempts += 1
            if outcome.verdict is Verdict.FINAL:
                self._dead(name, lane, job, outcome.reason, answer_text)
                continue
            delay = self._policy.delay(job.attempts, outcome.retry_after_secs)
            why = self._policy.gives_up(job.attempts, now - job.event_time, adapter.max_age_secs, delay)
            if why:
                self._dead(name, lane, job, f"{outcome.reason}; {why}", answer_text)
            else:
                retry_now.append(job)
        if retry_now:
            counters.retried += len(retry_now)
            delay = self._policy.delay(retry_now[0].attempts, outcome.retry_after_secs)
            log.warning(
                "destination %s: %d event(s) will be retried in %.1fs (attempt %d): %s %s",
                name, len(retry_now), delay, retry_now[0].attempts, outcome.reason, answer_text,
            )
            if self._stopping:
                delay = min(delay, 0.5)
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def requeue() -> None:
                self._timers.discard(handle)
                for job in retry_now:
                    lane.queue.put_nowait(job)

            handle = loop.call_later(delay, requeue)
            self._timers.add(handle)

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
            answer = Answer(None, error=f"connection: {type(exc).__name__}")
        outcome = adapter.classify(answer)
        text = ""
        if outcome.verdict is not Verdict.OK:
            text = answer.body[:_LOG_ANSWER_CHARS].decode("utf-8", "replace")
            for secret in request.secrets:
                if secret:
                    text = text.replace(secret, "***")
        return outcome, text

    def _dead(self, name: str, lane: _Lane, job: Job, reason: str, answer: str) -> None:
        self.counters[name].dead += 1
        self.dead_letters.append(DeadLetter(name, job.event_id, reason, answer))
        # TODO(issue 3): kept in memory only; the dead-letter store makes it replayable.
        log.error("destination %s: event %s not delivered: %s %s", name, job.event_id, reason, answer)
        self._done(lane, 1)

    @staticmethod
    def _done(lane: _Lane, n: int) -> None:
        lane.pending -= n
        if lane.pending <= 0:
            lane.pending = 0
            lane.idle.set()


def _chunks(jobs: list[Job], most: int, max_bytes: int | None) -> list[list[Job]]:
    """Split into requests of at most ``most`` payloads and about ``max_bytes`` bytes.

    The byte bound leaves 10% for the request envelope; a single payload over
    it still goes alone (the vendor's answer then says what is wrong).
    """
    if max_bytes is None:
        return [jobs[i : i + most] for i in range(0, len(jobs), most)]
    budget = int(max_bytes * 0.9)
    out: list[list[Job]] = []
    current: list[Job] = []
    size = 0
    for job in jobs:
        n = len(orjson.dumps(job.payload)) + 1
        if current and (len(current) >= most or size + n > budget):
            out.append(current)
            current, size = [], 0
        current.append(job)
        size += n
    if current:
        out.append(current)
    return out
