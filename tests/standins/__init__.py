"""Local stand-ins for vendor APIs: aiohttp apps that answer like the vendor.

Each factory (:func:`tests.standins.meta.meta_app`,
:func:`tests.standins.ga4.ga4_app`) returns a ``web.Application`` whose
:class:`StandIn` state sits at ``app[STANDIN]``. The stand-in records every
request it receives, checks it against the vendor's documented rules, and can
be scripted to misbehave (canned answers, delays) for reliability tests::

    app = meta_app(access_token="t")
    server = await aiohttp_server(app)
    app[STANDIN].script(Canned(503), Canned(429, {"Retry-After": "2"}))
    ...
    assert app[STANDIN].requests[0].json["data"][0]["event_name"] == "Purchase"
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["STANDIN", "Canned", "Recorded", "StandIn"]


@dataclass(slots=True)
class Canned:
    """A scripted answer for one request: status, headers, body, and a delay before it.

    ``status=None`` means "no canned answer, only the delay": the request is
    then handled normally after ``delay_secs``.
    """

    status: int | None = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] = b""
    delay_secs: float = 0.0

    def response(self) -> web.Response:
        body = self.body
        headers = dict(self.headers)
        if isinstance(body, (dict, list)):
            body = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        assert self.status is not None
        return web.Response(status=self.status, headers=headers, body=body)


@dataclass(slots=True)
class Recorded:
    """One request as the stand-in saw it, plus what it found wrong with it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None  # parsed JSON body, or None when it was not JSON
    problems: list[dict[str, str]] = field(default_factory=list)
    answered: int | None = None  # status code sent back


class StandIn:
    """Shared state: recorded requests and the script of misbehaviour."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Canned] = deque()

    def script(self, *answers: Canned) -> None:
        """Queue canned answers (or delays) for the next requests, one each, in order."""
        self._script.extend(answers)

    def delay_next(self, n: int, secs: float) -> None:
        """Delay the next ``n`` requests by ``secs`` and then handle them normally."""
        self._script.extend(Canned(status=None, delay_secs=secs) for _ in range(n))

    @property
    def problems(self) -> list[dict[str, str]]:
        """Every problem found in every request, in order."""
        return [p for r in self.requests for p in r.problems]

    def clear(self) -> None:
        self.requests.clear()
        self._script.clear()

    async def record(self, request: web.Request) -> Recorded:
        body = await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            json=parsed,
        )
        self.requests.append(rec)
        return rec

    async def scripted(self, rec: Recorded) -> web.Response | None:
        """Apply the next scripted step: a canned response, or None to go on normally."""
        if not self._script:
            return None
        step = self._script.popleft()
        if step.delay_secs:
            await asyncio.sleep(step.delay_secs)
        if step.status is None:
            return None
        rec.answered = step.status
        return step.response()


STANDIN: web.AppKey[StandIn] = web.AppKey("standin", StandIn)
