"""The SQLite outbox: durable puts, leases, retries, dead letters, replay and the ledger."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.delivery import LedgerRow, Outbox, OutboxError, OutboxFull, QueuedRow


def q(i: int, dest: str = "meta") -> QueuedRow:
    return QueuedRow(dest, f"e{i}", 1000.0 + i, "", {"n": i})


async def cap_pages(box: Outbox, pages: int | None = None) -> None:
    """Stand in for a full disk: SQLite's page cap on the outbox's own connection (at its size now by default)."""
    db = box._conn()
    limit = pages or (await box._run(lambda: db.execute("PRAGMA page_count").fetchone()))[0]
    await box._run(db.execute, f"PRAGMA max_page_count = {limit}")


@pytest.fixture
async def outbox(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", lease_secs=60)
    await box.open()
    yield box
    await box.close()


async def reopen(box: Outbox) -> Outbox:
    await box.close()
    again = Outbox(box.path, lease_secs=60)
    await again.open()
    return again


async def test_put_rows_survive_a_reopen(outbox):
    """Once put() returns, the rows are on disk: a new process sees them."""
    await outbox.put([q(1), q(2)])
    again = await reopen(outbox)
    rows = await again.claim("meta", 10, now=2000.0)
    assert [(r.event_id, r.payload) for r in rows] == [("e1", {"n": 1}), ("e2", {"n": 2})]
    await again.close()


async def test_concurrent_puts_all_commit(outbox):
    """Many hits putting at once are all committed (group commit loses none)."""
    await asyncio.gather(*(outbox.put([q(i)]) for i in range(200)))
    assert (await outbox.depth())["meta"][0] == 200


async def test_claimed_rows_are_leased_until_the_lease_ends(outbox):
    """A claimed row is not claimed again before its lease ends, and is after (its worker died)."""
    await outbox.put([q(1)])
    assert len(await outbox.claim("meta", 10, now=2000.0)) == 1
    assert await outbox.claim("meta", 10, now=2030.0) == []
    assert [r.event_id for r in await outbox.claim("meta", 10, now=2061.0)] == ["e1"]


async def test_claim_takes_only_its_destination(outbox):
    """Each destination's lane sees only its own rows."""
    await outbox.put([q(1, "meta"), q(2, "ga4")])
    assert [r.event_id for r in await outbox.claim("ga4", 10, now=2000.0)] == ["e2"]


async def test_ack_removes(outbox):
    """Acknowledged rows are gone."""
    await outbox.put([q(1)])
    rows = await outbox.claim("meta", 10, now=2000.0)
    await outbox.ack(rows)
    assert await outbox.depth() == {}


async def test_retry_counts_the_attempt_and_waits(outbox):
    """A retried row comes back only after not_before, with its attempt counted."""
    await outbox.put([q(1)])
    await outbox.retry(await outbox.claim("meta", 10, now=2000.0), not_before=2100.0)
    assert await outbox.claim("meta", 10, now=2099.0) == []
    (row,) = await outbox.claim("meta", 10, now=2100.0)
    assert row.attempts == 1


async def test_release_gives_rows_back_without_an_attempt(outbox):
    """A released row (shutdown) can be claimed at once and has no attempt counted."""
    await outbox.put([q(1)])
    await outbox.release(await outbox.claim("meta", 10, now=2000.0))
    (row,) = await outbox.claim("meta", 10, now=2000.0)
    assert row.attempts == 0


async def test_bury_keeps_the_vendor_answer_and_replay_requeues(outbox):
    """A buried row is a dead letter with reason and answer; replay puts it back with fresh attempts."""
    await outbox.put([q(1), q(2, "ga4")])
    await outbox.bury(await outbox.claim("meta", 10, now=2000.0), "http 400 code 100", '{"error": "bad"}')
    (dead,) = await outbox.dead_letters()
    assert (dead.event_id, dead.reason, dead.answer, dead.attempts) == ("e1", "http 400 code 100", '{"error": "bad"}', 1)
    assert await outbox.replay(destination="ga4") == 0
    assert await outbox.replay(destination="meta") == 1
    assert await outbox.dead_letters() == []
    (row,) = await outbox.claim("meta", 10, now=3000.0)
    assert (row.event_id, row.attempts, row.payload) == ("e1", 0, {"n": 1})


