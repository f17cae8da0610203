"""The durable outbox: per-destination queues of rendered payloads on local disk.

One SQLite database (WAL mode) holds three tables:

- ``outbox``: payloads waiting to be sent, with their attempt count, the
  earliest time of their next attempt, and a lease while a worker sends them;
- ``dead``: what a vendor refused for good, with the vendor's answer;
- ``ledger``: what happened to each event (queued, skipped and why, each
  attempt and its answer), kept for ``ledger_retention_secs``.

A hit is answered only after its rows are committed (:meth:`Outbox.put`).
Puts and acknowledgements that arrive while a commit is running are
committed together in the next transaction (group commit), so one
fsync-free WAL append serves many hits and many vendor answers. SQLite's
``synchronous=NORMAL`` in WAL mode loses nothing when the process is killed;
only an operating-system crash or power cut may lose the last transactions.

Rows are committed already leased to the process that accepted them and
handed to its lanes in memory; the database is read back only for what
memory does not hold (retries, backlog, rows of a stopped process), by
claiming rows with a lease. Rows whose lease ran out (their worker died) are
claimed again. Delivery is therefore at least once: a worker killed after the
vendor accepted a batch and before it recorded that will see the batch sent
again, which vendors that deduplicate by event ID absorb.

Several processes (``tagrelay serve --workers N``) share the file. Their
write transactions take an ``flock`` on ``<outbox>.lock`` first: a waiting
writer then wakes the moment the lock is free, where SQLite's own busy
handler would sleep 1 ms, 2 ms, 5 ms... between tries and leave the cores
idle under load.

The engine is behind the small :class:`OutboxEngine` surface so that a
shared engine (Redis streams, for replicas on several machines) can replace
SQLite. TODO(issue: Redis outbox): that engine is its own issue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Protocol, Sequence

import orjson

from ..telemetry import Throttle

__all__ = [
    "DeadRow",
    "LedgerRow",
    "Outbox",
    "OutboxEngine",
    "OutboxError",
    "OutboxFull",
    "QueuedRow",
    "Row",
]

log = logging.getLogger("proxy.delivery")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    batch_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    leased_until REAL NOT NULL DEFAULT 0,
    leased_by INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    ledger_ref INTEGER NOT NULL DEFAULT 0  -- rowid of the event's ledger anchor; 0: none
);
-- In id order per destination, so a claim reads the oldest rows and stops
-- at its limit (an index led by not_before made SQLite sort every claim).
CREATE INDEX IF NOT EXISTS outbox_by_destination ON outbox (destination, id);
DROP INDEX IF EXISTS outbox_ready;
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    batch_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    answer TEXT NOT NULL,
    died REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_destination ON dead (destination, died);
CREATE TABLE IF NOT EXISTS ledger (
    event_id TEXT NOT NULL,
    at REAL NOT NULL,
    destination TEXT NOT NULL,
    what TEXT NOT NULL,
    detail TEXT NOT NULL,
    ref INTEGER  -- NULL: an event's first entry (its anchor); else the anchor's rowid
);
"""

# Indexes after the columns they need exist (older files gain them in _migrate).
# Only an event's anchor is indexed by its (random) event ID; the entries
# that follow point at the anchor's rowid, a key that only grows, so their
# index inserts append instead of landing on random pages. The ledger is the
# bulk of each hit's writes: this made it about four times cheaper. Pruning
# walks rowids, which follow time, so no index on time is needed.
# TODO(ledger index cost): each anchor still lands on a random page of
# ledger_anchor, and the cost grows with the ledger. bench/bench_outbox.py
# (3-destination hits, medians): 59 us per hit on an empty ledger, 67 us on
# one of 1M events (days of traffic at the 7-day retention), 53 us there
# without this index. Ends when an index that stays cheap (an integer hash
# of the event ID, or anchors moved in sorted batches by housekeeping)
# brings "long" back to "empty" in that benchmark.
_INDEXES = """
DROP INDEX IF EXISTS ledger_by_event;
DROP INDEX IF EXISTS ledger_by_time;
CREATE INDEX IF NOT EXISTS ledger_anchor ON ledger (event_id) WHERE ref IS NULL;
CREATE INDEX IF NOT EXISTS ledger_by_ref ON ledger (ref) WHERE ref IS NOT NULL;
"""

