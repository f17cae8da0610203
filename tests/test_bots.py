"""Bot score: UA verdict, header consistency and data-centre ASNs.

Real browser header sets come from ``tests/data/bots/`` (curl-impersonate's
recordings of Chrome, Firefox and Safari, and our own Chromium captures;
see its README) and from a live Chromium in the browser tests. User agents
and their bot labels come from ``tests/data/ua/user_agents.json``; ASN records
from MaxMind's test database in ``tests/data/geo/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.enrich.bots import (
    BOT_THRESHOLD,
    DATACENTER_ASNS,
    ASNDatabaseError,
    ASNReader,
    ASNRecord,
    BotVerdict,
    bot_score,
)
from proxy.enrich.useragent import UserAgentParser
from proxy.settings import SettingsError
from tests.browser import chromium, chromium_major, needs_chromium

DATA = Path(__file__).parent / "data"
BROWSERS = json.loads((DATA / "bots" / "browser_headers.json").read_text())["cases"]
UAS = json.loads((DATA / "ua" / "user_agents.json").read_text())["cases"]
ASN_DB = DATA / "geo" / "GeoLite2-ASN-Test.mmdb"
CITY_DB = DATA / "geo" / "GeoIP2-City-Test.mmdb"

CHROME_MAC = BROWSERS[0]["headers"]
SAFARI_MAC = next(c for c in BROWSERS if c["name"] == "safari_17_0_macos_navigation")[
    "headers"
]
def chrome_linux_ua(major: str) -> str:
    """The User-Agent string headful Chrome sends on Linux (UA reduction: <major>.0.0.0)."""
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )


CHROME_LINUX_UA = chrome_linux_ua("156")
FIREFOX_WINDOWS_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)

PARSER = UserAgentParser()


def score(headers, asn=None, asn_org=None) -> BotVerdict:
    """The verdict for a header set, parsing its User-Agent as the Enricher does."""
    ua = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    return bot_score(PARSER.parse(ua), headers, asn, asn_org)


def without(headers, *names):
    drop = {n.lower() for n in names}
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def browser_like(ua: str) -> dict[str, str]:
    """What a browser's fetch() sends besides its UA: Accept and Accept-Language."""
    return {"User-Agent": ua, "Accept": "*/*", "Accept-Language": "en-US,en;q=0.9"}


class TestRealBrowsers:
    @pytest.mark.parametrize("case", BROWSERS, ids=[c["name"] for c in BROWSERS])
    def test_recorded_browser_headers_score_zero(self, case):
        """A header set a real browser sent carries no bot signal at all."""
        assert score(case["headers"]) == BotVerdict(score=0, is_bot=False, reasons=())

    @pytest.mark.parametrize("case", BROWSERS, ids=[c["name"] for c in BROWSERS])
    def test_real_browser_on_a_datacenter_network_is_not_a_bot(self, case):
        """A person behind a VPN in a cloud (AWS) gets the ASN signal but stays below the threshold."""
        verdict = score(case["headers"], asn=16509, asn_org="AMAZON-02")

        assert verdict.reasons == ("datacenter_asn",)
        assert verdict.score < BOT_THRESHOLD
        assert not verdict.is_bot

    @pytest.mark.parametrize(
        "case", [c for c in UAS if not c["is_bot"]], ids=lambda c: f"ua{c['id']}"
    )
    def test_every_human_user_agent_with_browser_headers_scores_zero(self, case):
        """Each non-bot UA of the test set, sent with Accept and Accept-Language, scores 0."""
        assert score(browser_like(case["ua"])).score == 0


