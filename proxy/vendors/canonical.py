"""The canonical event as JSON, safe to write anywhere: PII only as SHA-256.

Used by the destinations that are not a vendor protocol (local file,
webhook default body) and by ``tagrelay try``.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from ..model import Event, event_view
from ..privacy import meta_user_data

__all__ = ["canonical_payload"]


def canonical_payload(event: Event) -> dict[str, Any]:
    """The event's view plus hashed user data (normalised as Meta does, SHA-256 hex).

    A payload of its own: the view shares the event's params and the hit's
    context dicts, and a route's ``set`` writes into the payload.
    """
    view = event_view(event)
    view.pop("event", None)
    view["params"] = _copy(view["params"])
    context = view["context"]
    for key in ("consent", "click_ids", "ids"):
        context[key] = dict(context[key])
    hashed = meta_user_data(event.user)
    if hashed:
        view["user"]["hashed"] = hashed
    return view


def _copy(params: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data through orjson: about 6x cheaper than copy.deepcopy (8.7 -> 1.4 us for an
    ecommerce event's params); params come from JSON, but deepcopy takes anything that does not."""
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(params))
    except TypeError:
        return copy.deepcopy(params)
    return copied
