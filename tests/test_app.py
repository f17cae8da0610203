"""The HTTP service: collection endpoint, collector script, health, cookies."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from proxy.app import DELIVERY, RELOADS, RULES, SETTINGS, make_app
from proxy.rules import load_rules
from proxy.settings import Settings

GRANTED = {"analytics": True, "ads": True, "ad_personalization": True, "ad_user_data": True}
HIT = {"events": [{"name": "page_view", "id": "ev-1", "page": {"url": "https://shop.example/"}}], "consent": GRANTED}


def rules_dir(tmp_path: Path, extra: str = "", to: str = '"log"', route: str = "") -> Path:
    """A file destination 'log' (and ``extra`` destinations); one route to ``to``, with ``route``'s other keys."""
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/events.jsonl"\n{extra}\n[[routes]]\nto = [{to}]\n{route}\n'
    )
    return d


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path)
    app = make_app(settings, load_rules(settings.rules_dir, env={}))
    return await aiohttp_client(app)


def lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "events.jsonl"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


async def test_accepted_hit_is_answered_204_and_delivered(client, tmp_path):
    """A valid hit gets 204 and its event reaches the destination."""
    resp = await client.post("/e", data=orjson.dumps(HIT), headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert resp.status == 204
    assert await client.app[DELIVERY].wait_idle(5)
    assert [(x["name"], x["id"]) for x in lines(tmp_path)] == [("page_view", "ev-1")]


async def raw_request(client, method: str, path: str, head: bytes, body: bytes = b"") -> bytes:
    """One request written byte for byte (aiohttp's client would encode the headers); the status line back."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(method.encode() + b" " + path.encode() + b" HTTP/1.1\r\nHost: shop.example\r\n" + head
                 + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
    status = await reader.readline()
    writer.close()
    return status


async def test_header_bytes_that_are_not_utf8_are_stored_as_replacement_characters(client, tmp_path):
    """A Latin-1 user agent and language (real, from old clients) still deliver the event, the odd byte as U+FFFD."""
    head = b"User-Agent: Mozilla/5.0 (Linux; B\xfcro)\r\nAccept-Language: fr-\xe9\r\n"
    assert await raw_request(client, "POST", "/e", head, orjson.dumps(HIT)) == b"HTTP/1.1 204 No Content\r\n"
    assert await client.app[DELIVERY].wait_idle(5)
    (event,) = lines(tmp_path)
    assert (event["context"]["user_agent"], event["context"]["language"]) == ("Mozilla/5.0 (Linux; B\ufffdro)", "fr-\ufffd")


async def test_a_pixel_hits_referer_with_bytes_that_are_not_utf8_still_delivers_its_event(client, tmp_path):
    """GET /e?n= takes its page from the Referer; a Latin-1 byte there is U+FFFD, not a dropped event."""
    head = b"Referer: https://shop.example/b\xfcro\r\n"
    assert await raw_request(client, "GET", "/e?n=page_view", head) == b"HTTP/1.1 204 No Content\r\n"
    assert await client.app[DELIVERY].wait_idle(5)
    (event,) = lines(tmp_path)
    assert event["page"]["url"] == "https://shop.example/b\ufffdro"


async def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_its_connection_closed(aiohttp_client, tmp_path):
    """A client that sends headers and part of a body, then nothing, holds no connection past the body timeout."""
    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path, body_timeout_secs=0.2)
    client = await aiohttp_client(make_app(settings, load_rules(settings.rules_dir, env={})))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b'POST /e HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100\r\n\r\n{"events":[')
    answer = await asyncio.wait_for(reader.read(), 5)  # read() returns once the server closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body: not received within 0.2 s" in answer
    text = await (await client.get("/metrics")).text()
    assert 'tagrelay_events_rejected_total{reason="timeout"} 1.0' in text


async def test_visitor_cookie_is_httponly_secure_lax_and_long_lived(client):
    """The first-party visitor ID is set by the server as HttpOnly; Secure; SameSite=Lax, 400 days."""
    resp = await client.post("/e", data=orjson.dumps(HIT))
    cookie = resp.cookies["trid"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == 400 * 86400


async def test_fbclid_becomes_an_fbc_cookie_and_is_sent(client, tmp_path):
    """A hit with fbclid gets an _fbc cookie built from it, and the event carries it."""
    hit = {**HIT, "click_ids": {"fbclid": "IwAR2xYz_aBc"}}
    resp = await client.post("/e", data=orjson.dumps(hit))
    assert resp.cookies["_fbc"].value.endswith(".IwAR2xYz_aBc")
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path)[0]["context"]["ids"]["fbc"] == resp.cookies["_fbc"].value


async def test_script_is_served_gzipped_with_etag_and_endpoint_filled_in(client):
    """The collector comes gzipped, cacheable, with an ETag, and knows its endpoint."""
    resp = await client.get("/assets/c.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    raw = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip" and "max-age" in resp.headers["Cache-Control"]
    text = gzip.decompress(raw).decode()
    assert "__TAGRELAY_COLLECT__" not in text and '"/e"' in text
    again = await client.get("/assets/c.js", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize(
    "accept, gzipped",
    [("gzip", True), ("br, gzip;q=0.5", True), ("*", True), ("gzip;q=0", False), ("*;q=0", False),
     ("gzip;q=0, *", False), ("identity", False), ("", False)],
)  # fmt: skip
async def test_the_script_is_gzipped_only_where_accept_encoding_allows_it(client, accept, gzipped):
    """q=0 refuses a coding (RFC 9110 12.5.3): a client that says gzip;q=0 gets the plain script."""
    resp = await client.get("/assets/c.js", headers={"Accept-Encoding": accept}, auto_decompress=False)
    assert (resp.headers.get("Content-Encoding") == "gzip") is gzipped


async def test_if_none_match_star_is_answered_304(client):
    """'*' matches whatever version the server has (RFC 9110 13.1.2): nothing to send again."""
    assert (await client.get("/assets/c.js", headers={"If-None-Match": "*"})).status == 304


async def test_served_collector_is_at_most_2kb_gzipped(client):
    """The collector costs a page at most 2 KB on the wire."""
    resp = await client.get("/assets/c.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert len(await resp.read()) <= 2048


async def test_healthz(client):
    """/healthz answers 200."""
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"\xff\xfe\x00",
        b'{"events": [{"name": "x", "page": {"title": "\\udc00"}}]}',
        b'{"events": "all"}',
        b'{"events": [{"name": "' + b"a" * 5000 + b'"}]}',
        b"[" * 5000,
        orjson.dumps({"events": [{"name": "x", "params": {"k": "v" * 10_000}}]}),
        orjson.dumps({"events": [{"name": "x"}] * 500}),
    ],
)
async def test_bad_input_gets_a_clear_4xx_never_5xx(client, body):
    """Malformed, oversized or hostile hits are refused with a 4xx and a JSON error."""
    resp = await client.post("/e", data=body)
    assert 400 <= resp.status < 500
    assert "error" in await resp.json()


async def test_body_over_the_limit_is_413(client):
    """A body larger than the limit is refused before it is parsed."""
    resp = await client.post("/e", data=b"x" * (Settings().max_body_bytes + 1))
    assert resp.status == 413


async def test_get_pixel_fallback_is_accepted(client, tmp_path):
    """The noscript image (GET ?n=page_view) is a hit like any other."""
    resp = await client.get("/e?n=page_view", headers={"Referer": "https://shop.example/x"})
    assert resp.status == 204
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path)[0]["page"]["url"] == "https://shop.example/x"


async def test_answer_does_not_wait_for_a_vendor(aiohttp_client, aiohttp_server, tmp_path):
    """The hit is answered while the vendor is still holding the delivery request."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=200)

    vendor = web.Application()
    vendor.router.add_post("/hook", stuck)
    server = await aiohttp_server(vendor)
    extra = f'[destinations.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:{server.port}/hook"\n'
    settings = Settings(rules_dir=rules_dir(tmp_path, extra, to='"hook"'), data_dir=tmp_path)
    client = await aiohttp_client(make_app(settings, load_rules(settings.rules_dir, env={})))
    first = await client.post("/e", data=orjson.dumps(HIT))
    await asyncio.wait_for(arrived.wait(), 5)
    second = await client.post("/e", data=orjson.dumps(HIT))
    assert (first.status, second.status, release.is_set()) == (204, 204, False)
    release.set()
    assert await client.app[DELIVERY].wait_idle(5)


async def test_metrics_count_hits_events_and_deliveries(client):
    """/metrics shows accepted and refused hits and events delivered, in Prometheus text."""
    await client.post("/e", data=orjson.dumps(HIT))
    await client.post("/e", data=b"{")
    await client.app[DELIVERY].wait_idle(5)
    text = await (await client.get("/metrics")).text()
    assert 'tagrelay_hits_total{status="204"} 1.0' in text
    assert 'tagrelay_events_rejected_total{reason="invalid"} 1.0' in text
    assert "tagrelay_events_accepted_total 1.0" in text
    assert 'tagrelay_delivery_sent_total{destination="log"} 1.0' in text


async def test_a_refused_hit_counts_each_of_its_events_as_rejected(client):
    """A hit of three events refused for one bad event name is three refused events, not one."""
    hit = {"events": [{"name": "a"}, {"name": "b"}, {"name": "not a name"}]}
    resp = await client.post("/e", data=orjson.dumps(hit))
    text = await (await client.get("/metrics")).text()
    assert resp.status == 400 and 'tagrelay_events_rejected_total{reason="invalid"} 3.0' in text


async def test_a_hit_over_the_event_limit_counts_each_event_as_too_large(client):
    """51 events, one over the default limit of 50 per hit: 413 and 51 refused events."""
    hit = {"events": [{"name": "page_view"}] * 51}
    resp = await client.post("/e", data=orjson.dumps(hit))
    text = await (await client.get("/metrics")).text()
    assert resp.status == 413 and 'tagrelay_events_rejected_total{reason="too_large"} 51.0' in text


async def test_a_long_list_over_the_limit_counts_one_more_than_the_limit(client):
    """1,000 entries in one small request count 51 (limit 50 + 1), not 1,000."""
    resp = await client.post("/e", data=orjson.dumps({"events": [0] * 1000}))
    text = await (await client.get("/metrics")).text()
    assert resp.status == 413 and 'tagrelay_events_rejected_total{reason="too_large"} 51.0' in text


async def test_a_page_url_that_urlsplit_refuses_is_kept_with_no_host(client, tmp_path):
    """'http://[::1' (a broken IPv6 bracket) is accepted as the page's URL, with an empty host, not a 500."""
    hit = {**HIT, "events": [{"name": "page_view", "id": "ev-2", "page": {"url": "http://[::1"}}]}
    resp = await client.post("/e", data=orjson.dumps(hit))
    await client.app[DELIVERY].wait_idle(5)
    page = lines(tmp_path)[0]["page"]
    assert (resp.status, page["url"], page["host"]) == (204, "http://[::1", "")


async def test_a_gzip_body_cut_short_is_a_400_that_says_so(client):
    """A gzip stream cut short is refused with a reason, not read as 'body: empty'."""
    cut = gzip.compress(orjson.dumps(HIT))[:15]
    resp = await client.post("/e", data=cut, headers={"Content-Encoding": "gzip"})
    assert resp.status == 400 and "the gzip stream ends before its end marker (15 bytes came)" in (await resp.json())["error"]


async def test_a_gzip_body_cut_mid_line_on_gcollect_stores_no_half_written_event(client, tmp_path):
    """gtag lines cut inside the third: 400, and not the two whole lines plus half a third."""
    body = b"\n".join(b"en=line%d&ep.order=ORDER%04d" % (i, i) for i in range(30))
    packed = gzip.compress(body)
    resp = await client.post(
        "/g/collect?v=2&tid=G-ABC123&cid=1.2", data=packed[: len(packed) // 2], headers={"Content-Encoding": "gzip"}
    )
    assert resp.status == 400
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path) == []


async def test_an_undecodable_gzip_body_is_answered_400_and_logs_no_error(client, caplog):
    """Bytes that are not gzip: a 400 saying so; nothing logged as unhandled, and the server goes on."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    resp = await client.post("/e", data=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert (resp.status, (await resp.json())["error"]) == (400, "body: not valid gzip; send it plain or with valid gzip")
    assert (await client.post("/e", data=orjson.dumps(HIT))).status == 204
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_gzip_bomb_is_refused_413_once_it_decodes_past_the_limit(client):
    """5 KB of gzip that inflates to 5 MB: 413 naming the limit (it is inflated to 64 KB + 1 byte, no further)."""
    bomb = gzip.compress(b" " * 5_000_000)
    resp = await client.post("/e", data=bomb, headers={"Content-Encoding": "gzip"})
    error = (await resp.json())["error"]
    assert (resp.status, error) == (413, f"body: {len(bomb)} bytes of gzip decode to over the limit of 65536 bytes")


@pytest.mark.parametrize(
    "encoding, pack",
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, no zlib header: sent by some clients
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate"],
)
async def test_gzip_and_deflate_bodies_are_decoded(client, tmp_path, encoding, pack):
    """The encodings HTTP clients compress request bodies with (RFC 9110 8.4.1) arrive as their events."""
    resp = await client.post("/e", data=pack(orjson.dumps(HIT)), headers={"Content-Encoding": encoding})
    assert resp.status == 204
    await client.app[DELIVERY].wait_idle(5)
    assert [x["id"] for x in lines(tmp_path)] == ["ev-1"]


@pytest.mark.parametrize("second", [b"br", b"gzip"])
async def test_two_content_encoding_lines_are_one_list_and_refused_as_such(client, tmp_path, second):
    """'gzip' then 'br' on two lines means gzip,br (RFC 9110 5.3): 415, not the body read as gzip alone."""
    head = b"Content-Encoding: gzip\r\nContent-Encoding: " + second + b"\r\n"
    assert (await raw_request(client, "POST", "/e", head, gzip.compress(orjson.dumps(HIT)))).startswith(b"HTTP/1.1 415 ")
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path) == []


async def test_an_encoding_tagrelay_does_not_decode_is_a_415_in_json_and_counted(client):
    """br is refused with 415 Unsupported Media Type (RFC 9110 15.5.16), as JSON like every refusal, and counted."""
    resp = await client.post("/e", data=b"\x8b\x02\x80{}\x03", headers={"Content-Encoding": "br"})
    error = (await resp.json())["error"]
    assert (resp.status, error) == (415, "body: Content-Encoding 'br' is not supported; send it plain, gzip or deflate")
    text = await (await client.get("/metrics")).text()
    assert 'tagrelay_events_rejected_total{reason="invalid"} 1.0' in text


async def test_a_plain_body_over_the_limit_keeps_the_connection_so_a_slow_sender_gets_the_413(client):
    """Reading the rest of a plain body is cheap: aiohttp may drain it, so a client still sending reads the 413."""
    resp = await client.post("/e", data=b" " * 100_000)
    assert (resp.status, resp.headers.get("Connection")) == (413, None)


async def test_every_destination_and_reason_has_its_counters_from_the_start(client):
    """Before any event: sent, retried and dead at 0 per destination, and refused events at 0 per reason."""
    text = await (await client.get("/metrics")).text()
    for counter in ("sent", "retried", "dead"):
        assert f'tagrelay_delivery_{counter}_total{{destination="log"}} 0.0' in text, counter
    for reason in ("invalid", "too_large", "timeout", "outbox_full", "outbox_error"):
        assert f'tagrelay_events_rejected_total{{reason="{reason}"}} 0.0' in text, reason


async def test_a_bug_answered_500_is_counted_as_a_hit(client, monkeypatch):
    """The last-resort 500 shows in tagrelay_hits_total{status="500"}, so a bug is visible on a dashboard."""
    import proxy.app

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy.app, "parse_hit", broken)
    resp = await client.post("/e", data=orjson.dumps(HIT))
    text = await (await client.get("/metrics")).text()
    assert resp.status == 500 and 'tagrelay_hits_total{status="500"} 1.0' in text


@pytest.fixture
async def failing_route(aiohttp_client, tmp_path):
    """A route whose template fails at run time for every event (tagrelay check cannot know 1/0 fails)."""
    d = rules_dir(tmp_path, route='name = "broken"\nset = { "a" = "{{ 1/0 }}" }')
    settings = Settings(rules_dir=d, data_dir=tmp_path)
    return await aiohttp_client(make_app(settings, load_rules(d, env={})))


async def test_events_a_destination_cannot_take_are_counted_per_destination(failing_route):
    """Two hits answered 204 whose events never reach 'log' show as 2 in tagrelay_events_dropped_total."""
    for _ in range(2):
        assert (await failing_route.post("/e", data=orjson.dumps(HIT))).status == 204
    text = await (await failing_route.get("/metrics")).text()
    assert 'tagrelay_events_dropped_total{destination="log"} 2.0' in text


async def test_dropped_events_are_logged_once_a_minute_per_destination_with_the_reason(failing_route, caplog):
    """A WARNING names the event, the destination and the failing template; the second drop is only counted."""
    caplog.set_level(logging.WARNING, logger="proxy.app")
    for _ in range(2):
        await failing_route.post("/e", data=orjson.dumps(HIT))
    (record,) = [r for r in caplog.records if "not sent to" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "event ev-1 not sent to log: route 'broken': set.a" in record.getMessage()


async def test_outbox_depth_is_0_for_a_destination_with_nothing_waiting(client):
    """An empty outbox still shows each destination's depth and age series, at 0."""
    for _ in range(100):  # housekeeping's first pass runs as the service starts
        text = await (await client.get("/metrics")).text()
        if 'tagrelay_outbox_depth{destination="log"}' in text:
            break
        await asyncio.sleep(0.05)
    assert 'tagrelay_outbox_depth{destination="log"} 0.0' in text
    assert 'tagrelay_outbox_oldest_age_seconds{destination="log"} 0.0' in text


async def test_readyz_is_ready_while_the_outbox_takes_events(client):
    """/readyz answers 200 when events can be stored."""
    assert (await client.get("/readyz")).status == 200


async def test_full_outbox_refuses_hits_with_503_and_readyz_fails(aiohttp_client, tmp_path):
    """Past the outbox limit a hit is refused (not lost silently) and /readyz says why."""
    # A vendor that is not there: the rows stay, and the outbox fills.
    down = '[destinations.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\n'
    settings = Settings(rules_dir=rules_dir(tmp_path, down, '"hook"'), data_dir=tmp_path, outbox_max_rows=2)
    app = make_app(settings, load_rules(settings.rules_dir, env={}))
    client = await aiohttp_client(app)
    hit = {"events": [{"name": "a"}, {"name": "b"}]}
    assert (await client.post("/e", data=orjson.dumps(hit))).status == 204
    resp = await client.post("/e", data=orjson.dumps(hit))
    assert resp.status == 503 and "outbox full" in (await resp.json())["error"]
    ready = await client.get("/readyz")
    assert ready.status == 503 and "limit is 2" in (await ready.json())["reason"]


async def test_readyz_recovers_at_housekeeping_once_the_outbox_has_room(client):
    """No event reaches a service its load balancer took out; housekeeping alone must bring /readyz back."""
    import proxy.app

    outbox = client.app[DELIVERY].outbox
    outbox.full_reason = f"outbox holds {outbox.max_rows} rows, the limit is {outbox.max_rows}"  # since emptied
    await proxy.app._tidy(client.app)
    assert (await client.get("/readyz")).status == 200


async def test_a_hit_too_large_for_the_outbox_counts_each_refused_event(aiohttp_client, tmp_path):
    """A hit of two events refused because the outbox has room for one is two refused events."""
    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path, outbox_max_rows=1)
    client = await aiohttp_client(make_app(settings, load_rules(settings.rules_dir, env={})))
    resp = await client.post("/e", data=orjson.dumps({"events": [{"name": "a"}, {"name": "b"}]}))
    text = await (await client.get("/metrics")).text()
    assert resp.status == 503 and 'tagrelay_events_rejected_total{reason="outbox_full"} 2.0' in text


