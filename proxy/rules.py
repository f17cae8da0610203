"""Rule files: load, validate and compile destinations and routes.

Every ``*.toml`` file in the rules directory is read in name order. A file
may declare destinations (``[destinations.NAME]``) and routes
(``[[routes]]``); names are global across files. Loading reports every
problem at once, each with its file and key path, and never returns a
partial rule set: :class:`RulesError` carries the whole list.

Matching::

    match = { event = ["purchase", "begin_checkout"],    # any of
              "page.host" = "shop.example.com",           # equal
              "params.value" = { gte = 100 },             # operator table
              bot = false }

Operators: ``in``, ``not``, ``not_in``, ``gt``, ``gte``, ``lt``, ``lte``,
``regex``, ``prefix``, ``suffix``, ``contains``, ``exists``. Every condition
must hold. For each destination the first route (in file order) that matches
and sends to it wins, so one event reaches one destination at most once.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from typing import Mapping as TMapping

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

from .consent import PURPOSES, gate
from .mapping import Fields, Mapping, compile_mapping, did_you_mean
from .model import Event, event_view, sample_event
from .vendors import ADAPTERS
from .vendors.base import Adapter, ConfigError

__all__ = ["Destination", "Route", "RuleSet", "RulesError", "load_rules", "Skip"]

log = logging.getLogger("proxy.rules")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")  # \Z: '$' would admit a trailing newline
_PURPOSES = PURPOSES
# What match keys and `set` templates may name, read off event_view itself.
_VIEW = Fields(event_view(sample_event()), free=("params",), nested=("context",))


class RulesError(Exception):
    """Rule files that cannot be used. ``problems`` lists every one as 'file: key: message'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in rule files:\n" + "\n".join(problems))


@dataclass(slots=True)
class Destination:
    name: str
    type: str
    adapter: Adapter
    consent: tuple[str, ...]
    file: str
    tcf_vendor: int | None = None  # IAB TCF vendor ID whose consent is also needed
    ip: str = "full"  # the client IP this destination gets: full, truncated (/24, /48) or none


@dataclass(slots=True)
class Route:
    name: str
    file: str
    conditions: tuple[tuple[str, Callable[[Any], bool], str], ...]  # (path, test, text)
    to: tuple[str, ...]
    mapping: Mapping
    # Per path, the values an equality or any-of condition admits (for the
    # shadowed-route warning); absent for other operators.
    admits: dict[str, frozenset[Any]] = field(default_factory=dict)

    def matches(self, view: dict[str, Any]) -> bool:
        return all(test(_lookup(view, path)) for path, test, _ in self.conditions)

    def describe_match(self) -> str:
        return ", ".join(text for _, _, text in self.conditions) or "every event"


@dataclass(slots=True, frozen=True)
class Skip:
    destination: str
    reason: str  # "no route", "consent: ads", "disabled"


@dataclass(slots=True)
class RuleSet:
    destinations: dict[str, Destination]
    routes: list[Route]
    warnings: list[str] = field(default_factory=list)
    disabled: dict[str, str] = field(default_factory=dict)  # name -> why

    def plan(self, event: Event, view: dict[str, Any] | None = None) -> tuple[list[tuple[Destination, Route]], list[Skip]]:
        """Which destinations get this event through which route, and which do not, and why."""
        view = event_view(event) if view is None else view
        chosen: dict[str, Route] = {}
        unmatched: dict[str, None] = {}  # destinations of routes that do not match, in order
        for route in self.routes:
            if not route.matches(view):
                unmatched.update(dict.fromkeys(route.to))
                continue
            for name in route.to:
                chosen.setdefault(name, route)
        sends: list[tuple[Destination, Route]] = []
        # When some route matched, say which destinations none did (a bot's
        # purchase reaches the log, not Meta); an event no route matches at
        # all is one "unrouted" entry instead (pipeline.plan_rows).
        skips = [
            Skip(name, "disabled" if name in self.disabled else "no route to it matches this event")
            for name in unmatched
            if name not in chosen
        ] if chosen else []
        for name, route in chosen.items():
            if name in self.disabled:
                skips.append(Skip(name, "disabled"))
                continue
            dest = self.destinations[name]
            state = event.context.consent_state
            if state is not None:
                why = gate(dest.consent, state, dest.tcf_vendor)
            else:
                denied = [p for p in dest.consent if event.context.consent.get(p) is False]
                why = "consent: " + ",".join(denied) if denied else None
            if why:
                skips.append(Skip(name, why))
                continue
            sends.append((dest, route))
        return sends, skips

    def table(self) -> list[tuple[str, str, str, str]]:
        """(route, file, match, destinations) rows for ``tagrelay check``."""
        rows = []
        for r in self.routes:
            to = ", ".join(n + (" (disabled)" if n in self.disabled else "") for n in r.to)
            rows.append((r.name, r.file, r.describe_match(), to))
        return rows

    async def close(self) -> None:
        for dest in self.destinations.values():
            await dest.adapter.close()


