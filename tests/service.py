"""Run ``python -m proxy`` as a real subprocess for reliability tests and benchmarks.

:class:`Service` starts ``tagrelay serve`` on a free 127.0.0.1 port with its
own rules and data directories, waits for ``/healthz``, sends signals, and
keeps the log. :func:`run_cli` runs the other ``tagrelay`` commands on the
same data directory. Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["BROWSER_UA", "REPO", "Service", "browser_hit", "free_port", "run_cli"]

REPO = Path(__file__).resolve().parent.parent

# A real desktop Chrome user agent: not a bot, so rules with bot = false match.
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def browser_hit(event_id: str, name: str = "page_view", now_ms: int | None = None) -> dict[str, object]:
    """A collector hit body with one event, as ``static/collector.js`` sends it."""
    return {
        "v": 1,
        "events": [
            {
                "name": name,
                "id": event_id,
                "time": now_ms if now_ms is not None else int(time.time() * 1000),
                "page": {"url": "https://shop.example.com/product/mug", "referrer": "", "title": "Mug"},
                "params": {},
            }
        ],
        "consent": {"ads": True, "analytics": True, "ad_user_data": True, "ad_personalization": True},
        "screen": "1280x800",
        "language": "en-GB",
    }


def _env(data_dir: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGRELAY_")}
    env["TAGRELAY_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Service:
    """One ``tagrelay serve`` process (and its workers) under test."""

    def __init__(
        self,
        rules_dir: Path,
        data_dir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        port: int | None = None,
        own_process_group: bool = False,
    ) -> None:
        self.rules_dir = rules_dir
        self.data_dir = data_dir
        self.workers = workers
        self.env = _env(data_dir, env)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "serve.log"
        self.starts = 0
        # A process group of its own, as a terminal gives a command: then
        # os.killpg(service.pid, SIGINT) is what one ^C sends.
        self.own_process_group = own_process_group

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_secs: float = 20.0) -> Service:
        """Start the server and return once every worker is up and /healthz answers 200 (bounded by ``wait_secs``).

        One worker answering is not enough: load started then would put every
        keep-alive connection on it, and a signal sent then could reach a
        worker that has not set its handlers yet.
        """
        self.launch()
        self.wait_healthy(wait_secs)
        return self

    def launch(self) -> None:
        """Start the server process and return at once (start() also waits until it serves)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while it runs
        log.write(f"\n=== start {self.starts} ===\n".encode())
        log.flush()
        cmd = [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--rules", str(self.rules_dir), "--workers", str(self.workers)]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_process_group
        )
        log.close()

    def wait_healthy(self, wait_secs: float = 20.0) -> None:
        deadline = time.monotonic() + wait_secs
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"tagrelay exited with {self.proc.returncode} at start:\n{self.log()}")
            # Each worker logs "collecting at" as it starts to listen.
            this_start = self.log().rsplit(f"=== start {self.starts} ===", 1)[-1]
            if this_start.count("collecting at") >= self.workers and self.healthy():
                return
            time.sleep(0.05)
        raise AssertionError(f"tagrelay did not answer /healthz within {wait_secs}s:\n{self.log()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes (the children of the supervisor); [pid] with one worker."""
        if self.workers == 1:
            return [self.pid]
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def signal(self, signum: int, pid: int | None = None) -> None:
        os.kill(pid or self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL the server and every worker at once: nothing gets to clean up."""
        pids = self.worker_pids() + [self.pid] if self.workers > 1 else [self.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(10)

    def wait(self, secs: float) -> int | None:
        """Wait up to ``secs`` for the process to exit; its exit code, or None if it still runs."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=secs)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), or kill after 30 s; safe to call when already stopped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        if self.wait(30) is None:
            self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-6000:]
        except OSError:
            return ""


def run_cli(args: list[str], data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m proxy <args>`` on ``data_dir``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        env=_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # tests assert on the exit code themselves
    )
