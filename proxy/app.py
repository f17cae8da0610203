"""The aiohttp application: routes, typed app state, start-up and shut-down."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import rjsmin  # type: ignore[import-untyped]  # ships no type hints
from aiohttp import web

from .collect import _MAX_LANGUAGE, Hit, HitError, hit_from_query, parse_hit
from .consent import ConsentPolicy, ConsentSignals, decide_consent, gpc_from_headers
from .consent import resolve as resolve_consent
from .delivery import Delivery, LedgerRow, Outbox, OutboxError, OutboxFull, QueuedRow, RetryPolicy
from .enrich import Enricher, header_text
from .events_api import authenticate, parse_api_keys, parse_server_events, to_events
from .ga4hits import parse_gcollect
from .model import Context, Event
from .pipeline import plan_rows
from .rules import RulesError, RuleSet, load_rules
from .settings import Settings
from .telemetry import CONTENT_TYPE, Metrics, Throttle

__all__ = ["make_app", "SETTINGS", "RULES", "DELIVERY", "ENRICHER", "METRICS", "RELOADS", "Reloads"]

log = logging.getLogger("proxy.app")

SETTINGS = web.AppKey("settings", Settings)
class LiveRules:
    """The rule set in force; a reload (SIGHUP) swaps ``current``."""

    def __init__(self, rules: RuleSet) -> None:
        self.current = rules


RULES = web.AppKey("rules", LiveRules)
DELIVERY = web.AppKey("delivery", Delivery)
ENRICHER = web.AppKey("enricher", Enricher)
METRICS = web.AppKey("metrics", Metrics)
CONSENT_POLICY = web.AppKey("consent_policy", ConsentPolicy)
API_KEYS = web.AppKey("api_keys", Mapping[str, str])
_SCRIPTS = web.AppKey("scripts", dict[str, "Script"])
_LAST_PRUNE = web.AppKey("last_prune", list[float])  # [time of the last ledger prune]
_THROTTLE = web.AppKey("throttle", Throttle)  # log lines that could come per hit

_PLACEHOLDER = '"__TAGRELAY_COLLECT__"'


class Script:
    """A static script, minified and compressed once, served with an ETag.

    The collector gets its endpoint written in (the ``"__TAGRELAY_COLLECT__"``
    placeholder) so the page needs no configuration.
    """

    def __init__(self, source: str, collect_path: str | None = None) -> None:
        text = rjsmin.jsmin(source)
        if collect_path is not None:
            if _PLACEHOLDER not in text:
                raise ValueError(f"collector script has no {_PLACEHOLDER} placeholder")
            text = text.replace(_PLACEHOLDER, orjson.dumps(collect_path).decode())
        self.plain = text.encode("utf-8")
        self.gzipped = gzip.compress(self.plain, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.plain).hexdigest()[:20] + '"'


def make_app(settings: Settings, rules: RuleSet) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[_last_resort],
        handler_args={"auto_decompress": False},  # _body decodes, checking each stream's end
    )
    app[SETTINGS] = settings
    # Opened here, not at start-up, so a bad geo database is a clear error
    # before the server binds (GeoDatabaseError is a SettingsError).
    app[ENRICHER] = Enricher(settings)
    app[CONSENT_POLICY] = ConsentPolicy.parse(settings.consent_default, gpc=settings.consent_gpc)
    app[API_KEYS] = parse_api_keys(settings.api_keys)
    app[RULES] = LiveRules(rules)
    app[METRICS] = Metrics()
    app[RELOADS] = Reloads(app)
    app[_LAST_PRUNE] = [0.0]
    app[_THROTTLE] = Throttle()
    static = settings.static_dir
    app[_SCRIPTS] = {settings.script_path: Script((static / "collector.js").read_text("utf-8"), settings.collect_path)}
    if settings.shims_path:
        app[_SCRIPTS][settings.shims_path] = Script((static / "shims.js").read_text("utf-8"))
    app.cleanup_ctx.append(_lifecycle)
    for path in app[_SCRIPTS]:
        app.router.add_get(path, _script)
    app.router.add_route("POST", settings.collect_path, _collect)
    app.router.add_route("GET", settings.collect_path, _collect)
    app.router.add_route("OPTIONS", settings.collect_path, _preflight)
    if settings.api_path and app[API_KEYS]:
        app.router.add_post(settings.api_path, _events_api)
    if settings.ga4_path:
        app.router.add_route("POST", settings.ga4_path, _ga4_collect)
        app.router.add_route("GET", settings.ga4_path, _ga4_collect)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if settings.demo:
        app.router.add_get("/", _demo_page)
        app.router.add_get("/product/{name}", _demo_page)
        app.router.add_static("/demo/", settings.static_dir / "demo", show_index=False)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    outbox = Outbox(
        settings.outbox_file,
        max_rows=settings.outbox_max_rows,
        ledger_retention_secs=settings.ledger_retention_secs,
        # A send cannot outlive its timeout; past this a lease is a dead worker's.
        lease_secs=2 * settings.delivery_timeout_secs + 5,
    )
    await outbox.open()
    delivery = Delivery(
        {name: d.adapter for name, d in app[RULES].current.destinations.items()},
        outbox,
        timeout_secs=settings.delivery_timeout_secs,
        concurrency=settings.delivery_concurrency,
        policy=RetryPolicy(cap_secs=settings.retry_cap_secs, max_attempts=settings.retry_max_attempts),
        metrics=app[METRICS],
    )
    await _bury_lost(outbox, app[RULES].current)
    await delivery.start()
    app[DELIVERY] = delivery
    log.info(
        "collecting at %s (script %s), %d destination(s), %d route(s)",
        settings.collect_path,
        settings.script_path,
        len(app[RULES].current.destinations),
        len(app[RULES].current.routes),
    )
    housekeeping = asyncio.create_task(_housekeeping(app), name="housekeeping")
    reloads = app[RELOADS]
    reloads.open()
    try:
        yield
    finally:
        log.info("stopping: taking no more hits, finishing deliveries in flight")
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        await reloads.close()  # before what a reload uses is closed
        await delivery.stop()
        await outbox.close()
        await app[RULES].current.close()
        app[ENRICHER].close()
        log.info("stopped")


@web.middleware
async def _last_resort(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count each hit's answer by status; a bug answers a short JSON 500, logged once with its traceback."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("bug while answering %s %s", request.method, request.path)
        request.app[METRICS].hits.labels("500").inc()
        return web.json_response({"error": "internal error (logged)"}, status=500)
    if request.match_info.handler in _HIT_HANDLERS:
        request.app[METRICS].hits.labels(str(response.status)).inc()
    return response


class Reloads:
    """Rule reloads asked for by SIGHUP (``tagrelay serve`` owns the signal), one at a time.

    Requests that come during a reload ask for one more after it, however
    many they are: a burst of SIGHUPs (a deploy tool, a loop in a script)
    costs two reloads, not a queue of them. A request before the service
    has started is kept and runs as it starts (the rule files may have
    changed after they were read); one as it stops is moot.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None
        self.again = False
        self.state = "new"  # new -> open -> closed

    def request(self) -> None:
        if self.state == "new":
            self.again = True
        elif self.state == "closed":
            log.debug("reload asked for while stopping: ignored")
        elif self.task is not None and not self.task.done():
            self.again = True
        else:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="reload-rules")

    def open(self) -> None:
        self.state = "open"
        if self.again:
            log.info("a reload was asked for while starting: reloading the rules now")
            self.request()

    async def _run(self) -> None:
        while True:
            self.again = False
            try:
                await reload_rules(self.app)
            except Exception:
                # Rule problems are reported by reload_rules; this is the outbox or a bug.
                log.exception("rules reload failed, the running rules stay; fix the cause below, then send SIGHUP again")
            if not self.again:
                return

    async def close(self) -> None:
        """Let a running reload end (no further ones) before the service closes what it uses."""
        self.state, self.again = "closed", False
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


