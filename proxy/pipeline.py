"""From accepted events to queued deliveries: route, render, map, enqueue.

Both the collection endpoint and ``tagrelay try`` go through :func:`route`,
so what ``try`` prints is what the service would send.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from .delivery import LedgerRow, QueuedRow
from .mapping import MappingError
from .model import Event, event_view
from .pii import scrub_params, scrub_text, strip_url, truncate_ip
from .rules import Destination, Route, RuleSet, Skip
from .vendors.base import RenderError

__all__ = ["Planned", "plan_rows", "route"]

log = logging.getLogger("proxy.pipeline")


@dataclass(slots=True)
class Planned:
    destination: Destination
    route: Route
    payload: dict[str, Any] | None
    error: str = ""  # why no payload: the adapter cannot express it, or a template failed


def route(rules: RuleSet, event: Event) -> tuple[list[Planned], list[Skip]]:
    """Which destinations get ``event``, with the payload each would get.

    PII a page left in its URLs, title or custom parameters is removed first
    (:mod:`proxy.pii`), so no destination, file or log sees it.
    """
    scrub_event(event)
    view = event_view(event)
    sends, skips = rules.plan(event, view)
    planned = []
    for dest, r in sends:
        try:
            payload = dest.adapter.render(_with_ip_mode(event, dest.ip))
        except RenderError as exc:
            planned.append(Planned(dest, r, None, f"not expressible for {dest.type}: {exc}"))
            continue
        except MappingError as exc:  # the destination's own templates (a webhook's body)
            planned.append(Planned(dest, r, None, f"destination {dest.name!r}: {exc}"))
            continue
        try:
            r.mapping.apply(payload, view)
        except MappingError as exc:
            planned.append(Planned(dest, r, None, f"route {r.name!r}: {exc}"))
            continue
        try:
            dest.adapter.check(payload)
        except RenderError as exc:
            planned.append(Planned(dest, r, None, f"not expressible for {dest.type}: {exc}"))
            continue
        planned.append(Planned(dest, r, payload))
    return planned, skips


def scrub_event(event: Event) -> None:
    """Strip PII from the page URL, referrer and title and from custom params (in place)."""
    page = event.page
    page.url, page.referrer, page.title = strip_url(page.url), strip_url(page.referrer), scrub_text(page.title)
    event.params = scrub_params(event.params)


def _with_ip_mode(event: Event, mode: str) -> Event:
    """The event as a destination with ``ip = "truncated"`` or ``"none"`` may see it."""
    if mode == "full" or not event.context.ip:
        return event
    ip = truncate_ip(event.context.ip, mode) or ""
    return dataclasses.replace(event, context=dataclasses.replace(event.context, ip=ip))


def plan_rows(rules: RuleSet, events: list[Event], now: float) -> tuple[list[QueuedRow], list[LedgerRow]]:
    """Route every event: the outbox rows to queue and the ledger entries that say why."""
    rows: list[QueuedRow] = []
    ledger: list[LedgerRow] = []
    for event in events:
        planned, skips = route(rules, event)
        queued: list[tuple[str, str]] = []  # (destination, detail) of each row
        for p in planned:
            dest = p.destination.name
            if p.payload is None:
                # A vendor-shape or template problem drops this event for this
                # destination only; it is an outcome, recorded, not an error of the hit.
                log.debug("event %s not sent to %s: %s", event.id, dest, p.error)
                ledger.append(LedgerRow(event.id, now, dest, "dropped", p.error))
                continue
            try:
                # Serialised here, per event, so that one event's odd value can
                # only drop that event, never fail the commit of everyone's.
                data = orjson.dumps(p.payload)
                key = p.destination.adapter.batch_key(p.payload)
            except (TypeError, ValueError) as exc:
                log.debug("event %s not sent to %s: payload not serialisable: %s", event.id, dest, exc)
                ledger.append(LedgerRow(event.id, now, dest, "dropped", f"payload not serialisable: {exc}"))
                continue
            rows.append(QueuedRow(dest, event.id, event.time, key, data, p.payload))
            queued.append((dest, f"route {p.route.name!r}"))
        ledger.extend(_shared_entries(event.id, now, "queued", queued))
        for skip in skips:
            log.debug("event %s skipped for %s: %s", event.id, skip.destination, skip.reason)
        ledger.extend(_shared_entries(event.id, now, "skipped", [(s.destination, s.reason) for s in skips]))
        if not planned and not skips:
            ledger.append(LedgerRow(event.id, now, "", "unrouted", "no route matches"))
    return rows, ledger


def _shared_entries(event_id: str, now: float, what: str, outcomes: list[tuple[str, str]]) -> list[LedgerRow]:
    """One ledger entry per detail, naming all its destinations ("a,b"; trace shows a line for each).

    The ledger is the bulk of each hit's writes: a route to three
    destinations, or six disabled vendors, cost one row each this way.
    """
    by_detail: dict[str, list[str]] = {}
    for destination, detail in outcomes:
        by_detail.setdefault(detail, []).append(destination)
    return [LedgerRow(event_id, now, ",".join(dests), what, detail) for detail, dests in by_detail.items()]