async def test_dead_letters_filter_by_time(outbox):
    """Dead letters can be selected by when they died."""
    await outbox.put([q(1)])
    await outbox.bury(await outbox.claim("meta", 10, now=2000.0), "x", "")
    (dead,) = await outbox.dead_letters()
    assert await outbox.dead_letters(since=dead.died + 1) == []
    assert len(await outbox.dead_letters(until=dead.died + 1)) == 1
    assert await outbox.dead_letters(until=dead.died - 1) == []


async def test_full_outbox_refuses_with_a_clear_reason(tmp_path):
    """Past max_rows, put() raises OutboxFull and keeps nothing of that call."""
    box = Outbox(tmp_path / "o.sqlite3", max_rows=3)
    await box.open()
    await box.put([q(1), q(2)])
    with pytest.raises(OutboxFull, match="^outbox holds 2 rows; these 2 would pass its limit of 3$"):
        await box.put([q(3), q(4)])
    assert (await box.depth())["meta"][0] == 2
    await box.close()


async def test_a_put_too_large_for_the_room_left_does_not_make_the_outbox_full(tmp_path):
    """One big import refused leaves smaller puts welcome: /readyz must not take the service out for it."""
    box = Outbox(tmp_path / "o.sqlite3", max_rows=3)
    await box.open()
    with pytest.raises(OutboxFull):
        await box.put([q(i) for i in range(5)])
    assert box.full_reason == ""
    await box.put([q(1)])
    await box.close()


async def test_an_outbox_at_its_limit_is_full(tmp_path):
    """At max_rows every put is refused, and full_reason (what /readyz reports) says why."""
    box = Outbox(tmp_path / "o.sqlite3", max_rows=2)
    await box.open()
    await box.put([q(1), q(2)])
    with pytest.raises(OutboxFull):
        await box.put([q(3)])
    assert box.full_reason == "outbox holds 2 rows, the limit is 2"
    await box.close()


async def test_a_disk_full_outbox_accepts_again_once_there_is_room_without_waiting_for_an_event(tmp_path):
    """/readyz takes a full service out of the load balancer, so no event would come to clear the state: recheck does."""
    box = Outbox(tmp_path / "o.sqlite3")
    await box.open()
    await cap_pages(box)
    big = QueuedRow("meta", "e1", 1000.0, "", b"x" * 100_000, None)
    with pytest.raises(OutboxFull):
        await box.put([big])
    assert box.full_reason.startswith("disk full")
    await box.recheck()
    assert box.full_reason.startswith("disk full")  # still no room
    await cap_pages(box, 1073741823)  # room again
    await box.recheck()
    assert box.full_reason == ""
    await box.close()


async def test_a_replay_that_cannot_be_written_says_so_and_keeps_the_dead_letters(tmp_path):
    """On a full disk, replay raises rather than report a count it did not queue; the dead letters stay."""
    box = Outbox(tmp_path / "o.sqlite3")
    await box.open()
    await box.put([QueuedRow("meta", f"e{i}", 1000.0, "", {"blob": "x" * 50_000}) for i in range(3)])
    await box.bury(await box.claim("meta", 10, now=2000.0), "refused", "")
    await box.put([QueuedRow("ga4", f"f{i}", 1000.0, "", {"blob": "x" * 50_000}) for i in range(3)])  # no free pages left
    await cap_pages(box)
    with pytest.raises(OutboxError, match="cannot queue the dead letters again .disk full"):
        await box.replay()
    assert len(await box.dead_letters()) == 3
    await box.close()


async def test_a_failing_outbox_write_is_logged_once_a_minute_not_at_every_retry(outbox, caplog):
    """Lanes retry every half second; on a full disk that was an ERROR line each time, per destination."""
    import logging

    caplog.set_level(logging.ERROR, logger="proxy.delivery")
    for _ in range(3):
        await outbox._run(outbox._write, lambda db: db.execute("INSERT INTO no_such_table VALUES (1)"))
    (record,) = caplog.records
    assert "cannot record a delivery outcome: no such table: no_such_table" in record.getMessage()