RELOADS = web.AppKey("reloads", Reloads)


async def reload_rules(app: web.Application) -> bool:
    """Load the rule files again; switch to them only if every file loads.

    A rule set with problems never replaces the running one: the problems
    are logged (ERROR: the operator's edit is not in effect) and the old
    rules keep working. The service calls this through :class:`Reloads`,
    one reload at a time.
    """
    settings = app[SETTINGS]
    try:
        new = await asyncio.to_thread(load_rules, settings.rules_dir)
    except RulesError as exc:
        log.error(
            "rules not reloaded, the running ones stay: %d problem(s) (fix them, check with"
            " 'tagrelay check %s', then send SIGHUP again):\n  %s",
            len(exc.problems), settings.rules_dir, "\n  ".join(exc.problems),
        )
        return False
    for warning in new.warnings:
        log.warning("rules: %s", warning)
    app[RULES].current = new
    delivery = app[DELIVERY]
    await delivery.update({name: d.adapter for name, d in new.destinations.items()})
    await _bury_lost(delivery.outbox, new)
    log.info("rules reloaded: %d destination(s), %d route(s)", len(new.destinations), len(new.routes))
    return True


async def _bury_lost(outbox: Outbox, rules: RuleSet) -> None:
    """Move rows for destinations the rules do not have (or have disabled) to the dead letters, saying how to undo it."""
    for name, n in (await outbox.bury_unknown(list(rules.destinations))).items():
        log.warning(
            "%d event(s) queued for destination %r, which the rules do not have (or have disabled), moved to the"
            " dead letters; after restoring it: tagrelay replay --destination %s",
            n, name, name,
        )


