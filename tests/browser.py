"""Debian's chromium, driven headless through Playwright, for browser tests.

Playwright never downloads a browser here: it starts ``/usr/bin/chromium``
(``executable_path``) with a fresh, empty profile directory per launch.

Usage::

    from tests.browser import chromium, needs_chromium

    @needs_chromium
    async def test_something(aiohttp_server):
        server = await aiohttp_server(app)
        async with chromium() as context:
            page = await context.new_page()
            await page.goto(str(server.make_url("/")))

Host names can be mapped to the loopback address (``host_map``) to test a
page on ``www.shop.example`` that loads the collector from ``t.shop.example``.
Every other host name fails to resolve, so a test page can reach nothing but
our own server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.async_api import BrowserContext, async_playwright

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "chromium", "chromium_major", "needs_chromium", "resolver_rules"]

CHROMIUM = Path(os.environ.get("TAGRELAY_CHROMIUM", "/usr/bin/chromium"))

# Flags from the project brief: headless, no sandbox (containers), no GPU, no
# QUIC, and nothing the browser would fetch on its own (updates, sync, ...).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

_skip_without_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"chromium not found at {CHROMIUM}"
)

_Test = TypeVar("_Test", bound=Callable[..., Any])


def needs_chromium(test: _Test) -> _Test:
    """Mark ``test`` as a browser test (``-m browser``), skipped where chromium is missing."""
    marked: _Test = pytest.mark.browser(_skip_without_chromium(test))
    return marked


def chromium_major() -> str:
    """The installed chromium's major version ("150"): the one its Sec-CH-UA hints carry."""
    out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\b(\d+)\.\d+\.\d+\.\d+\b", out)
    assert match, f"{CHROMIUM} --version printed no version: {out!r}"
    return match.group(1)


def resolver_rules(host_map: Mapping[str, str]) -> str:
    """Chromium ``--host-resolver-rules``: mapped names to loopback, all others unresolvable.

    127.0.0.1 itself stays reachable; every other name and address fails.
    """
    rules = []
    for host, address in host_map.items():
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(
                f"cannot map {host!r} to {address!r}: tests may only reach loopback addresses"
            )
        if not host or any(c in host for c in " ,*"):
            raise ValueError(f"cannot map host {host!r}: expected a plain host name")
        rules.append(f"MAP {host} {address}")
    # "*" matches IP literals too, so our own address is excluded explicitly.
    rules += ["MAP * ~NOTFOUND", "EXCLUDE 127.0.0.1"]
    return ", ".join(rules)


@contextlib.asynccontextmanager
async def chromium(
    host_map: Mapping[str, str] | None = None, **context_options: Any
) -> AsyncIterator[BrowserContext]:
    """Start headless chromium with a fresh profile and yield its browser context.

    ``context_options`` go to Playwright's ``launch_persistent_context`` (for
    example ``viewport`` or ``locale``). The browser and its profile directory
    are gone when the block ends.
    """
    args = [*CHROMIUM_FLAGS, "--host-resolver-rules=" + resolver_rules(host_map or {})]
    with tempfile.TemporaryDirectory(prefix="tagrelay-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=args,
                **context_options,
            )
            try:
                yield context
            finally:
                await context.close()
