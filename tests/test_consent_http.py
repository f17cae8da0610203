"""Consent through the HTTP endpoints: each signal source and the regional default gate destinations.

Two file destinations stand in for vendors: one needs ``ads``, one needs
``analytics``. Visitors come from Sweden (89.160.20.128, default denied) or
the USA (216.160.83.56, default granted) per MaxMind's test database, through
a trusted proxy.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from proxy.app import DELIVERY, make_app
from proxy.rules import load_rules
from proxy.settings import Settings
from tests.test_consent import tc_string

DATA = Path(__file__).parent / "data"
SE, US = "89.160.20.128", "216.160.83.56"
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"


@pytest.fixture
async def shop(aiohttp_client, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.toml").write_text(
        f"""
[destinations.ads]
type = "file"
path = "{tmp_path}/ads.jsonl"
consent = ["ads"]
[destinations.analytics]
type = "file"
path = "{tmp_path}/analytics.jsonl"
consent = ["analytics"]
[[routes]]
to = ["ads", "analytics"]
"""
    )
    settings = Settings.from_env(
        {},
        rules_dir=rules,
        data_dir=tmp_path,
        geo_db=DATA / "geo" / "GeoLite2-City-Test.mmdb",
        trusted_proxies=["127.0.0.1/32"],
    )
    client = await aiohttp_client(make_app(settings, load_rules(rules, env={})))

    async def send(ip: str, body: dict | None = None, path: str = "/e", headers: dict | None = None):
        h = {"X-Forwarded-For": ip, "User-Agent": UA, "Accept": "*/*", "Accept-Language": "en", **(headers or {})}
        if body is None:
            resp = await client.post(path, headers=h)
        else:
            resp = await client.post(path, data=orjson.dumps(body), headers=h)
        assert resp.status == 204, await resp.text()
        await client.app[DELIVERY].wait_idle(5)
        return resp

    def reached() -> set[str]:
        return {name for name in ("ads", "analytics") if (tmp_path / f"{name}.jsonl").exists()}

    async def why(event_id: str) -> dict[str, str]:
        rows = await client.app[DELIVERY].outbox.trace(event_id)
        return {r.destination: r.detail for r in rows if r.what == "skipped"}

    return send, reached, why


def hit(event_id: str, **top) -> dict:
    return {"events": [{"name": "purchase", "id": event_id}], **top}


async def test_default_denies_in_the_eea_and_the_ledger_says_why(shop):
    """No signal from Sweden: neither destination gets the event; trace names the default for SE."""
    send, reached, why = shop
    await send(SE, hit("se-1"))
    assert reached() == set()
    assert "denied by default for SE" in (await why("se-1"))["ads"]


async def test_default_grants_elsewhere(shop):
    """No signal from the USA: both destinations get the event."""
    send, reached, _ = shop
    await send(US, hit("us-1"))
    assert reached() == {"ads", "analytics"}


async def test_the_collector_consent_call_grants_per_purpose(shop):
    """A Swedish visitor who allowed analytics only reaches the analytics destination."""
    send, reached, _ = shop
    await send(SE, hit("se-2", consent={"analytics": True, "ads": False}))
    assert reached() == {"analytics"}


async def test_sec_gpc_denies_ads_even_over_a_grant(shop):
    """Sec-GPC: 1 keeps ads away although the page granted them; analytics still goes."""
    send, reached, why = shop
    await send(US, hit("us-2", consent={"analytics": True, "ads": True}), headers={"Sec-GPC": "1"})
    assert reached() == {"analytics"}
    assert "GPC" in (await why("us-2"))["ads"]


async def test_tcf_string_grants_what_its_purposes_allow(shop):
    """A TC string with consent to purposes 1 and 7 (not 8/9) opens ads only, from Sweden."""
    send, reached, _ = shop
    await send(SE, hit("se-3", tcf=tc_string(purposes=[1, 7]), gdpr=True))
    assert reached() == {"ads"}


@pytest.mark.parametrize("gcs, expected", [("G111", {"ads", "analytics"}), ("G101", {"analytics"}), ("G100", set())])
async def test_ga4_consent_mode_gcs_gates_ga4_hits(shop, gcs, expected):
    """gtag's gcs (ad_storage, analytics_storage) decides for hits sent to /g/collect from Sweden."""
    send, reached, _ = shop
    await send(SE, None, path=f"/g/collect?v=2&tid=G-X1&cid=1.2&en=purchase&gcs={gcs}")
    assert reached() == expected


async def test_without_storage_consent_no_cookies_are_set(shop):
    """Denied ads and analytics: the answer sets no cookie."""
    send, _, _ = shop
    resp = await send(SE, hit("se-4"))
    assert not resp.cookies


@pytest.mark.parametrize(
    ("consent", "cookies"),
    [
        # Meta's _fbp/_fbc and the click-ID cookie serve ads only; _ga and the session, analytics only.
        ({"analytics": True, "ads": False}, {"trid", "_ga", "trs"}),
        ({"analytics": False, "ads": True}, {"trid", "_fbp", "_fbc", "trc"}),
        ({"analytics": True, "ads": True}, {"trid", "_ga", "trs", "_fbp", "_fbc", "trc"}),
    ],
    ids=["analytics-only", "ads-only", "both"],
)
async def test_each_cookie_is_set_only_with_the_consent_of_its_purpose(shop, consent, cookies):
    """A visitor who denies ads gets no Meta or click-ID cookie; one who denies analytics, no _ga or session."""
    send, _, _ = shop
    clicks = {"fbclid": "IwAR2xYz_aBc", "gclid": "Cj0KCQ-test"}
    resp = await send(SE, hit("se-6", consent=consent, click_ids=clicks))
    assert set(resp.cookies) == cookies


async def test_gtags_client_and_session_ids_are_not_used_without_analytics_consent(shop, tmp_path):
    """gcs=G110 (ads granted, analytics denied): the event reaching ads has a one-off client ID, not gtag's, and no session."""
    send, reached, _ = shop
    await send(SE, None, path="/g/collect?v=2&tid=G-X1&cid=555.666&sid=1796420000&sct=9&en=purchase&gcs=G110")
    (event,) = [orjson.loads(line) for line in (tmp_path / "ads.jsonl").read_bytes().splitlines()]
    ids = event["context"]["ids"]
    assert reached() == {"ads"} and ids["ga_client_id"] != "555.666" and "ga_session_id" not in ids


async def test_with_consent_cookies_are_set(shop):
    """Granted analytics: the visitor cookie is set."""
    send, _, _ = shop
    resp = await send(SE, hit("se-5", consent={"analytics": True}))
    assert "trid" in resp.cookies