async def _housekeeping(app: web.Application) -> None:
    """Every few seconds, :func:`_tidy`; say why once per failure and go on."""
    while True:
        try:
            await _tidy(app)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the gauges going; say why once per failure
            log.exception("housekeeping failed; trying again shortly")
        await asyncio.sleep(5)


async def _tidy(app: web.Application) -> None:
    """Refresh the outbox gauges, bury rows the rules lost; prune the ledger hourly."""
    delivery, metrics = app[DELIVERY], app[METRICS]
    rules = app[RULES].current
    depth = await delivery.outbox.depth()
    # Every destination has its series, 0 when nothing waits: an alert on
    # depth cannot tell a missing series from a broken scrape.
    metrics.outbox.snapshot = {**dict.fromkeys(rules.destinations, (0, 0.0)), **depth}
    if any(name not in rules.destinations for name in depth):
        # Rows another worker was sending when the rules lost their
        # destination: dead letters once it gave them back.
        await _bury_lost(delivery.outbox, rules)
    await delivery.outbox.recheck()
    metrics.outbox.breakers = delivery.breaker_open()
    metrics.outbox.full = delivery.outbox.full_reason
    if time.time() - app[_LAST_PRUNE][0] > 3600:
        removed = await delivery.outbox.prune_ledger()
        app[_LAST_PRUNE][0] = time.time()
        if removed:
            log.info("ledger: removed %d entries past retention", removed)


