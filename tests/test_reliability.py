"""Issue 3: an event that tagrelay answered 2xx for is never lost.

Three layers of proof, all against local stand-ins on 127.0.0.1:

1. In process: the delivery lanes against stand-ins that misbehave on purpose
   (down, 500, 429 with Retry-After, slower than the timeout, connection reset,
   a batch partly refused) deliver every event once, or keep it as a dead
   letter with the vendor's answer.
2. As a real ``python -m proxy serve`` process under load: kill -9, kill -TERM
   and the death of one of two workers, then a restart on the same data
   directory; every event answered 204 is then at the stand-in or still in the
   outbox, never missing.
3. The ``tagrelay deadletters``, ``replay`` and ``trace`` commands on a data
   directory with dead letters.

Duplicates. Delivery is at least once: a process killed after the vendor
took a batch and before the outbox recorded it leaves those rows leased, and
they are sent again once the lease ends. Meta treats events with the same
``event_name`` and ``event_id`` sent within 48 hours as one and keeps the
first (Conversions API "Server event parameters", ``event_name``; the
"Deduplicate Pixel and Server Events" guide speaks of pixel + server pairs,
so server-to-server duplicates are covered by the 48-hour rule, not by a
separate promise), so a duplicate there costs nothing. A webhook
receiver does not deduplicate unless it is written to: the payload carries
the event ID for that. So for both kinds the tests assert the same bound: the
events that can be duplicated are at most the rows one worker had leased when
it died (``batch_size x delivery_concurrency`` per destination), and after a
graceful stop (SIGTERM) there are none at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.app import METRICS, make_app
from proxy.delivery import Breaker, Delivery, Outbox, QueuedRow, RetryPolicy
from proxy.rules import load_rules
from proxy.settings import Settings
from proxy.vendors.meta import MetaCAPI
from proxy.vendors.webhook import Webhook
from tests.service import BROWSER_UA, Service, browser_hit, run_cli
from tests.standins import STANDIN
from tests.standins.meta import meta_app

META_TOKEN = "reliability-meta-token"
HOOK_BATCH = 10
CONCURRENCY = 4  # Settings.delivery_concurrency default
# Most rows one worker can hold leased per destination: one claim's worth.
LEASE_BOUND = {"hook": HOOK_BATCH * CONCURRENCY, "meta": 1000 * CONCURRENCY}


# -- stand-ins ----------------------------------------------------------------


class Hook:
    """A webhook receiver that records every event ID it took, optionally slow."""

    def __init__(self, delay_secs: float = 0.0) -> None:
        self.delay_secs = delay_secs
        self.received: list[str] = []
        self.in_progress = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_progress += 1
        try:
            body = orjson.loads(await request.read())
            if self.delay_secs:
                await asyncio.sleep(self.delay_secs)
            events = body if isinstance(body, list) else [body]
            self.received.extend(str(e["id"]) for e in events)
            return web.Response(status=200)
        finally:
            self.in_progress -= 1


async def standins(aiohttp_server, hook_delay_secs: float = 0.0) -> tuple[web.Application, Hook, str]:
    """A Meta stand-in and a webhook receiver; returns them and a rules file routing every event to both."""
    meta = meta_app(access_token=META_TOKEN, pixel_ids={"1234567890"})
    meta_server = await aiohttp_server(meta)
    hook = Hook(hook_delay_secs)
    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook.handle)
    hook_server = await aiohttp_server(hook_app)
    rules = f"""
[destinations.meta]
type = "meta_capi"
pixel_id = "1234567890"
access_token = "${{REL_META_TOKEN}}"
endpoint = "http://127.0.0.1:{meta_server.port}"

[destinations.hook]
type = "webhook"
url = "http://127.0.0.1:{hook_server.port}/hook"
batch = {HOOK_BATCH}

