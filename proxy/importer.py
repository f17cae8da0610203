"""Offline conversions from a CSV file: the reader behind ``tagrelay import FILE.csv --source NAME``.

The file is UTF-8 (a byte-order mark is fine: Excel's "CSV UTF-8" writes
one), with a header row naming the columns. Header names are matched without
regard to case, surrounding spaces, or spaces and hyphens against ``_``
(``Event Name`` is ``event_name``). Columns:

==============================  ==========================================================
column                          becomes
==============================  ==========================================================
``event_name`` (required)       ``name``: an event name, e.g. ``purchase``
``event_id`` (required)         ``id``, the dedup key (your order or lead number)
``event_time`` (required)       ``time``: unix seconds, or ISO 8601 with a zone
                                (``2024-12-04T11:39:05Z``, ``2024-12-04 12:39:05+01:00``)
``action_source`` (required)    where it happened: ``physical_store``, ``phone_call``, ...
                                (see :data:`proxy.events_api.ACTION_SOURCES`); required
                                because vendors ask the sender to vouch for it
``email``, ``phone``,           the person (raw; normalised and hashed per vendor
``first_name``, ``last_name``,  before anything leaves)
``external_id``
``user_id``                     ``user_id``
``page_url``, ``page_referrer``, ``page``
``page_title``
``ip``, ``user_agent``          the person's, for enrichment (geo, device)
``consent_ads``,                ``context.consent``: true/false, 1/0, yes/no or
``consent_analytics``,          granted/denied; an empty cell is no signal
``consent_ad_user_data``,
``consent_ad_personalization``
``gclid``, ``fbclid``,          ``context.click_ids`` (every click ID the collector knows)
``ttclid``, ``msclkid``, ...
``fbp``, ``fbc``,               ``context.ids`` (see :data:`proxy.events_api.ID_KEYS`)
``ga_client_id``, ...
``value``                       ``params.value`` as a number; with ``;`` as the delimiter
                                a decimal comma (``12,50``) is read as well
``currency``                    ``params.currency``: three letters, upper-cased
any other column                ``params.<column>``, as text (no guessing: ``00123``
                                stays ``00123``)
==============================  ==========================================================

Empty cells are absent values. Blank lines and rows whose cells are all
empty are skipped. The delimiter is ``,``, ``;`` (Excel in much of Europe),
tab or ``|``: the one found most often in the header line, unless given.

A problem with the whole file (unreadable, not UTF-8, no header, a required
column missing, a header naming a column twice) raises
:class:`ImportFileError` and nothing is imported. A problem with one row
becomes a :class:`RowError` with the row's physical line number (the header
is line 1; a quoted value spanning lines counts every line; the number is
that of the row's first line) and the other rows are still read. Each row
passes the same checks as an events API event; messages never show PII.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .collect import _MAX_KEY_CHARS, _PURPOSES, HitError, _click_id, _show, _string, _user_value
from .events_api import (
    _RESERVED_SOURCES,
    _SOURCE_NAME,
    ID_KEYS,
    ServerEvent,
    _action_source,
    _event_id,
    _id_value,
    _ip,
    _name,
    _time,
    _user_agent,
    _user_id,
)
from .model import CLICK_IDS, Page, UserData
from .settings import Settings

__all__ = [
    "DELIMITERS",
    "MAX_FILE_BYTES",
    "REQUIRED_COLUMNS",
    "ImportFileError",
    "RowError",
    "read_conversions_csv",
]

#: Columns every file must have.
REQUIRED_COLUMNS = ("event_name", "event_id", "event_time", "action_source")
#: Delimiters recognised when sniffing (any single character may be passed).
DELIMITERS = (",", ";", "\t", "|")
#: Largest file read. The whole file is read and decoded before any row, so
#: that an encoding problem refuses the file instead of half of it.
# TODO(issue 5): stream row by row once imports of more than ~300k rows are asked for.
MAX_FILE_BYTES = 64 * 1024 * 1024

_USER_COLUMNS = ("email", "phone", "first_name", "last_name", "external_id")
_PAGE_COLUMNS = {"page_url": "url", "page_referrer": "referrer", "page_title": "title"}
_CONSENT_COLUMNS = {f"consent_{p}": p for p in _PURPOSES}
# Header names are compared lower-cased; click IDs keep their own spelling (ScCid).
_CLICK_COLUMNS = {c.lower(): c for c in CLICK_IDS}
_ID_COLUMNS = {k: k for k in ID_KEYS}
_OTHER_COLUMNS = ("user_id", "ip", "user_agent", "value", "currency")
_BOOLS = {
    "true": True, "1": True, "yes": True, "granted": True,
    "false": False, "0": False, "no": False, "denied": False,
}  # fmt: skip
_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SPACES = re.compile(r"[\s\-]+")


class ImportFileError(ValueError):
    """The file as a whole cannot be imported; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One row that was not imported: its first physical line (header = 1) and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_conversions_csv(
    path: Path, source: str, settings: Settings, now: float, *, delimiter: str | None = None
) -> tuple[list[ServerEvent], list[RowError]]:
    """Read offline conversions from ``path``: the good rows as events, the bad ones as errors.

    ``delimiter`` None sniffs it from the header line. Raises
    :class:`ImportFileError` when the file as a whole is unusable (see the
    module docstring).
    """
    if not _SOURCE_NAME.fullmatch(source) or source in _RESERVED_SOURCES:
        raise ImportFileError(
            f"source {_show(source)}: must be a lower-case letter, then lower-case letters, digits, _ or -"
            " (at most 32), and not 'browser'"
        )
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ImportFileError(f"delimiter {delimiter!r}: must be one character, not a quote or line break")
    text = _read_text(path)
    if delimiter is None:
        delimiter = _sniff(text)

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    last_line = text.count("\n")  # once: counted per bad row, a file of bad rows took quadratic time
    header: list[str] | None = None
    events: list[ServerEvent] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str], int] = {}
    while True:
        line = reader.line_num + 1  # a row's first line: one past where the last one ended
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                # Reading on would take the first data row for the header.
                raise ImportFileError(f"{path}: line {line}: the header row is not valid CSV: {exc}") from None
            took = f"lines {line} to {reader.line_num} were read as one row and none of them imported"
            if reader.line_num >= last_line and text.count('"') % 2:
                # An unclosed quote swallowed every line after it into one field.
                errors.append(RowError(line, f'a quote (") opened here is never closed: {took}'))
                break
            # The reader starts afresh on the next line, so later rows still count.
            if reader.line_num > line:  # a quote opened here ran on over the lines after it
                errors.append(RowError(line, f"not valid CSV: {exc}: a quote opened here ran on to line {reader.line_num}; {took}"))
            else:
                errors.append(RowError(line, f"not valid CSV: {exc}"))
            continue
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = _header(cells, path, settings)
            continue
        try:
            event = _row(header, cells, source, settings, now, delimiter)
        except HitError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        first = seen.setdefault((event.name, event.id), line)
        if first != line:
            errors.append(
                RowError(
                    line,
                    f"event_id {event.id!r}: {event.name} with this id is already on line {first};"
                    " the id is the dedup key",
                )
            )
            continue
        events.append(event)
    if header is None:
        raise ImportFileError(f"{path}: no header row (the file has no data); the first line must name the columns")
    return events, errors


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImportFileError(f"{path}: {size} bytes is over the limit of {MAX_FILE_BYTES}; split the file")
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(f"{path}: UTF-16 (Excel's 'Unicode text'); save it as 'CSV UTF-8' instead")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"{path}: not UTF-8 (byte 0x{data[exc.start]:02X} on line {line}); save it as 'CSV UTF-8'"
            " or convert it, e.g. iconv -f WINDOWS-1252 -t UTF-8"
        ) from None
    if "\x00" in text:
        raise ImportFileError(f"{path}: holds NUL characters; not a text CSV file")
    return text