_MIGRATIONS = (
    ("outbox", "ledger_ref", "ALTER TABLE outbox ADD COLUMN ledger_ref INTEGER NOT NULL DEFAULT 0"),
    ("ledger", "ref", "ALTER TABLE ledger ADD COLUMN ref INTEGER"),
)


class OutboxError(Exception):
    """The outbox cannot take or keep data; the message says why."""


class OutboxFull(OutboxError):
    """The outbox is past its size limit, or the disk is full."""


@dataclass(slots=True, frozen=True)
class QueuedRow:
    """One payload to queue for one destination."""

    destination: str
    event_id: str
    event_time: float
    batch_key: str
    payload: dict[str, Any] | bytes  # bytes: already JSON
    # With bytes: the same payload as a dict, which rows leased to this
    # process then carry instead of parsing the bytes back. Nothing may
    # change it once queued.
    rendered: dict[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class Row:
    """A claimed row: what a worker sends."""

    id: int
    destination: str
    event_id: str
    event_time: float
    batch_key: str
    payload: dict[str, Any]
    attempts: int
    created: float = 0.0
    size: int = 0  # bytes of the payload's JSON as stored (for request size limits)
    ledger_ref: int = 0  # the event's ledger anchor, for the entries its delivery adds
    # When this process's lease on the row ends. With the process ID it is the
    # row's owner token: outcomes are recorded only while the token still
    # matches, so a late holder can never touch a row someone else now holds
    # (row IDs are reused once the newest row is deleted).
    leased_until: float = 0.0


@dataclass(slots=True, frozen=True)
class DeadRow:
    id: int
    destination: str
    event_id: str
    event_time: float
    attempts: int
    reason: str
    answer: str
    died: float


@dataclass(slots=True, frozen=True)
class LedgerRow:
    event_id: str
    at: float
    destination: str  # "" for event-level entries; "a,b,c" for one "queued" entry naming several
    what: str  # queued, skipped, sent, retry, dead, replayed
    detail: str
    ref: int = 0  # the rowid of the event's anchor entry; 0 makes this entry an anchor


class OutboxEngine(Protocol):
    """What delivery needs from an outbox engine."""

    lease_secs: float

    async def put(
        self, rows: Sequence[QueuedRow], ledger: Sequence[LedgerRow], lease: Collection[str] = ...
    ) -> list[Row]: ...
    async def claim(self, destination: str, limit: int, now: float) -> list[Row]: ...
    async def ack(self, rows: Sequence[Row], ledger: Sequence[LedgerRow]) -> None: ...
    async def retry(self, rows: Sequence[Row], not_before: float, ledger: Sequence[LedgerRow]) -> None: ...
    async def release(self, rows: Sequence[Row]) -> None: ...
    async def release_mine(self) -> int: ...
    async def bury(self, rows: Sequence[Row], reason: str, answer: str, ledger: Sequence[LedgerRow]) -> None: ...


class Outbox:
    """The SQLite outbox engine. All SQL runs on one thread of its own."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 1_000_000,
        lease_secs: float = 120.0,
        ledger_retention_secs: float = 7 * 86400,
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.lease_secs = lease_secs
        self.ledger_retention_secs = ledger_retention_secs
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._pending: list[tuple[Sequence[QueuedRow], Sequence[LedgerRow], Collection[str], asyncio.Future[list[Row]]]] = []
        self._acks: list[tuple[list[tuple[int, int, float]], list[LedgerRow], asyncio.Future[None]]] = []
        self._flushing = False
        self._rows_estimate = 0
        self.full_reason = ""  # set while the outbox refuses new rows
        self._throttle = Throttle()

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # Workers starting together would otherwise race to create the
            # file and switch it to WAL, and SQLite answers one of them
            # "database is locked" at once, without waiting.
            with self._writer_lock():
                db = self._setup()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"outbox {str(self.path)!r}: cannot open: {exc}") from None
        self._db = db

    def _setup(self) -> sqlite3.Connection:
        """Connect, and create or upgrade the file (under the lock)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            # Checkpoint every ~40 MB of WAL rather than SQLite's 4 MB: the
            # hot pages (the outbox's, the ledger's tail) are rewritten by
            # every commit, and a checkpoint copies each page once however
            # often it changed. Measured: -6% CPU per hit, +10% hits/s.
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.executescript(_SCHEMA)
            for table, column, ddl in _MIGRATIONS:
                if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(ddl)
            db.executescript(_INDEXES)
            self._rows_estimate = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            if self._rows_estimate >= self.max_rows:
                self.full_reason = f"outbox holds {self._rows_estimate} rows, the limit is {self.max_rows}"
            self._release_orphans(db)
        except BaseException:
            db.close()
            raise
        return db

    def _release_orphans(self, db: sqlite3.Connection) -> None:
        """Give back rows leased by processes that no longer exist (killed mid-send).

        The outbox is one machine's file, so a lease's process ID says whether
        its owner still lives; without this, such rows would wait for their
        lease to run out.
        """
        now = time.time()
        owners = [r[0] for r in db.execute(
            "SELECT DISTINCT leased_by FROM outbox WHERE leased_until > ? AND leased_by != 0", (now,)
        )]
        dead = [pid for pid in owners if not _alive(pid)]
        if dead:
            db.executemany("UPDATE outbox SET leased_until = 0, leased_by = 0 WHERE leased_by = ?", [(p,) for p in dead])
            log.info("outbox %s: released rows left leased by %d stopped process(es)", self.path, len(dead))

    async def close(self) -> None:
        while self._flushing or self._pending or self._acks:
            await asyncio.sleep(0.01)
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._thread.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError("outbox is not open")
        return self._db

    @contextlib.contextmanager
    def _writer_lock(self) -> Any:
        """The lock file every writing process takes in turn."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _tx(self) -> Any:
        """One write transaction, serialised across processes by the lock file."""
        db = self._conn()
        with self._writer_lock():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    # -- accepting -------------------------------------------------------

    async def put(
        self, rows: Sequence[QueuedRow], ledger: Sequence[LedgerRow] = (), lease: Collection[str] = ()
    ) -> list[Row]:
        """Commit ``rows`` (and their ledger entries); returns once they are durable.

        Rows for the destinations in ``lease`` are committed already leased
        to this process and returned, so that its lanes can send them from
        memory without claiming them back from the database; the rest wait to
        be claimed. Raises :class:`OutboxFull` when the outbox is past
        ``max_rows`` or the disk is full; nothing of this call is then kept.
        """
        if not rows and not ledger:
            return []
        if self._rows_estimate + len(rows) > self.max_rows:
            if self._rows_estimate < self.max_rows:
                # Room for smaller puts: refuse this one, but the outbox is not full.
                raise OutboxFull(
                    f"outbox holds {self._rows_estimate} rows; these {len(rows)} would pass its limit of {self.max_rows}"
                )
            self.full_reason = f"outbox holds {self._rows_estimate} rows, the limit is {self.max_rows}"
            raise OutboxFull(self.full_reason)
        fut: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, ledger, lease, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush(), name="outbox-commit")

    async def _flush(self) -> None:
        """Commit what is waiting, puts and acknowledgements together, until nothing waits (group commit)."""
        try:
            while self._pending or self._acks:
                batch, self._pending = self._pending, []
                acks, self._acks = self._acks, []
                held = [h for got, _, _ in acks for h in got]
                ledger = [entry for _, entries, _ in acks for entry in entries]
                try:
                    leased = await self._run(self._commit, batch, held, ledger)
                except OutboxError as exc:
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if acks:
                        # Not the acknowledgements' fault: try them alone.
                        await self._run(self._ack, held, ledger)
                else:
                    self._rows_estimate += sum(len(rows) for rows, *_ in batch)
                    if self.full_reason and self._rows_estimate < self.max_rows:
                        self.full_reason = ""
                    for (*_, fut), mine in zip(batch, leased):
                        if not fut.done():
                            fut.set_result(mine)
                self._rows_estimate = max(0, self._rows_estimate - len(held))
                for *_, done in acks:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushing = False

    def _commit(
        self,
        batch: list[tuple[Sequence[QueuedRow], Sequence[LedgerRow], Collection[str], Any]],
        acked: Sequence[tuple[int, int, float]] = (),
        acked_ledger: Sequence[LedgerRow] = (),
    ) -> list[list[Row]]:
        """One transaction for the puts in ``batch`` and the acknowledged rows; per put, the rows leased to this process."""
        now = time.time()
        pid = os.getpid()
        until = now + self.lease_secs
        values: list[tuple[Any, ...]] = [
            (r.destination, r.event_id, r.event_time, r.batch_key, _json(r.payload), now,
             *((until, pid) if r.destination in lease else (0.0, 0)))
            for rows, _, lease, _ in batch
            for r in rows
        ]  # fmt: skip
        first, numbered = 0, False
        try:
            with self._tx() as db:
                _delete_acked(db, acked, acked_ledger)
                anchors = _insert_accepted_ledger(db, [entry for _, ledger, _, _ in batch for entry in ledger])
                values = [(*v, anchors.get(v[1], 0)) for v in values]
                if values:
                    # Under the write lock, SQLite numbers new rows max(id) + 1,
                    # + 2, ... in insert order; the check below confirms it.
                    first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM outbox").fetchone()[0]
                    db.executemany(
                        "INSERT INTO outbox (destination, event_id, event_time, batch_key, payload, created,"
                        " leased_until, leased_by, ledger_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
                    last = db.execute("SELECT max(id) FROM outbox").fetchone()[0]
                    numbered = last == first + len(values) - 1
                    if not numbered:
                        # Not the IDs this process expects: leave the rows to be claimed.
                        db.execute(
                            "UPDATE outbox SET leased_until = 0, leased_by = 0 WHERE created = ? AND leased_by = ?",
                            (now, pid),
                        )
        except sqlite3.Error as exc:
            if _is_full(exc):
                self.full_reason = f"disk full: {exc}"
                self._error_once_a_minute("full", "%s; new events are refused until there is room", self.full_reason)
                raise OutboxFull(self.full_reason) from None
            self._error_once_a_minute(f"commit {exc}", "cannot commit %d row(s): %s", len(values), exc)
            raise OutboxError(f"cannot commit to the outbox: {exc}") from None
        out: list[list[Row]] = []
        i = first
        for rows, *_ in batch:
            mine: list[Row] = []
            for r in rows:
                dest, event_id, event_time, key, data, created, leased_until, _, ref = values[i - first]
                if numbered and leased_until:
                    doc = r.rendered if r.rendered is not None else orjson.loads(data)
                    mine.append(Row(i, dest, event_id, event_time, key, doc, 0, created, len(data), ref, leased_until))
                i += 1
            out.append(mine)
        return out

    # -- sending ---------------------------------------------------------

    async def claim(self, destination: str, limit: int, now: float) -> list[Row]:
        """Lease up to ``limit`` rows that are due; others cannot claim them until the lease ends."""
        result: list[Row] = await self._run(self._claim, destination, limit, now)
        return result

    def _claim(self, destination: str, limit: int, now: float) -> list[Row]:
        until = now + self.lease_secs
        try:
            with self._tx() as db:
                found = db.execute(
                    "UPDATE outbox SET leased_until = ?, leased_by = ? WHERE id IN ("
                    " SELECT id FROM outbox WHERE destination = ? AND not_before <= ? AND leased_until <= ?"
                    " ORDER BY id LIMIT ?)"
                    " RETURNING id, destination, event_id, event_time, batch_key, payload, attempts, created, ledger_ref",
                    (until, os.getpid(), destination, now, now, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            self._error_once_a_minute(f"claim {destination} {exc}", "cannot claim rows for %s: %s", destination, exc)
            return []
        rows = [Row(i, d, e, t, k, orjson.loads(p), a, c, len(p), ref, until) for i, d, e, t, k, p, a, c, ref in found]
        rows.sort(key=lambda r: r.id)
        return rows

    async def ack(self, rows: Sequence[Row], ledger: Sequence[LedgerRow] = ()) -> None:
        """The vendor took them: remove them.

        Committed with whatever else waits (other lanes' acknowledgements,
        new hits): GA4 takes one event per request, and a transaction per
        request was most of the outbox's work under load.
        """
        if not rows and not ledger:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append((_held(rows), list(ledger), fut))
        self._kick()
        await fut

    def _ack(self, held: list[tuple[int, int, float]], ledger: list[LedgerRow]) -> None:
        self._write(lambda db: _delete_acked(db, held, ledger))

    async def retry(self, rows: Sequence[Row], not_before: float, ledger: Sequence[LedgerRow] = ()) -> None:
        """Count a failed attempt and release the rows until ``not_before``."""
        await self._run(self._retry, _held(rows), not_before, list(ledger))

    def _retry(self, held: list[tuple[int, int, float]], not_before: float, ledger: list[LedgerRow]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                f"UPDATE outbox SET attempts = attempts + 1, not_before = ?, leased_until = 0, leased_by = 0 WHERE {_HELD}",
                [(not_before, *h) for h in held],
            )
            _insert_ledger(db, ledger)

        self._write(work)

    async def release(self, rows: Sequence[Row]) -> None:
        """Give rows back without counting an attempt (shutting down, circuit open)."""
        await self._run(
            self._write,
            lambda db: db.executemany(f"UPDATE outbox SET leased_until = 0, leased_by = 0 WHERE {_HELD}", _held(rows)),
        )

    async def release_mine(self) -> int:
        """Give back every row this process still holds (at a graceful stop)."""
        result: int = await self._run(self._release_mine)
        return result

    def _release_mine(self) -> int:
        try:
            with self._tx() as db:
                cur = db.execute("UPDATE outbox SET leased_until = 0, leased_by = 0 WHERE leased_by = ?", (os.getpid(),))
                released: int = cur.rowcount
        except sqlite3.Error as exc:
            log.error("outbox %s: cannot release this process's rows: %s", self.path, exc)
            return 0
        return released

    async def bury(self, rows: Sequence[Row], reason: str, answer: str, ledger: Sequence[LedgerRow] = ()) -> None:
        """Move rows to the dead letters with the vendor's answer."""
        await self._run(self._bury, list(rows), reason, answer, list(ledger))
        self._rows_estimate = max(0, self._rows_estimate - len(rows))

    def _bury(self, rows: list[Row], reason: str, answer: str, ledger: list[LedgerRow]) -> None:
        now = time.time()
        held = _held(rows)

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO dead (destination, event_id, event_time, batch_key, payload, attempts, reason, answer, died)"
                f" SELECT destination, event_id, event_time, batch_key, payload, attempts + 1, ?, ?, ? FROM outbox WHERE {_HELD}",
                [(reason, answer, now, *h) for h in held],
            )
            db.executemany(f"DELETE FROM outbox WHERE {_HELD}", held)
            _insert_ledger(db, ledger)

        self._write(work)

    def _error_once_a_minute(self, key: str, message: str, *args: Any) -> None:
        """ERROR (a human must act), but once a minute per kind of error, with a count: lanes retry every half second."""
        held = self._throttle.due(key)
        if held is not None:
            again = f" ({held} more since the last such line)" if held else ""
            log.error("outbox %s: " + message + again, self.path, *args)

    def _write(self, work: Any) -> None:
        try:
            with self._tx() as db:
                work(db)
        except sqlite3.Error as exc:
            # The rows stay leased and come back when the lease ends: an
            # event may then be sent twice, never lost.
            self._error_once_a_minute(f"record {exc}", "cannot record a delivery outcome: %s", exc)

    # -- reading (metrics, CLI) ------------------------------------------

    async def bury_unknown(self, destinations: Sequence[str]) -> dict[str, int]:
        """Move rows for destinations the rules no longer have to the dead letters.

        Such rows would otherwise wait forever and count against the limit;
        as dead letters they are listed and can be replayed once the
        destination is back.
        """
        result: dict[str, int] = await self._run(self._bury_unknown, list(destinations))
        self._rows_estimate = max(0, self._rows_estimate - sum(result.values()))
        return result

    def _bury_unknown(self, destinations: list[str]) -> dict[str, int]:
        """Rows held by no one (never leased, or the lease ended); a row another worker is sending is left to it.

        That worker gives its rows back when it reloads too (or its lease
        ends), and housekeeping calls this again while such rows remain.
        """
        marks = ",".join("?" * len(destinations)) or "''"
        now = time.time()
        where = f"destination NOT IN ({marks}) AND leased_until <= ?"
        args = [*destinations, now]
        db = self._conn()
        found = dict(db.execute(
            f"SELECT destination, count(*) FROM outbox WHERE {where} GROUP BY destination", args
        ).fetchall())
        if not found:
            return {}
        reason = "destination not in the rules"

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO ledger (event_id, at, destination, what, detail, ref)"
                f" SELECT event_id, ?, destination, 'dead', ?, NULLIF(ledger_ref, 0) FROM outbox WHERE {where}",
                [now, reason, *args],
            )
            db.execute(
                "INSERT INTO dead (destination, event_id, event_time, batch_key, payload, attempts, reason, answer, died)"
                f" SELECT destination, event_id, event_time, batch_key, payload, attempts, ?, '', ? FROM outbox WHERE {where}",
                [reason, now, *args],
            )
            db.execute(f"DELETE FROM outbox WHERE {where}", args)

        self._write(work)
        return found

    async def recheck(self) -> None:
        """Clear :attr:`full_reason` once there is room again, whether or not new events come.

        Only a commit cleared it, and a service that /readyz takes out of a
        load balancer gets no events: it stayed "not ready" for good after
        the disk had room again. Disk full: a write of 256 KB, taken back,
        shows there is room. Past ``max_rows``: the count, refreshed by
        :meth:`depth`, shows it.
        """
        if not self.full_reason:
            return
        if self.full_reason.startswith("disk full"):
            try:
                await self._run(self._probe_room)
            except sqlite3.Error:
                return
        elif self._rows_estimate >= self.max_rows:
            return
        log.info("outbox %s: there is room again; accepting events", self.path)
        self.full_reason = ""

    def _probe_room(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS room_probe (b BLOB)")
            db.execute("INSERT INTO room_probe VALUES (zeroblob(262144))")
            db.execute("DELETE FROM room_probe")

    async def depth(self, now: float | None = None) -> dict[str, tuple[int, float]]:
        """Per destination: rows waiting and the age in seconds of the oldest."""
        result: dict[str, tuple[int, float]] = await self._run(self._depth, time.time() if now is None else now)
        return result

    def _depth(self, now: float) -> dict[str, tuple[int, float]]:
        rows = self._conn().execute(
            "SELECT destination, count(*), min(created) FROM outbox GROUP BY destination"
        ).fetchall()
        self._rows_estimate = sum(n for _, n, _ in rows)
        return {d: (n, max(0.0, now - oldest)) for d, n, oldest in rows}

    async def dead_letters(
        self, destination: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[DeadRow]:
        result: list[DeadRow] = await self._run(self._dead_letters, destination, since, until)
        return result

    def _dead_letters(self, destination: str | None, since: float | None, until: float | None) -> list[DeadRow]:
        sql, args = _dead_filter(destination, since, until)
        rows = self._conn().execute(
            "SELECT id, destination, event_id, event_time, attempts, reason, answer, died FROM dead" + sql + " ORDER BY id",
            args,
        ).fetchall()
        return [DeadRow(*r) for r in rows]

    async def replay(
        self, destination: str | None = None, since: float | None = None, until: float | None = None
    ) -> int:
        """Move matching dead letters back into the outbox with a fresh attempt count."""
        result: int = await self._run(self._replay, destination, since, until)
        self._rows_estimate += result
        return result

    def _replay(self, destination: str | None, since: float | None, until: float | None) -> int:
        sql, args = _dead_filter(destination, since, until)
        now = time.time()
        moved = 0

        def work(db: sqlite3.Connection) -> None:
            nonlocal moved
            ids = [r[0] for r in db.execute("SELECT id FROM dead" + sql, args).fetchall()]
            db.executemany(
                "INSERT INTO outbox (destination, event_id, event_time, batch_key, payload, created)"
                " SELECT destination, event_id, event_time, batch_key, payload, ? FROM dead WHERE id = ?",
                [(now, i) for i in ids],
            )
            db.executemany(
                "INSERT INTO ledger (event_id, at, destination, what, detail)"
                " SELECT event_id, ?, destination, 'replayed', 'dead letter queued again' FROM dead WHERE id = ?",
                [(now, i) for i in ids],
            )
            db.executemany("DELETE FROM dead WHERE id = ?", [(i,) for i in ids])
            moved = len(ids)

        try:  # not _write: the user must hear that nothing was queued
            with self._tx() as db:
                work(db)
        except sqlite3.Error as exc:
            why = f"disk full: {exc}" if _is_full(exc) else str(exc)
            raise OutboxError(f"cannot queue the dead letters again ({why}); they stay dead letters") from None
        return moved

    async def imported(self, marks: Sequence[str], event_ids: Sequence[str]) -> dict[tuple[str, str], set[str]]:
        """Per (event ID, mark) an earlier import recorded: the destinations it queued the event for.

        From the ledger's "imported" entries (its destination field lists
        them), so within the ledger's retention.
        """
        result: dict[tuple[str, str], set[str]] = await self._run(self._imported, list(marks), list(event_ids))
        return result

    def _imported(self, marks: list[str], event_ids: list[str]) -> dict[tuple[str, str], set[str]]:
        found: dict[tuple[str, str], set[str]] = {}
        wanted = set(marks)
        for start in range(0, len(event_ids), 500):  # under SQLite's limit of bound variables
            ids = event_ids[start : start + 500]
            rows = self._conn().execute(
                "SELECT event_id, detail, destination FROM ledger WHERE ref IS NULL AND what = 'imported'"
                f" AND event_id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
            for event_id, detail, destinations in rows:
                if detail in wanted:
                    found.setdefault((event_id, detail), set()).update(d for d in destinations.split(",") if d)
        return found

    async def trace(self, event_id: str) -> list[LedgerRow]:
        result: list[LedgerRow] = await self._run(self._trace, event_id)
        return result

    def _trace(self, event_id: str) -> list[LedgerRow]:
        rows = self._conn().execute(
            "WITH anchors AS (SELECT rowid AS rid FROM ledger WHERE event_id = ? AND ref IS NULL)"
            " SELECT event_id, at, destination, what, detail, rowid FROM ledger WHERE rowid IN (SELECT rid FROM anchors)"
            " UNION ALL"
            " SELECT event_id, at, destination, what, detail, rowid FROM ledger WHERE ref IN (SELECT rid FROM anchors)"
            " ORDER BY at, rowid",
            (event_id,),
        ).fetchall()
        out: list[LedgerRow] = []
        for event, at, destinations, what, detail, _ in rows:
            # Destination names have no commas (rules._NAME): "a,b" is an entry for each.
            out.extend(LedgerRow(event, at, d, what, detail) for d in destinations.split(","))
        return out

    async def prune_ledger(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.ledger_retention_secs
        result: int = await self._run(self._prune, cutoff)
        return result

    def _prune(self, cutoff: float) -> int:
        """Remove entries older than ``cutoff``: rowids follow time, so everything below the first kept rowid.

        An event whose anchor is pruned while a later entry is kept (a retry
        days after) can no longer be traced; those entries go at the next prune.
        The newest entry always stays: with the table empty, SQLite would
        number new entries from 1 again, and entries still to come for queued
        rows would point at strangers' anchors.
        """
        with self._tx() as db:
            kept = db.execute("SELECT rowid FROM ledger WHERE at >= ? ORDER BY rowid LIMIT 1", (cutoff,)).fetchone()
            if kept is None:
                kept = db.execute("SELECT max(rowid) FROM ledger").fetchone()
            return int(db.execute("DELETE FROM ledger WHERE rowid < ?", (kept[0] or 0,)).rowcount)


def _json(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else orjson.dumps(payload)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# Rows this process still holds: each row's ID and its owner token (process,
# lease end), the parameters :func:`_held` gives. A row it no longer holds is
# someone else's now (IDs are reused), so every outcome is recorded with this.
_HELD = "id = ? AND leased_by = ? AND leased_until = ?"


def _held(rows: Sequence[Row]) -> list[tuple[int, int, float]]:
    pid = os.getpid()
    return [(r.id, pid, r.leased_until) for r in rows]


def _delete_acked(db: sqlite3.Connection, held: Sequence[tuple[int, int, float]], ledger: Sequence[LedgerRow]) -> None:
    """Delete the acknowledged rows this process still holds, and record their ledger entries."""
    db.executemany(f"DELETE FROM outbox WHERE {_HELD}", held)
    _insert_ledger(db, ledger)


def _insert_ledger(db: sqlite3.Connection, ledger: Sequence[LedgerRow]) -> None:
    """Entries about events already in the ledger (deliveries): each points at its event's anchor."""
    if ledger:
        db.executemany(
            "INSERT INTO ledger (event_id, at, destination, what, detail, ref) VALUES (?, ?, ?, ?, ?, ?)",
            [(e.event_id, e.at, e.destination, e.what, e.detail, e.ref or None) for e in ledger],
        )


def _insert_accepted_ledger(db: sqlite3.Connection, ledger: Sequence[LedgerRow]) -> dict[str, int]:
    """Entries of newly accepted events: the first per event is its anchor. Returns each event's anchor rowid."""
    anchors: dict[str, int] = {}
    rest: list[LedgerRow] = []
    for e in ledger:
        ref = anchors.get(e.event_id)
        if ref is None:
            cur = db.execute(
                "INSERT INTO ledger (event_id, at, destination, what, detail) VALUES (?, ?, ?, ?, ?)",
                (e.event_id, e.at, e.destination, e.what, e.detail),
            )
            anchors[e.event_id] = int(cur.lastrowid or 0)
        else:
            rest.append(LedgerRow(e.event_id, e.at, e.destination, e.what, e.detail, ref))
    _insert_ledger(db, rest)
    return anchors


def _dead_filter(destination: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if destination:
        clauses.append("destination = ?")
        args.append(destination)
    if since is not None:
        clauses.append("died >= ?")
        args.append(since)
    if until is not None:
        clauses.append("died < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
