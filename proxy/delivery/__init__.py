"""Delivery: the durable outbox, the per-destination workers, and the retry policy.

:class:`Delivery` accepts rendered payloads into the :class:`Outbox` (SQLite,
committed before a hit is answered) and runs one worker lane per
destination that batches, sends, retries and buries what a vendor refuses.
"""

from __future__ import annotations

from .outbox import DeadRow, LedgerRow, Outbox, OutboxError, OutboxFull, QueuedRow, Row
from .retry import RetryPolicy
from .sender import Breaker, Delivery

__all__ = [
    "Breaker",
    "DeadRow",
    "Delivery",
    "LedgerRow",
    "Outbox",
    "OutboxError",
    "OutboxFull",
    "QueuedRow",
    "RetryPolicy",
    "Row",
]