def load_rules(directory: Path, env: TMapping[str, str] | None = None) -> RuleSet:
    """Load every rule file in ``directory``; raise :class:`RulesError` with all problems."""
    env = os.environ if env is None else env
    problems: list[str] = []
    warnings: list[str] = []
    if not directory.is_dir():
        raise RulesError(
            [f"{directory}: no such directory (relative paths start from {Path.cwd()}; pass the rules directory)"]
        )
    files = sorted(p for p in directory.iterdir() if p.suffix == ".toml" and p.is_file())
    if not files:
        raise RulesError([f"{directory}: no *.toml rule files"])

    raw_dests: list[tuple[str, str, dict[str, Any]]] = []
    raw_routes: list[tuple[str, int, dict[str, Any]]] = []
    for path in files:
        label = str(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{label}: not valid TOML: {exc}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{label}: cannot read: {exc}")
            continue
        for key in doc:
            if key not in ("destinations", "routes"):
                problems.append(f"{label}: {key}: unknown top-level key (expected 'destinations' or 'routes')")
        dests = doc.get("destinations", {})
        if not isinstance(dests, dict):
            problems.append(f"{label}: destinations: must be a table of [destinations.NAME]")
            dests = {}
        for name, body in dests.items():
            if not isinstance(body, dict):
                problems.append(f"{label}: destinations.{name}: must be a table")
                continue
            raw_dests.append((label, name, body))
        routes = doc.get("routes", [])
        if not isinstance(routes, list):
            problems.append(f"{label}: routes: must be an array of tables ([[routes]])")
            routes = []
        for i, body in enumerate(routes):
            if not isinstance(body, dict):
                problems.append(f"{label}: routes[{i}]: must be a table")
                continue
            raw_routes.append((label, i, body))

    destinations: dict[str, Destination] = {}
    disabled: dict[str, str] = {}
    declared: dict[str, str] = {}  # name -> file that declared it first
    for label, name, body in raw_dests:
        where = f"{label}: destinations.{name}"
        if not _NAME.match(name):
            problems.append(f"{label}: destinations.{name!r}: name must be lowercase letters, digits and _ (starting with a letter)")
            continue
        if name in declared:
            problems.append(f"{where}: destination {name!r} is already declared in {declared[name]}; pick another name")
            continue
        declared[name] = label
        dest, why, errs = _destination(label, name, body, env)
        problems.extend(f"{where}.{e}" for e in errs)
        if why:
            disabled[name] = why
            warnings.append(f"{where}: disabled: {why}")
        elif dest is not None:
            destinations[name] = dest

    route_list: list[Route] = []
    seen_names: set[str] = set()
    for label, i, body in raw_routes:
        where = f"{label}: routes[{i}]"
        route, errs = _route(label, i, body, set(destinations) | set(disabled), set(declared))
        name = body.get("name")
        shown = name if isinstance(name, str) and name.strip() else ""
        problems.extend(_in_route(where, shown, e) for e in errs)
        if route is not None:
            if route.name in seen_names:
                problems.append(f"{where}.name: route name {route.name!r} is used twice")
            seen_names.add(route.name)
            route_list.append(route)

    warnings.extend(_shadowed(route_list))
    used = {n for r in route_list for n in r.to}
    for name in destinations:
        if name not in used:
            warnings.append(f"{destinations[name].file}: destinations.{name}: no route sends to it")
    if problems:
        raise RulesError(problems)
    return RuleSet(destinations, route_list, warnings, disabled)


def _in_route(where: str, name: str, problem: str) -> str:
    """``FILE: routes[1].to in route 'checkout': message``: the index to find it, the name to know it."""
    key, sep, message = problem.partition(": ")
    if not (name and sep):
        return f"{where}.{problem}"
    return f"{where}.{key} in route {name!r}: {message}"


def _destination(
    label: str, name: str, body: dict[str, Any], env: TMapping[str, str]
) -> tuple[Destination | None, str, list[str]]:
    """Returns (destination, why-disabled, problems as 'key: message')."""
    errs: list[str] = []
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        return None, "", [f"type: {kind!r} is not an adapter type (known: {known})"]
    cls = ADAPTERS[kind]
    optional = body.get("optional", False)
    if not isinstance(optional, bool):
        errs.append("optional: must be true or false")
    consent = body.get("consent", [])
    if not (isinstance(consent, list) and all(isinstance(c, str) for c in consent)):
        errs.append(f"consent: must be a list of purposes ({', '.join(_PURPOSES)})")
        consent = []
    for c in consent:
        if c not in _PURPOSES:
            errs.append(f"consent: unknown purpose {c!r} (known: {', '.join(_PURPOSES)})")

    settings: dict[str, Any] = {}
    unset: list[str] = []
    unset_keys: list[str] = []
    refused_secret = False
    for key, value in body.items():
        if key in ("type", "optional", "consent", "tcf_vendor", "ip"):
            continue
        if key in cls.secret_keys and isinstance(value, str) and value and not _ENV_REF.fullmatch(value):
            errs.append(f"{key}: secrets are never written in rule files; use \"${{ENV_NAME}}\"")
            refused_secret = True
            continue
        before = len(unset)
        settings[key] = _expand(value, env, unset)
        if len(unset) > before:
            unset_keys.append(key)
    if unset:
        names = ", ".join(sorted(set(unset)))
        if optional is True:
            return None, f"environment variable(s) {names} not set", errs
        keys = ", ".join(unset_keys)
        errs.append(
            f"{keys}: environment variable(s) {names} not set (set them, or mark the destination optional = true)"
        )
    tcf_vendor = body.get("tcf_vendor")
    if tcf_vendor is not None and (not isinstance(tcf_vendor, int) or isinstance(tcf_vendor, bool) or tcf_vendor < 1):
        errs.append("tcf_vendor: must be the vendor's IAB Global Vendor List ID (a whole number, e.g. 755 for Google)")
    ip_mode = body.get("ip", "full")
    if ip_mode not in ("full", "truncated", "none"):
        errs.append(f"ip: {ip_mode!r} must be \"full\", \"truncated\" (/24 for IPv4, /48 for IPv6) or \"none\"")
    if unset or refused_secret:
        return None, "", errs  # the adapter would only repeat that values are missing
    try:
        adapter = cls(name, settings)
    except ConfigError as exc:
        # A value that came from the environment may be a secret set in the
        # wrong variable: it is never echoed.
        from_env = [v for v in _env_values(body, env) if len(v) >= 4]
        return None, "", errs + [_scrub(f"{k}: {m}", from_env) for k, m in exc.problems]
    if errs:
        return None, "", errs
    adapter.env_values = tuple(v for v in _env_values(body, env) if len(v) >= 4)
    return Destination(name, kind, adapter, tuple(consent), label, tcf_vendor, str(ip_mode)), "", []


def _env_values(value: Any, env: TMapping[str, str]) -> list[str]:
    """The environment values that ``${...}`` references in ``value`` expand to."""
    if isinstance(value, str):
        return [env[m.group(1)] for m in _ENV_REF.finditer(value) if env.get(m.group(1))]
    if isinstance(value, list):
        return [x for v in value for x in _env_values(v, env)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _env_values(v, env)]
    return []


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _expand(value: Any, env: TMapping[str, str], unset: list[str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            got = env.get(m.group(1))
            if got is None or (got == "" and m.group(2) is not None):
                if m.group(2) is not None:
                    return m.group(2)
                unset.append(m.group(1))
                return ""
            return got

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env, unset) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env, unset) for k, v in value.items()}
    return value