async def test_shims_are_served_minified_and_gzipped(client):
    """The optional pixel shims come from /assets/s.js, gzipped, under 3 KB on the wire."""
    resp = await client.get("/assets/s.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert len(await resp.read()) <= 3072


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_undecodable_content_encoding_is_a_400(client, encoding):
    """A body that claims gzip/deflate but is not is refused with 400, not a 500."""
    resp = await client.post("/e", data=b"garbage", headers={"Content-Encoding": encoding})
    assert resp.status == 400 and f"not valid {encoding}" in (await resp.json())["error"]


async def test_image_fallback_with_invalid_utf8_is_a_400(client):
    """GET ?d= with bytes that are not UTF-8 is refused like the same POST body."""
    resp = await client.get("/e?d=%7B%22events%22%3A%5B%7B%22name%22%3A%22%FF%22%7D%5D%7D")
    assert resp.status == 400


async def test_a_script_without_browser_headers_is_scored_a_bot(client, tmp_path):
    """A hit with a browser user agent but no Accept or Accept-Language headers counts as a bot."""
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
    await client.post("/e", data=orjson.dumps(HIT), headers={"User-Agent": ua, "Accept": "", "Accept-Language": ""},
                      skip_auto_headers=["Accept", "Accept-Encoding"])
    await client.app[DELIVERY].wait_idle(5)
    event = lines(tmp_path)[0]
    assert event["bot"] is True and "no_accept_language" in event["bot_reasons"]


async def test_a_browser_with_its_usual_headers_is_not_a_bot(client, tmp_path):
    """The same user agent with Accept and Accept-Language is a person."""
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
    await client.post("/e", data=orjson.dumps(HIT), headers={"User-Agent": ua, "Accept": "*/*", "Accept-Language": "sv-SE,sv;q=0.9"})
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path)[0]["bot"] is False


