"""Delivery lanes over the durable outbox: batching, retries, breaker, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson
import pytest
from aiohttp import web

from proxy.delivery import Breaker, Delivery, Outbox, QueuedRow, RetryPolicy, Row
from proxy.delivery.sender import _chunks
from proxy import __version__
from proxy.vendors.webhook import Webhook
from tests.standins import Canned

FAST = RetryPolicy(base_secs=0.01, cap_secs=0.05, max_attempts=4)


class Hook:
    """A webhook receiver that answers from a script of canned answers, then 200; each ``delay_secs`` late."""

    def __init__(self, answers: list[Canned] | None = None, delay_secs: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.user_agents: list[str | None] = []
        self.script = deque(answers or [])
        self.delay_secs = delay_secs

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.user_agents.append(request.headers.get("User-Agent"))
        await asyncio.sleep(self.delay_secs)
        return self.script.popleft().response() if self.script else web.Response(status=200)


async def hook_server(
    aiohttp_server, answers: list[Canned] | None = None, delay_secs: float = 0.0
) -> tuple[Hook, str]:
    hook = Hook(answers, delay_secs)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await aiohttp_server(app)
    return hook, f"http://127.0.0.1:{server.port}/hook"


def count(d: Delivery, what: str) -> float:
    return d.metrics.value(f"tagrelay_delivery_{what}_total", destination="hook")


def sent(d: Delivery) -> float:
    return count(d, "sent")


def row(i: int, payload: dict | None = None) -> QueuedRow:
    return QueuedRow("hook", f"e{i}", time.time(), "", payload if payload is not None else {"n": i})


async def run(tmp_path, adapter, rows, policy=FAST, breaker=None) -> Delivery:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    d = Delivery({"hook": adapter}, outbox, policy=policy, timeout_secs=2, poll_secs=0.02, breaker=breaker)
    await d.start()
    await d.accept(rows)
    assert await d.wait_idle(15)
    await d.stop()
    return d


async def test_batches_up_to_the_adapter_limit(aiohttp_server, tmp_path):
    """Seven queued events with batch = 3 go out as requests of at most 3, all delivered."""
    hook, url = await hook_server(aiohttp_server)
    d = await run(tmp_path, Webhook("hook", {"url": url, "batch": 3}), [row(i) for i in range(7)])
    assert sent(d) == 7
    assert sorted(len(orjson.loads(body)) for body in hook.bodies) == [1, 3, 3]


async def test_vendor_requests_name_tagrelay_as_their_user_agent(aiohttp_server, tmp_path):
    """A receiver's logs show who calls it: tagrelay and its version, not aiohttp's default."""
    hook, url = await hook_server(aiohttp_server)
    await run(tmp_path, Webhook("hook", {"url": url}), [row(1)])
    assert hook.user_agents == [f"tagrelay/{__version__}"]


async def test_retryable_answers_are_retried_until_ok(aiohttp_server, tmp_path):
    """503 then 429 then 200: the event is sent, retried twice, nothing dead."""
    hook, url = await hook_server(aiohttp_server, [Canned(503), Canned(429, {"Retry-After": "0"})])
    d = await run(tmp_path, Webhook("hook", {"url": url}), [row(1)])
    assert (sent(d), count(d, "retried"), count(d, "dead"), len(hook.bodies)) == (1, 2, 0, 3)


async def test_final_answer_makes_a_dead_letter_with_the_vendor_answer(aiohttp_server, tmp_path):
    """A 400 is not retried; the dead letter keeps the vendor's answer."""
    hook, url = await hook_server(aiohttp_server, [Canned(400, body={"error": "bad field"})])
    d = await run(tmp_path, Webhook("hook", {"url": url}), [row(1)])
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    (dead,) = await outbox.dead_letters()
    await outbox.close()
    assert (dead.event_id, dead.reason, len(hook.bodies)) == ("e1", "http 400", 1)
    assert "bad field" in dead.answer and count(d, "dead") == 1


async def test_a_batch_refused_whole_is_split_so_good_events_still_go(aiohttp_server, tmp_path):
    """The vendor refuses a batch of 3 for one bad event: the other two are delivered alone."""

    async def picky(request: web.Request) -> web.Response:
        body = await request.json()
        events = body if isinstance(body, list) else [body]
        return web.Response(status=400 if any(e.get("bad") for e in events) else 200)

    app = web.Application()
    app.router.add_post("/hook", picky)
    server = await aiohttp_server(app)
    rows = [row(1), row(2, {"bad": True}), row(3)]
    d = await run(tmp_path, Webhook("hook", {"url": f"http://127.0.0.1:{server.port}/hook", "batch": 3}), rows)
    assert (sent(d), count(d, "dead")) == (2, 1)