[[routes]]
name = "everything to both"
to = ["meta", "hook"]
"""
    return meta, hook, rules


def service(tmp_path: Path, rules: str, workers: int = 1, own_process_group: bool = False) -> Service:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "10-reliability.toml").write_text(rules, encoding="utf-8")
    env = {
        "REL_META_TOKEN": META_TOKEN,
        "TAGRELAY_RETRY_CAP_SECS": "1",
        "TAGRELAY_DELIVERY_TIMEOUT_SECS": "5",
    }
    return Service(rules_dir, tmp_path / "data", workers=workers, env=env, own_process_group=own_process_group)


def meta_ids(meta: web.Application) -> list[str]:
    return [str(e["event_id"]) for e in meta[STANDIN].received]  # type: ignore[attr-defined]


def queued(data_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """Per destination: (event ID, leased_until) of every row still in the outbox."""
    db = sqlite3.connect(f"file:{data_dir / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT destination, event_id, leased_until FROM outbox").fetchall()
    finally:
        db.close()
    out: dict[str, list[tuple[str, float]]] = {"meta": [], "hook": []}
    for dest, event_id, leased in rows:
        out.setdefault(dest, []).append((event_id, leased))
    return out


# -- load ------------------------------------------------------------------------


async def load(
    url: str,
    count: int,
    *,
    prefix: str,
    connections: int = 16,
    when: Callable[[int], bool] | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
    stop_after_then: bool = True,
) -> set[str]:
    """POST ``count`` one-event hits; the IDs answered 204.

    Once ``when(answered)`` holds, ``then()`` runs once (a kill); with
    ``stop_after_then`` no new hits start afterwards.
    """
    accepted: set[str] = set()
    answered = 0
    fired = False
    ids = iter(f"{prefix}-{i:05d}" for i in range(count))
    headers = {"User-Agent": BROWSER_UA, "Content-Type": "text/plain;charset=UTF-8"}

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal answered, fired
        for event_id in ids:
            if fired and stop_after_then:
                return
            try:
                async with session.post(url + "/e", data=orjson.dumps(browser_hit(event_id)), headers=headers) as r:
                    await r.read()
                    if r.status == 204:
                        accepted.add(event_id)
            except (TimeoutError, aiohttp.ClientError):
                pass  # not answered 204: not accepted, nothing to prove for it
            answered += 1
            if not fired and when is not None and then is not None and when(answered):
                fired = True
                await then()

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as s:
        await asyncio.gather(*(one(s) for _ in range(connections)))
    return accepted


async def settle(
    data_dir: Path, delivered: Callable[[], dict[str, list[str]]], accepted: set[str], secs: float = 20.0
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, float]]]]:
    """Wait (bounded) until every accepted event is delivered and the outbox is empty.

    A row still in the outbox, leased or not, is on its way (a lane may hold
    claimed rows for a moment before sending), so only an empty outbox is
    settled; the deadline bounds the wait.
    """
    deadline = time.monotonic() + secs
    while True:
        got, rows = delivered(), queued(data_dir)
        complete = all(accepted <= set(got[d]) for d in got)
        empty = not any(rows.values())
        if (complete and empty) or time.monotonic() > deadline:
            return got, rows
        await asyncio.sleep(0.2)


def missing(accepted: set[str], got: dict[str, list[str]], rows: dict[str, list[tuple[str, float]]]) -> dict[str, int]:
    return {d: len(accepted - set(got[d]) - {e for e, _ in rows[d]}) for d in got}


def duplicates(got: dict[str, list[str]], rows: dict[str, list[tuple[str, float]]]) -> dict[str, int]:
    """Per destination: events received more than once, or received and still queued (to be sent again)."""
    out = {}
    for d, ids in got.items():
        counts = Counter(ids)
        twice = {e for e, n in counts.items() if n > 1}
        again = {e for e, _ in rows[d]} & set(counts)
        out[d] = len(twice | again)
    return out


# -- 1. in process: delivery lanes against misbehaving stand-ins --------------

# Fast retries so a test takes seconds; a breaker that never opens unless a
# test is about the breaker.
FAST = RetryPolicy(base_secs=0.01, cap_secs=0.05, max_attempts=50)
NO_BREAKER = Breaker(threshold=10_000)


class Receiver:
    """A webhook receiver with scripted misbehaviour for its first requests, then 200."""

    def __init__(self, script: list[Callable[[web.Request], Awaitable[web.StreamResponse]]] | None = None) -> None:
        self.script = list(script or [])
        self.arrivals: list[float] = []
        self.received: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        body = orjson.loads(await request.read())
        if self.script:
            return await self.script.pop(0)(request)
        events = body if isinstance(body, list) else [body]
        self.received.extend(str(e.get("n") or e.get("id")) for e in events)
        return web.Response(status=200)


def answer(status: int, headers: dict[str, str] | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def canned(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers or {})

    return canned


async def reset_before_answer(request: web.Request) -> web.StreamResponse:
    """Read the request, then drop the connection without a status line."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=200)  # never reaches the client