async def test_without_consent_no_cookie_is_set_or_read(client, tmp_path):
    """No consent signal, no geo (default policy: denied): no cookies, and no identifier leaves."""
    hit = {"events": HIT["events"]}
    resp = await client.post("/e", data=orjson.dumps(hit), headers={"Cookie": "trid=AAAAAAAAAAAAAAAAAAAAAA; _fbp=fb.1.1.1"})
    assert resp.status == 204 and not resp.cookies
    await client.app[DELIVERY].wait_idle(5)
    ids = lines(tmp_path)[0]["context"]["ids"]
    assert set(ids) == {"ga_client_id"} and lines(tmp_path)[0]["context"]["consent"]["ads"] is False


async def test_a_destination_can_get_a_truncated_ip(aiohttp_client, tmp_path):
    """ip = "truncated" gives that destination the /24 of the client's address."""
    d = tmp_path / "rules"
    d.mkdir()
    (d / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\nip = "truncated"\npath = "{tmp_path}/events.jsonl"\n[[routes]]\nto = ["log"]\n'
    )
    settings = Settings.from_env({}, rules_dir=d, data_dir=tmp_path, trusted_proxies=["127.0.0.1/32"])
    client = await aiohttp_client(make_app(settings, load_rules(d, env={})))
    await client.post("/e", data=orjson.dumps(HIT), headers={"X-Forwarded-For": "81.2.69.160"})
    await client.app[DELIVERY].wait_idle(5)
    assert lines(tmp_path)[0]["context"]["ip"] == "81.2.69.0"


