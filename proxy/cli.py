"""The ``tagrelay`` command: ``serve``, ``check`` and ``try``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import fcntl
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import orjson

from .model import USER_FIELDS, Event, Page, UserData
from .rules import RulesError, RuleSet, load_rules
from .settings import Settings, SettingsError

__all__ = ["main"]

log = logging.getLogger("proxy.cli")
# The example rules beside the package (an editable install or a clone).
SHIPPED_RULES = Path(__file__).resolve().parent.parent / "rules"

EXIT_OK = 0
EXIT_PROBLEM = 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_PROBLEM
        return int(args.run(args))
    except BrokenPipeError:
        # The reader left (tagrelay trace ID | head): the rest of the output
        # is not wanted. Point stdout at /dev/null so that the flush at exit
        # does not fail again, and end quietly as a piped command does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagrelay", description="Self-hosted server-side tag manager.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the service")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port to listen on (default 8080)")
    s.add_argument("--rules", type=Path, help="directory of rule files (default ./rules)")
    s.add_argument(
        "--demo", action="store_true", default=None,
        help="also serve the demo shop page at /; without ./rules, on the rules that come with tagrelay",
    )
    s.add_argument(
        "--workers", type=int, help="processes sharing the port (default: one per CPU)"
    )
    s.set_defaults(run=_serve)

    c = sub.add_parser("check", help="validate rule files and print the route table")
    c.add_argument("rules", type=Path, nargs="?", default=Path("rules"), help="directory of rule files")
    c.add_argument("--site", help="the site's host (www.shop.example.com); with --collector, checks Safari's cookie cap")
    c.add_argument("--collector", help="the host the collector is served from (t.shop.example.com)")
    c.set_defaults(run=_check)

    t = sub.add_parser("try", help="print the exact requests an event would cause, without sending")
    t.add_argument("rules", type=Path, help="directory of rule files")
    t.add_argument("event", type=Path, help="a JSON file with one canonical event (see README)")
    t.set_defaults(run=_try)
    im = sub.add_parser("import", help="queue offline conversions from a CSV file (header row) for delivery")
    im.add_argument("file", type=Path, help="the CSV file; see README for its columns")
    im.add_argument("--source", required=True, help="where these events come from (e.g. crm, store)")
    im.add_argument("--rules", type=Path, help="directory of rule files (default: TAGRELAY_RULES_DIR or ./rules)")
    im.add_argument("--delimiter", help="the column separator (default: detected from the header)")
    im.add_argument(
        "--again",
        action="store_true",
        help="queue rows this source imported before too (by default they are skipped, naming them)",
    )
    im.add_argument(
        "--skip-disabled",
        action="store_true",
        help="queue rows even though some routed destinations are disabled here (their rows are skipped for good)",
    )
    im.set_defaults(run=_import)

    d = sub.add_parser("deadletters", help="list events a vendor refused for good, by destination and reason")
    _filters(d)
    d.set_defaults(run=_deadletters)

    r = sub.add_parser("replay", help="queue dead letters again (after fixing a token, pixel ID or endpoint)")
    _filters(r)
    r.set_defaults(run=_replay)

    tr = sub.add_parser("trace", help="what happened to one event: routes, skips, attempts, answers")
    tr.add_argument("event_id", help="the event's ID (as sent by the collector or your back end)")
    tr.set_defaults(run=_trace)
    return p


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--destination", help="only this destination")
    p.add_argument("--since", type=_when, help="only dead letters from this time on (ISO 8601 or unix seconds)")
    p.add_argument("--until", type=_when, help="only dead letters before this time (ISO 8601 or unix seconds)")


def _when(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"{text!r} is not a time (use 2026-12-01T10:00 or unix seconds)")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (use 2026-12-01T10:00 or unix seconds)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _load(rules_dir: Path, quiet: bool = False) -> RuleSet | None:
    try:
        rules = load_rules(rules_dir)
    except RulesError as exc:
        print(f"tagrelay: {len(exc.problems)} problem(s) in rule files under {rules_dir}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    if not quiet:
        for warning in rules.warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    return rules


def _serve(args: argparse.Namespace) -> int:
    # Until the server's own handlers exist a stop signal only ends the start
    # (nothing is taken yet), and a reload is moot: the rules are read below
    # and again by each worker.
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return _start_serving(args)
    except _EarlyStop:
        return EXIT_OK


def _start_serving(args: argparse.Namespace) -> int:
    rules_dir = args.rules
    if rules_dir is None and args.demo and "TAGRELAY_RULES_DIR" not in os.environ and not Path("rules").is_dir():
        rules_dir = SHIPPED_RULES  # the demo runs from any directory, on the rules that come with tagrelay
    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, rules_dir=rules_dir, demo=args.demo, workers=args.workers
        )
    except SettingsError as exc:
        print(f"tagrelay: bad setting: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    rules = _load(settings.rules_dir)
    if rules is None:
        print("tagrelay: not starting: fix the rule files first (tagrelay check shows the same list)", file=sys.stderr)
        return EXIT_PROBLEM
    asyncio.run(rules.close())
    workers = settings.workers or os.cpu_count() or 1
    if not _port_free(settings.host, settings.port):
        print(
            f"tagrelay: cannot listen on {settings.host}:{settings.port}: the port is in use"
            " (stop what uses it, or pick another with --port)",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    if workers == 1:
        return _run_worker(settings, announce=True)
    from .workers import supervise

    return supervise(settings, workers, _run_worker)


def _port_free(host: str, port: int) -> bool:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # let the server report the bad address
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError:
            return False
    return True


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): the same asyncio API, cheaper per request and per socket."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _tune_gc() -> None:
    """Fewer garbage collections for a server that allocates many short-lived objects per hit.

    What exists at start (modules, rules, parsers) is frozen out of every
    collection, and the young generation collects every 10,000 allocations
    instead of 700. Alternating A/B runs of the full pipeline: about 4% less
    CPU per hit. Reference cycles are still collected, only later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