async def test_a_full_disk_is_logged_once_a_minute_however_many_commits_it_refuses(tmp_path, caplog):
    """Every flush on a full disk was its own ERROR line: 291 in 20 ms in a helper's run."""
    import logging

    caplog.set_level(logging.ERROR, logger="proxy.delivery")
    box = Outbox(tmp_path / "o.sqlite3")
    await box.open()
    await cap_pages(box)
    for i in range(3):
        with pytest.raises(OutboxFull):
            await box.put([QueuedRow("meta", f"e{i}", 1000.0, "", {"blob": "x" * 100_000})])
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "disk full: database or disk is full; new events are refused until there is room"
    ]
    await box.close()


async def test_one_queued_entry_naming_several_destinations_traces_as_one_line_each(outbox):
    """plan_rows writes a route's destinations as one "queued" entry; trace gives each destination its own."""
    await outbox.put([q(1, "meta"), q(1, "ga4")], [LedgerRow("e1", 10.0, "meta,ga4", "queued", "route 'a'")])
    assert [(r.destination, r.what, r.detail) for r in await outbox.trace("e1")] == [
        ("meta", "queued", "route 'a'"), ("ga4", "queued", "route 'a'")]  # fmt: skip


async def test_ledger_traces_an_event_and_prunes_old_entries(outbox):
    """The ledger lists what happened to an event in order; entries past retention go."""
    await outbox.put([q(1)], [LedgerRow("e1", 10.0, "meta", "queued", "route 'a'")])
    rows = await outbox.claim("meta", 10, now=2000.0)
    await outbox.ack(rows, [LedgerRow("e1", 11.0, "meta", "sent", "http 200")])
    assert [(r.what, r.detail) for r in await outbox.trace("e1")] == [("queued", "route 'a'"), ("sent", "http 200")]
    assert await outbox.prune_ledger(now=10.5 + outbox.ledger_retention_secs) == 1
    assert [r.what for r in await outbox.trace("e1")] == ["sent"]


async def test_unwritable_location_is_a_clear_error(tmp_path):
    """An outbox path that cannot be created fails at open with the path in the message."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    box = Outbox(blocker / "o.sqlite3")
    with pytest.raises(OutboxError, match=f"{re.escape(str(blocker))}.*cannot open"):
        await box.open()


async def test_rows_leased_by_a_dead_process_are_released_at_open(tmp_path):
    """A restart gives back at once the rows a killed process had leased."""
    box = Outbox(tmp_path / "o.sqlite3", lease_secs=3600)
    await box.open()
    await box.put([q(1)])
    import time as _time

    assert len(await box.claim("meta", 10, now=_time.time())) == 1
    await box.close()
    db = sqlite3.connect(tmp_path / "o.sqlite3")
    db.execute("UPDATE outbox SET leased_by = 999999999")  # a process that does not exist
    db.commit()
    db.close()
    again = Outbox(tmp_path / "o.sqlite3", lease_secs=3600)
    await again.open()
    assert [r.event_id for r in await again.claim("meta", 10, now=_time.time())] == ["e1"]
    await again.close()


async def test_rows_for_a_destination_the_rules_lost_become_dead_letters(outbox):
    """Rows for a removed destination are moved to the dead letters, replayable later."""
    await outbox.put([q(1, "meta"), q(2, "gone")])
    assert await outbox.bury_unknown(["meta"]) == {"gone": 1}
    (dead,) = await outbox.dead_letters()
    assert (dead.destination, dead.reason) == ("gone", "destination not in the rules")
    assert set(await outbox.depth()) == {"meta"}


async def test_an_outbox_already_full_at_open_says_so(tmp_path):
    """Opening an outbox at its limit reports it full at once (so /readyz fails from the start)."""
    box = Outbox(tmp_path / "o.sqlite3", max_rows=1)
    await box.open()
    await box.put([q(1)])
    await box.close()
    again = Outbox(tmp_path / "o.sqlite3", max_rows=1)
    await again.open()
    assert "limit is 1" in again.full_reason
    await again.close()


async def test_put_hands_back_the_rows_it_leased_to_this_process(outbox):
    """Rows put for a destination in ``lease`` come back with their IDs, leased here; the rest wait to be claimed."""
    mine = await outbox.put([q(1, "meta"), q(2, "ga4"), q(3, "meta")], lease=["meta"])
    assert [(r.event_id, r.payload, r.attempts) for r in mine] == [("e1", {"n": 1}, 0), ("e3", {"n": 3}, 0)]
    now = mine[0].created
    assert await outbox.claim("meta", 10, now=now + 1) == []  # nobody else takes them while leased
    assert [r.event_id for r in await outbox.claim("ga4", 10, now=now + 1)] == ["e2"]
    await outbox.ack(mine)
    assert "meta" not in await outbox.depth()  # the IDs handed back are the rows' own


async def test_rows_leased_at_put_are_claimable_once_the_lease_ends(outbox):
    """A worker that leased rows at put and died leaves them to be claimed after the lease."""
    mine = await outbox.put([q(1)], lease=["meta"])
    later = mine[0].created + 61
    assert [r.event_id for r in await outbox.claim("meta", 10, now=later)] == ["e1"]


async def test_two_outboxes_on_one_file_commit_every_put(tmp_path):
    """Two processes' outboxes share a file: concurrent puts from both all commit."""
    a, b = Outbox(tmp_path / "o.sqlite3"), Outbox(tmp_path / "o.sqlite3")
    await a.open()
    await b.open()
    await asyncio.gather(*(box.put([q(i)]) for i in range(300) for box in (a, b)))
    assert (await a.depth())["meta"][0] == 600
    await a.close()
    await b.close()