async def receiver_app(aiohttp_server, receiver: Receiver, port: int | None = None) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, port=port) if port else await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/hook"


def rows(n: int, destination: str = "hook") -> list[QueuedRow]:
    return [QueuedRow(destination, f"e{i}", time.time(), "", {"n": f"e{i}"}) for i in range(n)]


async def lanes(tmp_path: Path, adapters: dict[str, Any], timeout_secs: float = 2.0, breaker: Breaker = NO_BREAKER) -> Delivery:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    d = Delivery(adapters, outbox, policy=FAST, timeout_secs=timeout_secs, poll_secs=0.02, breaker=breaker)
    await d.start()
    return d


async def finish(d: Delivery) -> None:
    assert await d.wait_idle(20)
    await d.stop()
    await d.outbox.close()


def metric(d: Delivery, what: str, destination: str = "hook") -> float:
    return d.metrics.value(f"tagrelay_delivery_{what}_total", destination=destination)


async def until(predicate: Callable[[], bool], what: str, secs: float = 15.0) -> None:
    """Poll until ``predicate()`` holds; a bound on waiting, not a timing assertion."""
    deadline = time.monotonic() + secs
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def test_vendor_down_then_back_gets_every_event_once(aiohttp_server, tmp_path, unused_tcp_port):
    """Connection refused for several attempts, then the vendor listens: all 20 events arrive exactly once."""
    d = await lanes(tmp_path, {"hook": Webhook("hook", {"url": f"http://127.0.0.1:{unused_tcp_port}/hook", "batch": 5})})
    await d.accept(rows(20))
    await until(lambda: metric(d, "retried") >= 3 * 20, "three failed rounds")
    receiver = Receiver()
    await receiver_app(aiohttp_server, receiver, port=unused_tcp_port)
    await finish(d)

    assert sorted(Counter(receiver.received).values()) == [1] * 20
    assert set(receiver.received) == {f"e{i}" for i in range(20)}
    assert (metric(d, "sent"), metric(d, "dead")) == (20, 0)


async def test_500s_then_ok_delivers_once(aiohttp_server, tmp_path):
    """Three 500 answers, then 200: the event arrives once, after three retries."""
    receiver = Receiver([answer(500)] * 3)
    d = await lanes(tmp_path, {"hook": Webhook("hook", {"url": await receiver_app(aiohttp_server, receiver)})})
    await d.accept(rows(1))
    await finish(d)

    assert (receiver.received, len(receiver.arrivals), metric(d, "retried"), metric(d, "dead")) == (["e0"], 4, 3, 0)


async def test_429_retry_after_is_honoured(aiohttp_server, tmp_path):
    """A 429 with Retry-After: 2 is retried no sooner than 2 s later, though the backoff alone would wait at most 0.05 s."""
    receiver = Receiver([answer(429, {"Retry-After": "2"})])
    d = await lanes(tmp_path, {"hook": Webhook("hook", {"url": await receiver_app(aiohttp_server, receiver)})})
    await d.accept(rows(1))
    await finish(d)

    assert receiver.received == ["e0"] and len(receiver.arrivals) == 2
    assert receiver.arrivals[1] - receiver.arrivals[0] >= 2.0


async def test_answer_slower_than_the_timeout_is_retried(aiohttp_server, tmp_path):
    """Meta answers the first request after 1.5 s, the timeout is 0.5 s: retried, then counted by Meta."""
    meta = meta_app(access_token=META_TOKEN, pixel_ids={"1234567890"})
    meta[STANDIN].delay_next(1, 1.5)
    server = await aiohttp_server(meta)
    adapter = MetaCAPI("meta", {"pixel_id": "1234567890", "access_token": META_TOKEN, "endpoint": f"http://127.0.0.1:{server.port}"})
    d = await lanes(tmp_path, {"meta": adapter}, timeout_secs=0.5)
    await d.accept([meta_row("e1")])
    await finish(d)
    trace = await reopen_trace(tmp_path, "e1")

    # The slow first answer may still land at Meta after the client gave up;
    # Meta counts an (event_name, event_id) pair once.
    assert {(e["event_name"], e["event_id"]) for e in meta[STANDIN].received} == {("PageView", "e1")}
    assert [(t.what, t.detail) for t in trace] == [("retry", "attempt 1: timeout"), ("sent", "http 200 events_received 1")]


