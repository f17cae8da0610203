"""Local stand-ins for vendor APIs: aiohttp apps that answer like the vendor.

Each factory (:func:`tests.standins.meta.meta_app`,
:func:`tests.standins.ga4.ga4_app`, ...) returns a ``web.Application`` whose
:class:`StandIn` state sits at ``app[STANDIN]``. The stand-in records every
request it receives, checks it against the vendor's documented rules, and can
be scripted to misbehave (canned answers, delays) for reliability tests::

    app = meta_app(access_token="t")
    server = await aiohttp_server(app)
    app[STANDIN].script(Canned(503), Canned(429, {"Retry-After": "2"}))
    ...
    assert app[STANDIN].requests[0].json["data"][0]["event_name"] == "Purchase"

A vendor stand-in subclasses :class:`StandIn`, implements :meth:`StandIn.answer`
(check one recorded request, give the vendor's answer) and builds its app
with :func:`standin_app`. The helpers below are what every stand-in checks
the same way; each vendor's own rules stay in its module.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import orjson
from aiohttp import web

__all__ = [
    "SHA256_RE",
    "STANDIN",
    "Canned",
    "Recorded",
    "StandIn",
    "has_bearer",
    "is_integer",
    "is_number",
    "is_sha256",
    "sha256_values",
    "standin_app",
]

#: A lowercase hex SHA-256 digest, as every vendor wants hashed match keys.
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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

    def json_field(self, key: str) -> Any:
        """``json[key]`` when the body is a JSON object, else None."""
        return self.json.get(key) if isinstance(self.json, dict) else None

    def problem(self, field: str, code: int | str, message: str) -> None:
        """Note one thing wrong with this request, in the shape most stand-ins record."""
        self.problems.append({"field": field, "code": str(code), "message": message})


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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request, then give the scripted step or :meth:`answer`."""
        return await self.respond(request, self.answer)

    async def respond(
        self,
        request: web.Request,
        answer: Callable[[web.Request, Recorded], web.Response],
    ) -> web.StreamResponse:
        """Record ``request``; answer it from the script, else with ``answer``, noting the status."""
        rec = await self.record(request)
        canned = await self.scripted(rec)
        if canned is not None:
            return canned
        response = answer(request, rec)
        rec.answered = response.status
        return response

    def answer(self, request: web.Request, rec: Recorded) -> web.Response:
        """The vendor's answer to a recorded request; each stand-in implements it."""
        raise NotImplementedError

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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def standin_app(state: StandIn, routes: Mapping[str, Handler]) -> web.Application:
    """An app with ``state`` at ``app[STANDIN]`` and a POST route for each path."""
    app = web.Application()
    app[STANDIN] = state
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    return app


def has_bearer(request: web.Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` exactly."""
    return request.headers.get("Authorization") == f"Bearer {token}"


def is_integer(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON ``true`` is not a number to a vendor)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_sha256(value: Any) -> TypeGuard[str]:
    """A string holding a lowercase hex SHA-256 digest."""
    return isinstance(value, str) and bool(SHA256_RE.match(value))


def sha256_values(value: Any) -> bool:
    """One digest, or a list whose every entry is one (an empty list passes)."""
    values = value if isinstance(value, list) else [value]
    return all(is_sha256(v) for v in values)