async def test_trace_follows_an_event_from_acceptance_through_each_attempt(outbox):
    """Entries added at delivery point at the event's first entry; trace finds them all and no one else's."""
    await outbox.put(
        [q(1), q(2)],
        [LedgerRow("e1", 10.0, "meta", "queued", "route 'a'"), LedgerRow("e1", 10.0, "tiktok", "skipped", "no consent"),
         LedgerRow("e2", 10.0, "meta", "queued", "route 'a'")],
    )  # fmt: skip
    first = await outbox.claim("meta", 1, now=2000.0)
    await outbox.retry(first, 2001.0, [LedgerRow("e1", 11.0, "meta", "retry", "http 503", first[0].ledger_ref)])
    again = [r for r in await outbox.claim("meta", 10, now=2002.0) if r.event_id == "e1"]
    await outbox.ack(again, [LedgerRow("e1", 12.0, "meta", "sent", "http 200", again[0].ledger_ref)])
    assert [(r.destination, r.what) for r in await outbox.trace("e1")] == [
        ("meta", "queued"), ("tiktok", "skipped"), ("meta", "retry"), ("meta", "sent")]  # fmt: skip
    assert [r.what for r in await outbox.trace("e2")] == ["queued"]


async def test_an_outbox_file_of_the_earlier_layout_is_upgraded_in_place(tmp_path):
    """A file written before ledger anchors existed opens, keeps its rows, and traces its old entries."""
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, destination TEXT NOT NULL, event_id TEXT NOT NULL,
            event_time REAL NOT NULL, batch_key TEXT NOT NULL, payload BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
            leased_until REAL NOT NULL DEFAULT 0, leased_by INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
        CREATE TABLE ledger (event_id TEXT NOT NULL, at REAL NOT NULL, destination TEXT NOT NULL,
            what TEXT NOT NULL, detail TEXT NOT NULL);
        CREATE INDEX ledger_by_event ON ledger (event_id, at);
        CREATE INDEX ledger_by_time ON ledger (at);
        INSERT INTO outbox (destination, event_id, event_time, batch_key, payload, created)
            VALUES ('meta', 'old', 1.0, '', '{"n": 0}', 1.0);
        INSERT INTO ledger VALUES ('old', 1.0, 'meta', 'queued', 'route ''a''');
        INSERT INTO ledger VALUES ('old', 2.0, 'meta', 'retry', 'http 503');
    """)
    db.close()
    box = Outbox(path)
    await box.open()
    assert [r.what for r in await box.trace("old")] == ["queued", "retry"]
    (row,) = await box.claim("meta", 10, now=2000.0)
    assert (row.event_id, row.payload, row.ledger_ref) == ("old", {"n": 0}, 0)
    await box.close()


async def test_acknowledgements_and_puts_arriving_together_all_commit(outbox):
    """Acks from many requests and new puts are committed together; none is lost."""
    leased = await outbox.put([q(i) for i in range(100)], lease=["meta"])
    await asyncio.gather(*(outbox.ack([r]) for r in leased), *(outbox.put([q(i, "ga4")]) for i in range(100)))
    assert await outbox.depth() == {"ga4": (100, pytest.approx(0, abs=5))}


async def test_a_late_holder_cannot_acknowledge_a_row_someone_else_now_holds(outbox):
    """Outcomes count only while the lease is still the holder's: row IDs come back once the newest row is gone."""
    (late,) = await outbox.put([q(1)], lease=["meta"])
    (second,) = await outbox.claim("meta", 10, now=late.leased_until + 1)  # the lease ended; someone claims it
    await outbox.ack([second])
    await outbox.put([q(2)])  # a new row, which SQLite numbers like the one just deleted
    await outbox.ack([late])
    await outbox.retry([late], 0.0)
    await outbox.bury([late], "late", "")
    assert [r.event_id for r in await outbox.claim("meta", 10, now=late.leased_until + 2)] == ["e2"]
    assert await outbox.dead_letters() == []


