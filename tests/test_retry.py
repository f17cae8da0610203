"""The retry policy: exponential backoff with full jitter, vendor hints and give-up rules."""

from __future__ import annotations

import random

from proxy.delivery.retry import RetryPolicy
from proxy.vendors.base import Answer, Verdict, default_classify, retry_after


def test_delay_stays_within_the_exponential_ceiling():
    """Attempt n waits at most base * 2^(n-1), capped."""
    p = RetryPolicy(base_secs=1, cap_secs=30)
    rng = random.Random(7)
    assert all(0 <= p.delay(4, rng=rng) <= 8 for _ in range(200))
    assert all(0 <= p.delay(20, rng=rng) <= 30 for _ in range(200))


def test_full_jitter_spreads_delays():
    """Delays are spread over the whole range, not fixed."""
    p = RetryPolicy(base_secs=1, cap_secs=30)
    rng = random.Random(1)
    delays = [p.delay(5, rng=rng) for _ in range(200)]
    assert min(delays) < 4 and max(delays) > 12


def test_retry_after_is_a_floor():
    """A vendor's Retry-After is honoured even when the backoff is shorter."""
    assert RetryPolicy(base_secs=0.01).delay(1, retry_after=30.0) >= 30.0


def test_gives_up_after_max_attempts():
    """After max_attempts failures the event is dead."""
    assert "attempts" in RetryPolicy(max_attempts=3).gives_up(3, 0, None, 1)


def test_gives_up_when_the_vendor_would_refuse_the_age():
    """An event that would be older than the vendor accepts is dead, not retried."""
    week = 7 * 86400
    assert RetryPolicy().gives_up(1, week - 10, week, 30) == "too old for the vendor"
    assert RetryPolicy().gives_up(1, 60, week, 30) == ""


def test_generic_classification():
    """2xx ok; 429, 5xx and no answer retry; other 4xx final."""
    v = lambda status: default_classify(Answer(status)).verdict  # noqa: E731
    assert (v(204), v(429), v(503), v(None), v(400), v(401)) == (
        Verdict.OK, Verdict.RETRY, Verdict.RETRY, Verdict.RETRY, Verdict.FINAL, Verdict.FINAL
    )


def test_retry_after_header_forms():
    """Retry-After is read as seconds or as an HTTP date; garbage is ignored."""
    assert retry_after({"Retry-After": "120"}) == 120.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({"Retry-After": "soon"}) is None

