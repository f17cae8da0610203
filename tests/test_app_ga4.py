"""GA4 hits from gtag.js, through tagrelay's /g/collect endpoint, to the destinations."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from proxy.app import DELIVERY, make_app
from proxy.rules import load_rules
from proxy.settings import Settings

CAPTURES = json.loads((Path(__file__).parent / "data" / "hits" / "ga4_gcollect.json").read_text("utf-8"))


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/events.jsonl"\n[[routes]]\nto = ["log"]\n'
    )
    # Granted: these tests are about the protocol; gtag's IDs need analytics consent (test_consent_http).
    settings = Settings(rules_dir=rules, data_dir=tmp_path, consent_default="*:granted")
    return await aiohttp_client(make_app(settings, load_rules(rules, env={})))


async def replay(client, capture: dict) -> int:
    query = urlsplit(capture["url"]).query
    body = (capture.get("body") or "").encode()
    resp = await client.post(f"/g/collect?{query}", data=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
    return resp.status


def written(tmp_path: Path) -> list[dict]:
    return [orjson.loads(x) for x in (tmp_path / "events.jsonl").read_bytes().splitlines()]


async def test_multi_event_body_becomes_one_event_per_line(client, tmp_path):
    """A batched POST (two lines) arrives as two events with gtag's client and session IDs."""
    assert await replay(client, CAPTURES[22]) == 204
    assert await client.app[DELIVERY].wait_idle(5)
    events = written(tmp_path)
    assert [e["name"] for e in events] == ["page_view", "scroll"]
    assert {e["context"]["ids"]["ga_client_id"] for e in events} == {"1217002577.1663226662"}
    assert events[1]["params"]["percent_scrolled"] == 90


@pytest.mark.parametrize("index", range(27))
async def test_every_recorded_gtag_request_is_accepted(client, index):
    """Each recorded /g/collect request from real gtag.js builds is answered 204."""
    assert await replay(client, CAPTURES[index]) == 204


async def test_non_ascii_title_survives(client, tmp_path):
    """A percent-encoded UTF-8 title arrives as the same text."""
    url = "/g/collect?v=2&tid=G-X1&cid=1.2&en=page_view&dl=https%3A%2F%2Fshop.example%2F&dt=Linko%CC%88ping%20%E2%80%93%20%ED%95%9C%EA%B5%AD"
    assert (await client.post(url)).status == 204
    await client.app[DELIVERY].wait_idle(5)
    assert written(tmp_path)[0]["page"]["title"] == "Linko\u0308ping \u2013 \ud55c\uad6d"


async def test_malformed_ga4_hit_is_a_clear_400(client):
    """Invalid UTF-8 in a value is refused with where it is."""
    resp = await client.post("/g/collect?v=2&tid=G-X1&cid=1.2&en=page_view&dt=%FF")
    assert resp.status == 400 and "not valid UTF-8" in (await resp.json())["error"]


async def test_a_refused_batched_hit_counts_each_of_its_events_as_rejected(client):
    """Two body lines, the second with invalid UTF-8: 400 and two refused events."""
    body = b"en=page_view\nen=scroll&dt=%FF"
    resp = await client.post("/g/collect?v=2&tid=G-X1&cid=1.2", data=body)
    text = await (await client.get("/metrics")).text()
    assert resp.status == 400 and 'tagrelay_events_rejected_total{reason="invalid"} 2.0' in text


async def test_a_bad_query_with_batched_lines_counts_each_line_as_rejected(client):
    """Invalid UTF-8 in the query refuses all three body lines' events: three refused, as for any other reason."""
    resp = await client.post("/g/collect?v=2&tid=G-X1&cid=1.2&dt=%FF", data=b"en=a\nen=b\nen=c")
    text = await (await client.get("/metrics")).text()
    assert resp.status == 400 and 'tagrelay_events_rejected_total{reason="invalid"} 3.0' in text