async def test_racing_first_hits_of_one_browser_get_one_visitor_id(client, tmp_path):
    """Two cookie-less hits sent at once by the same browser are one visitor, with one _fbp and _ga."""
    first, second = await asyncio.gather(
        client.post("/e", data=orjson.dumps(HIT)), client.post("/e", data=orjson.dumps(HIT))
    )
    for name in ("trid", "_fbp", "_ga"):
        assert first.cookies[name].value == second.cookies[name].value, name


async def test_a_first_visit_shares_no_click_id_with_another_cookie_less_browser(client):
    """B, cookie-less from the same address and browser build just after A's ad click, gets neither A's _fbc nor its trc."""
    clicked = {**HIT, "click_ids": {"fbclid": "IwAR2xYz_aBc", "gclid": "Cj0KCQ-test"}}
    a = await client.post("/e", data=orjson.dumps(clicked))
    client.session.cookie_jar.clear()
    b = await client.post("/e", data=orjson.dumps(HIT))
    assert {"_fbc", "trc"} <= set(a.cookies) and not {"_fbc", "trc"} & set(b.cookies)


async def test_first_visits_to_two_sites_share_nothing(client):
    """Racing single flight is per site: a cookie-less hit to another host gets its own visitor ID."""
    first = await client.post("/e", data=orjson.dumps(HIT), headers={"Host": "shop.example"})
    client.session.cookie_jar.clear()
    other = await client.post("/e", data=orjson.dumps(HIT), headers={"Host": "other.example"})
    assert first.cookies["trid"].value != other.cookies["trid"].value


