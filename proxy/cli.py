"""The ``tagrelay`` command: ``serve``, ``check`` and ``try``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import orjson

from .model import Event, Page, UserData
from .rules import RuleSet, RulesError, load_rules
from .settings import Settings, SettingsError

__all__ = ["main"]

EXIT_OK = 0
EXIT_PROBLEM = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_PROBLEM
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagrelay", description="Self-hosted server-side tag manager.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the service")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, help="port to listen on (default 8080)")
    s.add_argument("--rules", type=Path, help="directory of rule files (default ./rules)")
    s.add_argument("--demo", action="store_true", default=None, help="also serve the demo shop page at /")
    s.set_defaults(run=_serve)

    c = sub.add_parser("check", help="validate rule files and print the route table")
    c.add_argument("rules", type=Path, nargs="?", default=Path("rules"), help="directory of rule files")
    c.set_defaults(run=_check)

    t = sub.add_parser("try", help="print the exact requests an event would cause, without sending")
    t.add_argument("rules", type=Path, help="directory of rule files")
    t.add_argument("event", type=Path, help="a JSON file with one canonical event (see README)")
    t.set_defaults(run=_try)
    return p


def _setup_logging() -> None:
    level = os.environ.get("TAGRELAY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _load(rules_dir: Path) -> RuleSet | None:
    try:
        rules = load_rules(rules_dir)
    except RulesError as exc:
        print(f"tagrelay: {len(exc.problems)} problem(s) in rule files under {rules_dir}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    for warning in rules.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return rules


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import make_app

    _setup_logging()
    try:
        settings = Settings.from_env(host=args.host, port=args.port, rules_dir=args.rules, demo=args.demo)
    except SettingsError as exc:
        print(f"tagrelay: bad setting: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    rules = _load(settings.rules_dir)
    if rules is None:
        print("tagrelay: not starting: fix the rule files first (tagrelay check shows the same list)", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        app = make_app(settings, rules)
    except (OSError, ValueError) as exc:
        print(f"tagrelay: cannot start: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    base = f"http://{settings.host}:{settings.port}"
    banner = f"tagrelay listening on {base} (collector {base}{settings.script_path})"
    if settings.demo:
        banner += f"\ndemo shop: {base}/"
    web.run_app(app, host=settings.host, port=settings.port, print=lambda _: print(banner, flush=True))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    rules = _load(args.rules)
    if rules is None:
        return EXIT_PROBLEM
    print(f"{args.rules}: {len(rules.destinations)} destination(s), {len(rules.routes)} route(s)")
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


def _try(args: argparse.Namespace) -> int:
    from .enrich import Enricher
    from .pipeline import route

    rules = _load(args.rules)
    if rules is None:
        return EXIT_PROBLEM
    try:
        doc = orjson.loads(args.event.read_bytes())
        settings = Settings.from_env()
        enricher = Enricher(settings)
        event = event_from_json(doc, enricher)
    except OSError as exc:
        print(f"tagrelay: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return EXIT_PROBLEM
    except orjson.JSONDecodeError as exc:
        print(f"tagrelay: {args.event}: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except (SettingsError, ValueError) as exc:
        print(f"tagrelay: {args.event}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    planned, skips = route(rules, event)
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
    if not planned and not skips:
        print("\nno route matches this event")
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
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError("must be a JSON object with at least a string 'name'")
    page = doc.get("page") or {}
    user = doc.get("user") or {}
    ctx_in = doc.get("context") or {}
    if not all(isinstance(x, dict) for x in (page, user, ctx_in, doc.get("params") or {})):
        raise ValueError("page, user, params and context must be objects")
    headers = {"User-Agent": str(ctx_in.get("user_agent", ""))}
    ctx, _ = enricher.context(
        peer=str(ctx_in.get("ip", "")) or None,
        headers=headers,
        cookies={},
        host="",
        click_ids=ctx_in.get("click_ids") or {},
        set_ids=False,
    )
    ctx.consent = dict(ctx_in.get("consent") or {})
    ctx.ids = {k: str(v) for k, v in (ctx_in.get("ids") or {}).items()}
    known_user = {"email", "phone", "first_name", "last_name", "external_id"}
    unknown = set(user) - known_user
    if unknown:
        raise ValueError(f"user: unknown field(s) {sorted(unknown)} (known: {sorted(known_user)})")
    return Event(
        name=doc["name"],
        id=str(doc.get("id") or uuid.uuid4().hex),
        time=float(doc.get("time") or time.time()),
        source=str(doc.get("source", "server")),
        action_source=str(doc.get("action_source", "website")),
        page=Page(str(page.get("url", "")), str(page.get("referrer", "")), str(page.get("title", ""))),
        user=UserData(**{k: str(v) for k, v in user.items()}),
        context=ctx,
        params=dict(doc.get("params") or {}),
        user_id=doc.get("user_id"),
    )
