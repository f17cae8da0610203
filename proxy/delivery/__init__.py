"""Delivery: queue rendered payloads per destination and send them in batches.

:class:`Delivery` owns one worker task per destination. Each worker takes what
is queued, groups it by the adapter's ``batch_key`` into requests of at most
``batch_size`` payloads, sends them over one pooled HTTP session with a
bounded number in flight, and retries what the adapter classifies as
retryable with :class:`~proxy.delivery.retry.RetryPolicy`.
"""

from __future__ import annotations

from .retry import RetryPolicy
from .sender import Delivery, Job

__all__ = ["Delivery", "Job", "RetryPolicy"]
