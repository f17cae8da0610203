"""User agent parsing (uap-core taxonomy) and the bot verdict.

Parsing uses ``ua_parser`` 1.x with the regexes shipped in
``ua-parser-builtins``. Of its resolvers the Rust one (``ua_parser.regex``,
backed by ``ua-parser-rs``) is preferred, then ``re2``, then the pure-Python
one; this is the same order ``ua_parser`` itself picks for its global
parser. Results are cached per UA string, because a site sees the same few
hundred strings over and over.

The bot verdict adds to ua-parser's own ``device.family == "Spider"`` check:
uap-core has no notion of headless browsers (``HeadlessChrome``,
``Chrome-Lighthouse`` parses as plain Chrome), HTTP libraries (``curl``,
``python-requests``, ``Go-http-client``) or link-preview fetchers that are
not in its spider list, so a short pattern list of our own covers those.
``bot_reason`` is one of:

========================  ==================================================
``empty``                 no User-Agent header, or only whitespace
``preview``               a link-preview fetcher (facebookexternalhit, Slack)
``headless``              a headless or automated browser, page auditors
``http_library``          an HTTP client library or command-line tool
``crawler``               a search, SEO, AI or other crawler
========================  ==================================================
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Callable, Literal

import ua_parser
from ua_parser import caching
from ua_parser.core import Matchers, Resolver, Result

from proxy.model import UAInfo

__all__ = ["MAX_UA_CHARS", "ResolverName", "UserAgentParser", "available_resolvers"]

log = logging.getLogger("proxy.enrich")

# Real browser UAs are 100-300 characters; anything past 1 KiB is padding or
# an attack on regex cost. The head of the string is what identifies the
# browser, so parsing a truncated copy loses nothing useful.
MAX_UA_CHARS = 1024

ResolverName = Literal["regex", "re2", "basic"]

# The patterns below run on the lower-cased string: case-sensitive literal
# alternations are several times faster in ``re`` than IGNORECASE ones, and
# they run on every hit, cached or not.

# Link-preview fetchers. Checked before crawlers so that they get the more
# useful reason even where uap-core also calls them Spider.
_PREVIEW = re.compile(
    r"facebookexternalhit|slackbot|^whatsapp/|telegrambot|discordbot|twitterbot"
    r"|linkedinbot|skypeuripreview|redditbot|embedly|iframely|snap url preview"
)
# Headless and automated browsers, and page auditors driving one.
_HEADLESS = re.compile(
    r"headlesschrome|chrome-lighthouse|google page speed insights|ptst/"
    r"|phantomjs|slimerjs"
)
# HTTP libraries and tools put their own name first.
_HTTP_LIBRARY = re.compile(
    r"^(?:curl|wget|python-requests|python-urllib|python-httpx"
    r"|python/[\d.]+ aiohttp|aiohttp|go-http-client|java|apache-httpclient|okhttp"
    r"|axios|node-fetch|undici|postmanruntime|httpie|libwww-perl|guzzlehttp|dart)\b"
)
# Crawlers uap-core misses: a few by name, and the crawler convention of a
# "+http(s)://" info URL in the string, which browsers never send.
_CRAWLER = re.compile(r"bytespider|[(+]https?://")

# Tablet and phone hints, after Closure's goog.labs.userAgent.device and
# MDN's advice to look for "Mobi": Android phones send "Mobile", Android
# tablets do not; iPads and Kindles name themselves.
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook")
_MOBILE = re.compile(r"mobi|iphone|ipod|windows phone|opera mini")


def available_resolvers() -> list[ResolverName]:
    """The ua_parser resolvers importable here, fastest first."""
    names: list[ResolverName] = []
    if ua_parser.RegexResolver is not None:
        names.append("regex")
    if ua_parser.Re2Resolver is not None:
        names.append("re2")
    names.append("basic")
    return names


class UserAgentParser:
    """Parses User-Agent strings into :class:`~proxy.model.UAInfo`; build once, share.

    Args:
        cache_size: how many distinct UA strings to keep parsed results for;
            0 turns the cache off.
        resolver: force one ua_parser resolver (for benchmarks); the default
            is the fastest one available.
    """

    def __init__(
        self, cache_size: int = 2000, resolver: ResolverName | None = None
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size {cache_size!r}: must be 0 (no cache) or more")
        available = available_resolvers()
        if resolver is None:
            resolver = available[0]
        elif resolver not in available:
            raise ValueError(
                f"resolver {resolver!r}: not available here "
                f"(available: {', '.join(available)})"
            )

        base = _build_resolver(resolver)
        if cache_size:
            # S3-FIFO rather than plain LRU: ua_parser documents it as the
            # better hit rate at small sizes, and it keeps one-off strings
            # (bots with random UAs) from pushing out the popular ones.
            base = caching.CachingResolver(base, caching.S3Fifo(cache_size))
        self._parser = ua_parser.Parser(base)
        # And the finished UAInfo (frozen), which costs several times the
        # cached parse to build: the bot and category patterns run on it.
        self._cached_info: Callable[[str], UAInfo] = (
            functools.lru_cache(maxsize=cache_size)(self._info) if cache_size else self._info
        )
        self.resolver: ResolverName = resolver
        self.cache_size = cache_size
        log.info(
            "user agent parser ready: resolver=%s cache_size=%d", resolver, cache_size
        )

    def parse(self, ua: str | None) -> UAInfo:
        """Browser, OS and device of ``ua``, its category and the bot verdict.

        Fields ua-parser cannot fill are "Other" (families) or "" (versions,
        brand, model). A missing or blank UA is a bot with reason "empty".
        """
        if ua is None or not ua.strip():
            return UAInfo(category="bot", is_bot=True, bot_reason="empty")

        # TODO(client hints): read Sec-CH-UA-Platform-Version and -Model once
        # collect forwards them; UA reduction freezes Chrome's string at
        # "Windows NT 10.0" / "Mac OS X 10_15_7" / "Android 10; K", so the
        # OS version and Android model here are placeholders for Chrome.
        return self._cached_info(ua[:MAX_UA_CHARS])

    def _info(self, ua: str) -> UAInfo:
        if not ua.isascii():
            # aiohttp decodes header bytes that are not UTF-8 as lone
            # surrogates (surrogateescape); the Rust resolver cannot encode
            # those and raises, so they become "?" first.
            ua = ua.encode("utf-8", "replace").decode("utf-8")
        result = self._parser.parse(ua)
        lowered = ua.lower()
        bot_reason = _bot_reason(lowered, result)
        return UAInfo(
            browser=result.user_agent.family if result.user_agent else "Other",
            browser_version=_version(result.user_agent) if result.user_agent else "",
            os=result.os.family if result.os else "Other",
            os_version=_version(result.os) if result.os else "",
            device=result.device.family if result.device else "Other",
            device_brand=(result.device.brand or "") if result.device else "",
            device_model=(result.device.model or "") if result.device else "",
            category="bot" if bot_reason else _category(lowered, result),
            is_bot=bool(bot_reason),
            bot_reason=bot_reason,
        )


def _build_resolver(name: ResolverName) -> Resolver:
    if name == "regex" and ua_parser.RegexResolver is not None:
        # The Rust and re2 resolvers compile their own regexes, so the lazy
        # matchers (which never compile Python patterns) are enough for them.
        return ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
    if name == "re2" and ua_parser.Re2Resolver is not None:
        return ua_parser.Re2Resolver(ua_parser.load_lazy_builtins())
    matchers: Matchers = ua_parser.load_builtins()
    return ua_parser.BasicResolver(matchers)


def _version(part: ua_parser.UserAgent | ua_parser.OS) -> str:
    """major.minor.patch.patch_minor, as far as they are known."""
    numbers: list[str] = []
    for value in (part.major, part.minor, part.patch, part.patch_minor):
        if value is None:
            break
        numbers.append(value)
    return ".".join(numbers)


def _bot_reason(lowered: str, result: Result) -> str:
    """The bot reason code for a lower-cased UA and its parse, "" for a person."""
    if _PREVIEW.search(lowered):
        return "preview"
    if _HEADLESS.search(lowered):
        return "headless"
    if _HTTP_LIBRARY.match(lowered.lstrip()):
        return "http_library"
    if (result.device and result.device.family == "Spider") or _CRAWLER.search(lowered):
        return "crawler"
    return ""


def _category(lowered: str, result: Result) -> str:
    """tablet, mobile or desktop for a lower-cased UA that is not a bot."""
    device = result.device
    # uap-core names generic tablets "Generic Tablet" / brand "Generic_Android_Tablet".
    device_text = f"{device.family} {device.brand or ''}" if device else ""
    if _TABLET.search(lowered) or "Tablet" in device_text:
        return "tablet"
    if _MOBILE.search(lowered):
        return "mobile"
    if result.os and result.os.family == "Android":
        # Android without "Mobile" is a tablet by Google's own UA convention.
        return "tablet"
    return "desktop"
