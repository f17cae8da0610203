"""What the outbox costs per hit, on an empty ledger and on a long one (run by hand).

    python bench/bench_outbox.py [--hits 60000] [--ledger 1000000]

Each hit is what a collector hit routed to three destinations asks of the
outbox: one put of three rows (leased to this process, as the service
commits them) with their "queued" ledger entry, then the acknowledgements
with a "sent" entry each, grouped the way lanes group them. Three runs per
round, interleaved, each on a fresh copy:

- ``empty``: a new outbox;
- ``long``: the ledger first filled with ``--ledger`` events (a few days'
  worth at the default 7-day retention);
- ``long, no event-ID index``: the same without the ledger's event-ID index,
  to show what that index costs as the ledger grows.

Printed: process CPU µs per hit (user + system) per run, then medians and
their ratios to ``empty``. The machine's speed drifts, so compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from proxy.delivery.outbox import LedgerRow, Outbox, QueuedRow, Row  # noqa: E402

DESTINATIONS = ("meta", "ga4", "file")
CONCURRENT = 16  # hits in flight per group commit, about what 16 connections give one worker
PAYLOAD = orjson.dumps({
    "event_name": "PageView", "event_id": "x" * 36, "event_time": 1700000000, "action_source": "website",
    "event_source_url": "https://shop.example.com/product/mug",
    "user_data": {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                  "fbp": "fb.1.1700000000000.1234567890", "fbc": "fb.1.1700000000000.IwAR2bench"},
})  # fmt: skip


def cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prefill(path: Path, events: int) -> None:
    """Fill the ledger as days of traffic would: per event its anchor and a "sent" entry per destination.

    In transactions of 2,000 events, so that pages are laid out about as the
    service's many small commits lay them out.
    """
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    try:
        for start in range(0, events, 2_000):
            db.execute("BEGIN")
            for _ in range(min(2_000, events - start)):
                cur = db.execute(
                    "INSERT INTO ledger (event_id, at, destination, what, detail) VALUES (?, 1.0, ?, 'queued', 'route')",
                    (uuid.uuid4().hex, ",".join(DESTINATIONS)),
                )
                db.executemany(
                    "INSERT INTO ledger (event_id, at, destination, what, detail, ref)"
                    " VALUES ('', 2.0, ?, 'sent', 'http 200', ?)",
                    [(d, cur.lastrowid) for d in DESTINATIONS],
                )
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def run(path: Path, hits: int, index: bool) -> float:
    """CPU µs per hit of ``hits`` accepted and acknowledged hits on the outbox at ``path``."""
    outbox = Outbox(path)
    await outbox.open()
    if not index:
        await outbox._run(lambda: outbox._conn().execute("DROP INDEX ledger_anchor"))

    def sent(rows: list[Row], now: float) -> list[LedgerRow]:
        return [LedgerRow(r.event_id, now, r.destination, "sent", "http 200", r.ledger_ref) for r in rows]

    async def hit(now: float) -> list[Row]:
        event_id = uuid.uuid4().hex
        rows = [QueuedRow(d, event_id, now, "", PAYLOAD) for d in DESTINATIONS]
        entry = LedgerRow(event_id, now, ",".join(DESTINATIONS), "queued", "route 'all'")
        return await outbox.put(rows, [entry], DESTINATIONS)

    started = cpu_secs()
    for _ in range(0, hits, CONCURRENT):
        now = time.time()
        leased = [r for got in await asyncio.gather(*(hit(now) for _ in range(CONCURRENT))) for r in got]
        # Lanes acknowledge per destination: GA4 one request per event, the others in batches.
        ga4 = [r for r in leased if r.destination == "ga4"]
        others = [[r for r in leased if r.destination == d] for d in DESTINATIONS if d != "ga4"]
        await asyncio.gather(
            *(outbox.ack([r], sent([r], now)) for r in ga4), *(outbox.ack(o, sent(o, now)) for o in others)
        )
    spent = cpu_secs() - started
    await outbox.close()
    return spent / hits * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hits", type=int, default=60_000)
    p.add_argument("--ledger", type=int, default=1_000_000, help="events already in the ledger for the long runs")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    args = p.parse_args()
    configs = (("empty", False, True), ("long", True, True), ("long, no event-ID index", True, False))
    results: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        template = Path(tmp) / "long.sqlite3"
        asyncio.run(Outbox(template).open())  # the schema, then the ledger behind the API's back
        prefill(template, args.ledger)
        for rnd in range(args.rounds):
            for name, long, index in configs:
                path = Path(tmp) / "run.sqlite3"
                for old in Path(tmp).glob("run.sqlite3*"):
                    old.unlink()
                if long:
                    shutil.copyfile(template, path)
                results[name].append(asyncio.run(run(path, args.hits, index)))
                print(f"round {rnd + 1} {name:<26}{results[name][-1]:6.0f} µs CPU per hit", flush=True)
    base = statistics.median(results["empty"])
    print(f"\n{args.hits} hits of 3 destinations each; long ledger: {args.ledger} events; medians of {args.rounds} rounds")
    for name, values in results.items():
        print(f"{name:<26}{statistics.median(values):6.0f} µs CPU per hit   ratio to empty {statistics.median(values) / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
