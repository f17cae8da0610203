"""Field mapping: a route's ``set`` table, compiled once in Jinja2's sandbox.

A ``set`` table maps a dotted path in an adapter's rendered payload to a value.
String values are Jinja2 templates evaluated against the event's view
(:func:`proxy.model.event_view`); a template that is a single expression keeps
its native type (``"{{ params.value }}"`` stays a float). Non-string values
are literals. A template that yields nothing (undefined, None or "") removes
the key, so a route can also drop fields: ``"custom_data.foo" = ""``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Callable, Collection, Iterable

import orjson
from jinja2 import ChainableUndefined, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["Fields", "Mapping", "MappingError", "compile_mapping", "did_you_mean", "set_path"]


class MappingError(ValueError):
    """A template failed at render time; the message names the key."""


def _concat(values: Iterable[Any]) -> Any:
    """A lone expression keeps its value; anything else is joined as text.

    Unlike Jinja's own native mode, a string is never parsed as a Python
    literal: a visitor's ``transaction_id`` of ``"0x10"`` or ``"1+2j"`` stays
    that string instead of becoming 16 or a complex number.
    """
    values = iter(values)  # macros and blocks hand over a list, which islice would not consume
    head = list(islice(values, 2))
    if not head:
        return None
    if len(head) == 1:
        return head[0]
    return "".join(str(v) for v in chain(head, values))


class _CodeGenerator(NativeCodeGenerator):
    """Jinja folds a constant such as ``{{ none }}`` into text at compile time;
    a lone one keeps its type here, so ``{{ none }}`` removes the key and
    ``{{ false }}`` stays a boolean, as the values of expressions do."""

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        values = list(group)
        if len(values) == 1 and not isinstance(values[0], str):
            return repr(values[0])
        return super()._output_const_repr(values)


class _Env(ImmutableSandboxedEnvironment):
    """Sandboxed, immutable, native types; ``a.b`` on a dict reads the key first.

    Plain Jinja resolves ``params.items`` to ``dict.items`` (the method); in a
    mapping ``params.items`` must mean the event's items. Of a dict's methods
    only ``get`` stays reachable, always, for Jinja's usual
    ``params.get('coupon', 'none')``: a visitor's param named "get" must not
    break it (``params['get']`` reads that one).

    Values come from visitors, so ``*`` and ``**`` are intercepted: a price
    of "xx" times a quantity of 10**12 would otherwise build a terabyte string.
    """

    code_generator_class = _CodeGenerator
    concat = staticmethod(_concat)
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            if attribute == "get":
                return obj.get
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # params['items'] reads the key or nothing, never the dict's method.
        if isinstance(obj, dict) and isinstance(argument, str):
            try:
                return obj[argument]
            except KeyError:
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and times > 1:
                    # A list's size is that of its items: 30 strings of 2,000 characters weigh 60,000.
                    size = len(seq) if isinstance(seq, str) else len(orjson.dumps(seq, default=str))
                    if size * times > _MAX_REPEAT:
                        raise SecurityError(f"'*' would build {size * times:,} characters of data (at most {_MAX_REPEAT:,})")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise SecurityError(f"'**' would build an integer of over {_MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


_MAX_REPEAT = 100_000
_MAX_POWER_BITS = 4096


_ENV = _Env(undefined=ChainableUndefined, autoescape=False)


@dataclass(slots=True, frozen=True)
class _Field:
    path: tuple[str, ...]
    key: str
    template: Any  # jinja2.Template, or None for a literal
    literal: Any


@dataclass(slots=True, frozen=True)
class Mapping:
    fields: tuple[_Field, ...] = ()
    table: str = "set"  # what the rule file calls it, for messages: a route's "set", a webhook's "body"

    def apply(self, payload: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
        """Write each field into ``payload`` (in place) and return it."""
        for f in self.fields:
            if f.template is None:
                value = f.literal
            else:
                try:
                    value = f.template.render(view)
                except TemplateError as exc:
                    raise MappingError(f"{self.table}.{f.key}: {exc}") from None
                except Exception as exc:  # a template is the rule author's code, fed by visitors: it fails this event only
                    raise MappingError(f"{self.table}.{f.key}: {type(exc).__name__}: {exc}") from None
            if isinstance(value, Undefined) or value is None or value == "":
                _remove_path(payload, f.path)
            else:
                problem = _json_problem(value)
                if problem:
                    raise MappingError(f"{self.table}.{f.key}: the template's value {problem}")
                try:
                    set_path(payload, f.path, value)
                except ValueError as exc:
                    raise MappingError(f"{self.table}.{f.key}: {exc}") from None
        return payload


def compile_mapping(
    table: dict[str, Any], check_read: Callable[[str, str | None], str] | None = None, name: str = "set"
) -> tuple[Mapping, list[tuple[str, str]]]:
    """Compile a ``set`` table (nested tables or dotted keys). Returns the mapping and (key, problem) pairs.

    ``check_read(name, attribute)`` says what is wrong with a field a template
    reads (``"" ``: nothing), so that a typo such as ``{{ parms.value }}``,
    which would quietly leave the key out of every payload, is refused at load.
    """
    fields: list[_Field] = []
    problems: list[tuple[str, str]] = []
    flat: dict[str, Any] = {}
    for key, value in _leaves(table):
        if key in flat:
            problems.append((key, "set twice (as a dotted key and inside a table): keep one"))
        flat[key] = value
    for key, value in flat.items():
        path = tuple(key.split("."))
        if not all(path):
            problems.append((key, "empty segment in path"))
            continue
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            try:
                template = _ENV.from_string(value)
            except TemplateError as exc:
                problems.append((key, f"template does not compile: {exc}"))
                continue
            ast = _ENV.parse(value)
            if next(ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)), None):
                problems.append((key, "a template cannot include, import or extend another (there is no template library): write it out here"))
                continue
            if check_read is not None:
                bad = sorted({p for field, attr in _reads(ast) if (p := check_read(field, attr))})
                if bad:
                    problems.extend((key, f"template reads {p}") for p in bad)
                    continue
            fields.append(_Field(path, key, template, None))
        else:
            fields.append(_Field(path, key, None, value))
    paths = {f.path: f.key for f in fields}
    for f in fields:
        outer = next((paths[f.path[:n]] for n in range(1, len(f.path)) if f.path[:n] in paths), None)
        if outer is not None:
            problems.append((f.key, f"{outer!r} is set too: a key cannot be both a value and a table of values; keep one"))
    return Mapping(tuple(fields), name), problems


class Fields:
    """What a template's context holds, read off a sample of it (an event's view, say).

    A table with fixed fields lists them, so that "page.hots" is caught at
    load; a ``free`` table (params) takes any key; below the fields of a
    ``nested`` table (context: consent, click_ids, ids) keys vary; a plain
    value has no fields.
    """

    def __init__(
        self,
        sample: dict[str, Any],
        free: Collection[str] = (),
        nested: Collection[str] = (),
        renamed: dict[str, str] | None = None,
    ) -> None:
        self.tables: dict[str, frozenset[str] | None] = {
            key: None if key in free else frozenset(value) if isinstance(value, dict) else frozenset()
            for key, value in sample.items()
        }
        self.nested = frozenset(nested)
        self.renamed = renamed or {}  # a name other contexts use -> the one this context has

    def check_key(self, key: str) -> str:
        """What is wrong with a dotted path a route's ``match`` names ("page.host"), or ""."""
        parts = key.split(".")
        top = parts[0]
        if top not in self.tables:
            free = "".join(f", or {name}.NAME" for name, fields in self.tables.items() if fields is None)
            return f"unknown field{did_you_mean(top, self.tables)} (known: {', '.join(sorted(self.tables))}{free})"
        allowed = self.tables[top]
        if allowed is None:
            return "" if len(parts) > 1 else f"name a field inside {top}, e.g. {top}.value"
        if not allowed:
            return "" if len(parts) == 1 else f"{top} has no fields"
        if len(parts) < 2 or parts[1] not in allowed or (len(parts) > 2 and top not in self.nested):
            return f"unknown field{self._fields_hint(top, parts[-1], allowed)}"
        return ""

    def check_read(self, name: str, attr: str | None) -> str:
        """What is wrong with a field a template reads (see :func:`compile_mapping`), or ""."""
        if name not in self.tables:
            hint = f"; here it is {self.renamed[name]!r}" if name in self.renamed else did_you_mean(name, self.tables)
            return f"{name!r}, which events do not have{hint} (known: {', '.join(sorted(self.tables))})"
        allowed = self.tables[name]
        if attr is None or not allowed or attr in allowed or attr == "get":
            return ""  # free-form, a plain value's own methods, or dict.get
        return f"{name}.{attr}, which is not a field{self._fields_hint(name, attr, allowed)}"

    @staticmethod
    def _fields_hint(table: str, word: str, allowed: frozenset[str]) -> str:
        """"; did you mean 'page.host'? (known: page.host, page.path, ...)"."""
        known = ", ".join(f"{table}.{a}" for a in sorted(allowed))
        return f"{did_you_mean(word, allowed, prefix=table + '.')} (known: {known})"