class TestUserAgentVerdict:
    @pytest.mark.parametrize(
        "case", [c for c in UAS if c["is_bot"]], ids=lambda c: f"ua{c['id']}"
    )
    def test_every_bot_user_agent_is_a_bot_even_with_browser_headers(self, case):
        """Crawlers, headless browsers, HTTP libraries and previews are bots on their UA alone."""
        verdict = score(browser_like(case["ua"]))

        assert verdict.is_bot
        assert verdict.reasons[0] == "ua_" + PARSER.parse(case["ua"]).bot_reason
        assert verdict.score == 90

    def test_missing_user_agent_is_a_bot(self):
        """No User-Agent at all is the parser's "empty" reason, and a bot."""
        verdict = score({"Accept": "*/*", "Accept-Language": "en"})

        assert verdict.is_bot
        assert verdict.reasons == ("ua_empty",)

    def test_python_requests_defaults_score_ua_and_missing_language(self):
        """requests' default headers (UA, Accept-Encoding, Accept */*, Connection) lack Accept-Language."""
        headers = {
            "User-Agent": "python-requests/2.32.3",
            "Accept-Encoding": "gzip, deflate",
            "Accept": "*/*",
            "Connection": "keep-alive",
        }

        verdict = score(headers)

        assert verdict.reasons == ("ua_http_library", "no_accept_language")
        assert verdict.score == 100


class TestHeaders:
    def test_missing_accept_language_adds_30(self):
        """A browser header set without Accept-Language scores 30: suspicious, not a bot."""
        verdict = score(without(SAFARI_MAC, "accept-language"))

        assert verdict == BotVerdict(30, False, ("no_accept_language",))

    def test_empty_accept_language_counts_as_missing(self):
        """An Accept-Language of only spaces is treated like no header."""
        headers = {**SAFARI_MAC, "accept-language": "  "}

        assert score(headers).reasons == ("no_accept_language",)

    def test_missing_accept_adds_20(self):
        """A browser header set without Accept scores 20."""
        assert score(without(SAFARI_MAC, "accept")) == BotVerdict(
            20, False, ("no_accept",)
        )

    def test_browser_ua_with_neither_accept_header_is_a_bot(self):
        """A script that copied only a browser's User-Agent reaches the threshold (30 + 20)."""
        verdict = score({"User-Agent": SAFARI_MAC["user-agent"]})

        assert verdict == BotVerdict(50, True, ("no_accept_language", "no_accept"))

    def test_header_names_are_case_insensitive(self):
        """A plain dict in any case and aiohttp's CIMultiDict give the same verdict."""
        upper = {k.upper(): v for k, v in CHROME_MAC.items()}

        assert score(upper) == score(CHROME_MAC) == score(CIMultiDict(CHROME_MAC))
        assert score(upper).score == 0


class TestClientHints:
    def test_windows_platform_hint_with_mac_user_agent(self):
        """Sec-CH-UA-Platform "Windows" on a Mac Chrome UA is a platform mismatch (40)."""
        headers = {**CHROME_MAC, "sec-ch-ua-platform": '"Windows"'}

        assert score(headers) == BotVerdict(40, False, ("hints_platform_mismatch",))

    def test_chromium_brand_version_other_than_the_ua_version(self):
        """A "Chromium";v="120" brand with a Chrome/119 UA string is a version mismatch (40)."""
        headers = {
            **CHROME_MAC,
            "user-agent": CHROME_MAC["user-agent"].replace(
                "Chrome/120.", "Chrome/119."
            ),
        }

        assert score(headers).reasons == ("hints_version_mismatch",)

    def test_chrome_hints_on_a_safari_user_agent(self):
        """Safari never sends UA client hints, so Chrome's hints with a Safari UA contradict it."""
        hints = {k: v for k, v in CHROME_MAC.items() if k.startswith("sec-ch-ua")}
        headers = {**SAFARI_MAC, **hints}

        assert score(headers) == BotVerdict(40, False, ("hints_on_non_chromium",))

    def test_hints_on_firefox_user_agent(self):
        """Firefox never sends UA client hints either."""
        headers = {**browser_like(FIREFOX_WINDOWS_UA), "Sec-CH-UA-Mobile": "?0"}

        assert score(headers).reasons == ("hints_on_non_chromium",)

    def test_chrome_without_hints_is_not_judged(self):
        """Chrome sends hints only to secure origins, so their absence says nothing."""
        headers = without(
            CHROME_MAC, "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform"
        )

        assert score(headers).score == 0

    def test_android_platform_with_desktop_mode_linux_ua_is_consistent(self):
        """Chrome on Android in desktop-site mode sends a Linux UA; "Android" is not a mismatch."""
        headers = {
            **browser_like(CHROME_LINUX_UA),
            "Sec-CH-UA": '"Chromium";v="156", "Not:A-Brand";v="8"',
            "Sec-CH-UA-Platform": '"Android"',
        }

        assert score(headers).score == 0

    def test_unknown_platform_is_not_judged(self):
        """The "Unknown" platform value can go with any UA string."""
        headers = {**CHROME_MAC, "sec-ch-ua-platform": '"Unknown"'}

        assert score(headers).score == 0

    def test_contradicting_hints_and_missing_language_make_a_bot(self):
        """A hint contradiction (40) plus no Accept-Language (30) is past the threshold."""
        headers = without(
            {**CHROME_MAC, "sec-ch-ua-platform": '"Windows"'}, "accept-language"
        )

        verdict = score(headers)

        assert verdict.is_bot
        assert verdict.score == 70


