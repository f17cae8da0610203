"""User agent parsing and the bot verdict.

Expected browser/OS/device values and the ``is_bot`` labels come from
``tests/data/ua/user_agents.json`` (uap-core test files where the string is
one of theirs, see the README there). Categories follow the convention
that Android phones send "Mobile" and Android tablets do not (Google's
Closure ``goog.labs.userAgent.device``) and MDN's "Mobi" advice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.enrich.useragent import MAX_UA_CHARS, UserAgentParser, available_resolvers
from proxy.model import UAInfo

CASES = json.loads(
    (Path(__file__).parent / "data" / "ua" / "user_agents.json").read_text("utf-8")
)["cases"]
PARSER = UserAgentParser(cache_size=100)


@pytest.fixture(scope="module")
def parser() -> UserAgentParser:
    return PARSER


def _major(version: str) -> str | None:
    return version.split(".")[0] if version else None


def by_id(case_id: int) -> str:
    return next(c["ua"] for c in CASES if c["id"] == case_id)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['id']}-{c['category']}")
class TestVectors:
    def test_browser_family_and_major(self, parser, case):
        """The browser family and major version are uap-core's."""
        info = parser.parse(case["ua"])
        expected = case["expected"]["user_agent"]

        assert (info.browser, _major(info.browser_version)) == (
            expected["family"],
            expected["major"],
        )

    def test_browser_version_starts_with_the_expected_parts(self, parser, case):
        """browser_version is major.minor.patch as far as uap-core knows them."""
        expected = case["expected"]["user_agent"]
        parts = []
        for key in ("major", "minor", "patch"):
            if expected[key] is None:
                break
            parts.append(expected[key])

        assert parser.parse(case["ua"]).browser_version.startswith(".".join(parts))

    def test_os_family_and_major(self, parser, case):
        """The OS family and major version are uap-core's."""
        info = parser.parse(case["ua"])
        expected = case["expected"]["os"]

        assert (info.os, _major(info.os_version)) == (
            expected["family"],
            expected["major"],
        )

    def test_device_family_brand_model(self, parser, case):
        """The device family, brand and model are uap-core's ("" where it has none)."""
        info = parser.parse(case["ua"])
        expected = case["expected"]["device"]

        assert (info.device, info.device_brand, info.device_model) == (
            expected["family"],
            expected["brand"] or "",
            expected["model"] or "",
        )

    def test_bot_verdict(self, parser, case):
        """is_bot equals the file's label, and bots carry a reason and the bot category."""
        info = parser.parse(case["ua"])

        assert info.is_bot is case["is_bot"]
        assert bool(info.bot_reason) is case["is_bot"]
        assert (info.category == "bot") is case["is_bot"]


class TestBotReason:
    @pytest.mark.parametrize(
        ("case_id", "reason"),
        [
            (48, "crawler"),  # Googlebot
            (57, "crawler"),  # GPTBot
            (55, "preview"),  # facebookexternalhit fetches shared-link previews
            (65, "preview"),  # WhatsApp link preview
            (66, "preview"),  # Slackbot-LinkExpanding
            (
                58,
                "headless",
            ),  # Chrome-Lighthouse, parsed by uap-core as plain Chrome 74
            (59, "headless"),  # HeadlessChrome
            (61, "http_library"),  # curl
            (62, "http_library"),  # python-requests
            (64, "http_library"),  # Go-http-client
        ],
    )
    def test_reason_code(self, parser, case_id, reason):
        """Each kind of bot in the vectors gets its short reason code."""
        assert parser.parse(by_id(case_id)).bot_reason == reason

    @pytest.mark.parametrize("ua", ["", "   ", None])
    def test_missing_or_blank_ua_is_a_bot(self, parser, ua):
        """No User-Agent at all is a bot with reason "empty" and Other everywhere."""
        assert parser.parse(ua) == UAInfo(
            category="bot", is_bot=True, bot_reason="empty"
        )

    def test_bytespider_which_uap_core_misses_is_a_crawler(self, parser):
        """ByteDance's Bytespider (parsed by uap-core as an Android phone) is a crawler."""
        ua = (
            "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
            "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)"
        )

        assert parser.parse(ua).bot_reason == "crawler"

    def test_info_url_marks_an_unknown_crawler(self, parser):
        """A "+https://" info URL, the crawler convention, makes an unknown agent a crawler."""
        assert (
            parser.parse(
                "ExampleFetcher/0.3 (+https://fetcher.example/about)"
            ).bot_reason
            == "crawler"
        )

    def test_phone_brand_containing_bot_is_not_a_bot(self, parser):
        """A CUBOT phone is a phone, not a bot."""
        ua = (
            "Mozilla/5.0 (Linux; Android 9; CUBOT_X19) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/96.0.4664.104 Mobile Safari/537.36"
        )

        assert parser.parse(ua).is_bot is False


