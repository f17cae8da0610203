"""A local JSON Lines file: one canonical event per line.

The example rules send everything here, so tagrelay does its whole job with
no vendor account: ``tail -F var/events.jsonl`` shows what would go out.

The file may be rotated under it (logrotate's move-then-create, or a plain
``mv``): before each batch the path is checked against the file held open,
and opened afresh when it names another file or none.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import IO, Any, Mapping

import orjson

from ..model import Event
from .base import Adapter, ConfigError, Outcome, Verdict
from .canonical import canonical_payload

__all__ = ["JSONLFile"]

log = logging.getLogger("proxy.vendors.file")


class JSONLFile(Adapter):
    """Settings: ``path`` (file to append to; its folder is created)."""

    type = "file"
    max_batch = 500

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        super().__init__(name, settings)
        problems = []
        path = settings.get("path")
        if not isinstance(path, str) or not path:
            problems.append(("path", "required: the JSON Lines file to append events to"))
        for key in settings:
            if key != "path":
                problems.append((key, "unknown setting for type 'file' (known: path)"))
        if problems:
            raise ConfigError(problems)
        self.path = Path(str(path))
        self._fh: IO[bytes] | None = None
        self._lock = asyncio.Lock()

    def render(self, event: Event) -> dict[str, Any]:
        return canonical_payload(event)

    async def deliver_local(self, payloads: list[dict[str, Any]]) -> Outcome | None:
        data = b"".join(orjson.dumps(p) + b"\n" for p in payloads)
        async with self._lock:
            try:
                if self._fh is not None and not self._still_there(self._fh):
                    self._fh.close()  # moved away or deleted: what it held is the rotated file's
                    self._fh = None
                if self._fh is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fh = open(self.path, "ab")
                self._fh.write(data)
                self._fh.flush()
            except OSError as exc:
                return Outcome(Verdict.RETRY, f"file: {exc.strerror or type(exc).__name__}")
        # Read per event in `trace`: where it went, not the batch's size.
        return Outcome(Verdict.OK, f"appended to {self.path}")

    def _still_there(self, fh: IO[bytes]) -> bool:
        """Whether ``path`` still names the file ``fh`` writes to."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fh.fileno())
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
