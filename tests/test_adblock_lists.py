"""The real ad-block lists block Google's tags but not tagrelay's default URLs."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.adblock import EASYPRIVACY, PROFILES, UBO_DEFAULT, blocked

PAGE = "https://www.shop.example/"
TAGRELAY = "https://t.shop.example"

# A batch as the collector sends it in its last-resort GET (`/e?d=...`),
# encoded the way encodeURIComponent does.
BATCH = {
    "v": 1,
    "events": [
        {
            "name": "page_view",
            "id": "0f8c2f0e-3c57-4a1e-9d0b-6a1f2e3d4c5b",
            "time": 1733312345678,
            "page": {"url": PAGE + "?fbclid=IwAR2xYz", "referrer": "", "title": "Shop"},
            "params": {},
        }
    ],
    "click_ids": {"fbclid": "IwAR2xYz"},
    "screen": "1280x800",
    "language": "en-US",
}
ENCODED_BATCH = urllib.parse.quote(
    json.dumps(BATCH, separators=(",", ":")), safe="-_.!~*'()"
)

DEFAULT_COLLECTOR_REQUESTS = [
    (TAGRELAY + "/assets/c.js", "script"),
    (TAGRELAY + "/e", "ping"),
    (TAGRELAY + "/e", "xmlhttprequest"),
    (TAGRELAY + "/e?n=page_view", "image"),
    (TAGRELAY + "/e?d=" + ENCODED_BATCH, "image"),
]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_google_analytics_ping_is_blocked(profile):
    """The GA4 collect beacon is blocked, so the engine and lists are really loaded."""
    rule = blocked(
        "https://www.google-analytics.com/g/collect?v=2", PAGE, "ping", profile
    )

    assert rule is not None


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_gtag_script_is_blocked(profile):
    """The gtag.js loader from googletagmanager.com is blocked."""
    rule = blocked(
        "https://www.googletagmanager.com/gtag/js?id=G-1", PAGE, "script", profile
    )

    assert rule is not None


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_first_party_gtm_path_is_blocked(profile):
    """A same-site `/gtm.js` is still blocked, as the README's result table says."""
    assert blocked(TAGRELAY + "/gtm.js", PAGE, "script", profile) == "/gtm.js"


def test_ubo_privacy_rule_is_only_in_the_ubo_profile():
    """uBO's `/t.*/r/*$image` blocks `/r/<x>` images on a `t.` host; EasyPrivacy alone does not."""
    url = TAGRELAY + "/r/0b7e"

    assert blocked(url, PAGE, "image", UBO_DEFAULT) == "/t.*/r/*$image"
    assert blocked(url, PAGE, "image", EASYPRIVACY) is None


@pytest.mark.parametrize(
    ("url", "request_type"),
    DEFAULT_COLLECTOR_REQUESTS,
    ids=["script", "beacon", "fetch", "noscript-image", "get-fallback-image"],
)
def test_default_collector_url_is_not_blocked(url, request_type):
    """No profile blocks a default collector URL requested from the shop's page."""
    assert blocked(url, PAGE, request_type) is None


def test_unknown_request_type_is_refused():
    """A request type the engine does not know is an error, not a silent "other"."""
    with pytest.raises(ValueError, match="'fetch'"):
        blocked(TAGRELAY + "/e", PAGE, "fetch")


def test_unparsable_url_is_refused():
    """A URL the engine cannot parse is an error that names the URL."""
    with pytest.raises(ValueError, match="'not a url'"):
        blocked("not a url", PAGE, "image")
