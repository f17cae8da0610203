"""The server events API and `tagrelay import`, end to end into the outbox."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.app import DELIVERY, make_app
from proxy.delivery import Outbox
from proxy.rules import load_rules
from proxy.settings import Settings

ROOT = Path(__file__).parent.parent
KEY = "crm-key-0123456789abcdef"


def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/events.jsonl"\nconsent = ["ads"]\n[[routes]]\nto = ["log"]\n'
    )
    return d


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    settings = Settings.from_env({}, rules_dir=rules_dir(tmp_path), data_dir=tmp_path, api_keys=f"crm:{KEY}")
    return await aiohttp_client(make_app(settings, load_rules(settings.rules_dir, env={})))


def batch(**event) -> bytes:
    base = {"name": "purchase", "id": "ord-1", "time": int(time.time()) - 3600, "action_source": "physical_store",
            "user": {"email": "jo@example.com"}, "params": {"value": 10, "currency": "EUR"},
            "context": {"consent": {"ads": True}}}
    return orjson.dumps({"events": [{**base, **event}]})


def written(tmp_path: Path) -> list[dict]:
    path = tmp_path / "events.jsonl"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


async def test_a_keyed_batch_is_accepted_and_delivered_with_its_source(client, tmp_path):
    """With the source's key, events are queued, delivered, and carry their source and action source."""
    resp = await client.post("/api/events", data=batch(), headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 200 and (await resp.json()) == {"accepted": 1, "queued": 1}
    await client.app[DELIVERY].wait_idle(5)
    (event,) = written(tmp_path)
    assert (event["source"], event["action_source"], event["id"]) == ("crm", "physical_store", "ord-1")
    assert "jo@example.com" not in orjson.dumps(event).decode()


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-0123456789", f"Basic {KEY}"])
async def test_missing_or_wrong_key_is_401(client, header):
    """No key, a wrong key or another scheme: 401 with WWW-Authenticate, nothing queued."""
    headers = {"Authorization": header} if header else {}
    resp = await client.post("/api/events", data=batch(), headers=headers)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"


async def test_a_malformed_batch_is_a_400_naming_the_place(client):
    """An event without action_source is refused with where it is wrong."""
    body = orjson.dumps({"events": [{"name": "purchase", "id": "x", "time": int(time.time())}]})
    resp = await client.post("/api/events", data=body, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 400 and "events[0].action_source" in (await resp.json())["error"]


async def test_a_refused_batch_counts_each_of_its_events_as_rejected(client):
    """A batch of two refused because the second lacks action_source is two refused events."""
    good = {"name": "purchase", "id": "a", "time": int(time.time()), "action_source": "website"}
    body = orjson.dumps({"events": [good, {**good, "id": "b", "action_source": None}]})
    resp = await client.post("/api/events", data=body, headers={"Authorization": f"Bearer {KEY}"})
    text = await (await client.get("/metrics")).text()
    assert resp.status == 400 and 'tagrelay_events_rejected_total{reason="invalid"} 2.0' in text


async def test_a_batch_with_an_unknown_top_level_key_counts_each_of_its_events(client):
    """Three events refused because the body also has 'foo' are three refused events."""
    good = {"name": "purchase", "id": "a", "time": int(time.time()), "action_source": "website"}
    body = orjson.dumps({"events": [good, {**good, "id": "b"}, {**good, "id": "c"}], "foo": 1})
    resp = await client.post("/api/events", data=body, headers={"Authorization": f"Bearer {KEY}"})
    text = await (await client.get("/metrics")).text()
    assert resp.status == 400 and 'tagrelay_events_rejected_total{reason="invalid"} 3.0' in text


async def test_an_accepted_batch_counts_as_a_hit_answered_200(client):
    """/metrics counts API requests by status, as it counts the collector's."""
    resp = await client.post("/api/events", data=batch(), headers={"Authorization": f"Bearer {KEY}"})
    text = await (await client.get("/metrics")).text()
    assert resp.status == 200 and 'tagrelay_hits_total{status="200"} 1.0' in text


async def test_a_request_with_a_wrong_key_counts_as_a_hit_answered_401(client):
    """/metrics counts refused API keys too, as hits by status."""
    await client.post("/api/events", data=batch(), headers={"Authorization": "Bearer wrong-key-0123456789"})
    text = await (await client.get("/metrics")).text()
    assert 'tagrelay_hits_total{status="401"} 1.0' in text


async def test_the_same_consent_rules_apply(client, tmp_path):
    """A server event whose ads consent is denied does not reach a destination needing ads."""
    resp = await client.post("/api/events", data=batch(context={"consent": {"ads": False}}),
                             headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 200
    await client.app[DELIVERY].wait_idle(5)
    assert written(tmp_path) == []


def run_import(
    tmp_path: Path, csv_text: str, *args: str, rules: Path | None = None, outbox: bool = True, env: dict[str, str] | None = None
) -> Any:
    """``tagrelay import`` of ``csv_text`` into ``tmp_path``'s outbox (made first, as ``serve`` would, unless not ``outbox``)."""
    if outbox:
        asyncio.run(_make_outbox(tmp_path / "outbox.sqlite3"))
    csv = tmp_path / "offline.csv"
    csv.write_text(csv_text)
    return subprocess.run(
        [sys.executable, "-m", "proxy", "import", str(csv), "--source", "crm", "--rules", str(rules or rules_dir(tmp_path)), *args],
        cwd=ROOT, env={**os.environ, "TAGRELAY_DATA_DIR": str(tmp_path), **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


async def _make_outbox(path: Path) -> None:
    outbox = Outbox(path)
    await outbox.open()
    await outbox.close()


def queued(tmp_path: Path, destination: str = "log") -> list[str]:
    """Event IDs waiting for ``destination``, in queue order (read only: claiming would lease them)."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        return [r[0] for r in db.execute("SELECT event_id FROM outbox WHERE destination = ? ORDER BY id", (destination,))]
    finally:
        db.close()


HEADER = "event_name,event_id,event_time,action_source,email,value,currency,consent_ads\n"
META_ENV = {"IMPORT_TEST_PIXEL": "1234567890", "IMPORT_TEST_TOKEN": "import-test-token"}  # for rules with a Meta destination


def test_import_queues_good_rows_and_reports_bad_ones_by_line(tmp_path):
    """tagrelay import puts valid rows in the outbox and names each bad row's line."""
    now = int(time.time()) - 600
    run = run_import(
        tmp_path,
        HEADER
        + f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
        + f"purchase,ord-2,{now},nowhere,b@example.com,10,EUR,granted\n"
        + f"purchase,ord-3,{now},phone_call,c@example.com,12,EUR,granted\n",
    )
    assert run.returncode == 1, run.stderr  # 1: some rows refused, the rest queued
    assert "line 3:" in run.stderr and "imported 2 event(s)" in run.stdout
    assert queued(tmp_path) == ["ord-1", "ord-3"]


def test_import_queues_every_row_of_a_file_longer_than_one_commit(tmp_path):
    """2,500 rows go in commits of 1,000 (memory stays flat); every one of them is queued."""
    now = int(time.time()) - 600
    rows = "".join(f"purchase,ord-{i},{now},physical_store,a@example.com,10,EUR,granted\n" for i in range(2500))
    run = run_import(tmp_path, HEADER + rows)
    assert (run.returncode, run.stdout.split(" from ")[0]) == (0, "imported 2500 event(s)"), run.stderr
    assert len(queued(tmp_path)) == 2500


def test_import_where_no_service_keeps_an_outbox_refuses_rather_than_make_one(tmp_path):
    """Rows put in a new outbox that no tagrelay reads would never be sent: refused, naming the place."""
    now = int(time.time()) - 600
    run = run_import(tmp_path, HEADER + f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n", outbox=False)
    assert run.returncode == 2 and f"no outbox at {tmp_path / 'outbox.sqlite3'}" in run.stderr
    assert not (tmp_path / "outbox.sqlite3").exists()


def test_import_refuses_while_a_routed_destination_is_disabled_for_lack_of_its_variables(tmp_path):
    """The shell lacks the vendor's secrets the service has: queueing would skip that vendor for good, silently."""
    rules = tmp_path / "vendor-rules"
    rules.mkdir()
    (rules / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/events.jsonl"\n'
        '[destinations.meta]\ntype = "meta_capi"\noptional = true\npixel_id = "${IMPORT_TEST_PIXEL}"\n'
        'access_token = "${IMPORT_TEST_TOKEN}"\n[[routes]]\nto = ["log", "meta"]\n'
    )
    now = int(time.time()) - 600
    row = f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
    refused = run_import(tmp_path, HEADER + row, rules=rules)
    assert refused.returncode == 2 and "routes send to meta, disabled here" in refused.stderr
    assert "--skip-disabled" in refused.stderr and queued(tmp_path) == []
    forced = run_import(tmp_path, HEADER + row, "--skip-disabled", rules=rules)
    assert forced.returncode == 0, forced.stderr
    assert queued(tmp_path) == ["ord-1"]


def test_import_names_the_rows_a_vendor_cannot_take_before_any_request(tmp_path):
    """Website rows without a page URL: Meta would refuse each; import says so, by event ID, and queues the rest."""
    rules = tmp_path / "meta-rules"
    rules.mkdir()
    (rules / "10.toml").write_text(
        '[destinations.meta]\ntype = "meta_capi"\npixel_id = "${IMPORT_TEST_PIXEL}"\n'
        'access_token = "${IMPORT_TEST_TOKEN}"\nendpoint = "http://127.0.0.1:9"\n[[routes]]\nto = ["meta"]\n'
    )
    now = int(time.time()) - 600
    run = run_import(
        tmp_path,
        HEADER
        + f"purchase,web-1,{now},website,a@example.com,10,EUR,granted\n"
        + f"purchase,shop-1,{now},physical_store,b@example.com,10,EUR,granted\n",
        rules=rules,
        env=META_ENV,
    )
    assert run.returncode == 0, run.stderr
    assert (
        "1 event(s) not queued for meta: not expressible for meta_capi: action_source website:"
        " Meta requires event_source_url and user_data.client_user_agent (web-1)"
    ) in run.stderr
    assert queued(tmp_path, "meta") == ["shop-1"]


def test_importing_a_file_again_skips_the_rows_already_queued_and_names_them(tmp_path):
    """After fixing a bad row, the user imports the whole file again: the good rows must not go twice."""
    now = int(time.time()) - 600
    good = f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
    assert run_import(tmp_path, HEADER + good + f"purchase,ord-2,{now},nowhere,b@example.com,10,EUR,granted\n").returncode == 1
    fixed = good + f"purchase,ord-2,{now},phone_call,b@example.com,10,EUR,granted\n"
    run = run_import(tmp_path, HEADER + fixed, outbox=False)
    assert run.returncode == 0, run.stderr
    assert "1 event(s) skipped: source crm imported them before (ord-1); --again queues them anyway" in run.stderr
    assert sorted(queued(tmp_path)) == ["ord-1", "ord-2"]


def test_import_again_queues_rows_imported_before(tmp_path):
    """--again is for a user who means it (a vendor that lost them): every row is queued once more."""
    now = int(time.time()) - 600
    row = f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
    run_import(tmp_path, HEADER + row)
    assert run_import(tmp_path, HEADER + row, "--again", outbox=False).returncode == 0
    assert queued(tmp_path) == ["ord-1", "ord-1"]


def test_the_same_event_id_from_another_source_is_not_taken_for_a_repeat(tmp_path):
    """A CRM's ord-1 and a store system's ord-1 are different events: the key is source, name and ID."""
    now = int(time.time()) - 600
    row = f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
    run_import(tmp_path, HEADER + row)
    csv = tmp_path / "store.csv"
    csv.write_text(HEADER + row)
    other = subprocess.run(
        [sys.executable, "-m", "proxy", "import", str(csv), "--source", "store", "--rules", str(rules_dir(tmp_path))],
        cwd=ROOT, env={**os.environ, "TAGRELAY_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert other.returncode == 0 and "skipped" not in other.stderr
    assert queued(tmp_path) == ["ord-1", "ord-1"]


def meta_and_log_rules(tmp_path: Path) -> Path:
    """Every event to a file and to Meta (a closed port: import only queues)."""
    rules = tmp_path / "meta-log-rules"
    rules.mkdir(exist_ok=True)
    (rules / "10.toml").write_text(
        f'[destinations.log]\ntype = "file"\npath = "{tmp_path}/events.jsonl"\n'
        '[destinations.meta]\ntype = "meta_capi"\npixel_id = "${IMPORT_TEST_PIXEL}"\n'
        'access_token = "${IMPORT_TEST_TOKEN}"\nendpoint = "http://127.0.0.1:9"\n[[routes]]\nto = ["log", "meta"]\n'
    )
    return rules



def test_a_row_fixed_for_one_vendor_is_imported_again_for_that_vendor_only(tmp_path):
    """Website rows Meta could not take reached the log; with the URL and user agent added, Meta gets them, the log not twice."""
    now = int(time.time()) - 600
    head = "event_name,event_id,event_time,action_source,email,consent_ads"
    first = run_import(tmp_path, f"{head}\npurchase,web-1,{now},website,a@example.com,granted\n",
                       rules=meta_and_log_rules(tmp_path), env=META_ENV)  # fmt: skip
    assert "1 event(s) not queued for meta" in first.stderr
    fixed = (f"{head},page_url,user_agent\n"
             f"purchase,web-1,{now},website,a@example.com,granted,https://shop.example/,Mozilla/5.0\n")  # fmt: skip
    second = run_import(tmp_path, fixed, rules=meta_and_log_rules(tmp_path), env=META_ENV, outbox=False)
    assert second.returncode == 0, second.stderr
    assert "1 event(s) imported before queued only for the destinations they did not reach then (web-1)" in second.stderr
    assert (queued(tmp_path, "log"), queued(tmp_path, "meta")) == (["web-1"], ["web-1"])


def big_import(tmp_path: Path, rows: int) -> tuple[list[str], dict[str, str]]:
    """An outbox, a CSV of ``rows`` purchases, and the import command and environment for them."""
    asyncio.run(_make_outbox(tmp_path / "outbox.sqlite3"))
    now = int(time.time()) - 600
    csv = tmp_path / "big.csv"
    csv.write_text(HEADER + "".join(f"purchase,ord-{i},{now},physical_store,a@example.com,10,EUR,granted\n" for i in range(rows)))
    cmd = [sys.executable, "-m", "proxy", "import", str(csv), "--source", "crm", "--rules", str(rules_dir(tmp_path))]
    return cmd, {**os.environ, "TAGRELAY_DATA_DIR": str(tmp_path)}


def test_two_imports_of_one_file_at_once_queue_each_row_once(tmp_path):
    """Overlapping runs (a cron job and a user) take turns, so the second finds the first's rows and skips them."""
    cmd, env = big_import(tmp_path, 3000)
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [run.communicate(timeout=120)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errs
    assert sum("3000 event(s) skipped" in err for err in errs) == 1, errs  # the second found all of the first's
    ids = queued(tmp_path)
    assert (len(ids), len(set(ids))) == (3000, 3000)


def test_an_interrupted_import_says_how_far_it_got_and_a_rerun_queues_the_rest(tmp_path):
    """Ctrl-C half-way: no traceback, the count queued, and the same command again completes the file exactly once."""
    import signal

    cmd, env = big_import(tmp_path, 20000)
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not queued(tmp_path):  # the first thousand are in
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode != 0, "the import finished before the interrupt reached it: give it more rows"
    assert run.returncode == 130 and "Traceback" not in err and "interrupted after queueing" in err
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    ids = queued(tmp_path)
    assert (len(ids), len(set(ids))) == (20000, 20000)


def test_one_order_id_under_two_event_names_is_two_events_for_re_import(tmp_path):
    """A purchase and a refund sharing ord-1: both queued once; a second run skips both, not one of them."""
    now = int(time.time()) - 600
    rows = (f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n"
            f"refund,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n")  # fmt: skip
    assert run_import(tmp_path, HEADER + rows).returncode == 0
    again = run_import(tmp_path, HEADER + rows, outbox=False)
    assert "2 event(s) skipped" in again.stderr and queued(tmp_path) == ["ord-1", "ord-1"]


def test_a_refund_after_its_purchase_was_imported_is_queued_not_skipped(tmp_path):
    """The purchase ord-2 went in an earlier file; a file with the refund ord-2 and the purchase again queues the refund."""
    now = int(time.time()) - 600
    purchase = f"purchase,ord-2,{now},physical_store,a@example.com,10,EUR,granted\n"
    run_import(tmp_path, HEADER + purchase)
    later = run_import(tmp_path, HEADER + f"refund,ord-2,{now},physical_store,a@example.com,10,EUR,granted\n" + purchase,
                       outbox=False)  # fmt: skip
    assert "1 event(s) skipped" in later.stderr and "imported 1 event(s)" in later.stdout
    assert queued(tmp_path) == ["ord-2", "ord-2"]


def test_a_row_a_vendor_still_cannot_take_says_so_when_imported_again(tmp_path):
    """Half fixed (a URL, still no user agent): besides 'imported before', import says Meta still refuses it, and why."""
    now = int(time.time()) - 600
    head = "event_name,event_id,event_time,action_source,email,consent_ads"
    run_import(tmp_path, f"{head}\npurchase,web-1,{now},website,a@example.com,granted\n",
               rules=meta_and_log_rules(tmp_path), env=META_ENV)  # fmt: skip
    half = f"{head},page_url\npurchase,web-1,{now},website,a@example.com,granted,https://shop.example/\n"
    again = run_import(tmp_path, half, rules=meta_and_log_rules(tmp_path), env=META_ENV, outbox=False)
    assert "1 event(s) not queued for meta: not expressible for meta_capi: action_source website:" in again.stderr
    assert "Meta requires user_data.client_user_agent (web-1)" in again.stderr


def test_an_import_that_cannot_open_its_lock_says_so_and_queues_nothing(tmp_path):
    """Where the lock file cannot be made (here a directory is in its way): exit 2 naming it, not a traceback."""
    (tmp_path / "outbox.sqlite3.import-lock").mkdir()
    now = int(time.time()) - 600
    run = run_import(tmp_path, HEADER + f"purchase,ord-1,{now},physical_store,a@example.com,10,EUR,granted\n")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"cannot open {tmp_path / 'outbox.sqlite3.import-lock'}" in run.stderr and queued(tmp_path) == []
