"""Brave's ad-block engine (adblock-rust), loaded with the real lists, for tests.

Answers "would a user's blocker stop this request?" for the collector's URLs.
Two profiles are built from ``tests/data/filterlists/`` (see its README):

* ``EASYPRIVACY``: EasyPrivacy alone, as Brave, AdGuard and ABP users get it.
* ``UBO_DEFAULT``: EasyList + EasyPrivacy + uBO "Privacy" + uBO "Unbreak",
  close to what uBlock Origin enables out of the box.

Each engine is built once per test session (``functools.lru_cache``), so no
conftest fixture is needed. Only network filters are modelled: no cosmetic
filters, no CNAME uncloaking, no dynamic filtering (README, "Limits").
"""

from __future__ import annotations

import functools
from pathlib import Path

import adblock

__all__ = [
    "EASYPRIVACY",
    "PROFILES",
    "REQUEST_TYPES",
    "UBO_DEFAULT",
    "blocked",
    "engine",
    "request_type_for",
]

LISTS_DIR = Path(__file__).resolve().parent / "data" / "filterlists"

EASYPRIVACY = "easyprivacy"
UBO_DEFAULT = "ubo-default"

PROFILES: dict[str, tuple[str, ...]] = {
    EASYPRIVACY: ("easylist/easyprivacy.txt",),
    UBO_DEFAULT: (
        "easylist/easylist.txt",
        "easylist/easyprivacy.txt",
        "ublock/privacy.txt",
        "ublock/unbreak.txt",
    ),
}

# Request types adblock-rust understands. An unknown string (e.g. "fetch") is
# silently treated as "other" by the engine, which would hide a
# `$xmlhttprequest` rule, so anything else is refused here.
REQUEST_TYPES = frozenset(
    {
        "beacon",
        "csp_report",
        "document",
        "font",
        "image",
        "main_frame",
        "media",
        "object",
        "other",
        "ping",
        "script",
        "stylesheet",
        "sub_frame",
        "subdocument",
        "websocket",
        "xhr",
        "xmlhttprequest",
    }
)

# Playwright's `Request.resource_type` names mapped to the engine's names.
_PLAYWRIGHT_TYPES = {
    "document": "document",
    "stylesheet": "stylesheet",
    "image": "image",
    "media": "media",
    "font": "font",
    "script": "script",
    "xhr": "xmlhttprequest",
    "fetch": "xmlhttprequest",
    "ping": "ping",
    "websocket": "websocket",
}


@functools.cache
def engine(profile: str) -> adblock.Engine:
    """Return the engine for ``profile``, built from whole list files on first use."""
    try:
        files = PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown ad-block profile {profile!r}: expected one of {sorted(PROFILES)}"
        ) from None

    # debug=True keeps the rule text so a failing test can name the rule.
    filter_set = adblock.FilterSet(debug=True)
    for name in files:
        filter_set.add_filter_list((LISTS_DIR / name).read_text(encoding="utf-8"))
    return adblock.Engine(filter_set=filter_set, optimize=False)


def request_type_for(playwright_resource_type: str) -> str:
    """Map a Playwright ``Request.resource_type`` to the engine's request type.

    ``fetch`` and ``xhr`` become ``xmlhttprequest``; types the lists never name
    (``eventsource``, ``manifest``, ...) become ``other``.
    """
    return _PLAYWRIGHT_TYPES.get(playwright_resource_type, "other")


def blocked(
    url: str, source_url: str, request_type: str, profile: str | None = None
) -> str | None:
    """Return the rule that blocks ``url`` requested from page ``source_url``, or None.

    With ``profile`` None every profile is checked and the first blocking rule
    is returned as ``"<rule> (<profile>)"``; with a profile, the bare rule.
    ``request_type`` is an engine type such as ``script``, ``xmlhttprequest``,
    ``ping`` (sendBeacon) or ``image``.
    """
    if request_type not in REQUEST_TYPES:
        raise ValueError(
            f"unknown request type {request_type!r}: expected one of {sorted(REQUEST_TYPES)}"
        )

    for name in PROFILES if profile is None else (profile,):
        result = engine(name).check_network_urls(url, source_url, request_type)
        if result.error:
            raise ValueError(
                f"cannot check {url!r} from {source_url!r}: {result.error}"
            )
        if result.matched:
            rule = result.filter or "<rule text unavailable>"
            return rule if profile is not None else f"{rule} ({name})"
    return None