class TestNetwork:
    @pytest.mark.parametrize("asn", sorted(DATACENTER_ASNS))
    def test_listed_datacenter_asns_add_35(self, asn):
        """Every listed cloud/hosting ASN adds the datacenter_asn reason, worth 35."""
        assert score(CHROME_MAC, asn=asn) == BotVerdict(35, False, ("datacenter_asn",))

    def test_datacenter_asn_and_missing_language_make_a_bot(self):
        """A browser UA from DigitalOcean (AS14061) without Accept-Language scores 65."""
        verdict = score(without(SAFARI_MAC, "accept-language"), asn=14061)

        assert verdict == BotVerdict(65, True, ("no_accept_language", "datacenter_asn"))

    @pytest.mark.parametrize(
        "org",
        [
            "World Hosting Farm Limited",
            "Continuum Data Centers, LLC.",
            "Example VPS GmbH",
        ],
    )
    def test_hosting_organisation_name_adds_20(self, org):
        """An unlisted ASN whose organisation reads like a hosting company adds 20."""
        assert score(CHROME_MAC, asn=64500, asn_org=org) == BotVerdict(
            20, False, ("hosting_org",)
        )

    @pytest.mark.parametrize(
        "asn, org",
        [
            (13335, "Cloudflare, Inc."),
            (29518, "Bredband2 AB"),
            (7922, "Comcast Cable Communications, Inc."),
        ],
    )
    def test_private_relay_and_consumer_networks_add_nothing(self, asn, org):
        """Cloudflare (iCloud Private Relay egress) and consumer ISPs carry no network signal."""
        assert score(SAFARI_MAC, asn=asn, asn_org=org).score == 0


@pytest.fixture(scope="module")
def reader():
    with ASNReader(ASN_DB) as reader:
        yield reader