def _sniff(text: str) -> str:
    """The delimiter found most often outside quotes on the first non-blank line (``,`` if none)."""
    first = next((ln for ln in io.StringIO(text, newline="") if ln.strip()), "")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in first:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _normal(name: str) -> str:
    return _SPACES.sub("_", name.strip().lower())


def _header(cells: list[str], path: Path, s: Settings) -> list[str]:
    names = [_normal(c) for c in cells]
    named = [n for n in names if n]
    if not set(named) & {*REQUIRED_COLUMNS, *_USER_COLUMNS, *_OTHER_COLUMNS}:
        # The cells are not shown: a file without a header starts with data, maybe PII.
        raise ImportFileError(
            f"{path}: the first line names none of the columns {', '.join(REQUIRED_COLUMNS)}; it must be a header row"
        )
    for n, count in Counter(named).items():
        if count > 1:
            raise ImportFileError(f"{path}: the header names column {n!r} twice")
        if len(n) > _MAX_KEY_CHARS:
            raise ImportFileError(f"{path}: a column name of {len(n)} characters is over the limit of {_MAX_KEY_CHARS}")
    missing = [c for c in REQUIRED_COLUMNS if c not in named]
    if missing:
        raise ImportFileError(
            f"{path}: required column(s) {', '.join(missing)} missing from the header"
            f" (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    fields = {*REQUIRED_COLUMNS, *_USER_COLUMNS, *_PAGE_COLUMNS, *_CONSENT_COLUMNS, *_CLICK_COLUMNS, *_ID_COLUMNS}
    params = [n for n in named if n not in fields and n not in ("user_id", "ip", "user_agent")]
    if len(params) > s.max_params:
        # Known from the header alone: better one error than the same one on every row.
        raise ImportFileError(
            f"{path}: {len(params)} columns would be params, over the limit of {s.max_params};"
            " remove the columns you do not need"
        )
    return names


def _row(header: list[str], cells: list[str], source: str, s: Settings, now: float, delimiter: str) -> ServerEvent:
    extra = [c for c in cells[len(header) :] if c.strip()]
    if extra:
        raise HitError(
            f"{len(cells)} fields but the header has {len(header)} columns"
            f" (a value holding {delimiter!r} needs double quotes)"
        )
    row: dict[str, str] = {}
    for position, (column, cell) in enumerate(zip(header, cells), 1):
        value = cell.strip()
        if not value:
            continue
        if not column:
            raise HitError(f"column {position} has a value but no name in the header")
        row[column] = value
    for column in REQUIRED_COLUMNS:
        if column not in row:
            raise HitError(f"{column}: empty; it is required")

    eid = _event_id(row.pop("event_id"), "event_id")
    event = ServerEvent(
        name=_name(row.pop("event_name"), "event_name"),
        id=eid,
        time=_time(row.pop("event_time"), "event_time", eid, now),
        action_source=_action_source(row.pop("action_source").lower(), "action_source"),
        source=source,
    )
    user = {c: _user_value(row.pop(c), c) for c in _USER_COLUMNS if c in row}
    if user:
        event.user = UserData(**user)
    page = {field: _string(row.pop(c), c, s) for c, field in _PAGE_COLUMNS.items() if c in row}
    if page:
        event.page = Page(**page)
    if "user_id" in row:
        event.user_id = _user_id(row.pop("user_id"), "user_id")
    if "ip" in row:
        event.ip = _ip(row.pop("ip"), "ip")
    if "user_agent" in row:
        event.user_agent = _user_agent(row.pop("user_agent"), "user_agent", s)
    event.consent = {p: _consent(row.pop(c), c) for c, p in _CONSENT_COLUMNS.items() if c in row}
    event.click_ids = {k: _click_id(row.pop(c), c) for c, k in _CLICK_COLUMNS.items() if c in row}
    event.ids = {k: _id_value(k, row.pop(c), c) for c, k in _ID_COLUMNS.items() if c in row}

    params: dict[str, Any] = {}
    if "value" in row:
        params["value"] = _amount(row.pop("value"), delimiter)
    if "currency" in row:
        params["currency"] = _currency(row.pop("currency"))
    for column, value in row.items():
        params[column] = _string(value, column, s)
    if len(params) > s.max_params:
        raise HitError(f"{len(params)} parameters is over the limit of {s.max_params}", 413)
    event.params = params
    return event


def _consent(text: str, where: str) -> bool:
    value = _BOOLS.get(text.lower())
    if value is None:
        raise HitError(f"{where}: {_show(text)} is not true/false, 1/0, yes/no or granted/denied")
    return value


def _amount(text: str, delimiter: str) -> float:
    number = text
    if delimiter != "," and number.count(",") == 1 and "." not in number:
        number = number.replace(",", ".")  # a decimal comma, as Excel writes it where ';' separates
    if not _AMOUNT.fullmatch(number):
        raise HitError(f"value: {_show(text)} is not a number (e.g. 42.50, no thousands separators)")
    value = float(number)
    if not math.isfinite(value):
        raise HitError(f"value: {_show(text)} is too large")
    return value


def _currency(text: str) -> str:
    code = text.upper()
    if not _CURRENCY.fullmatch(code):
        raise HitError(f"currency: {_show(text)} is not a three-letter ISO 4217 code (e.g. EUR)")
    return code
