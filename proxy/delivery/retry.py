"""When to try a failed delivery again, and how long to wait.

Kept apart from the sender so it can be tested on its own: the adapter says
whether an answer is retryable (:meth:`proxy.vendors.base.Adapter.classify`);
this policy says when, and when to give up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    base_secs: float = 1.0
    cap_secs: float = 300.0
    max_attempts: int = 12

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1).

        Exponential backoff with full jitter: uniform in [0, min(cap, base*2^(attempt-1))].
        A vendor's ``Retry-After`` is a floor: never come back sooner than asked.
        """
        ceiling = min(self.cap_secs, self.base_secs * (2 ** max(0, attempt - 1)))
        wait = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    def gives_up(self, attempt: int, age_secs: float, max_age_secs: float | None, next_delay: float) -> str:
        """Why to stop retrying after ``attempt`` failed attempts, or "" to go on."""
        if attempt >= self.max_attempts:
            return f"gave up after {attempt} attempts"
        if max_age_secs is not None and age_secs + next_delay >= max_age_secs:
            return "too old for the vendor"
        return ""
