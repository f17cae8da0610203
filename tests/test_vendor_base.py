"""The adapter contract's shared parts."""

from __future__ import annotations

from proxy.vendors.base import Request


def test_redacted_request_hides_secrets_without_mangling_other_text():
    """A short secret is hidden in the query, headers and JSON, and nothing else changes."""
    req = Request(
        "POST",
        "https://v.example/mp/collect?measurement_id=G-1&api_secret=sec",
        {"Authorization": "Bearer sec"},
        b'{"token": "sec", "engagement_time_msec": 1}',
        secrets=("sec",),
    ).redacted()
    assert req.url == "https://v.example/mp/collect?measurement_id=G-1&api_secret=***"
    assert req.headers == {"Authorization": "Bearer ***"}
    assert req.body == b'{"token":"***","engagement_time_msec":1}'