async def test_reloaded_rules_add_a_destination_without_a_restart(client, tmp_path):
    """After a reload that adds a destination, new events reach it; the old one keeps working."""
    from proxy.app import reload_rules

    rules = client.app[SETTINGS].rules_dir
    (rules / "20.toml").write_text(
        f'[destinations.more]\ntype = "file"\npath = "{tmp_path}/more.jsonl"\n[[routes]]\nto = ["more"]\n'
    )
    assert await reload_rules(client.app)
    await client.post("/e", data=orjson.dumps(HIT))
    await client.app[DELIVERY].wait_idle(5)
    assert len(lines(tmp_path)) == 1
    assert [orjson.loads(x)["id"] for x in (tmp_path / "more.jsonl").read_bytes().splitlines()] == [HIT["events"][0]["id"]]


async def test_a_broken_reload_says_how_to_check_the_rules(client, caplog):
    """The ERROR line names the command that lists the problems: tagrelay check <rules dir>."""
    from proxy.app import reload_rules

    rules_dir = client.app[SETTINGS].rules_dir
    (rules_dir / "20.toml").write_text("[destinations.broken\n")
    caplog.set_level(logging.ERROR, logger="proxy.app")
    await reload_rules(client.app)
    assert f"tagrelay check {rules_dir}" in caplog.text