def _route(
    label: str, index: int, body: dict[str, Any], known: set[str], declared: set[str]
) -> tuple[Route | None, list[str]]:
    errs: list[str] = []
    for key in body:
        if key not in ("name", "match", "to", "set"):
            errs.append(f"{key}: unknown key (expected name, match, to, set)")
    name = body.get("name", f"{Path(label).stem}#{index}")
    if not isinstance(name, str) or not name.strip():
        errs.append("name: must be a non-empty string")
        name = f"{Path(label).stem}#{index}"
    to = body.get("to")
    if isinstance(to, str):
        to = [to]
    if not (isinstance(to, list) and to and all(isinstance(t, str) for t in to)):
        errs.append("to: must name one or more destinations")
        to = []
    for t in to:
        if t in declared and t not in known:
            continue  # the destination's own problems are reported already
        if t not in known:
            hint = did_you_mean(t, declared)
            errs.append(f"to: no destination named {t!r}{hint} (known: {', '.join(sorted(declared)) or 'none'})")
    match = body.get("match", {})
    conditions: list[tuple[str, Callable[[Any], bool], str]] = []
    admits: dict[str, frozenset[Any]] = {}
    if not isinstance(match, dict):
        errs.append("match: must be a table")
        match = {}
    for key, spec in match.items():
        problem = _VIEW.check_key(key)
        if problem:
            errs.append(f"match.{key}: {problem}")
            continue
        try:
            test, text = _condition(key, spec)
        except ValueError as exc:
            errs.append(f"match.{key}: {exc}")
            continue
        path = "name" if key == "event" else key
        conditions.append((path, test, text))
        if _scalar(spec):
            admits[path] = frozenset([spec])
        elif isinstance(spec, list):
            admits[path] = frozenset(spec)
    table = body.get("set", {})
    if not isinstance(table, dict):
        errs.append("set: must be a table of \"payload.path\" = value")
        table = {}
    mapping, mproblems = compile_mapping(table, _VIEW.check_read)
    errs.extend(f"set.{k}: {m}" for k, m in mproblems)
    if errs:
        return None, errs
    return Route(name, label, tuple(conditions), tuple(to), mapping, admits), []