class TestASNReader:
    @pytest.mark.parametrize(
        "ip, expected",
        [
            ("89.160.20.128", ASNRecord(29518, "Bredband2 AB")),
            ("149.101.100.1", ASNRecord(6167, "CELLCO-PART")),
            ("1.128.0.1", ASNRecord(1221, "Telstra Pty Ltd")),
            ("216.160.83.56", ASNRecord(209, "")),
            ("::ffff:89.160.20.128", ASNRecord(29518, "Bredband2 AB")),
        ],
    )
    def test_lookup_reads_number_and_organisation(self, reader, ip, expected):
        """Records documented in tests/data/geo/README.md come back as ASNRecords."""
        assert reader.lookup(ip) == expected

    @pytest.mark.parametrize(
        "ip", ["81.2.69.160", "10.0.0.1", "127.0.0.1", "::1", "not an ip", ""]
    )
    def test_unknown_private_and_invalid_addresses_give_none(self, reader, ip):
        """Addresses the DB does not hold, non-public addresses and garbage give None."""
        assert reader.lookup(ip) is None

    def test_google_address_scores_as_datacenter(self, reader):
        """1.0.0.1 is AS15169 in the test DB, which the score counts as a data centre."""
        record = reader.lookup("1.0.0.1")

        assert record == ASNRecord(15169, "Google Inc.")
        assert score(SAFARI_MAC, record.number, record.organization).reasons == (
            "datacenter_asn",
        )

    def test_database_type_is_recorded(self, reader):
        """The reader keeps the DB's type for start-up logging."""
        assert reader.database_type == "GeoLite2-ASN"

    def test_missing_file_is_a_settings_error_naming_it(self, tmp_path):
        """A missing file raises ASNDatabaseError (a SettingsError) with the path."""
        path = tmp_path / "nope.mmdb"

        with pytest.raises(ASNDatabaseError, match="no such file") as info:
            ASNReader(path)

        assert isinstance(info.value, SettingsError)
        assert str(path) in str(info.value)

    def test_city_database_is_refused(self):
        """A City DB holds no ASN data, and the error names its type."""
        with pytest.raises(ASNDatabaseError, match="GeoIP2-City"):
            ASNReader(CITY_DB)

    def test_file_that_is_not_a_maxmind_db_is_refused(self, tmp_path):
        """Any other file is not a MaxMind DB."""
        path = tmp_path / "asn.mmdb"
        path.write_bytes(b"not a database" * 100)

        with pytest.raises(ASNDatabaseError, match="not a MaxMind DB"):
            ASNReader(path)

    def test_lookup_after_close_raises(self, tmp_path):
        """A closed reader refuses lookups instead of reading unmapped memory."""
        copy = tmp_path / "asn.mmdb"
        shutil.copy(ASN_DB, copy)
        reader = ASNReader(copy)
        reader.close()

        with pytest.raises(RuntimeError, match="closed"):
            reader.lookup("89.160.20.128")


async def _capture(user_agent: str | None) -> list[tuple[str, dict[str, str]]]:
    """Headers chromium sends for a navigation, a fetch() and a sendBeacon()."""
    seen: list[tuple[str, dict[str, str]]] = []
    page_html = (
        "<!doctype html><title>t</title><script>"
        "fetch('/hit', {method: 'POST', body: '{}', keepalive: true})"
        ".then(() => navigator.sendBeacon('/beacon', '{}'))"
        ".then(() => { document.title = 'done'; });"
        "</script>"
    )

    async def page(request: web.Request) -> web.Response:
        seen.append(("navigation", dict(request.headers)))
        return web.Response(text=page_html, content_type="text/html")

    async def hit(request: web.Request) -> web.Response:
        seen.append((request.path.strip("/"), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/hit", hit)
    app.router.add_post("/beacon", hit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        options = {"user_agent": user_agent} if user_agent else {}
        async with chromium(**options) as context:
            tab = await context.new_page()
            await tab.goto(f"http://127.0.0.1:{port}/")
            await tab.wait_for_function("document.title === 'done'")
    finally:
        await runner.cleanup()
    return seen


class TestLiveChromium:
    @needs_chromium
    async def test_chromium_with_a_normal_user_agent_scores_zero(self):
        """Navigation, fetch() and sendBeacon() from chromium carry no bot signal.

        The UA string is headful Chrome's for the installed version, as a real
        Chrome's string and Sec-CH-UA hints name the same version.
        """
        seen = await _capture(chrome_linux_ua(chromium_major()))

        assert [kind for kind, _ in seen] == ["navigation", "hit", "beacon"]
        for kind, headers in seen:
            assert score(headers) == BotVerdict(0, False, ()), kind

    @needs_chromium
    async def test_headless_chromium_is_a_bot_by_its_user_agent(self):
        """Unmodified headless chromium says HeadlessChrome, which scores as headless."""
        seen = await _capture(None)

        for kind, headers in seen:
            assert score(headers).reasons == ("ua_headless",), kind

    @needs_chromium
    async def test_chromium_posing_as_firefox_contradicts_its_hints(self):
        """Chromium with a Firefox UA string still sends its Chromium brand hints."""
        seen = await _capture(FIREFOX_WINDOWS_UA)

        for kind, headers in seen:
            assert score(headers) == BotVerdict(
                40, False, ("hints_on_non_chromium",)
            ), kind