async def test_a_broken_reload_keeps_the_running_rules(client, tmp_path):
    """A rule file with an error is not taken: the running rules go on delivering."""
    from proxy.app import reload_rules

    (client.app[SETTINGS].rules_dir / "20.toml").write_text("[destinations.broken\n")
    assert not await reload_rules(client.app)
    await client.post("/e", data=orjson.dumps(HIT))
    await client.app[DELIVERY].wait_idle(5)
    assert len(lines(tmp_path)) == 1


async def test_housekeeping_buries_rows_for_a_lost_destination_once_no_one_holds_them(client):
    """Rows the rules no longer route anywhere become dead letters at the next housekeeping pass, not never."""
    from proxy.app import _tidy
    from proxy.delivery import QueuedRow

    app = client.server.app
    outbox = app[DELIVERY].outbox
    await outbox.put([QueuedRow("gone", "e-gone", 1.0, "", {"n": 1})])
    await _tidy(app)
    assert [(d.destination, d.reason) for d in await outbox.dead_letters()] == [("gone", "destination not in the rules")]


async def test_a_reload_asked_for_as_the_service_stops_finishes_before_the_outbox_closes(
    aiohttp_server, tmp_path, caplog, monkeypatch
):
    """A reload (SIGHUP) then an immediate stop: the reload completes first, rather than failing on a closed outbox."""
    import time

    import proxy.app

    def slow_load_rules(*args, **kwargs):  # a slow disk: the stop surely comes mid-reload
        time.sleep(0.2)
        return load_rules(*args, **kwargs)

    monkeypatch.setattr(proxy.app, "load_rules", slow_load_rules)
    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path)
    server = await aiohttp_server(make_app(settings, load_rules(settings.rules_dir, env={})))
    caplog.set_level(logging.INFO, logger="proxy.app")
    reloads = server.app[RELOADS]
    reloads.request()
    running = reloads.task
    assert running is not None and not running.done()
    await server.close()
    assert running.done() and not running.cancelled() and running.exception() is None
    assert "rules reloaded" in caplog.text