async def _script(request: web.Request) -> web.StreamResponse:
    script = request.app[_SCRIPTS][request.path]
    headers = {
        "Content-Type": "application/javascript; charset=utf-8",
        "Cache-Control": "public, max-age=3600",
        "ETag": script.etag,
        "Vary": "Accept-Encoding",
    }
    if_none_match = request.headers.get("If-None-Match", "")
    if script.etag in if_none_match or if_none_match.strip() == "*":  # "*": any version it has (RFC 9110 13.1.2)
        return web.Response(status=304, headers=headers)
    if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=script.gzipped, headers=headers)
    return web.Response(body=script.plain, headers=headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether Accept-Encoding allows gzip: named, or by ``*``, with a weight above 0 (RFC 9110 12.5.3)."""
    weights: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0
        weights[coding.strip()] = weight
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


async def _collect(request: web.Request) -> web.Response:
    """The collector's endpoint: POST a batch, or GET ``?d=`` / ``?n=``."""
    settings = request.app[SETTINGS]
    try:
        if request.method == "POST":
            hit = parse_hit(await _body(request), settings)
        else:
            hit = hit_from_query(_strict_query(request), header_text(request.headers.get("Referer", "")), settings)
    except HitError as exc:
        return await _refused(request, exc)
    return await _accept(request, hit)


async def _events_api(request: web.Request) -> web.Response:
    """Back ends, CRMs and apps: batches of canonical events, one API key per source."""
    source = authenticate(request.headers.get("Authorization"), request.app[API_KEYS])
    if source is None:
        return web.json_response(
            {"error": "missing or unknown API key: send Authorization: Bearer <key>"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings = request.app[SETTINGS]
    now = time.time()
    try:
        items = parse_server_events(await _body(request), source, settings, now)
    except HitError as exc:
        return await _refused(request, exc)
    events = to_events(items, request.app[ENRICHER])
    decide_consent(events, request.app[CONSENT_POLICY])
    stored = await _store(request, events, now)
    if isinstance(stored, web.Response):
        return stored
    return web.json_response({"accepted": len(events), "queued": len(stored[0])}, headers=_NO_STORE)


async def _store(
    request: web.Request, events: list[Event], now: float
) -> tuple[list[QueuedRow], list[LedgerRow]] | web.Response:
    """Route ``events`` and commit them to the outbox; or the 503 answer when it cannot take them."""
    rows, ledger = plan_rows(request.app[RULES].current, events, now)
    metrics = request.app[METRICS]
    try:
        await request.app[DELIVERY].accept(rows, ledger)
    except OutboxError as exc:
        full = isinstance(exc, OutboxFull)
        _log_refusal(request.app[_THROTTLE], exc)
        metrics.events_rejected.labels("outbox_full" if full else "outbox_error").inc(len(events))
        why = " (outbox full)" if full else ""
        return web.json_response(
            {"error": f"tagrelay cannot store events right now{why}; try again later"},
            status=503,
            headers={**_NO_STORE, "Retry-After": "60"},
        )
    metrics.events_accepted.inc(len(events))
    for entry in ledger:
        if entry.what == "dropped":
            metrics.dropped.labels(entry.destination).inc()
            _log_drop(request.app[_THROTTLE], entry)
    return rows, ledger


def _log_drop(throttle: Throttle, entry: LedgerRow) -> None:
    """A rule or an event a destination cannot take needs a look, but not a line per event: one a minute per destination."""
    if throttle.due(f"drop {entry.destination}") is None:
        return
    log.warning(
        "event %s not sent to %s: %s (further drops there are counted in tagrelay_events_dropped_total,"
        " logged at most once a minute; tagrelay trace EVENT_ID tells each one's story)",
        entry.event_id, entry.destination, entry.detail,
    )  # fmt: skip


def _log_refusal(throttle: Throttle, exc: Exception) -> None:
    """Events lost at the door need a human: ERROR, but once a minute with a count, not per hit."""
    held = throttle.due("refusal")
    if held is not None:
        log.error("refusing hits (%d in the last minute): %s", held + 1, exc)


def _strict_query(request: web.Request) -> dict[str, str]:
    """The query, decoded as strict UTF-8 (aiohttp would turn bad bytes into U+FFFD)."""
    try:
        return dict(parse_qsl(request.rel_url.raw_query_string, errors="strict"))
    except UnicodeDecodeError:
        raise HitError("query: a percent-encoded value is not valid UTF-8") from None


async def _ga4_collect(request: web.Request) -> web.Response:
    """GA4's collection protocol, as gtag.js sends it to a server container URL."""
    settings = request.app[SETTINGS]
    try:
        body = await _body(request) if request.method == "POST" else b""
        # The raw query: aiohttp's query_string is already partly decoded.
        hit = parse_gcollect(request.rel_url.raw_query_string, body, settings, time.time())
    except HitError as exc:
        return await _refused(request, exc)
    # gtag.js keeps its own client and session; they win over tagrelay's.
    ga_ids = {
        "ga_client_id": hit.client_id,
        "ga_session_id": hit.session_id,
        "ga_session_number": str(hit.session_number) if hit.session_number is not None else None,
    }
    return await _accept(request, hit, {k: v for k, v in ga_ids.items() if v}, hit.user_id, google=True)


# The endpoints whose answers tagrelay_hits_total counts, by status (_last_resort).
_HIT_HANDLERS = frozenset({_collect, _events_api, _ga4_collect})

async def _body(request: web.Request) -> bytes:
    """The body as sent, decoded here rather than by aiohttp (make_app turns its decoding off).

    aiohttp's decoder does not check that a gzip stream ends: a body cut
    short decoded to what came before the cut, and /g/collect stored its
    last line half-written. It also answered encodings it lacks (br, zstd)
    itself, in plain text naming the Python package to install.
    """
    try:
        raw = await _read(request)
    except HitError:
        raise
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        raise HitError(f"body: over the limit of {limit} bytes", 413) from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a client gone mid-body, a malformed chunk, ...
        why = f"body: cannot be read ({type(exc).__name__})"
        raise HitError(why, body_unread=not isinstance(exc, ConnectionError)) from None
    # Two header lines mean one comma-joined list (RFC 9110 5.3): "gzip" then
    # "br" is "gzip,br", which is refused, not read as gzip alone.
    encoding = ",".join(request.headers.getall("Content-Encoding", ())).strip().lower()
    if encoding in ("", "identity"):
        return raw
    return _inflate(raw, encoding, request.app[SETTINGS].max_body_bytes)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body decoded to its end, never past ``limit`` bytes; a HitError otherwise."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise HitError(f"body: Content-Encoding {encoding!r} is not supported; send it plain, gzip or deflate", 415)
    if encoding == "deflate" and raw and raw[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # no zlib header: the raw deflate some clients send as "deflate"
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(raw, limit + 1)  # a bomb stops here, one byte past the limit
    except zlib.error:
        raise HitError(f"body: not valid {encoding}; send it plain or with valid {encoding}") from None
    if len(body) > limit:
        raise HitError(f"body: {len(raw)} bytes of {encoding} decode to over the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise HitError(f"body: the {encoding} stream ends before its end marker ({len(raw)} bytes came); send it whole")
    if inflater.unused_data:
        raise HitError(f"body: {len(inflater.unused_data)} bytes after the end of the {encoding} stream")
    return body


async def _read(request: web.Request) -> bytes:
    """The whole body; a HitError 408 when it has not all come within the body timeout."""
    if request.content.is_eof():  # all there already: the usual small hit
        return await request.read()
    limit = request.app[SETTINGS].body_timeout_secs
    # TODO(aiohttp chunk errors): a malformed chunk that comes after this
    # read began never reaches it (aiohttp 3.14 queues a 400 of its own
    # instead), so it ends as a 408 at the timeout rather than a 400 at once.
    # Ends when aiohttp fails the payload being read, with a test that a bad
    # chunk size mid-body is answered 400 at once.
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise HitError(f"body: not received within {limit:g} s", 408, body_unread=True) from None


_REJECTED_AS = {413: "too_large", 408: "timeout"}  # HitError status -> tagrelay_events_rejected_total reason


async def _refused(request: web.Request, exc: HitError) -> web.Response:
    log.debug("hit refused: %s", exc)
    metrics = request.app[METRICS]
    metrics.events_rejected.labels(_REJECTED_AS.get(exc.status, "invalid")).inc(exc.events)
    response = _error(exc.status, str(exc))
    if exc.body_unread:
        # Left alone, aiohttp reads the rest of a refused body after the
        # answer, so that a client still sending gets it before the close.
        # That is cheap for the raw bytes of one over the limit; but a body
        # too slow to arrive would hold the connection on, and one aiohttp
        # could not read fails again there, logged at ERROR. So answer, then
        # close; a client still sending may see a reset instead of the answer.
        response.force_close()
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:  # the client has gone: no one to answer
            pass
        request.protocol.force_close()
    return response


async def _accept(
    request: web.Request,
    hit: Hit,
    ids: dict[str, str] | None = None,
    user_id: str | None = None,
    google: bool = False,
) -> web.Response:
    """Enrich, decide consent, route and store a parsed hit; answer once its events are durable.

    ``google``: the hit's consent came from GA4's gcs/gcd, not the collector's consent call.
    """
    settings = request.app[SETTINGS]
    enricher = request.app[ENRICHER]
    ctx = enricher.context(
        peer=request.remote,
        headers=request.headers,
        click_ids=hit.click_ids,
    )
    signals = ConsentSignals(
        collector={} if google else hit.consent,
        google=hit.consent if google else {},
        tcf=hit.tcf,
        gdpr_applies=hit.gdpr,
        gpc=gpc_from_headers(request.headers),
    )
    ctx.screen = hit.screen
    ctx.language = hit.language or header_text(request.headers.get("Accept-Language", "")).split(",")[0].strip()[:_MAX_LANGUAGE]
    consent = resolve_consent(signals, ctx.geo.country if ctx.geo else None, request.app[CONSENT_POLICY])
    ctx.consent, ctx.consent_state = consent.as_dict(), consent
    analytics = consent.granted("analytics")
    cookies = enricher.identify(ctx, request.cookies, request.host, ads=consent.granted("ads"), analytics=analytics)
    if ids and analytics:
        # gtag's client and session IDs live in its _ga cookies: analytics storage.
        ctx.ids.update(ids)
    events = _events(hit, ctx, user_id)
    stored = await _store(request, events, time.time())
    if isinstance(stored, web.Response):
        return stored
    rows, ledger = stored
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "hit from %s (%s): %d event(s) [%s], %d queued, %s",
            ctx.ip, ctx.ua.bot_reason or ctx.ua.browser, len(events), ",".join(e.name for e in events),
            len(rows), "; ".join(f"{x.destination or '-'} {x.what}: {x.detail}" for x in ledger if x.what != "queued") or "nothing skipped",
        )
    response = web.Response(status=204, headers=_NO_STORE)
    for c in cookies:
        header = c.header(settings.cookie_secure)
        if header is not None:
            response.headers.add("Set-Cookie", header)
            continue
        response.set_cookie(
            c.name,
            c.value,
            domain=c.domain,
            max_age=c.max_age_secs,
            path="/",
            secure=settings.cookie_secure,
            httponly=c.http_only,
            samesite="Lax",
        )
    return response


def _events(hit: Hit, ctx: Context, user_id: str | None = None) -> list[Event]:
    return [
        Event(
            name=e.name,
            id=e.id,
            time=e.time,
            page=e.page,
            user=hit.user,
            context=ctx,
            params=e.params,
            user_id=user_id,
        )
        for e in hit.events
    ]


async def _preflight(request: web.Request) -> web.Response:
    # The collector never needs a preflight (text/plain beacons); answer one
    # anyway so that a site calling the endpoint with fetch+JSON still works.
    origin = request.headers.get("Origin", "")
    headers = {
        "Access-Control-Allow-Methods": "POST, GET",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "86400",
    }
    if origin:
        # No credentials: a cross-origin fetch with cookies is not how the
        # collector sends, and allowing it for any origin would be too wide.
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return web.Response(status=204, headers=headers)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """200 while new events can be stored; 503 with the reason when not."""
    outbox = request.app[DELIVERY].outbox
    if outbox.full_reason:
        return web.json_response({"status": "not ready", "reason": outbox.full_reason}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(request.app[SETTINGS].static_dir) / "demo" / "index.html")
