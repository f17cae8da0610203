"""The tagrelay command as a user runs it: check, try, deadletters and replay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service import free_port
from tests.test_rules import EVERY_VENDOR_ENV

ROOT = Path(__file__).parent.parent


def tagrelay(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("META_", "GA4_", "TAGRELAY_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_check_prints_the_route_table_for_the_example_rules():
    """check on the shipped rules exits 0 and lists routes and disabled vendors."""
    run = tagrelay("check", "rules")
    assert run.returncode == 0, run.stderr
    assert "everything to the local log" in run.stdout and "meta: disabled" in run.stdout


def test_check_lists_every_problem_and_exits_2(tmp_path):
    """A broken rules directory gives exit 2 and all problems on stderr."""
    (tmp_path / "a.toml").write_text('[destinations.x]\ntype = "nope"\n[[routes]]\nto = ["y"]\n')
    run = tagrelay("check", str(tmp_path))
    assert run.returncode == 2
    assert "destinations.x.type" in run.stderr and "routes[0].to" in run.stderr


def test_serve_refuses_to_start_on_broken_rules(tmp_path):
    """A rule file with errors never starts the service."""
    (tmp_path / "a.toml").write_text("[destinations.x\n")
    run = tagrelay("serve", "--rules", str(tmp_path), "--port", "1")
    assert run.returncode == 2 and "not starting" in run.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_an_unusable_data_dir_says_so_and_exits_2(tmp_path, workers):
    """An outbox that cannot be opened stops serve with one clear line per worker, not a traceback."""
    (tmp_path / "file").write_text("")
    run = tagrelay(
        "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", workers,
        env={"TAGRELAY_DATA_DIR": str(tmp_path / "file")},
    )  # fmt: skip
    assert run.returncode == 2
    assert "cannot start: outbox" in run.stderr and "TAGRELAY_DATA_DIR" in run.stderr
    assert "Traceback" not in run.stderr


def test_try_shows_every_vendor_request_for_the_example_purchase():
    """With every vendor configured, try prints a request for each and hides the secrets."""
    run = tagrelay("try", "rules", "examples/purchase.json", env=EVERY_VENDOR_ENV)
    assert run.returncode == 0, run.stderr
    for name in ("meta", "ga4", "tiktok", "snapchat", "pinterest", "reddit", "linkedin"):
        assert f"== {name} (" in run.stdout, name
    assert "not sent" not in run.stdout
    assert "EAABtoken0000" not in run.stdout and "secret0000" not in run.stdout


def test_try_refuses_a_malformed_event_file(tmp_path):
    """A broken event file is a one-line error and exit 2, not a traceback."""
    bad = tmp_path / "e.json"
    bad.write_text('{"name": "purchase", "context": {"consent": [1]}}')
    run = tagrelay("try", "rules", str(bad))
    assert run.returncode == 2 and "Traceback" not in run.stderr and "context.consent" in run.stderr


@pytest.mark.parametrize(
    "doc, says",
    [
        ('{"name": ""}', "name '': not an event name"),
        ('{"name": "purchase", "id": {"a": 1}}', "id must be a non-empty string"),
        ('{"name": "purchase", "time": -1}', "time must be unix seconds (a number, not negative)"),
        ('{"name": "purchase", "page": {"url": 5}}', "page values (url, referrer, title) must be strings"),
    ],
    ids=["empty-name", "id-object", "negative-time", "url-number"],
)
def test_try_refuses_what_the_service_would_refuse(tmp_path, doc, says):
    """try shows no request for an event the endpoints would answer 400: it says what is wrong instead."""
    event = tmp_path / "e.json"
    event.write_text(doc)
    run = tagrelay("try", "rules", str(event))
    assert run.returncode == 2 and says in run.stderr and run.stdout == ""


def _fake_dns(table):
    from proxy import safari

    def resolve(host: str) -> safari.Resolution:
        cnames, addresses = table[host]
        return safari.Resolution(tuple(cnames), tuple(addresses))

    return resolve


def test_check_warns_when_a_cname_collector_falls_under_safaris_cap(monkeypatch, capsys):
    """A collector CNAMEd to another organisation gets a warning saying what to do instead."""
    from proxy import cli, safari

    monkeypatch.setattr(safari, "system_resolver", _fake_dns({
        "t.shop.example.com": (["shop.tagvendor.example"], ["198.51.100.20"]),
        "www.shop.example.com": ([], ["203.0.113.10"]),
    }))
    code = cli.main(["check", str(ROOT / "rules"), "--site", "www.shop.example.com", "--collector", "t.shop.example.com"])
    err = capsys.readouterr().err
    assert code == 0 and "warning: Safari:" in err and "7 days" in err and "path of the site" in err


def test_check_is_quiet_for_an_a_record_in_the_sites_range(monkeypatch, capsys):
    """A collector on an A record in the site's /16 gets no Safari warning."""
    from proxy import cli, safari

    monkeypatch.setattr(safari, "system_resolver", _fake_dns({
        "t.shop.example.com": ([], ["203.0.7.20"]),
        "www.shop.example.com": ([], ["203.0.113.10"]),
    }))
    code = cli.main(["check", str(ROOT / "rules"), "--site", "www.shop.example.com", "--collector", "t.shop.example.com"])
    out = capsys.readouterr()
    assert code == 0 and "Safari:" not in out.err and "keep their full lifetime" in out.out


