"""From accepted events to queued deliveries: route, render, map, enqueue.

Both the collection endpoint and ``tagrelay try`` go through :func:`route`,
so what ``try`` prints is what the service would send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .delivery import Delivery, Job
from .mapping import MappingError
from .model import Event, event_view
from .rules import Destination, Route, RuleSet, Skip
from .vendors.base import RenderError

__all__ = ["Planned", "route", "dispatch"]

log = logging.getLogger("proxy.pipeline")


@dataclass(slots=True)
class Planned:
    destination: Destination
    route: Route
    payload: dict[str, Any] | None
    error: str = ""  # why no payload: the adapter cannot express it, or a template failed


def route(rules: RuleSet, event: Event) -> tuple[list[Planned], list[Skip]]:
    """Which destinations get ``event``, with the payload each would get."""
    view = event_view(event)
    sends, skips = rules.plan(event, view)
    planned = []
    for dest, r in sends:
        try:
            payload = dest.adapter.render(event)
            r.mapping.apply(payload, view)
        except RenderError as exc:
            planned.append(Planned(dest, r, None, f"not expressible for {dest.type}: {exc}"))
            continue
        except MappingError as exc:
            planned.append(Planned(dest, r, None, f"route {r.name!r}: {exc}"))
            continue
        planned.append(Planned(dest, r, payload))
    return planned, skips


def dispatch(rules: RuleSet, delivery: Delivery, events: list[Event]) -> int:
    """Route every event and queue its payloads; returns how many jobs were queued."""
    queued = 0
    for event in events:
        planned, skips = route(rules, event)
        for p in planned:
            if p.payload is None:
                # A rule-based or vendor-shape drop is an outcome, not an error
                # of the hit. TODO(issue 3): record it in the ledger.
                log.debug("event %s not sent to %s: %s", event.id, p.destination.name, p.error)
                continue
            delivery.put(Job(p.destination.name, p.payload, event.id, event.time))
            queued += 1
        for skip in skips:
            log.debug("event %s skipped for %s: %s", event.id, skip.destination, skip.reason)
    return queued