async def test_rows_the_rules_lost_are_left_to_a_worker_still_sending_them(outbox):
    """bury_unknown takes only rows no one holds, and says so in the ledger."""
    await outbox.put([q(1, "gone"), q(2, "gone")], [LedgerRow("e1", 10.0, "gone", "queued", "route 'a'")], lease=[])
    held = await outbox.claim("gone", 1, now=time.time())  # another worker is sending e1
    assert await outbox.bury_unknown(["meta"]) == {"gone": 1}
    assert [d.event_id for d in await outbox.dead_letters()] == ["e2"]
    await outbox.release(held)  # that worker reloads and gives it back
    assert await outbox.bury_unknown(["meta"]) == {"gone": 1}
    assert [(r.what, r.detail) for r in await outbox.trace("e1")] == [
        ("queued", "route 'a'"), ("dead", "destination not in the rules")]  # fmt: skip


async def test_pruning_every_entry_does_not_renumber_the_ledger(outbox):
    """After a prune that finds every entry old, new entries still get new row numbers (no stranger's story joins)."""
    await outbox.put([q(1)], [LedgerRow("e1", 10.0, "meta", "queued", "route 'a'")])
    await outbox.prune_ledger(now=20.0 + outbox.ledger_retention_secs)
    await outbox.put([q(2)], [LedgerRow("e2", 30.0, "meta", "queued", "route 'a'")])
    (row,) = [r for r in await outbox.claim("meta", 10, now=2000.0) if r.event_id == "e1"]
    await outbox.ack([row], [LedgerRow("e1", 31.0, "meta", "sent", "http 200", row.ledger_ref)])
    assert [r.event_id for r in await outbox.trace("e2")] == ["e2"]


def _open_at_once(path: str, barrier: Any, errors: Any) -> None:
    async def go() -> None:
        box = Outbox(Path(path))
        await box.open()
        await box.close()

    barrier.wait()
    try:
        asyncio.run(go())
    except OutboxError as exc:
        errors.put(str(exc))


def test_workers_opening_a_new_outbox_at_once_all_succeed(tmp_path):
    """serve --workers N on an empty data dir: every worker opens the new file (no "database is locked")."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    exit_codes = []
    for attempt in range(24):  # the race is a matter of timing: several tries
        path = str(tmp_path / f"fresh-{attempt}" / "outbox.sqlite3")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, errors)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        exit_codes += [p.exitcode for p in procs]
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert exit_codes == [0] * 96  # none failed in another way (or hung) either
