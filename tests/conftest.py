"""Test session set-up shared by every test module."""

from __future__ import annotations

import os

import pytest

from tests.browser import CHROMIUM


def pytest_configure(config: pytest.Config) -> None:
    # On a developer machine without chromium the browser tests skip; CI sets
    # TAGRELAY_REQUIRE_BROWSER=1 so that a missing browser fails instead of
    # passing silently.
    if os.environ.get("TAGRELAY_REQUIRE_BROWSER") == "1" and not CHROMIUM.exists():
        raise pytest.UsageError(
            f"TAGRELAY_REQUIRE_BROWSER=1 but no chromium at {CHROMIUM}: apt-get install chromium"
        )