async def test_a_reload_asked_for_before_the_service_starts_runs_as_it_starts(aiohttp_server, tmp_path, caplog):
    """A SIGHUP between reading the rules and starting is kept: a file edited meanwhile takes effect."""

    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path)
    app = make_app(settings, load_rules(settings.rules_dir, env={}))
    (settings.rules_dir / "20.toml").write_text(
        f'[destinations.more]\ntype = "file"\npath = "{tmp_path}/more.jsonl"\n[[routes]]\nto = ["more"]\n'
    )
    app[RELOADS].request()
    caplog.set_level(logging.INFO, logger="proxy.app")
    server = await aiohttp_server(app)
    await asyncio.wait_for(app[RELOADS].task, 5)
    assert "more" in app[RULES].current.destinations
    await server.close()


async def test_a_reload_asked_for_while_the_service_stops_is_ignored(aiohttp_server, tmp_path):
    """Once stopping, a SIGHUP starts nothing that could outlive the outbox."""
    settings = Settings(rules_dir=rules_dir(tmp_path), data_dir=tmp_path)
    server = await aiohttp_server(make_app(settings, load_rules(settings.rules_dir, env={})))
    reloads = server.app[RELOADS]
    await server.close()
    reloads.request()
    assert reloads.task is None


async def test_a_rotated_events_file_gets_the_next_events_in_a_new_file_at_its_path(client, tmp_path):
    """logrotate moves the file away: later events go to a new file at the path, not into the moved one."""
    hit = {**HIT, "events": [{"name": "page_view", "id": "before"}]}
    await client.post("/e", data=orjson.dumps(hit))
    assert await client.app[DELIVERY].wait_idle(5)
    (tmp_path / "events.jsonl").rename(tmp_path / "events.jsonl.1")
    await client.post("/e", data=orjson.dumps({**HIT, "events": [{"name": "page_view", "id": "after"}]}))
    assert await client.app[DELIVERY].wait_idle(5)
    rotated = [orjson.loads(x)["id"] for x in (tmp_path / "events.jsonl.1").read_bytes().splitlines()]
    assert (rotated, [x["id"] for x in lines(tmp_path)]) == (["before"], ["after"])


