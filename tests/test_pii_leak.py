"""Raw PII is found nowhere: not in logs, outbox, dead letters, ledger, files or vendor requests.

The whole service runs in-process with rules that send every event to a JSON
Lines file, a webhook, Meta and GA4 stand-ins, and a Meta-type destination
whose "vendor" refuses each request by echoing its body back (a dead letter
with the vendor's answer). Logging is captured at DEBUG, also through a
file handler, as an operator running ``TAGRELAY_LOG_LEVEL=DEBUG`` would have it.

A browser session full of PII then arrives: user data on purpose (which
adapters hash), and by accident in page URLs, the referrer, the title and
custom params; through POST, the ``GET ?d=`` image fallback and the
``?n=`` noscript pixel with its ``Referer``; plus refused hits that carry PII.
Two people are used so that each kind of leak is told apart: ``USER`` only
ever appears in ``user``, ``PAGE`` only in URLs, titles and params.

Every place is then searched for the raw values of each, as written and as
they look percent-encoded, in any letter case, phone digits with any of the
usual separators between them, and finds none.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import DELIVERY, make_app
from proxy.pii import AccessLogger
from proxy.rules import load_rules
from proxy.settings import Settings
from tests.standins import STANDIN, StandIn
from tests.standins.ga4 import ga4_app
from tests.standins.meta import meta_app


@dataclass(frozen=True)
class Person:
    email: str
    phone: str  # international form; its national significant number is searched for
    national_digits: str
    first_name: str
    last_name: str


# Only ever sent as user data, which adapters hash.
USER = Person(
    "Philippa.Quennell@Example.org",
    "+44 20 7946 0123",
    "2079460123",
    "Philippa",
    "Quennell",
)
# Only ever in page URLs, the referrer, the title and params: accidental PII.
PAGE = Person(
    "Wilhelmina.Thorncastle@Example.net",
    "+49 151 23456789",
    "15123456789",
    "Wilhelmina",
    "Thorncastle",
)

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
FBCLID = "IwAR2_leak-Test-9xYz"
PAGE_URL = (
    f"https://shop.example/account/{PAGE.email}/orders"
    f"?email={quote(PAGE.email, safe='')}&phone={quote(PAGE.phone, safe='')}"
    f"&first_name={PAGE.first_name}&lastName={PAGE.last_name}&utm_source=newsletter&fbclid={FBCLID}"
)
REFERRER = (
    f"https://mail.example/inbox?to={PAGE.email}&tel={PAGE.phone.replace(' ', '-')}"
)
TITLE = f"Orders of {PAGE.email} | Shop"
USER_DATA = {
    "email": USER.email,
    "phone": USER.phone,
    "first_name": USER.first_name,
    "last_name": USER.last_name,
}
PAGE_PARAMS = {
    "email": PAGE.email,
    "customer_phone": PAGE.phone,
    "customer_name": f"{PAGE.first_name} {PAGE.last_name}",
    "coupon": PAGE.email.lower(),  # contact data under an innocent name
}
CONSENT = {
    "ads": True,
    "analytics": True,
    "ad_personalization": True,
    "ad_user_data": True,
}

_SEPARATORS = r"(?:[\s\-./()+]|%20|%2b|%2d|%28|%29)*"


def needles(person: Person) -> list[re.Pattern[str]]:
    """What finds ``person`` in lowercased text: email raw and encoded, names, phone digits with separators."""
    literal = [
        person.email.lower(),
        quote(person.email, safe="").lower(),
        person.first_name.lower(),
        person.last_name.lower(),
    ]
    phone = _SEPARATORS.join(person.national_digits)
    return [re.compile(re.escape(x)) for x in literal] + [re.compile(phone)]


def found(person: Person, texts: list[str]) -> list[str]:
    """Each text (shortened around the match) where some raw value of ``person`` shows up."""
    hits = []
    for text in texts:
        low = text.lower()
        for needle in needles(person):
            m = needle.search(low)
            if m:
                hits.append(
                    f"{needle.pattern!r} in ...{text[max(0, m.start() - 80) : m.end() + 40]!r}..."
                )
                break
    return hits


@dataclass
class Session:
    """Everything the service left behind after the session, by place."""

    places: dict[str, list[str]] = field(default_factory=dict)
    refusals: list[tuple[int, str]] = field(default_factory=list)


def _rules(tmp_path: Path, meta: int, ga4: int, hook: int, echo: int) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-leak.toml").write_text(
        f"""
