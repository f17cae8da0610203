"""``tagrelay serve --workers N``: N server processes sharing one port.

Every worker binds the same address with ``SO_REUSEPORT`` (the kernel spreads
connections between them) and runs the whole service: collection, delivery
lanes, housekeeping. They share the outbox file; leases keep two workers
from sending the same rows, and the rows of a worker that dies are claimed
again once its leases run out. The supervisor restarts a worker that dies
and passes SIGTERM/SIGINT on for a graceful stop and SIGHUP for a rules
reload.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from typing import Any, Callable

from .settings import Settings

__all__ = ["SERVE_SIGNALS", "ignore_serve_signals", "supervise"]

log = logging.getLogger("proxy.workers")

_RESTART_WINDOW_SECS = 10.0
_MAX_QUICK_DEATHS = 5
# Stop (SIGTERM, ^C) and reload (SIGHUP): what the supervisor passes on and
# each server process handles (proxy.cli._run_worker).
SERVE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ignore_serve_signals() -> None:
    """For a process past its own handlers, which only exits now: a late signal must not turn a clean exit into a kill."""
    for sig in SERVE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def supervise(settings: Settings, count: int, run_worker: Callable[..., int]) -> int:
    """Start ``count`` workers, keep them running, stop them on SIGTERM or SIGINT."""
    # Before anything imports prometheus_client (it picks its value store at
    # import): counters of every worker go to files here, and /metrics adds
    # them up.
    metrics_dir = tempfile.mkdtemp(prefix="tagrelay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .telemetry import setup_logging

    setup_logging()
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> None:
        proc = ctx.Process(
            target=_child,
            args=(run_worker, settings, index == 0, os.getpid()),
            name=f"tagrelay-worker-{index}",
            daemon=False,
        )
        # The child inherits this mask and the supervisor's handlers; it sets
        # its own before it lets a signal in (proxy.cli._run_worker). The
        # supervisor's own signals wait too, until the new worker is in
        # procs, where stop() finds it.
        signal.pthread_sigmask(signal.SIG_BLOCK, SERVE_SIGNALS)
        try:
            proc.start()
            procs[index] = proc
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVE_SIGNALS)

    def alive() -> list[Any]:
        return [p for p in procs if p is not None and p.is_alive()]

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in alive():
            os.kill(proc.pid, signal.SIGTERM)

    def hup(signum: int, _frame: Any) -> None:
        if stopping:
            return  # a reload is moot now, and would only slow the stop
        for proc in alive():
            os.kill(proc.pid, signal.SIGHUP)

    # Handlers first: a signal while the workers start is then passed on
    # (or ends the start) rather than killing the supervisor outright.
    procs: list[Any] = [None] * count
    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(count):
        if not stopping:
            start(i)
    if not stopping:
        log.info("started %d workers sharing %s:%d", count, settings.host, settings.port)
    deaths: list[float] = []
    failed = False
    try:
        while True:
            if stopping and not alive():
                break
            for i, proc in enumerate(procs):
                if proc is None or proc.is_alive() or stopping:
                    continue
                _mark_dead(proc.pid)
                now = time.monotonic()
                deaths = [t for t in deaths if now - t < _RESTART_WINDOW_SECS] + [now]
                if len(deaths) > _MAX_QUICK_DEATHS:
                    log.error(
                        "workers keep dying (%d in %.0fs); stopping (their reason is in the lines above)",
                        len(deaths), _RESTART_WINDOW_SECS,
                    )
                    failed = True
                    stop(signal.SIGTERM, None)
                    break
                log.error("worker %d (pid %s) died with exit code %s; starting a new one", i, proc.pid, proc.exitcode)
                start(i)
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc is not None:
                proc.join(timeout=30)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        ignore_serve_signals()
    return 2 if failed else 0  # 2: the CLI's "cannot run as configured"


def _child(run_worker: Callable[..., int], settings: Settings, announce: bool, supervisor: int) -> None:
    # Signals stay blocked here: run_worker sets the worker's handlers, then
    # lets them in (a SIGHUP sent meanwhile then still reloads).
    _stop_with(supervisor)
    raise SystemExit(run_worker(settings, announce=announce, supervised=True))


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _stop_with(supervisor: int) -> None:
    """SIGTERM this worker when its supervisor dies, as a stop would: a graceful stop.

    Killed with -9, the supervisor cannot pass its stop on, and its workers
    went on serving with no one to restart them, holding the port against
    the next ``tagrelay serve``.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed supervisor
        return
    if os.getppid() != supervisor:  # it died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
