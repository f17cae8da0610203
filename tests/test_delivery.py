"""Delivery lanes: batching, retries, dead letters, against a local vendor stand-in."""

from __future__ import annotations

import time

import pytest

from collections import deque

from aiohttp import web

from proxy.delivery import Delivery, Job, RetryPolicy
from proxy.delivery.sender import _chunks
from proxy.vendors.webhook import Webhook
from tests.standins import Canned

FAST = RetryPolicy(base_secs=0.01, cap_secs=0.05, max_attempts=4)


async def hook_server(aiohttp_server, answers: list[Canned] | None = None):
    """A generic webhook receiver that answers from a script, then 200."""

    class State:
        requests: list[bytes] = []
        script = deque(answers or [])

    state = State()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.requests.append(await request.read())
        return state.script.popleft().response() if state.script else web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    return state, f"http://127.0.0.1:{server.port}/hook"


def job(i: int, dest: str = "hook") -> Job:
    return Job(dest, {"n": i}, f"e{i}", time.time())


async def run(adapter, jobs, policy=FAST) -> Delivery:
    d = Delivery({"hook": adapter}, policy=policy, timeout_secs=2)
    await d.start()
    for j in jobs:
        d.put(j)
    assert await d.wait_idle(10)
    await d.stop()
    return d


async def test_batches_up_to_the_adapter_limit(aiohttp_server):
    """Seven queued events with batch = 3 go out as requests of at most 3."""
    state, url = await hook_server(aiohttp_server)
    d = await run(Webhook("hook", {"url": url, "batch": 3}), [job(i) for i in range(7)])
    assert d.counters["hook"].events_sent == 7
    assert all(body.count(b'"n"') <= 3 for body in state.requests)


async def test_retryable_answers_are_retried_until_ok(aiohttp_server):
    """503 then 429 then 200: the event is sent, retried twice, nothing dead."""
    state, url = await hook_server(aiohttp_server, [Canned(503), Canned(429, {"Retry-After": "0"})])
    d = await run(Webhook("hook", {"url": url}), [job(1)])
    c = d.counters["hook"]
    assert (c.events_sent, c.retried, c.dead, len(state.requests)) == (1, 2, 0, 3)


async def test_final_answer_makes_a_dead_letter_with_the_vendor_answer(aiohttp_server):
    """A 400 is not retried; the dead letter keeps the vendor's answer."""
    state, url = await hook_server(aiohttp_server, [Canned(400, body={"error": "bad field"})])
    d = await run(Webhook("hook", {"url": url}), [job(1)])
    (dead,) = d.dead_letters
    assert (dead.event_id, dead.reason, len(state.requests)) == ("e1", "http 400", 1)
    assert "bad field" in dead.answer


async def test_gives_up_after_max_attempts(aiohttp_server):
    """A vendor that keeps failing makes the event dead after max_attempts."""
    state, url = await hook_server(aiohttp_server, [Canned(500)] * 10)
    d = await run(Webhook("hook", {"url": url}), [job(1)])
    assert len(state.requests) == FAST.max_attempts and d.counters["hook"].dead == 1


async def test_unreachable_vendor_is_retried_as_connection_error(unused_tcp_port):
    """Nobody listening: a connection error, retried, then dead with that reason."""
    d = await run(Webhook("hook", {"url": f"http://127.0.0.1:{unused_tcp_port}/x"}), [job(1)])
    assert d.dead_letters[0].reason.startswith("connection:")


def test_chunks_respect_the_byte_budget():
    """Payloads are split so each request stays under the vendor's body limit."""
    jobs = [Job("d", {"x": "a" * 100}, str(i), 0) for i in range(10)]
    chunks = _chunks(jobs, 25, 500)
    assert sum(map(len, chunks)) == 10 and all(len(c) <= 4 for c in chunks)


@pytest.mark.parametrize("most", [1, 3, 25])
def test_chunks_without_byte_limit_split_by_count(most):
    """Without a byte limit, chunks are cut by count only."""
    jobs = [Job("d", {}, str(i), 0) for i in range(7)]
    assert [len(c) for c in _chunks(jobs, most, None)] == [min(most, 7 - i) for i in range(0, 7, most)]