async def test_connection_reset_before_the_answer_is_retried(aiohttp_server, tmp_path):
    """The vendor drops the connection after reading the request: retried, then delivered once."""
    receiver = Receiver([reset_before_answer])
    d = await lanes(tmp_path, {"hook": Webhook("hook", {"url": await receiver_app(aiohttp_server, receiver)})})
    await d.accept(rows(1))
    await finish(d)

    assert (receiver.received, len(receiver.arrivals), metric(d, "retried"), metric(d, "dead")) == (["e0"], 2, 1, 0)


async def test_connection_reset_mid_answer_from_meta_is_retried(aiohttp_server, tmp_path):
    """Meta's 200 is cut off inside its JSON body: no events_received, so retried; Meta then counts the event once."""
    meta = meta_app(access_token=META_TOKEN, pixel_ids={"1234567890"})
    cuts: list[int] = []

    @web.middleware
    async def cut_first(request: web.Request, handler: Any) -> web.StreamResponse:
        if cuts:
            return await handler(request)
        cuts.append(1)
        await request.read()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Content-Length": "60"})
        await response.prepare(request)
        await response.write(b'{"events_rec')
        assert request.transport is not None
        request.transport.abort()
        return response

    meta.middlewares.append(cut_first)
    server = await aiohttp_server(meta)
    adapter = MetaCAPI("meta", {"pixel_id": "1234567890", "access_token": META_TOKEN, "endpoint": f"http://127.0.0.1:{server.port}"})
    d = await lanes(tmp_path, {"meta": adapter})
    await d.accept([meta_row("e1")])
    await finish(d)

    assert [e["event_id"] for e in meta[STANDIN].received] == ["e1"]
    assert (metric(d, "retried", "meta"), metric(d, "sent", "meta"), metric(d, "dead", "meta")) == (1, 1, 0)


def meta_row(event_id: str, currency: str = "EUR") -> QueuedRow:
    """A rendered Meta website event, as the Meta adapter queues it."""
    payload = {
        "event_name": "PageView",
        "event_time": int(time.time()) - 5,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/",
        "user_data": {"client_user_agent": BROWSER_UA, "client_ip_address": "81.2.69.160"},
        "custom_data": {"currency": currency, "value": 1.0},
    }
    return QueuedRow("meta", event_id, time.time(), "", payload)


async def reopen_trace(tmp_path: Path, event_id: str) -> list[Any]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    try:
        return await outbox.trace(event_id)
    finally:
        await outbox.close()


async def test_batch_partly_rejected_delivers_the_good_and_buries_the_bad(aiohttp_server, tmp_path):
    """Meta refuses a batch of 3 for one bad currency: the other two are counted, the bad one is a dead letter with Meta's answer."""
    meta = meta_app(access_token=META_TOKEN, pixel_ids={"1234567890"})
    server = await aiohttp_server(meta)
    adapter = MetaCAPI("meta", {"pixel_id": "1234567890", "access_token": META_TOKEN, "endpoint": f"http://127.0.0.1:{server.port}"})
    d = await lanes(tmp_path, {"meta": adapter})
    await d.accept([meta_row("good1"), meta_row("bad", currency="EURO"), meta_row("good2")])
    await finish(d)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    (dead,) = await outbox.dead_letters()
    await outbox.close()

    assert sorted(e["event_id"] for e in meta[STANDIN].received) == ["good1", "good2"]
    assert (dead.event_id, dead.destination) == ("bad", "meta")
    # Meta's Graph error: code 100, naming the field, in the reason and the kept answer.
    assert dead.reason.startswith("http 400 code 100")
    error = orjson.loads(dead.answer)["error"]
    assert error["code"] == 100 and "custom_data.currency" in error["message"]


