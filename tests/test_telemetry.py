"""Throttle: the one-line-a-minute rule for log lines that can come per hit or per retry."""

from __future__ import annotations

import time

from proxy.telemetry import Throttle


def test_the_first_line_of_a_kind_is_due_and_the_next_is_held_within_the_period():
    """A full disk retried twice a second gives one line, not one per retry."""
    throttle = Throttle(3600)
    assert (throttle.due("full"), throttle.due("full")) == (0, None)


def test_kinds_are_throttled_apart():
    """A drop for meta does not hold back the first line for ga4."""
    throttle = Throttle(3600)
    throttle.due("drop meta")
    assert throttle.due("drop ga4") == 0


def test_after_the_period_the_next_line_says_how_many_were_held_back():
    """The line after a quiet minute carries the count of those it stood for."""
    throttle = Throttle(0.05)
    throttle.due("full")
    throttle.due("full")
    throttle.due("full")
    time.sleep(0.06)
    assert throttle.due("full") == 2