async def test_a_batch_refused_for_its_credentials_is_not_split(aiohttp_server, tmp_path):
    """A 401 for a batch of 3 is about the token, not an event: 3 dead letters from 1 request, not 4 requests."""
    hook, url = await hook_server(aiohttp_server, [Canned(401)] * 10)
    d = await run(tmp_path, Webhook("hook", {"url": url, "batch": 3}), [row(1), row(2), row(3)])
    assert (len(hook.bodies), count(d, "dead")) == (1, 3)


async def test_gives_up_after_max_attempts(aiohttp_server, tmp_path):
    """A vendor that keeps failing makes the event dead after max_attempts."""
    hook, url = await hook_server(aiohttp_server, [Canned(500)] * 10)
    d = await run(tmp_path, Webhook("hook", {"url": url}), [row(1)], breaker=Breaker(threshold=100))
    assert len(hook.bodies) == FAST.max_attempts and count(d, "dead") == 1


async def test_unreachable_vendor_is_retried_as_connection_error(tmp_path, unused_tcp_port):
    """Nobody listening: a connection error, retried, then dead with that reason."""
    await run(tmp_path, Webhook("hook", {"url": f"http://127.0.0.1:{unused_tcp_port}/x"}), [row(1)],
              breaker=Breaker(threshold=100))
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    (dead,) = await outbox.dead_letters()
    await outbox.close()
    assert dead.reason.startswith("connection:")


async def test_a_connection_error_names_the_host_and_port_but_not_the_query(tmp_path, unused_tcp_port):
    """'connection: ClientConnectorError (127.0.0.1:PORT)': where it failed, without a secret in the URL's query."""
    url = f"http://127.0.0.1:{unused_tcp_port}/x?api_secret=s3cret-value"
    await run(tmp_path, Webhook("hook", {"url": url}), [row(1)], breaker=Breaker(threshold=100))
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    (dead,) = await outbox.dead_letters()
    await outbox.close()
    assert f"(127.0.0.1:{unused_tcp_port})" in dead.reason and "s3cret" not in dead.reason


def test_breaker_opens_after_threshold_and_doubles_its_cool_down():
    """Five failures open it for base seconds; failing the probe doubles the pause."""
    b = Breaker(threshold=5, base_secs=5, cap_secs=300)
    assert [b.failure(100.0) for _ in range(5)] == [False, False, False, False, True]
    assert b.blocked(100.0) == 5 and b.probing
    assert b.failure(106.0) and b.blocked(106.0) == 10
    b.success()
    assert b.blocked(106.0) == 0 and not b.probing


def test_failures_of_requests_already_in_flight_do_not_lengthen_the_pause():
    """Requests failing together while the breaker is open are one outage: the pause stays the base one."""
    b = Breaker(threshold=5, base_secs=5, cap_secs=300)
    for _ in range(5):
        b.failure(100.0)
    assert [b.failure(100.5) for _ in range(3)] == [False, False, False]
    assert b.blocked(100.5) == 4.5


def rows_for_chunks(n: int, payload: dict) -> list[Row]:
    size = len(orjson.dumps(payload))
    return [Row(i, "d", str(i), 0.0, "", payload, 0, size=size) for i in range(n)]


def test_chunks_respect_the_byte_budget():
    """Payloads are split so each request stays under the vendor's body limit."""
    chunks = _chunks(rows_for_chunks(10, {"x": "a" * 100}), 25, 500)
    # 90% of 500 bytes leaves 450; each payload is 110 bytes plus a separator.
    assert [len(c) for c in chunks] == [4, 4, 2]


@pytest.mark.parametrize("most", [1, 3, 25])
def test_chunks_without_byte_limit_split_by_count(most):
    """Without a byte limit, chunks are cut by count only."""
    assert [len(c) for c in _chunks(rows_for_chunks(7, {}), most, None)] == [
        min(most, 7 - i) for i in range(0, 7, most)
    ]


def test_webhook_header_with_a_newline_is_a_config_error():
    """A header value with a control character is refused when rules load, not at every send."""
    from proxy.vendors.base import ConfigError

    with pytest.raises(ConfigError, match="control characters"):
        Webhook("h", {"url": "http://127.0.0.1:9/x", "headers": {"X-Token": "a\nb"}})


def test_a_webhook_body_template_reading_a_misspelt_field_is_a_config_error():
    """'{{ parms.value }}' in a body would be empty for every event: refused when rules load."""
    from proxy.vendors.base import ConfigError

    with pytest.raises(ConfigError) as info:
        Webhook("h", {"url": "http://127.0.0.1:9/x", "body": {"v": "{{ parms.value }}"}})
    ((key, problem),) = info.value.problems
    assert key == "body.v" and "template reads 'parms'" in problem and "did you mean 'params'?" in problem


