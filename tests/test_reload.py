"""SIGHUP reloads the rule files of a running tagrelay (one process, and behind the supervisor)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.service import BROWSER_UA, Service, browser_hit


def post(url: str, event_id: str) -> int:
    body = json.dumps(browser_hit(event_id) | {"consent": {"analytics": True, "ads": True}}).encode()
    req = urllib.request.Request(url + "/e", data=body, headers={"User-Agent": BROWSER_UA, "Accept": "*/*",
                                                                 "Accept-Language": "en"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def wait_for_file(path: Path, text: str, secs: float = 10.0) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.1)
    return False


def reload_and_wait(svc: Service, line: str, workers: int) -> int:
    """SIGHUP, then wait (bounded) until every worker has logged ``line`` once more; how many did."""
    before = svc.log().count(line)
    svc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and svc.log().count(line) - before < workers:
        time.sleep(0.1)
    return svc.log().count(line) - before


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_takes_new_rules_and_refuses_broken_ones(tmp_path, workers):
    """A new destination starts receiving after SIGHUP; a broken edit after another SIGHUP changes nothing."""
    rules, data = tmp_path / "rules", tmp_path / "data"
    rules.mkdir()
    (rules / "10.toml").write_text(f'[destinations.a]\ntype = "file"\npath = "{tmp_path}/a.jsonl"\n[[routes]]\nto = ["a"]\n')
    svc = Service(rules, data, workers=workers).start()
    try:
        (rules / "20.toml").write_text(f'[destinations.b]\ntype = "file"\npath = "{tmp_path}/b.jsonl"\n[[routes]]\nto = ["b"]\n')
        # Every worker reloads on its own: each says so.
        assert reload_and_wait(svc, "rules reloaded", workers) == workers
        assert post(svc.url, "after-1") == 204
        assert wait_for_file(tmp_path / "b.jsonl", "after-1")

        (rules / "30.toml").write_text("[destinations.broken\n")
        assert reload_and_wait(svc, "rules not reloaded", workers) == workers
        assert post(svc.url, "still-1") == 204
        assert wait_for_file(tmp_path / "a.jsonl", "still-1") and wait_for_file(tmp_path / "b.jsonl", "still-1")
    finally:
        svc.stop()