def test_try_applies_the_consent_default_like_the_service(tmp_path):
    """An event without consent signals is skipped for a consent-gated vendor when the default denies."""
    event = tmp_path / "e.json"
    event.write_text('{"name": "purchase", "page": {"url": "https://shop.example.com/"},'
                     ' "context": {"user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15'
                     ' (KHTML, like Gecko) Version/17.5 Safari/605.1.15"}}')
    run = tagrelay("try", "rules", str(event), env={**EVERY_VENDOR_ENV, "TAGRELAY_CONSENT_DEFAULT": "*:denied"})
    assert run.returncode == 0, run.stderr
    assert "== meta: skipped (consent: ads denied by default" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deadletters", "--since", "2030-01-01", "--until", "2020-01-01"], "--since must be before --until"),
        (["replay", "--since", "nan"], "is not a time"),
    ],
)
def test_a_time_window_that_selects_nothing_is_refused(tmp_path, args, message):
    run = tagrelay(*args, env={"TAGRELAY_DATA_DIR": str(tmp_path)})
    assert run.returncode == 2 and message in run.stderr


def test_output_into_a_closed_pipe_ends_quietly():
    """tagrelay ... | head: when the reader has gone, no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "check", "rules"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TAGRELAY_")},
    )  # fmt: skip
    proc.stdout.close()  # the reader leaves before tagrelay has written a line
    err = proc.stderr.read()
    assert proc.wait(60) == 1  # what main answers a reader that has gone, rather than a crash
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_the_demo_starts_from_any_directory_on_the_rules_that_come_with_tagrelay(tmp_path):
    """`tagrelay serve --demo` in a directory without ./rules serves the demo shop, not 'no such directory'."""
    import signal
    import time
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_", "GA4_", "TAGRELAY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--demo", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        status = None
        deadline = time.monotonic() + 30
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    status = resp.status
            except OSError:
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert status == 200, stderr


# -- deadletters and replay: filters -------------------------------------------------


@pytest.fixture
def one_dead_letter(tmp_path) -> dict[str, str]:
    """An outbox holding one dead letter for 'meta'; the environment that points the CLI at it."""
    import asyncio

    from proxy.delivery import Outbox, QueuedRow

    async def make() -> None:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        await outbox.open()
        await outbox.put([QueuedRow("meta", "e1", 1000.0, "", {"n": 1})])
        await outbox.bury(await outbox.claim("meta", 10, now=2000.0), "http 400 invalid parameter", "{}")
        await outbox.close()

    asyncio.run(make())
    return {"TAGRELAY_DATA_DIR": str(tmp_path)}


@pytest.mark.parametrize("command", ["deadletters", "replay"])
def test_an_empty_destination_filter_is_refused_rather_than_taken_as_every_destination(one_dead_letter, command):
    """--destination "" (an unset $DEST) would act on every destination: refused, and nothing replayed."""
    run = tagrelay(command, "--destination", "", env=one_dead_letter)
    assert run.returncode == 2 and "--destination is empty" in run.stderr
    assert "meta: 1 event(s)" in tagrelay("deadletters", env=one_dead_letter).stdout


def test_a_destination_without_dead_letters_is_named_with_those_that_have_some(one_dead_letter):
    """A misspelt destination does not just say 'none': it lists where the dead letters are."""
    run = tagrelay("replay", "--destination", "mtea", env=one_dead_letter)
    assert run.stdout.startswith("no dead letters for destination 'mtea'; dead letters exist for: meta")


def test_replay_says_a_fixed_template_does_not_apply_to_what_it_queued(one_dead_letter):
    """Dead letters hold built requests: replay says which fixes reach them, so no one waits on a template fix."""
    run = tagrelay("replay", env=one_dead_letter)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "queued 1 dead letter(s) again; a running tagrelay sends them within a second",
        "they go as they were built: a fixed token, pixel ID or endpoint applies to them;"
        " a fixed route 'set' or template does not (tagrelay keeps no raw event to build them again)",
    ]