async def test_a_down_destination_does_not_hold_up_a_healthy_one(aiohttp_server, tmp_path, unused_tcp_port):
    """While one destination refuses connections, the other delivers all 50 events and the down one still holds all of its 50."""
    receiver = Receiver()
    healthy = Webhook("hook", {"url": await receiver_app(aiohttp_server, receiver), "batch": 10})
    down = Webhook("down", {"url": f"http://127.0.0.1:{unused_tcp_port}/hook", "batch": 10})
    d = await lanes(tmp_path, {"hook": healthy, "down": down}, breaker=Breaker(threshold=3, base_secs=60))
    await d.accept(rows(50, "down") + rows(50, "hook"))
    await until(lambda: len(receiver.received) >= 50, "the healthy destination to receive 50")
    depth = await d.outbox.depth()
    await d.stop()
    await d.outbox.close()

    assert sorted(Counter(receiver.received).values()) == [1] * 50
    assert depth["down"][0] == 50 and "hook" not in depth
    assert metric(d, "sent", "down") == 0


async def test_breaker_opens_and_shows_in_metrics(aiohttp_client, aiohttp_server, tmp_path):
    """A vendor answering 503 to everything: after five failures in a row the destination is paused, /metrics shows tagrelay_destination_paused_seconds > 0, and the vendor hears no more than one probe meanwhile."""
    receiver = Receiver([answer(503)] * 1000)
    url = await receiver_app(aiohttp_server, receiver)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10.toml").write_text(
        f'[destinations.flaky]\ntype = "webhook"\nurl = "{url}"\n\n[[routes]]\nname = "all"\nto = ["flaky"]\n',
        encoding="utf-8",
    )
    settings = Settings(rules_dir=rules_dir, data_dir=tmp_path / "data", retry_cap_secs=0.05, cookie_secure=False)
    app = make_app(settings, load_rules(rules_dir))
    client = await aiohttp_client(app)
    hit = await client.post("/e", data=orjson.dumps(browser_hit("b1")), headers={"User-Agent": BROWSER_UA})
    assert hit.status == 204

    paused = 0.0
    deadline = time.monotonic() + 20
    while paused <= 0 and time.monotonic() < deadline:
        text = await (await client.get("/metrics")).text()
        line = next((x for x in text.splitlines() if x.startswith('tagrelay_destination_paused_seconds{destination="flaky"}')), "")
        paused = float(line.rsplit(" ", 1)[1]) if line else 0.0
        seen = len(receiver.arrivals)
        await asyncio.sleep(0.1)

    assert paused > 0
    # proxy.delivery.Breaker default: opens after 5 failed requests; one probe per cool-down.
    assert seen in (5, 6)
    await asyncio.sleep(1.0)  # well inside the 5 s pause: nothing more is sent
    assert len(receiver.arrivals) in (5, 6)


# -- 2. a real server process, killed under load ------------------------------


async def test_kill_9_under_load_loses_no_accepted_event(aiohttp_server, tmp_path):
    """After kill -9 mid-load and a restart, every event answered 204 is at both stand-ins or still queued."""
    meta, hook, rules = await standins(aiohttp_server)
    svc = service(tmp_path, rules)
    await asyncio.to_thread(svc.start)
    try:

        async def kill() -> None:
            svc.kill9()

        accepted = await load(svc.url, 2000, prefix="k9", when=lambda n: n >= 700, then=kill)
        await asyncio.to_thread(svc.start)
        got, rows = await settle(svc.data_dir, lambda: {"meta": meta_ids(meta), "hook": list(hook.received)}, accepted)
    finally:
        await asyncio.to_thread(svc.stop)

    assert len(accepted) >= 700
    assert missing(accepted, got, rows) == {"meta": 0, "hook": 0}
    dups = duplicates(got, rows)
    assert all(dups[d] <= LEASE_BOUND[d] for d in dups), dups
    assert meta[STANDIN].problems == []