def test_webhook_body_templates_read_the_canonical_payload():
    """A body sees the line a file gets: user.hashed is there, and the view's 'event' alias is not."""
    from proxy.vendors.base import ConfigError

    Webhook("h", {"url": "http://127.0.0.1:9/x", "body": {"em": "{{ user.hashed.em }}", "n": "{{ name }}"}})
    with pytest.raises(ConfigError, match="template reads 'event', which events do not have; here it is 'name'"):
        Webhook("h", {"url": "http://127.0.0.1:9/x", "body": {"n": "{{ event }}"}})


async def test_accepted_rows_are_sent_from_memory_without_claiming_them_back(aiohttp_server, tmp_path):
    """Rows this process commits go to their lane in memory: after the lane's first look, no claim is needed."""
    hook, url = await hook_server(aiohttp_server)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    claims = []
    real_claim = outbox.claim

    async def counting_claim(*args, **kwargs):
        claims.append(args)
        return await real_claim(*args, **kwargs)

    outbox.claim = counting_claim  # type: ignore[method-assign]
    d = Delivery({"hook": Webhook("hook", {"url": url})}, outbox, timeout_secs=2, poll_secs=60)
    await d.start()
    for i in range(3):
        await d.accept([row(i)])
        assert await d.wait_idle(5)
    await d.stop()
    assert len(hook.bodies) == 3
    assert len(claims) == 1  # the look at start, for rows left from before


async def test_a_lane_does_not_send_rows_held_past_half_their_lease(tmp_path):
    """A row held in memory for half its lease is left to the outbox: once the lease ends anyone may claim it."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", lease_secs=10)
    d = Delivery({"hook": Webhook("hook", {"url": "http://127.0.0.1:9/hook"})}, outbox)
    lane = d._lanes["hook"]
    now = time.time()
    lane.fresh.extend([Row(1, "hook", "old", now, "", {}, 0, now - 6, leased_until=now + 4),
                       Row(2, "hook", "new", now, "", {}, 0, now - 1, leased_until=now + 9)])  # fmt: skip
    assert [r.event_id for r in d._take_fresh(lane, 10, now)] == ["new"]


async def test_a_slow_vendor_with_one_event_per_request_gets_each_event_once(aiohttp_server, tmp_path):
    """Requests waiting for a slot past half their lease are not sent by this lane; each event goes once.

    A lane takes up to batch size x concurrency rows at a time; when each
    event needs its own request and the vendor is slow, most of them wait for
    a slot longer than the (short) lease. Sending them anyway would race the
    outbox handing them out again once the lease ends.
    """
    hook, url = await hook_server(aiohttp_server, delay_secs=0.05)
    outbox = Outbox(tmp_path / "outbox.sqlite3", lease_secs=0.6)
    await outbox.open()
    adapter = Webhook("hook", {"url": url, "batch": 25})
    d = Delivery({"hook": adapter}, outbox, timeout_secs=0.2, concurrency=2, poll_secs=0.05)
    await d.start()
    # A batch key per event, as GA4's per-visitor client_id gives (one request each).
    await d.accept([QueuedRow("hook", f"e{i}", time.time(), str(i), {"n": i}) for i in range(50)])
    assert await d.wait_idle(30)
    await d.stop()
    sent = sorted(n["n"] for b in hook.bodies for n in orjson.loads(b))
    assert sent == list(range(50))


class BrokenWebhook(Webhook):
    def build(self, payloads):
        raise KeyError("never shown")


async def test_an_adapter_bug_becomes_a_dead_letter_that_says_what_to_do(tmp_path):
    """The reason names the adapter and the replay command, and not the exception's text (it may hold payload values)."""
    d = await run(tmp_path, BrokenWebhook("hook", {"url": "http://127.0.0.1:9/hook"}), [row(1)])
    (dead,) = await d.outbox.dead_letters()
    assert "tagrelay bug in the webhook adapter (KeyError" in dead.reason
    assert "tagrelay replay --destination hook" in dead.reason and "never shown" not in dead.reason


async def test_a_stop_lets_a_request_in_flight_finish_within_its_timeout(aiohttp_server, tmp_path):
    """A vendor answering in 10.5 s, inside a 12 s timeout: stop waits for it. Cut short, the event it
    had taken would go again after the restart, a duplicate where the vendor does not deduplicate (GA4)."""
    hook, url = await hook_server(aiohttp_server, delay_secs=10.5)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    d = Delivery({"hook": Webhook("hook", {"url": url})}, outbox, policy=FAST, timeout_secs=12, poll_secs=0.02)
    await d.start()
    await d.accept([row(1)])
    async with asyncio.timeout(5):
        while not hook.bodies:
            await asyncio.sleep(0.01)
    await d.stop()
    assert (sent(d), await outbox.depth()) == (1, {})
    await outbox.close()