async def test_trace_says_which_file_an_event_was_appended_to(client, tmp_path):
    """A file destination's 'sent' entry names the file, not the size of the batch it went in."""
    assert (await client.post("/e", data=orjson.dumps(HIT))).status == 204
    assert await client.app[DELIVERY].wait_idle(5)
    sent = [r.detail for r in await client.app[DELIVERY].outbox.trace("ev-1") if r.what == "sent"]
    assert sent == [f"appended to {tmp_path}/events.jsonl"]


async def test_trace_lists_each_destination_a_route_queued_the_event_for(aiohttp_client, tmp_path):
    """One route to two destinations: the event's trace says queued and sent for each."""
    extra = f'[destinations.copy]\ntype = "file"\npath = "{tmp_path}/copy.jsonl"\n'
    settings = Settings(rules_dir=rules_dir(tmp_path, extra, to='"log", "copy"'), data_dir=tmp_path)
    client = await aiohttp_client(make_app(settings, load_rules(settings.rules_dir, env={})))
    assert (await client.post("/e", data=orjson.dumps(HIT))).status == 204
    assert await client.app[DELIVERY].wait_idle(5)
    steps = [(r.destination, r.what) for r in await client.app[DELIVERY].outbox.trace("ev-1")]
    assert steps[:2] == [("log", "queued"), ("copy", "queued")]
    assert sorted(steps[2:]) == [("copy", "sent"), ("log", "sent")]