async def test_kill_9_outbox_drains_soon_after_restart(aiohttp_server, tmp_path):
    """Rows the killed process had in flight are sent within 20 s of the restart, so the stand-in gets every accepted event."""
    _meta, hook, rules = await standins(aiohttp_server, hook_delay_secs=0.3)
    svc = service(tmp_path, rules)
    await asyncio.to_thread(svc.start)
    try:

        killed: list[int] = []

        async def kill() -> None:
            killed.append(hook.in_progress)
            svc.kill9()

        # Killed while the slow webhook holds requests open: their rows are leased.
        accepted = await load(svc.url, 600, prefix="k9d", when=lambda n: n >= 300 and hook.in_progress > 0, then=kill)
        assert killed and killed[0] > 0
        hook.delay_secs = 0.0
        await asyncio.to_thread(svc.start)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not accepted <= set(hook.received):
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(svc.stop)

    assert accepted - set(hook.received) == set()


async def test_kill_term_under_load_loses_nothing_and_sends_nothing_twice(aiohttp_server, tmp_path):
    """SIGTERM mid-load: the process exits within the drain bound, holds no leases, and after a restart each accepted event arrived exactly once."""
    meta, hook, rules = await standins(aiohttp_server)
    svc = service(tmp_path, rules)
    await asyncio.to_thread(svc.start)
    try:

        async def term() -> None:
            svc.signal(signal.SIGTERM)

        accepted = await load(svc.url, 2000, prefix="term", when=lambda n: n >= 700, then=term)
        # Delivery.stop drains for up to 10 s; 25 s bounds aiohttp's own shutdown too.
        code = await asyncio.to_thread(svc.wait, 25)
        leased_at_exit = [e for rs in queued(svc.data_dir).values() for e, leased in rs if leased > time.time()]
        await asyncio.to_thread(svc.start)
        got, rows = await settle(svc.data_dir, lambda: {"meta": meta_ids(meta), "hook": list(hook.received)}, accepted)
    finally:
        await asyncio.to_thread(svc.stop)

    assert code == 0, svc.log()
    assert leased_at_exit == []
    assert len(accepted) >= 700
    assert {d: sorted(Counter(ids).values()) == [1] * len(accepted) and set(ids) == accepted for d, ids in got.items()} == {
        "meta": True,
        "hook": True,
    }
    assert rows == {"meta": [], "hook": []}


