"""Bot score: the user agent verdict, the request headers and the network, in one number.

:func:`bot_score` adds up the signals below (capped at 100) and calls the
hit a bot from :data:`BOT_THRESHOLD` (50) up. The weights are chosen so that
one strong signal is enough and one weak signal never is: a crawler or
headless UA alone is a bot, a data-centre network alone is not (people use
VPNs and corporate proxies), but a data-centre network *and* a missing
Accept-Language is.

=============================  ======  ==========================================
reason                         weight  when
=============================  ======  ==========================================
``ua_<bot_reason>``            90      the UA parser already calls it a bot
                                       (``ua_crawler``, ``ua_headless``,
                                       ``ua_http_library``, ``ua_preview``,
                                       ``ua_empty``)
``hints_on_non_chromium``      40      ``Sec-CH-UA*`` headers on a UA of an engine
                                       that never sends them (Firefox, Safari):
                                       a Chromium with a spoofed UA string
``hints_version_mismatch``     40      the ``"Chromium"`` brand version in
                                       ``Sec-CH-UA`` is not the ``Chrome/NNN``
                                       major version of the UA string
``hints_platform_mismatch``    40      ``Sec-CH-UA-Platform`` names another OS
                                       than the UA string (``"Windows"`` with a
                                       Mac UA)
``no_accept_language``         30      no (or an empty) ``Accept-Language``
``no_accept``                  20      no (or an empty) ``Accept``
``datacenter_asn``             35      the client's ASN is a cloud or hosting
                                       network in :data:`DATACENTER_ASNS`
``hosting_org``                20      otherwise, the ASN's organisation name
                                       reads like a hosting company
=============================  ======  ==========================================

Why these hold for people: browsers send ``Accept`` and ``Accept-Language``
on every request. Chromium does on navigations, ``fetch()`` and
``sendBeacon()`` (captured here, ``tests/data/bots/``); Firefox and Safari do
on navigations (recorded by curl-impersonate), and the Fetch standard's fetch
algorithm appends ``Accept`` (``*/*``) and says user agents should append
``Accept-Language`` to every other request. Only Chromium-based browsers send
``Sec-CH-UA``, and only to secure origins, so a Chrome hit *without* hints
says nothing and is never scored; only hints that are present and contradict
the UA string are.

Data-centre ASNs are for a hit that claims to be a person: crawlers from
AWS or Hetzner are already caught by their UA. CDN ASNs that carry real
people are left out on purpose: iCloud Private Relay egresses through
Cloudflare (AS13335) and Akamai, so those would flag Safari users.

:class:`ASNReader` reads the ASN from a MaxMind GeoLite2-ASN / GeoIP2-ISP (or
DB-IP ASN Lite) database, opened once with the C extension like
:class:`~proxy.enrich.geo.GeoReader`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.model import UAInfo
from proxy.settings import SettingsError

from .geo import MaxMindReader

__all__ = [
    "BOT_THRESHOLD",
    "DATACENTER_ASNS",
    "WEIGHTS",
    "ASNDatabaseError",
    "ASNReader",
    "ASNRecord",
    "BotVerdict",
    "asn_from_record",
    "bot_score",
]

log = logging.getLogger("proxy.enrich")

BOT_THRESHOLD = 50
"""A score at or above this is a bot (:attr:`BotVerdict.is_bot`)."""

WEIGHTS: Mapping[str, int] = {
    "ua": 90,
    "hints_on_non_chromium": 40,
    "hints_version_mismatch": 40,
    "hints_platform_mismatch": 40,
    "no_accept_language": 30,
    "no_accept": 20,
    "datacenter_asn": 35,
    "hosting_org": 20,
}
"""Points per reason (``"ua"`` stands for every ``ua_<bot_reason>``)."""

# Cloud and hosting networks, by ASN. Each number was checked against its
# registry record as mirrored by ipverse/as-ip-blocks (as/<ASN>/aggregated.json:
# handle, holder, category "hosting"), read 2026; 15169 against MaxMind's
# GeoLite2-ASN test data ("Google Inc."), where Googlebot also lives. Deliberately short: the big
# clouds and the cheap VPS hosts bots rent; the organisation-name patterns
# below catch the long tail more weakly.
DATACENTER_ASNS: Mapping[int, str] = {
    16509: "Amazon AWS (AMAZON-02)",
    14618: "Amazon AWS (AMAZON-AES)",
    15169: "Google (GOOGLE; also Googlebot and Google services)",
    396982: "Google Cloud (GOOGLE-CLOUD-PLATFORM)",
    8075: "Microsoft Azure (MICROSOFT-CORP-MSN-AS-BLOCK)",
    14061: "DigitalOcean (DIGITALOCEAN-ASN)",
    16276: "OVHcloud (OVH)",
    24940: "Hetzner (HETZNER-AS)",
    63949: "Akamai Connected Cloud, formerly Linode (AKAMAI-LINODE-AP)",
    20473: "Vultr (AS-VULTR, The Constant Company)",
    31898: "Oracle Cloud (ORACLE-BMC-31898)",
    12876: "Scaleway (AS12876)",
    51167: "Contabo (CONTABO)",
}

# Organisation names of hosting companies. Word boundaries keep "Cloudflare"
# (Private Relay egress, real people) out of "cloud".
_HOSTING_ORG = re.compile(
    r"\bhosting\b|\bhost(?:ing)? provider|\bcloud\b|\bservers?\b|\bvps\b"
    r"|data[ -]?cent(?:er|re)s?\b|\bdedicated\b|\bcolo(?:cation)?\b",
)

# "brand";v="version" items of a Sec-CH-UA structured-header list.
_BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"([^"]*)"')
# No word boundary: headless Chromium says "HeadlessChrome/NNN" and is Chromium too.
_CHROME_MAJOR = re.compile(r"Chrom(?:e|ium)/(\d+)")

# Which UA-string tokens each Sec-CH-UA-Platform value (UA-CH spec, MDN
# list) is consistent with. Lenient on purpose: Chrome on Android in
# "desktop site" mode sends a Linux UA string, and Linux UAs of Android
# contain "Linux". Values not listed ("Unknown", "iOS", future ones) are
# never judged.
_PLATFORM_TOKENS: Mapping[str, tuple[str, ...]] = {
    "windows": ("Windows",),
    "macos": ("Macintosh", "Mac OS X"),
    "linux": ("Linux", "X11"),
    "android": ("Android", "Linux", "X11"),
    "chrome os": ("CrOS",),
    "chromium os": ("CrOS",),
}

_CLIENT_HINT_HEADERS = ("sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform")


@dataclass(slots=True, frozen=True)
class BotVerdict:
    """A 0-100 bot score, whether that makes a bot, and why (reason codes, in order)."""

    score: int = 0
    is_bot: bool = False
    reasons: tuple[str, ...] = ()


def bot_score(
    ua: UAInfo,
    headers: Mapping[str, str],
    asn: int | None,
    asn_org: str | None,
) -> BotVerdict:
    """Score one hit from its parsed UA, its request headers and its network.

    ``headers`` may be any mapping (aiohttp's case-insensitive one or a plain
    dict); names are compared case-insensitively. ``asn``/``asn_org`` are
    None when no ASN database is configured or the address is not in it.
    See the module table for reasons and weights.
    """
    # aiohttp's headers already compare names case-insensitively; only other
    # mappings are copied with lower-cased names.
    lowered: Mapping[str, Any] = (
        headers if isinstance(headers, (CIMultiDict, CIMultiDictProxy)) else {str(k).lower(): v for k, v in headers.items()}
    )
    reasons: list[str] = []
    score = 0

    def add(reason: str, weight: int) -> None:
        nonlocal score
        reasons.append(reason)
        score += weight

    if ua.bot_reason:
        add(f"ua_{ua.bot_reason}", WEIGHTS["ua"])
    elif ua.is_bot:
        add("ua_bot", WEIGHTS["ua"])

    for reason in _hint_contradictions(lowered):
        add(reason, WEIGHTS[reason])

    if not _text(lowered.get("accept-language")):
        add("no_accept_language", WEIGHTS["no_accept_language"])
    if not _text(lowered.get("accept")):
        add("no_accept", WEIGHTS["no_accept"])

    if asn is not None and asn in DATACENTER_ASNS:
        add("datacenter_asn", WEIGHTS["datacenter_asn"])
    elif asn_org and _HOSTING_ORG.search(asn_org.lower()):
        add("hosting_org", WEIGHTS["hosting_org"])

    score = min(score, 100)
    return BotVerdict(
        score=score, is_bot=score >= BOT_THRESHOLD, reasons=tuple(reasons)
    )


def _hint_contradictions(headers: Mapping[str, Any]) -> list[str]:
    """Reason codes for client hints that contradict the User-Agent string."""
    present = [name for name in _CLIENT_HINT_HEADERS if _text(headers.get(name))]
    if not present:
        return []
    user_agent = _text(headers.get("user-agent"))
    chrome = _CHROME_MAJOR.search(user_agent)
    if chrome is None:
        # Gecko and WebKit never send UA client hints (Chrome and Edge on
        # iOS are WebKit and carry CriOS/EdgiOS, not Chrome/).
        return ["hints_on_non_chromium"]

    found: list[str] = []
    brands = dict(_BRAND.findall(_text(headers.get("sec-ch-ua"))))
    chromium_version = brands.get("Chromium", "")
    if chromium_version:
        major = chromium_version.split(".", 1)[0]
        if major != chrome.group(1):
            found.append("hints_version_mismatch")

    platform = _text(headers.get("sec-ch-ua-platform")).strip().strip('"').lower()
    tokens = _PLATFORM_TOKENS.get(platform)
    if tokens is not None and not any(token in user_agent for token in tokens):
        found.append("hints_platform_mismatch")
    return found


def _text(value: Any) -> str:
    """``value`` when it is a non-blank string, else ""."""
    return value if isinstance(value, str) and value.strip() else ""


class ASNDatabaseError(SettingsError):
    """The configured ASN database cannot be used; the message says which and why."""


@dataclass(slots=True, frozen=True)
class ASNRecord:
    """The autonomous system an address belongs to ("" when the DB names no organisation)."""

    number: int
    organization: str = ""


# MaxMind's ASN and ISP products and DB-IP's ASN Lite all carry
# autonomous_system_number / autonomous_system_organization.
_ASN_DB = re.compile(r"ASN|ISP", re.IGNORECASE)


class ASNReader(MaxMindReader):
    """A MaxMind DB file with ASN records (GeoLite2-ASN, GeoIP2-ISP, DB-IP ASN Lite).

    Raises :class:`ASNDatabaseError` if the file is missing, is not a MaxMind
    DB, holds no ASN data (a City or Country database), or if the
    ``maxminddb`` C extension is not installed.
    """

    setting = "asn_db"
    kind = "ASN"
    error = ASNDatabaseError
    expected = "GeoLite2-ASN, GeoIP2-ISP or DB-IP ASN Lite"

    def unsuitable(self, database_type: str) -> str:
        if not _ASN_DB.search(database_type):
            return f"holds no ASN data; use {self.expected}"
        return ""

    def lookup(self, ip: str) -> ASNRecord | None:
        """The AS ``ip`` belongs to, or None when unknown (see :meth:`MaxMindReader.record`)."""
        return asn_from_record(self.record(ip))


def asn_from_record(record: Any) -> ASNRecord | None:
    """The :class:`ASNRecord` in one database record, None without a usable number."""
    if not isinstance(record, Mapping):
        return None
    number = record.get("autonomous_system_number")
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        return None
    organization = record.get("autonomous_system_organization")
    return ASNRecord(number, organization if isinstance(organization, str) else "")