class _EarlyStop(Exception):
    """SIGTERM (or ^C) before the server took anything: leave at once."""


def _early_stop(signum: int, _frame: Any) -> None:
    raise _EarlyStop


def _run_worker(settings: Settings, announce: bool = True, supervised: bool = False) -> int:
    """Run one server process until it is told to stop.

    ``supervised``: one of ``serve --workers N``'s processes, which share the
    port (SO_REUSEPORT). The supervisor started it with SIGTERM, SIGINT and
    SIGHUP blocked (they stay blocked until :func:`_serve_worker` has set its
    handlers) and turns ^C into SIGTERM, so a supervised worker ignores SIGINT.
    """
    from .workers import ignore_serve_signals

    try:
        return _serve_worker(settings, announce, supervised)
    except _EarlyStop:
        return EXIT_OK
    finally:
        ignore_serve_signals()


def _serve_worker(settings: Settings, announce: bool, supervised: bool) -> int:
    from aiohttp import web

    from .app import RELOADS, make_app
    from .delivery import OutboxError
    from .telemetry import setup_logging
    from .workers import SERVE_SIGNALS

    early_reload: list[bool] = []
    signal.signal(signal.SIGHUP, lambda _s, _f: early_reload.append(True))
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else _early_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVE_SIGNALS)
    setup_logging()
    rules = _load(settings.rules_dir, quiet=True)  # serve printed the warnings already
    if rules is None:
        return EXIT_PROBLEM
    try:
        app = make_app(settings, rules)
    except (OSError, ValueError) as exc:
        print(f"tagrelay: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    _tune_gc()
    loop = _event_loop()
    stopping: list[bool] = []

    def stop() -> None:
        # The first stop signal ends the server the way aiohttp's own handler
        # would; later ones (a second SIGTERM, ^C reaching a worker beside
        # the supervisor's SIGTERM) must not cut the graceful stop short.
        if stopping:
            log.info("already stopping: finishing what is in flight")
            return
        stopping.append(True)
        raise web.GracefulExit()

    loop.add_signal_handler(signal.SIGTERM, stop)
    if not supervised:
        loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, app[RELOADS].request)
    if early_reload:
        app[RELOADS].request()  # kept until the service has started
    base = f"http://{settings.host}:{settings.port}"
    banner = f"tagrelay listening on {base} (collector {base}{settings.script_path})"
    if settings.demo:
        banner += f"\ndemo shop: {base}/"
    try:
        from .pii import AccessLogger

        web.run_app(
            app,
            loop=loop,
            access_log_class=AccessLogger,  # no query strings or raw referrers in the access log
            host=settings.host,
            port=settings.port,
            reuse_port=supervised or None,
            print=(lambda _: print(banner, flush=True)) if announce else None,
            handle_signals=False,  # the handlers above
        )
    except OutboxError as exc:  # opened as the server starts
        print(f"tagrelay: cannot start: {exc} (TAGRELAY_DATA_DIR or TAGRELAY_OUTBOX_PATH must be a writable place)", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"tagrelay: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


def _served_outbox_file(settings: Settings) -> Path:
    """The outbox a ``tagrelay serve`` keeps; SettingsError if there is none (one made here no service would read)."""
    path = settings.outbox_file
    if not path.exists():
        raise SettingsError(
            f"no outbox at {path}: run this where tagrelay serve runs, with its TAGRELAY_DATA_DIR"
            " (or start tagrelay serve once to create it)"
        )
    return path


@contextlib.asynccontextmanager
async def _existing_outbox() -> AsyncIterator[Any]:
    """The outbox ``tagrelay serve`` keeps (TAGRELAY_DATA_DIR), open for the block."""
    from .delivery import Outbox

    outbox = Outbox(_served_outbox_file(Settings.from_env()))
    await outbox.open()
    try:
        yield outbox
    finally:
        await outbox.close()


def _import(args: argparse.Namespace) -> int:
    """Read the CSV, report each bad row with its line, and queue the rest in the outbox.

    The events go into the same outbox a running ``tagrelay serve`` delivers
    from (it picks them up within a second); with none running they wait.
    """
    from .consent import ConsentPolicy, decide_consent
    from .delivery import LedgerRow, Outbox
    from .enrich import Enricher
    from .events_api import to_events
    from .importer import ImportFileError, read_conversions_csv
    from .pipeline import plan_rows

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"tagrelay: bad setting: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    rules = _load(args.rules or settings.rules_dir)
    if rules is None:
        return EXIT_PROBLEM
    try:
        _served_outbox_file(settings)
    except SettingsError as exc:
        print(f"tagrelay: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    routed = {name for route in rules.routes for name in route.to}
    disabled = sorted(routed & set(rules.disabled))
    if disabled and not args.skip_disabled:
        # Routing happens here, with this shell's environment: a vendor whose
        # secrets only the service has would be skipped for good, silently.
        print(
            f"tagrelay: routes send to {', '.join(disabled)}, disabled here ({rules.disabled[disabled[0]]}"
            f"{', ...' if len(disabled) > 1 else ''}); their rows would be skipped for good. If the service has"
            " their variables, run import with its environment; if it does not use them, pass --skip-disabled",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    try:
        policy = ConsentPolicy.parse(settings.consent_default, gpc=settings.consent_gpc)
        enricher = Enricher(settings)
        now = time.time()
        items, errors = read_conversions_csv(args.file, args.source, settings, now, delimiter=args.delimiter)
    except (SettingsError, ImportFileError) as exc:
        print(f"tagrelay: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"tagrelay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_PROBLEM
    for error in errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    done = queued = 0
    dropped: dict[tuple[str, str], list[str]] = {}  # (destination, why) -> event IDs
    again: list[str] = []  # event IDs this source imported before, skipped
    topped_up: list[str] = []  # imported before, now queued only for destinations they missed then

    def mark(name: str) -> str:
        """The ledger entry that says an import queued this event: its source and name, with the ID, are the key."""
        return f"source {args.source}, event {name}"

    async def store() -> None:
        # A thousand events at a time: their events, payloads and ledger
        # entries took 24 KB a row at once, gigabytes for a large file.
        nonlocal done, queued
        outbox = Outbox(settings.outbox_file, max_rows=settings.outbox_max_rows)
        await outbox.open()
        try:
            for chunk in _chunks(items):
                # A file imported again (say, after fixing its bad rows) must not send its good rows twice.
                earlier = {} if args.again else await outbox.imported([mark(i.name) for i in chunk], [i.id for i in chunk])
                events = to_events(chunk, enricher)
                decide_consent(events, policy)
                rows, ledger = plan_rows(rules, events, now)
                reached = {e.id: earlier.get((e.id, mark(e.name))) for e in events}
                rows, ledger, skipped, partly = _not_again(rows, ledger, reached, now)
                again.extend(e.id for e in events if e.id in skipped)
                topped_up.extend(e.id for e in events if e.id in partly)
                events = [e for e in events if e.id not in skipped]
                sent_to = _destinations_by_event(rows)
                # First, so that it is each event's ledger anchor, the entry imported() finds.
                marks = [LedgerRow(e.id, now, ",".join(sent_to.get(e.id, [])), "imported", mark(e.name)) for e in events]
                ledger = marks + ledger
                await outbox.put(rows, ledger)
                for entry in ledger:
                    if entry.what == "dropped":
                        dropped.setdefault((entry.destination, entry.detail), []).append(entry.event_id)
                done, queued = done + len(events), queued + len(rows)
        finally:
            await outbox.close()
            await rules.close()

    from .delivery import OutboxError

    # One import at a time per outbox: two runs of one file would both find
    # its rows not yet imported, and queue them twice.
    lock_path = settings.outbox_file.with_name(settings.outbox_file.name + ".import-lock")
    try:
        lock = open(lock_path, "ab")
    except OSError as exc:
        print(f"tagrelay: cannot open {lock_path}: {exc.strerror} (import needs to write beside the outbox)", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("tagrelay: another import into this outbox is running; waiting for it to finish", file=sys.stderr)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except KeyboardInterrupt:
            print("tagrelay: interrupted while waiting; nothing was queued", file=sys.stderr)
            lock.close()
            return 130
    try:
        asyncio.run(store())
    except OutboxError as exc:
        print(f"tagrelay: {exc}", file=sys.stderr)
        if done:
            print(f"tagrelay: {done} event(s) were queued before that; import the file again for the rest", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print(
            f"tagrelay: interrupted after queueing at least {done} event(s); import the file again for the rest"
            " (what was queued is skipped)",
            file=sys.stderr,
        )
        return 130
    finally:
        lock.close()
    if again:
        print(
            f"{args.file}: {len(again)} event(s) skipped: source {args.source} imported them before ({_some(again)});"
            " --again queues them anyway",
            file=sys.stderr,
        )
    if topped_up:
        print(
            f"{args.file}: {len(topped_up)} event(s) imported before queued only for the destinations they did not"
            f" reach then ({_some(topped_up)})",
            file=sys.stderr,
        )
    for (dest, why), ids in sorted(dropped.items()):
        print(f"{args.file}: {len(ids)} event(s) not queued for {dest}: {why} ({_some(ids)})", file=sys.stderr)
    print(
        f"imported {done} event(s) from {args.file} ({len(errors)} row(s) refused),"
        f" {queued} delivery(ies) queued in {settings.outbox_file}"
    )
    # 1: some rows were refused (the rest is queued); 2: nothing could be imported.
    if errors:
        return EXIT_PROBLEM if not done else 1
    return EXIT_OK


_IMPORT_CHUNK = 1000  # events routed and committed together by tagrelay import


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    """Up to _IMPORT_CHUNK items at a time, each event ID at most once in a chunk.

    Routing and the ledger key a chunk's rows by event ID; a purchase and a
    refund sharing an order ID go in separate chunks, each with its own mark.
    """
    chunk: list[Any] = []
    ids: set[str] = set()
    for item in items:
        if len(chunk) == _IMPORT_CHUNK or item.id in ids:
            yield chunk
            chunk, ids = [], set()
        chunk.append(item)
        ids.add(item.id)
    if chunk:
        yield chunk


def _destinations_by_event(rows: list[Any]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r.event_id, []).append(r.destination)
    return by


def _some(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _not_again(
    rows: list[Any], ledger: list[Any], reached: dict[str, set[str] | None], now: float
) -> tuple[list[Any], list[Any], set[str], set[str]]:
    """Leave out what an earlier import queued: per event, the destinations it reached then.

    ``reached``: per event ID, the destinations an earlier import queued it
    for, or None if none did. Returns the rows and ledger entries to keep,
    the events left out whole, and those queued again only for destinations
    they missed (dropped then, or disabled, and fixed since).
    """
    from .delivery import LedgerRow

    keep = [r for r in rows if r.destination not in (reached.get(r.event_id) or ())]
    new_for = _destinations_by_event(keep)
    before = {event_id for event_id, dests in reached.items() if dests is not None}
    skipped = {event_id for event_id in before if event_id not in new_for}
    partly = {event_id for event_id in before if event_id in new_for}
    entries = [e for e in ledger if e.event_id not in before]
    # A destination that still cannot take it is said again, skipped or not.
    entries += [e for e in ledger if e.event_id in before and e.what == "dropped"]
    entries += [
        LedgerRow(event_id, now, ",".join(new_for[event_id]), "queued", "imported again: destinations it did not reach before")
        for event_id in partly
    ]
    return keep, entries, skipped, partly


def _empty_window(args: argparse.Namespace) -> bool:
    """Filters that cannot mean what the user meant: say so rather than answer 'none', or act on everything."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        print("tagrelay: --since must be before --until", file=sys.stderr)
        return True
    if args.destination is not None and not args.destination.strip():
        # Most likely an unset variable ("--destination $DEST"); it would select every destination.
        print("tagrelay: --destination is empty; name a destination, or leave the option out for all", file=sys.stderr)
        return True
    return False


async def _none_match(outbox: Any, destination: str | None) -> str:
    """What to say when no dead letter matches: which destinations have some, if the named one has none."""
    if destination is None:
        return "no dead letters"
    others = sorted({row.destination for row in await outbox.dead_letters()})
    where = f"; dead letters exist for: {', '.join(others)}" if others else ""
    return f"no dead letters for destination {destination!r}{where}"


def _deadletters(args: argparse.Namespace) -> int:
    if _empty_window(args):
        return EXIT_PROBLEM

    async def run() -> int:
        async with _existing_outbox() as outbox:
            rows = await outbox.dead_letters(args.destination, args.since, args.until)
            none = await _none_match(outbox, args.destination) if not rows else ""
        if not rows:
            print(none)
            return EXIT_OK
        by: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            by.setdefault((row.destination, row.reason), []).append(row)
        for (dest, reason), group in sorted(by.items()):
            print(f"{dest}: {len(group)} event(s): {reason}")
            for row in group[:20]:
                when = datetime.fromtimestamp(row.died, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
                print(f"  {when}Z  {row.event_id}  attempts={row.attempts}  {row.answer[:160]}")
            if len(group) > 20:
                print(f"  ... and {len(group) - 20} more")
        print(f"\n{len(rows)} dead letter(s). After a fix: tagrelay replay [--destination NAME] [--since TIME]")
        return EXIT_OK

    return _guard(run)


def _replay(args: argparse.Namespace) -> int:
    if _empty_window(args):
        return EXIT_PROBLEM

    async def run() -> int:
        async with _existing_outbox() as outbox:
            n = await outbox.replay(args.destination, args.since, args.until)
            none = await _none_match(outbox, args.destination) if not n else ""
        if n == 0:
            print(f"{none} (see tagrelay deadletters)")
            return EXIT_OK
        print(f"queued {n} dead letter(s) again; a running tagrelay sends them within a second")
        # TODO(replay re-renders): ends when dead letters keep what rendering
        # needs without raw personal data (per-vendor hashed user data beside
        # the event), and replay renders them with the current rules.
        print(
            "they go as they were built: a fixed token, pixel ID or endpoint applies to them;"
            " a fixed route 'set' or template does not (tagrelay keeps no raw event to build them again)"
        )
        return EXIT_OK

    return _guard(run)


def _trace(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with _existing_outbox() as outbox:
            rows = await outbox.trace(args.event_id)
        if not rows:
            print(f"nothing recorded for event {args.event_id!r} (unknown, or older than the ledger's retention)")
            return EXIT_PROBLEM
        for row in rows:
            when = datetime.fromtimestamp(row.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            print(f"{when}Z  {row.destination or '-':<16} {row.what:<9} {row.detail}")
        return EXIT_OK

    return _guard(run)


def _guard(run: Any) -> int:
    from .delivery import OutboxError

    try:
        return int(asyncio.run(run()))
    except (SettingsError, OutboxError) as exc:
        print(f"tagrelay: {exc}", file=sys.stderr)
        return EXIT_PROBLEM


def _check(args: argparse.Namespace) -> int:
    rules = _load(args.rules)
    if rules is None:
        return EXIT_PROBLEM
    site = args.site or os.environ.get("TAGRELAY_SITE_HOST", "")
    collector = args.collector or os.environ.get("TAGRELAY_COLLECTOR_HOST", "")
    if site and collector and not _check_safari(collector, site):
        return EXIT_PROBLEM
    print(
        f"{args.rules}: {len(rules.destinations)} destination(s) enabled, {len(rules.disabled)} disabled,"
        f" {len(rules.routes)} route(s)"
    )
    for name, d in rules.destinations.items():
        need = f" (needs consent: {', '.join(d.consent)})" if d.consent else ""
        print(f"  destination {name}: {d.type}{need}")
    for name, why in rules.disabled.items():
        print(f"  destination {name}: disabled ({why})")
    rows = [("ROUTE", "MATCH", "TO")] + [(r, m, to) for r, _f, m, to in rules.table()]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
    return EXIT_OK


def _check_safari(collector: str, site: str) -> bool:
    """Warn when Safari would cap the collector's server-set cookies; False on a bad host name."""
    from . import safari

    try:
        warning = safari.collector_cap_warning(collector, site, safari.system_resolver)
    except ValueError as exc:
        print(f"tagrelay: {exc}", file=sys.stderr)
        return False
    if warning:
        print(f"warning: Safari: {warning}", file=sys.stderr)
    else:
        print(f"Safari: cookies set by {collector} keep their full lifetime on {site}")
    return True


def _try(args: argparse.Namespace) -> int:
    from .enrich import Enricher
    from .pipeline import route

    rules = _load(args.rules)
    if rules is None:
        return EXIT_PROBLEM
    try:
        settings = Settings.from_env()
        enricher = Enricher(settings)
    except SettingsError as exc:
        print(f"tagrelay: bad setting: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        doc = orjson.loads(args.event.read_bytes())
        event = event_from_json(doc, enricher)
    except OSError as exc:
        print(f"tagrelay: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return EXIT_PROBLEM
    except orjson.JSONDecodeError as exc:
        print(f"tagrelay: {args.event}: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except (TypeError, ValueError) as exc:
        print(f"tagrelay: {args.event}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    from .consent import ConsentPolicy, decide_consent

    # The same consent decision the service makes: the event's own signals,
    # then the regional default (TAGRELAY_CONSENT_DEFAULT).
    decide_consent([event], ConsentPolicy.parse(settings.consent_default, gpc=settings.consent_gpc))
    planned, skips = route(rules, event)
    shown = {p.destination.name for p in planned} | {s.destination for s in skips}
    print(f"event {event.name} ({event.id})")
    for p in planned:
        head = f"\n== {p.destination.name} ({p.destination.type}) via route {p.route.name!r}"
        if p.payload is None:
            print(f"{head}: not sent: {p.error}")
            continue
        print(head)
        _print_request(p.destination.adapter, p.payload)
    for s in skips:
        print(f"\n== {s.destination}: skipped ({s.reason})")
    for name in sorted(set(rules.destinations) - shown):
        print(f"\n== {name}: no route sends this event there")
    asyncio.run(rules.close())
    return EXIT_OK


def _print_request(adapter: Any, payload: dict[str, Any]) -> None:
    from .vendors.file import JSONLFile

    if isinstance(adapter, JSONLFile):
        print(f"append to {adapter.path}:")
        print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    req = adapter.build([payload]).redacted()
    print(f"{req.method} {req.url}")
    for k, v in req.headers.items():
        print(f"{k}: {v}")
    print()
    try:
        print(orjson.dumps(orjson.loads(req.body), option=orjson.OPT_INDENT_2).decode())
    except orjson.JSONDecodeError:
        print(req.body.decode("utf-8", "replace"))


def event_from_json(doc: Any, enricher: Any) -> Event:
    """Build an enriched event from the canonical JSON that ``tagrelay try`` reads.

    ``{"name", "id"?, "time"? (unix seconds), "page"?: {url, referrer, title},
    "user"?: {email, phone, first_name, last_name, external_id}, "user_id"?,
    "params"?: {...}, "context"?: {ip, user_agent, consent, click_ids, ids}}``
    """
    from .collect import _EVENT_NAME

    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError("must be a JSON object with at least a string 'name'")
    # What the service would refuse, try refuses too, rather than show a request it would never make.
    if not _EVENT_NAME.fullmatch(doc["name"]):
        raise ValueError(f"name {doc['name']!r}: not an event name (a letter, then letters, digits or _; at most 64)")
    if "id" in doc and not (isinstance(doc["id"], str) and doc["id"]):
        raise ValueError("id must be a non-empty string")
    known = {"name", "id", "time", "source", "action_source", "page", "user", "user_id", "params", "context"}
    unknown_keys = sorted(set(doc) - known)
    if unknown_keys:
        raise ValueError(f"unknown key(s) {unknown_keys} (known: {sorted(known)})")
    page = doc.get("page") or {}
    user = doc.get("user") or {}
    ctx_in = doc.get("context") or {}
    if not all(isinstance(x, dict) for x in (page, user, ctx_in, doc.get("params") or {})):
        raise ValueError("page, user, params and context must be objects")
    if not all(isinstance(v, str) for v in page.values()):
        raise ValueError("page values (url, referrer, title) must be strings")
    for key in ("consent", "click_ids", "ids"):
        if not isinstance(ctx_in.get(key) or {}, dict):
            raise ValueError(f"context.{key} must be an object")
    if not all(isinstance(v, bool) for v in (ctx_in.get("consent") or {}).values()):
        raise ValueError("context.consent values must be true or false")
    if not all(isinstance(v, str) for v in (*(ctx_in.get("click_ids") or {}).values(), *user.values())):
        raise ValueError("context.click_ids and user values must be strings")
    when = doc.get("time")
    if when is not None and (isinstance(when, bool) or not isinstance(when, (int, float)) or when < 0):
        raise ValueError("time must be unix seconds (a number, not negative)")
    if when is not None and when > 100_000_000_000:
        when = when / 1000.0  # milliseconds, as the collector sends
    # An event file has no request headers: judge bots by the user agent (and
    # the IP's network), as a browser sending the usual headers would be.
    headers = {"User-Agent": str(ctx_in.get("user_agent", "")), "Accept": "*/*", "Accept-Language": "en"}
    ctx = enricher.context(
        peer=str(ctx_in.get("ip", "")) or None,
        headers=headers,
        click_ids=ctx_in.get("click_ids") or {},
    )
    ctx.consent = dict(ctx_in.get("consent") or {})
    ctx.ids = {k: str(v) for k, v in (ctx_in.get("ids") or {}).items()}
    unknown = set(user) - set(USER_FIELDS)
    if unknown:
        raise ValueError(f"user: unknown field(s) {sorted(unknown)} (known: {sorted(USER_FIELDS)})")
    return Event(
        name=doc["name"],
        id=str(doc.get("id") or uuid.uuid4().hex),
        time=float(when or time.time()),
        source=str(doc.get("source", "server")),
        action_source=str(doc.get("action_source", "website")),
        page=Page(str(page.get("url", "")), str(page.get("referrer", "")), str(page.get("title", ""))),
        user=UserData(**{k: str(v) for k, v in user.items()}),
        context=ctx,
        params=dict(doc.get("params") or {}),
        user_id=doc.get("user_id"),
    )