async def test_one_of_two_workers_killed_is_restarted_and_loses_nothing(aiohttp_server, tmp_path):
    """With --workers 2, kill -9 of one worker: the supervisor starts a new one and every accepted event is delivered or queued."""
    meta, hook, rules = await standins(aiohttp_server)
    svc = service(tmp_path, rules, workers=2)
    await asyncio.to_thread(svc.start)
    try:
        deadline = time.monotonic() + 20
        while len(svc.worker_pids()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        before = svc.worker_pids()
        victim = before[0]

        async def kill_one() -> None:
            svc.signal(signal.SIGKILL, victim)

        accepted = await load(
            svc.url, 2000, prefix="w2", when=lambda n: n >= 700, then=kill_one, stop_after_then=False
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (len(svc.worker_pids()) == 2 and victim not in svc.worker_pids()):
            await asyncio.sleep(0.1)
        after = svc.worker_pids()
        got, rows = await settle(svc.data_dir, lambda: {"meta": meta_ids(meta), "hook": list(hook.received)}, accepted)
    finally:
        await asyncio.to_thread(svc.stop)

    assert len(before) == 2 and len(after) == 2 and victim not in after, (before, after, svc.log())
    assert len(accepted) >= 1500  # the survivor kept answering after the kill
    assert missing(accepted, got, rows) == {"meta": 0, "hook": 0}
    dups = duplicates(got, rows)
    assert all(dups[d] <= LEASE_BOUND[d] for d in dups), dups


# -- 3. the dead-letter commands --------------------------------------------------


async def test_deadletters_replay_and_trace_commands(aiohttp_client, aiohttp_server, tmp_path):
    """A 503 then 400s make two dead letters; `deadletters` lists them by destination and reason, `replay` after the fix sends them, `trace` tells the whole story."""
    receiver = Receiver([answer(503), answer(400), answer(400)])
    url = await receiver_app(aiohttp_server, receiver)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10.toml").write_text(
        f'[destinations.crm]\ntype = "webhook"\nurl = "{url}"\n\n[[routes]]\nname = "all"\nto = ["crm"]\n',
        encoding="utf-8",
    )
    data_dir = tmp_path / "data"
    settings = Settings(rules_dir=rules_dir, data_dir=data_dir, retry_cap_secs=0.05, cookie_secure=False)
    app = make_app(settings, load_rules(rules_dir))
    client = await aiohttp_client(app)
    metrics = app[METRICS]
    # One after the other, so cli-1 meets the 503 and a 400, cli-2 a 400.
    for n, event_id in enumerate(("cli-1", "cli-2"), 1):
        hit = await client.post("/e", data=orjson.dumps(browser_hit(event_id)), headers={"User-Agent": BROWSER_UA})
        assert hit.status == 204
        await until(lambda n=n: metrics.value("tagrelay_delivery_dead_total", destination="crm") == n, "a dead letter")

    listed = await asyncio.to_thread(run_cli, ["deadletters", "--destination", "crm"], data_dir)
    receiver.script.clear()  # the fix: the receiver accepts from now on
    replayed = await asyncio.to_thread(run_cli, ["replay", "--destination", "crm"], data_dir)
    await until(lambda: sorted(receiver.received) == ["cli-1", "cli-2"], "the replayed events to arrive")
    await until(lambda: metrics.value("tagrelay_delivery_sent_total", destination="crm") == 2, "the sends recorded")
    traced = await asyncio.to_thread(run_cli, ["trace", "cli-1"], data_dir)
    after = await asyncio.to_thread(run_cli, ["deadletters"], data_dir)

    assert listed.returncode == 0, listed.stderr
    assert "crm: 2 event(s): http 400" in listed.stdout and "2 dead letter(s)" in listed.stdout
    assert {"cli-1", "cli-2"} <= set(listed.stdout.split())
    assert (replayed.returncode, replayed.stdout.split("\n")[0]) == (
        0,
        "queued 2 dead letter(s) again; a running tagrelay sends them within a second",
    )
    assert traced.returncode == 0, traced.stderr
    assert [line.split()[3] for line in traced.stdout.splitlines()] == ["queued", "retry", "dead", "replayed", "sent"]
    assert after.stdout.strip() == "no dead letters"


# -- signals at awkward moments ------------------------------------------------


async def _stop_mid_delivery(aiohttp_server, tmp_path: Path, workers: int, send_stop: Callable[[Service], None]) -> tuple[int | None, list[str], Service]:
    """Start, load until the slow webhook holds requests, run ``send_stop``; the exit code and rows still leased at exit."""
    _meta, hook, rules = await standins(aiohttp_server, hook_delay_secs=0.5)
    svc = service(tmp_path, rules, workers=workers, own_process_group=True)
    await asyncio.to_thread(svc.start)
    try:

        async def stop() -> None:
            await asyncio.to_thread(send_stop, svc)  # the stand-ins keep answering meanwhile

        await load(svc.url, 400, prefix="sig", when=lambda n: n >= 100 and hook.in_progress > 0, then=stop)
        code = await asyncio.to_thread(svc.wait, 30)
        leased = [e for rs in queued(svc.data_dir).values() for e, until in rs if until > time.time()]
    finally:
        await asyncio.to_thread(svc.stop)
    return code, leased, svc


async def test_a_second_sigterm_does_not_cut_the_graceful_stop_short(aiohttp_server, tmp_path):
    """SIGTERM, then another while requests are in flight: still exit 0 with every lease given back."""

    def twice(svc: Service) -> None:
        svc.signal(signal.SIGTERM)
        time.sleep(0.2)
        svc.signal(signal.SIGTERM)

    code, leased, svc = await _stop_mid_delivery(aiohttp_server, tmp_path, 1, twice)
    assert code == 0, svc.log()
    assert leased == []


async def test_ctrl_c_with_two_workers_stops_each_worker_gracefully(aiohttp_server, tmp_path):
    """^C reaches the supervisor and both workers (one process group): exit 0, every lease given back."""
    code, leased, svc = await _stop_mid_delivery(aiohttp_server, tmp_path, 2, lambda svc: os.killpg(svc.pid, signal.SIGINT))
    assert code == 0, svc.log()
    assert leased == []


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_during_the_stop_changes_nothing(aiohttp_server, tmp_path, workers):
    """SIGTERM followed by a stream of SIGHUPs (a reload script racing a deploy): exit 0, every lease given back."""

    def term_then_hups(svc: Service) -> None:
        svc.signal(signal.SIGTERM)
        for _ in range(100):
            try:
                for pid in {svc.pid, *svc.worker_pids()}:
                    os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                return
            time.sleep(0.005)

    code, leased, svc = await _stop_mid_delivery(aiohttp_server, tmp_path, workers, term_then_hups)
    assert code == 0, svc.log()
    assert leased == []


@pytest.mark.parametrize("encoding", [b"", b"Content-Encoding: gzip\r\n"], ids=["plain", "gzip"])
def test_a_client_gone_mid_body_logs_no_error(tmp_path, encoding):
    """Headers promise 10,000 bytes, 100 come, the client closes (a beacon cut off as a page unloads): no ERROR."""
    import socket

    svc = service(tmp_path, f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n')
    svc.env["TAGRELAY_LOG_LEVEL"] = "DEBUG"  # below DEBUG the service silences aiohttp.server, where such errors go
    svc.start()
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", svc.port)) as sock:
                sock.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\n" + encoding + b"Content-Length: 10000\r\n\r\n" + b"{" * 100)
        time.sleep(0.5)  # the handlers see the reads fail and answer no one
        request = urllib.request.Request(svc.url + "/e", data=orjson.dumps(browser_hit("after")), headers={"User-Agent": BROWSER_UA})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 204
    finally:
        svc.stop()
    assert " ERROR " not in svc.log() and "Traceback" not in svc.log(), svc.log()


def test_workers_stop_gracefully_when_their_supervisor_is_killed(tmp_path):
    """kill -9 of the supervisor: its workers stop as on SIGTERM (no one would restart them, and they hold the port)."""
    svc = service(tmp_path, f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n', workers=2)
    svc.start()
    workers = svc.worker_pids()
    assert len(workers) == 2
    svc.signal(signal.SIGKILL)
    svc.wait(10)
    deadline = time.monotonic() + 20
    try:
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []
        assert sum(line.endswith("stopped") for line in svc.log().splitlines()) == 2, svc.log()
    finally:
        for pid in workers:  # left running, they would hold the port for the rest of the run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_graceful_stop_says_it_is_stopping_and_then_stopped(tmp_path, workers):
    """SIGTERM: each worker logs that it is stopping and, once its outbox is closed, that it stopped."""
    svc = service(tmp_path, f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n', workers=workers)
    svc.start()
    svc.stop()
    lines = svc.log().splitlines()
    assert [sum(line.endswith(what) for line in lines) for what in ("finishing deliveries in flight", "stopped")] == [workers, workers]


def test_sigterm_while_the_supervisor_forks_a_worker_stops_everything(tmp_path):
    """SIGTERM the moment the first worker process exists: the supervisor stops it too and exits 0."""
    svc = service(tmp_path, f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n', workers=2)
    svc.launch()
    try:
        children = Path(f"/proc/{svc.pid}/task/{svc.pid}/children")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not children.read_text().split():
            pass  # no sleep: the signal must land while the supervisor is still in its fork
        assert children.read_text().split(), "no worker started"
        svc.signal(signal.SIGTERM)
        code = svc.wait(20)
    finally:
        svc.stop()
    assert code == 0, svc.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_while_serve_is_still_starting_exits_0(tmp_path, workers):
    """SIGTERM as soon as serve has read the rules (before any server runs): a clean exit 0, not a kill."""
    rules = (
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/e.jsonl"\n[[routes]]\nto = ["log"]\n'
        # A destination without its token: serve prints a warning as it reads the rules.
        '[destinations.meta]\ntype = "meta_capi"\noptional = true\npixel_id = "1"\naccess_token = "${NO_SUCH_TOKEN}"\n'
    )
    svc = service(tmp_path, rules, workers=workers)
    svc.launch()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "warning:" not in svc.log():
            pass  # no sleep: the signal should land while serve is still starting
        svc.signal(signal.SIGTERM)
        code = svc.wait(20)
    finally:
        svc.stop()
    assert code == 0, svc.log()
