"""The canonical event as JSON, safe to write anywhere: PII only as SHA-256.

Used by the destinations that are not a vendor protocol (local file,
webhook default body) and by ``tagrelay try``.
"""

from __future__ import annotations

import copy
from typing import Any

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
    view["params"] = copy.deepcopy(view["params"])
    context = view["context"]
    for key in ("consent", "click_ids", "ids"):
        context[key] = dict(context[key])
    hashed = meta_user_data(event.user)
    if hashed:
        view["user"]["hashed"] = hashed
    return view