def did_you_mean(word: str, choices: Collection[str], prefix: str = "") -> str:
    """'; did you mean 'page.host'?' for the closest choice, case aside; "" for none."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.7)
    return f"; did you mean {prefix + by_lower[close[0]]!r}?" if close else ""


def _reads(ast: nodes.Template) -> set[tuple[str, str | None]]:
    """The fields a template reads from its context: (name, None) for each, plus
    (name, attribute) where it reads a constant attribute or key of one.

    A name the template also binds somewhere (a loop variable, a macro
    argument, ``{% set %}``) may mean either there, so its attributes are
    not listed: the check must not refuse a template that works.
    """
    free = meta.find_undeclared_variables(ast) - set(_ENV.globals)
    out: set[tuple[str, str | None]] = {(name, None) for name in free}
    bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if not (isinstance(base, nodes.Name) and base.name in free and base.name not in bound):
            continue
        if isinstance(node, nodes.Getattr):
            out.add((base.name, node.attr))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            out.add((base.name, node.arg.value))
    return out


_INT64 = 2**63


def _json_problem(value: Any, depth: int = 0) -> str:
    """Why ``value`` cannot go into a JSON payload, or ""."""
    if depth > 8:
        return "is nested too deeply"
    if value is None or isinstance(value, (str, bool)):
        return ""
    if isinstance(value, int):
        return "" if -_INT64 <= value < _INT64 else "is an integer too large for JSON consumers"
    if isinstance(value, float):
        return "" if math.isfinite(value) else "is not a finite number"
    if isinstance(value, (list, tuple)):
        return next((p for p in (_json_problem(v, depth + 1) for v in value) if p), "")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "has a table with non-text keys"
        return next((p for p in (_json_problem(v, depth + 1) for v in value.values()) if p), "")
    return f"is a {type(value).__name__}, which JSON cannot hold"


def _leaves(table: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Each value with its dotted path: ``{a = {b = 1}}`` and ``{"a.b" = 1}`` name the same one."""
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path``, creating tables on the way.

    Refuses (ValueError) to walk through a list or a plain value, and to
    replace a table or list with a plain value: either would wreck the
    vendor payload's structure rather than change one field of it.
    """
    node = target
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        elif not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            kind = "a list (paths cannot index into lists)" if isinstance(child, list) else "a plain value"
            raise ValueError(f"{where!r} is {kind}")
        node = child
    old = node.get(path[-1])
    if isinstance(old, (dict, list)) and not isinstance(value, type(old)):
        kind = "table" if isinstance(old, dict) else "list"
        raise ValueError(f"{'.'.join(path)!r} is a {kind} in the payload; it cannot become {type(value).__name__}")
    node[path[-1]] = value


def _remove_path(target: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)