def _covers(first: Route, later: Route) -> bool:
    """True when every event ``later`` matches is also matched by ``first``."""
    later_by_path = {path: text for path, _, text in later.conditions}
    for path, _, text in first.conditions:
        if later_by_path.get(path) == text:
            continue
        wide, narrow = first.admits.get(path), later.admits.get(path)
        if wide is not None and narrow is not None and narrow <= wide:
            continue
        return False
    return True


def _shadowed(routes: list[Route]) -> list[str]:
    """Warnings for routes that can never send to a destination: an earlier route takes all they match."""
    out = []
    for j, later in enumerate(routes):
        for dest in later.to:
            for first in routes[:j]:
                if dest in first.to and _covers(first, later):
                    out.append(
                        f"{later.file}: route {later.name!r} never sends to {dest!r}: route {first.name!r}"
                        f" ({first.file}) comes first and matches every event this one does"
                        " (the first matching route per destination wins; put the narrower route first)"
                    )
                    break
    return out


def _toml(value: Any) -> str:
    """``value`` as it would be written in a rule file (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


_MISSING = object()


def _lookup(view: dict[str, Any], path: str) -> Any:
    node: Any = view
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _condition(key: str, spec: Any) -> tuple[Callable[[Any], bool], str]:
    if _scalar(spec):
        return (lambda v, s=spec: v is not _MISSING and _equal(v, s)), f"{key} = {spec!r}"
    if isinstance(spec, list):
        if not spec or not all(_scalar(s) for s in spec):
            raise ValueError("a list must hold one or more strings, numbers or booleans")
        return _any_of(spec), f"{key} in {spec!r}"
    if not isinstance(spec, dict) or not spec:
        raise ValueError("must be a value, a list of values, or a table of operators")
    tests: list[Callable[[Any], bool]] = []
    texts: list[str] = []
    for op, arg in spec.items():
        texts.append(f"{key} {op} {arg!r}")
        if op == "in":
            if not (isinstance(arg, list) and arg and all(_scalar(a) for a in arg)):
                raise ValueError("in: must be a non-empty list of values")
            tests.append(_any_of(arg))
        elif op in ("not", "not_in"):
            values = arg if isinstance(arg, list) else [arg]
            if not all(_scalar(a) for a in values):
                raise ValueError(f"{op}: must be a value or a list of values")
            tests.append(_negate(_any_of(values)))
        elif op in ("gt", "gte", "lt", "lte"):
            if _number(arg) is None or isinstance(arg, str):
                hint = f"; write it unquoted: {op} = {arg}" if isinstance(arg, str) and _number(arg) is not None else ""
                raise ValueError(f"{op}: {_toml(arg)} is not a number{hint}")
            tests.append(_compare(op, float(arg)))
        elif op == "regex":
            if not isinstance(arg, str):
                raise ValueError("regex: must be a string")
            # RE2 runs in time linear in the input: a rule's regex meets
            # visitor-controlled text, and a backtracking engine could be
            # made to stall the server (ReDoS). RE2 has no backreferences or
            # lookarounds; such patterns are refused here, at load.
            try:
                rx = re2.compile(arg)
            except re2.error as exc:
                raise ValueError(f"regex: {arg!r} does not compile for RE2 (no backreferences or lookarounds): {exc}") from None
            tests.append(_searcher(rx))
        elif op in ("prefix", "suffix", "contains"):
            if not isinstance(arg, str):
                raise ValueError(f"{op}: must be a string")
            tests.append(_text_test(op, arg))
        elif op == "exists":
            if not isinstance(arg, bool):
                raise ValueError("exists: must be true or false")
            tests.append(_exists(arg))
        else:
            raise ValueError(
                f"unknown operator {op!r} (known: in, not, not_in, gt, gte, lt, lte, regex, prefix, suffix, contains, exists)"
            )
    return (lambda v: all(t(v) for t in tests)), " and ".join(texts)


def _negate(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: not test(v)


def _searcher(rx: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and rx.search(v) is not None


def _text_test(op: str, arg: str) -> Callable[[Any], bool]:
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(arg)
    if op == "suffix":
        return lambda v: isinstance(v, str) and v.endswith(arg)
    return lambda v: isinstance(v, str) and arg in v


def _exists(want: bool) -> Callable[[Any], bool]:
    return lambda v: (v is not _MISSING and v not in (None, "")) == want


def _equal(value: Any, spec: Any) -> bool:
    if isinstance(spec, bool) or isinstance(value, bool):
        return value is spec
    if isinstance(spec, (int, float)):
        n = _number(value)
        return n is not None and n == float(spec)
    return bool(value == spec)


def _any_of(specs: list[Any]) -> Callable[[Any], bool]:
    return lambda v: v is not _MISSING and any(_equal(v, s) for s in specs)


def _compare(op: str, bound: float) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        n = _number(v)
        if n is None:
            return False
        return {"gt": n > bound, "gte": n >= bound, "lt": n < bound, "lte": n <= bound}[op]

    return test