class TestCategory:
    @pytest.mark.parametrize(
        ("case_id", "category"),
        [
            (1, "desktop"),  # Windows Chrome
            (10, "desktop"),  # Mac Safari (also desktop-mode iPad: indistinguishable)
            (19, "mobile"),  # iPhone Safari
            (22, "tablet"),  # iPad Safari
            (27, "mobile"),  # Android Chrome with "Mobile"
            (34, "mobile"),  # Facebook in-app on iPhone
        ],
    )
    def test_category_from_vectors(self, parser, case_id, category):
        """Desktop, phone and iPad strings from the vectors get their category."""
        assert parser.parse(by_id(case_id)).category == category

    def test_android_without_mobile_is_a_tablet(self, parser):
        """A Samsung Galaxy Tab A (SM-T510) Chrome string has no "Mobile": tablet."""
        ua = (
            "Mozilla/5.0 (Linux; Android 10; SM-T510) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36"
        )

        assert parser.parse(ua).category == "tablet"

    def test_firefox_android_tablet_token_is_a_tablet(self, parser):
        """Firefox for Android says "Tablet" in place of "Mobile" on tablets."""
        ua = "Mozilla/5.0 (Android 13; Tablet; rv:120.0) Gecko/120.0 Firefox/120.0"

        assert parser.parse(ua).category == "tablet"


class TestInputHandling:
    def test_unknown_string_normalises_to_other(self, parser):
        """A string nothing matches gives Other families and empty versions, not None."""
        info = parser.parse("definitely not a user agent")

        assert (info.browser, info.os, info.device) == ("Other", "Other", "Other")
        assert (
            info.browser_version,
            info.os_version,
            info.device_brand,
            info.device_model,
        ) == ("", "", "", "")

    def test_long_ua_is_truncated_before_parsing(self, parser):
        """A UA padded past 1 KiB parses like its first 1 KiB (the browser tokens come first)."""
        ua = by_id(1)
        padded = ua + " " + "x" * 50_000

        assert parser.parse(padded) == parser.parse(padded[:MAX_UA_CHARS])
        assert parser.parse(padded).browser == "Chrome"

    def test_undecodable_bytes_do_not_crash(self, parser):
        """Non-UTF-8 header bytes, as aiohttp hands them over (surrogateescape), still parse."""
        raw = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) \xff\xfe Mobile/15E148"
        ua = raw.decode("utf-8", "surrogateescape")

        assert parser.parse(ua).os == "iOS"

    def test_control_and_non_ascii_characters_do_not_crash(self, parser):
        """Control characters and emoji in a UA give a result, never an exception."""
        info = parser.parse("Mozilla/5.0 \x00\x1b[31m (Linköping; 🤖)")

        assert isinstance(info, UAInfo)

    def test_cached_and_uncached_parsers_agree(self, parser):
        """The cache changes speed, not answers."""
        uncached = UserAgentParser(cache_size=0)

        for case in CASES:
            assert (
                uncached.parse(case["ua"])
                == parser.parse(case["ua"])
                == parser.parse(case["ua"])
            )

    def test_negative_cache_size_is_refused(self):
        """cache_size below 0 is a clear error naming the value."""
        with pytest.raises(ValueError, match="cache_size -1"):
            UserAgentParser(cache_size=-1)

    def test_rust_resolver_is_preferred(self):
        """With ua-parser-rs installed the Rust resolver is the default."""
        assert available_resolvers()[0] == "regex"
        assert UserAgentParser().resolver == "regex"

    def test_basic_resolver_gives_the_same_answers(self, parser):
        """The pure-Python resolver agrees with the Rust one on every vector."""
        basic = UserAgentParser(cache_size=0, resolver="basic")

        for case in CASES:
            assert basic.parse(case["ua"]) == parser.parse(case["ua"])


@settings(deadline=None, max_examples=200)
@given(ua=st.text(alphabet=st.characters(exclude_categories=()), max_size=300))
def test_any_text_parses_without_exception(ua):
    """Whatever text arrives (surrogates included), parse returns a UAInfo with a known category."""
    info = PARSER.parse(ua)

    assert info.category in {"bot", "tablet", "mobile", "desktop"}