[destinations.file]
type = "file"
path = "{tmp_path / "data" / "events.jsonl"}"

[destinations.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/hook"

[destinations.meta]
type = "meta_capi"
pixel_id = "1234567890"
access_token = "${{LEAK_META_TOKEN}}"
endpoint = "http://127.0.0.1:{meta}"

[destinations.meta_echo]
type = "meta_capi"
pixel_id = "1234567890"
access_token = "${{LEAK_META_TOKEN}}"
endpoint = "http://127.0.0.1:{echo}"

[destinations.ga4]
type = "ga4"
measurement_id = "G-LEAKTEST1"
api_secret = "${{LEAK_GA4_SECRET}}"
endpoint = "http://127.0.0.1:{ga4}"

[[routes]]
name = "everything everywhere"
to = ["file", "hook", "meta", "meta_echo", "ga4"]
""",
        encoding="utf-8",
    )
    return rules


def _recorder(echo: bool) -> web.Application:
    """A webhook receiver answering 200, or (``echo``) a vendor refusing with the request body as its answer."""
    app = web.Application()
    app[STANDIN] = StandIn()

    async def handle(request: web.Request) -> web.Response:
        rec = await request.app[STANDIN].record(request)
        if echo:
            return web.Response(
                status=400, body=rec.body, content_type="application/json"
            )
        return web.json_response({"ok": True})

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _rows(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = []
        for table in ("outbox", "dead", "ledger"):
            for row in con.execute(f"SELECT * FROM {table}"):
                cells = [
                    c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                    for c in row
                ]
                out.append(f"{table}: " + " | ".join(cells))
        return out
    finally:
        con.close()


@pytest.fixture
async def session(aiohttp_client, aiohttp_server, tmp_path, caplog) -> AsyncIterator[Session]:
    """Run the PII-laden session through the whole service and collect every place it could leak to."""
    caplog.set_level(logging.DEBUG)
    (tmp_path / "logs").mkdir()
    log_file = logging.FileHandler(tmp_path / "logs" / "tagrelay.log", encoding="utf-8")
    log_file.setLevel(logging.DEBUG)
    log_file.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.getLogger().addHandler(log_file)

    meta, ga4 = (
        meta_app(access_token="leak-meta-token"),
        ga4_app("G-LEAKTEST1", "leak-ga4-secret"),
    )
    hook, echo = _recorder(echo=False), _recorder(echo=True)
    servers = [await aiohttp_server(a) for a in (meta, ga4, hook, echo)]
    rules = _rules(tmp_path, *(s.port for s in servers))
    settings = Settings(rules_dir=rules, data_dir=tmp_path / "data")
    env = {"LEAK_META_TOKEN": "leak-meta-token", "LEAK_GA4_SECRET": "leak-ga4-secret"}
    # Started as `tagrelay serve` starts it: with tagrelay's access logger
    # (TestServer ignores runner options given to its constructor).
    server = TestServer(make_app(settings, load_rules(rules, env=env)))
    await server.start_server(access_log_class=AccessLogger)
    client = await aiohttp_client(server)
    browser = {
        "User-Agent": UA,
        "Referer": PAGE_URL,
        "Content-Type": "text/plain;charset=UTF-8",
    }
    page = {"url": PAGE_URL, "referrer": REFERRER, "title": TITLE}
    result = Session()

    try:
        # A page view and a purchase, as the collector posts them.
        hit = {
            "events": [
                {"name": "page_view", "id": "leak-1", "page": page},
                {
                    "name": "purchase",
                    "id": "leak-2",
                    "page": page,
                    "params": {
                        "value": 42.5,
                        "currency": "EUR",
                        "transaction_id": "T-1",
                        **PAGE_PARAMS,
                    },
                },
            ],
            "user": USER_DATA,
            "consent": CONSENT,
            "click_ids": {"fbclid": FBCLID},
        }
        assert (
            await client.post("/e", data=orjson.dumps(hit), headers=browser)
        ).status == 204

        # The image fallback: the whole hit, user data included, in the query string.
        fallback = {
            "events": [
                {
                    "name": "add_to_cart",
                    "id": "leak-3",
                    "page": page,
                    "params": PAGE_PARAMS,
                }
            ],
            "user": USER_DATA,
            "consent": CONSENT,
        }
        d = quote(orjson.dumps(fallback).decode(), safe="")
        assert (await client.get(f"/e?d={d}", headers=browser)).status == 204

        # The noscript pixel: its page is the Referer header.
        assert (await client.get("/e?n=page_view", headers=browser)).status == 204

        # Refused hits that carry PII: a bad time, an unknown user field.
        for bad in (
            {
                "events": [
                    {"name": "purchase", "time": "yesterday", "params": PAGE_PARAMS}
                ],
                "user": USER_DATA,
            },
            {"events": [{"name": "sign_up"}], "user": {"mail": USER.email}},
        ):
            resp = await client.post("/e", data=orjson.dumps(bad), headers=browser)
            result.refusals.append((resp.status, await resp.text()))

        assert await client.app[DELIVERY].wait_idle(20)
        data_dir = tmp_path / "data"
        result.places["outbox, dead letter and ledger rows"] = _rows(
            settings.outbox_file
        )
        result.places["written files"] = [
            f"{p}: " + p.read_bytes().decode("latin-1")
            for p in sorted(data_dir.rglob("*"))
            if p.is_file()
        ]
        result.places["vendor requests"] = [
            f"{r.method} {r.path} {r.query} {r.headers} "
            + r.body.decode("utf-8", "replace")
            for app in (meta, ga4, hook, echo)
            for r in app[STANDIN].requests
        ]
        log_file.flush()
        result.places["log lines"] = [
            caplog.text,
            (tmp_path / "logs" / "tagrelay.log").read_text("utf-8"),
        ]
        # The session did reach every destination, and the echo made dead letters.
        assert all(app[STANDIN].requests for app in (meta, ga4, hook, echo))
        assert any(
            row.startswith("dead: ")
            for row in result.places["outbox, dead letter and ledger rows"]
        )
        yield result
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


PLACES = [
    "log lines",
    "outbox, dead letter and ledger rows",
    "written files",
    "vendor requests",
]


@pytest.mark.parametrize("place", PLACES)
async def test_user_data_is_found_nowhere_raw(session, place):
    """Email, phone and names sent as user data appear in no place, in no case or encoding."""
    assert found(USER, session.places[place]) == []


@pytest.mark.parametrize("place", PLACES)
async def test_pii_in_urls_titles_and_params_is_found_nowhere_raw(session, place):
    """Email, phone and names a page put in its URL, referrer, title or params appear in no place."""
    assert found(PAGE, session.places[place]) == []


async def test_refused_hits_are_answered_400_without_echoing_their_pii(session):
    """A malformed hit carrying PII is refused with a 400 whose message holds none of it."""
    assert [status for status, _ in session.refusals] == [400, 400]
    answers = [text for _, text in session.refusals]
    assert found(USER, answers) == [] and found(PAGE, answers) == []


async def test_click_ids_survive_the_stripping(session):
    """fbclid reaches Meta unchanged inside fbc while PII is being removed around it."""
    assert any(FBCLID in text for text in session.places["vendor requests"])
