"""First-party identifiers: read what the browser has, mint what is missing.

The server sets every ID cookie itself (``Set-Cookie`` on the site's own
domain), so Safari's 7-day cap on script-written cookies does not apply:

- the visitor ID (``trid`` by default): HttpOnly, 400 days;
- Meta's ``_fbp`` and ``_fbc`` (``fb.<subdomain index>.<ms>.<random|fbclid>``),
  90 days like Meta's Parameter Builder, not HttpOnly so that a Meta Pixel kept
  beside tagrelay reads and reuses the same values;
- GA's ``_ga`` (``GA1.1.<random>.<seconds>``): not HttpOnly, 400 days;
- the GA4 session (``trs``): HttpOnly, 400 days, holding session start,
  session number and last hit, so a hit more than 30 minutes after the last
  one starts session number + 1.

Every cookie is set again on each hit so its lifetime runs from the last visit.
:func:`resolve_ids` is the entry point; the other functions are its parts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from ..model import CLICK_IDS

__all__ = [
    "FB_COOKIE_MAX_AGE_SECS",
    "GA_SESSION_TIMEOUT_SECS",
    "ID_COOKIE_MAX_AGE_SECS",
    "SESSION_COOKIE",
    "CookieSpec",
    "build_fbc",
    "cookie_domain",
    "fbc_payload",
    "ga_client_id",
    "is_valid_fb_cookie",
    "mint_fbp",
    "mint_ga",
    "new_visitor_id",
    "resolve_ids",
    "subdomain_index",
]

log = logging.getLogger("proxy.enrich.ids")

#: Chrome's cap on cookie lifetime (RFC 6265bis); longer is cut to this anyway.
ID_COOKIE_MAX_AGE_SECS = 400 * 24 * 3600
#: Meta's Parameter Builder sets ``_fbp``/``_fbc`` for 90 days.
FB_COOKIE_MAX_AGE_SECS = 90 * 24 * 3600
#: GA4's default session timeout: 30 minutes without a hit ends a session.
GA_SESSION_TIMEOUT_SECS = 30 * 60
#: The cookie that carries the GA4 session: ``<start>.<number>.<last hit>``.
SESSION_COOKIE = "trs"
# Click IDs other than fbclid (which has _fbc) are kept server-side in one
# HttpOnly cookie, so a conversion days after the click still carries them.
# Same lifetime as Meta's click cookie (90 days).
CLICK_COOKIE = "trc"
CLICK_COOKIE_NAMES = CLICK_IDS - {"fbclid"}
# Browser-ID cookies that vendor pixels set, read when present (a pixel kept
# beside tagrelay); tagrelay does not mint them: their formats are the
# vendors' own and undocumented.
VENDOR_BROWSER_COOKIES = {"_ttp": "ttp", "_scid": "scid", "_rdt_uuid": "rdt_uuid", "_epik": "epik_cookie"}

# The bundled list only: PublicSuffixList() reads the copy shipped in the
# package and never fetches. Private suffixes (github.io, ...) are included
# because browsers refuse Domain= cookies on them just like on "com".
_PSL = PublicSuffixList()

_HOST_RE = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_VISITOR_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# RFC 6265 cookie-octet, minus "." (the fbc segment separator): what may
# stand in a Set-Cookie value unquoted. Real fbclids use [A-Za-z0-9_-].
_FBCLID_RE = re.compile(r"[\x21\x23-\x2b\x2d\x2f-\x3a\x3c-\x5b\x5d-\x7e]{1,1000}")
# Any visible ASCII: click IDs in trc are base64-encoded, so '.', ';' and ','
# (TikTok's ttclid has dots) are safe there.
_CLICK_RE = re.compile(r"[\x21-\x7e]{1,1000}")
_GA_RE = re.compile(r"(?:GA)?[0-9]+\.[0-9]+(?:-[0-9]+)?\.([0-9]{1,20})\.([0-9]{1,20})")
_SESSION_RE = re.compile(r"([0-9]{1,12})\.([0-9]{1,9})\.([0-9]{1,12})")
# The Parameter Builder's 2-character language tokens (base64url of 1..6).
_LANGUAGE_TOKENS = frozenset({"AQ", "Ag", "Aw", "BA", "BQ", "Bg"})
# What http.cookies writes unquoted; a value of only these needs no quoting.
_PLAIN_COOKIE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:]*")


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """One cookie to set on the response; ``domain`` None means host-only."""

    name: str
    value: str
    domain: str | None
    max_age_secs: int
    http_only: bool

    def header(self, secure: bool) -> str | None:
        """The Set-Cookie value, as aiohttp's ``set_cookie`` would write it; None when the value needs quoting.

        Writing it directly skips http.cookies' Morsel machinery, a few
        percent of each hit's CPU.
        """
        if not (self.value and _PLAIN_COOKIE_RE.fullmatch(self.value) and _PLAIN_COOKIE_RE.fullmatch(self.domain or "")):
            return None
        parts = [f"{self.name}={self.value}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.http_only:
            parts.append("HttpOnly")
        parts.append(f"Max-Age={self.max_age_secs}; Path=/; SameSite=Lax")
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


def _bare_host(host: str) -> str | None:
    """``host`` lowercased, without port, brackets or trailing dot; None if unusable."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    return host or None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)  # one site has few hosts; bounded, the client sends Host
def cookie_domain(host: str, configured: str = "") -> str | None:
    """The ``Domain`` for first-party cookies on a request to ``host``.

    ``configured`` wins when ``host`` is that domain or under it. Otherwise the
    registrable domain (eTLD+1, private suffixes included) of ``host``. None
    (a host-only cookie) for IP addresses, ``localhost``, single-label hosts,
    hosts that are themselves a public suffix (``github.io``), and anything
    that is not a host name. A port is ignored; the result is lowercase.
    """
    if not isinstance(host, str) or len(host) > 253 + 8:
        return None
    bare = _bare_host(host)
    if bare is None or _is_ip(bare) or "." not in bare:
        return None
    try:
        # Browsers put IDN hosts on the wire as punycode; compare in that form.
        bare = bare.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if not _HOST_RE.fullmatch(bare):
        return None

    wanted = configured.strip().lower().strip(".") if configured else ""
    if (
        wanted
        and (bare == wanted or bare.endswith("." + wanted))
        and not _PSL.is_public(wanted)
    ):
        return wanted
    if wanted:
        log.debug(
            "cookie domain %r does not cover host %r; using the registrable domain",
            wanted,
            bare,
        )
    return _PSL.privatesuffix(bare)


def subdomain_index(domain: str | None) -> int:
    """Meta's subdomain index for cookies set on ``domain``: its number of dots.

    ``example.com`` -> 1, ``example.co.uk`` -> 2 (the Parameter Builder counts
    the labels of the cookie domain minus one); host-only cookies (None), IP
    addresses and ``localhost`` -> 0.
    """
    if not domain or _is_ip(domain.strip("[]")):
        return 0
    return domain.strip(".").count(".")


def mint_fbp(domain: str | None, now_ms: int) -> str:
    """A new ``_fbp`` value: ``fb.<subdomain index>.<now_ms>.<random 0..2147483647>``.

    Legacy 4-part form: the Parameter Builder's 5th "appendix" part names
    Meta's own SDK language and version, which we are not.
    """
    return f"fb.{subdomain_index(domain)}.{int(now_ms)}.{secrets.randbelow(2**31)}"


def build_fbc(fbclid: str, domain: str | None, now_ms: int) -> str:
    """A new ``_fbc`` value ``fb.<subdomain index>.<now_ms>.<fbclid>``.

    ``fbclid`` is used exactly as received (Meta: case-sensitive, never
    re-decoded or truncated).

    Raises:
        ValueError: ``fbclid`` is empty, longer than 1000 characters, or holds
            a character that cannot stand in a cookie or a ``.``.
    """
    if not isinstance(fbclid, str) or not _FBCLID_RE.fullmatch(fbclid):
        shown = fbclid[:40] if isinstance(fbclid, str) else type(fbclid).__name__
        raise ValueError(
            f"fbclid {shown!r}: not usable in _fbc (1-1000 cookie-safe characters, no '.')"
        )
    return f"fb.{subdomain_index(domain)}.{int(now_ms)}.{fbclid}"


def _valid_appendix(part: str) -> bool:
    if part in _LANGUAGE_TOKENS:
        return True
    if len(part) != 8 or not re.fullmatch(r"[A-Za-z0-9_-]{8}", part):
        return False
    try:
        raw = base64.urlsafe_b64decode(part)
    except (binascii.Error, ValueError):
        return False
    # [format=1, language 1..6, type 0..3 (no change, general new, net new,
    # modified new), major, minor, patch]
    return len(raw) == 6 and raw[0] == 1 and 1 <= raw[1] <= 6 and raw[2] <= 3


def is_valid_fb_cookie(value: str) -> bool:
    """Whether ``value`` is a well-formed ``_fbp``/``_fbc`` value.

    ``fb.<digits>.<digits>.<payload>`` (legacy) or the same with a 5th part
    that is a Parameter Builder appendix: a 2-character language token or 8
    base64url characters of the 6-byte appendix. Any other 5th part
    (``fb.1.123.test123.test``) is invalid, as in the Builder.
    """
    if not isinstance(value, str) or len(value) > 1100:
        return False
    parts = value.split(".")
    if len(parts) not in (4, 5) or parts[0] != "fb":
        return False
    # The Builder does not check the creation time ("fb.1.xxx.abcd" passes);
    # we do, because Meta refuses events whose fbc is malformed and one such
    # event fails its whole batch.
    if not (
        parts[1].isascii()
        and parts[1].isdigit()
        and parts[2].isascii()
        and parts[2].isdigit()
    ):
        return False
    if not _FBCLID_RE.fullmatch(parts[3]):
        return False
    return len(parts) == 4 or _valid_appendix(parts[4])


def fbc_payload(value: str) -> str:
    """The fbclid (or ``_fbp`` random part) inside a valid cookie value.

    Raises:
        ValueError: ``value`` is not a valid ``_fbc``/``_fbp`` value.
    """
    if not is_valid_fb_cookie(value):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise ValueError(
            f"_fbc {shown!r}: not a valid fb.<index>.<ms>.<payload> cookie value"
        )
    return value.split(".")[3]


def ga_client_id(ga_cookie: str) -> str | None:
    """The GA client ID in a ``_ga`` cookie value, or None if it is not one.

    ``GA1.1.1234567890.1700000000`` -> ``1234567890.1700000000``: the random
    number and the first-visit time; ``GA1`` is the cookie version and the
    second part the domain depth (``2-1`` when a cookie path was set).
    """
    if not isinstance(ga_cookie, str) or len(ga_cookie) > 100:
        return None
    match = _GA_RE.fullmatch(ga_cookie)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def mint_ga(now: float) -> str:
    """A new ``_ga`` value ``GA1.1.<random 1..2147483647>.<unix seconds>``."""
    return f"GA1.1.{secrets.randbelow(2**31 - 1) + 1}.{int(now)}"


def new_visitor_id() -> str:
    """A random, URL- and cookie-safe visitor ID of 128 bits (22 characters)."""
    return secrets.token_urlsafe(16)


def _session(raw: str | None, now: int, fresh_client: bool) -> tuple[int, int]:
    """(session start, session number) after a hit at ``now``."""
    match = _SESSION_RE.fullmatch(raw) if raw and not fresh_client else None
    if match is None:
        return now, 1
    start, number, last = (int(g) for g in match.groups())
    # A clock that went back counts as activity now, not as a new session.
    if now - last > GA_SESSION_TIMEOUT_SECS:
        return now, number + 1
    return start, number


def _read_clicks(raw: str | None) -> dict[str, str]:
    """The click IDs kept in the ``trc`` cookie; anything unreadable counts as none."""
    if not raw or len(raw) > 4096:
        return {}
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        k: v
        for k, v in doc.items()
        if k in CLICK_COOKIE_NAMES and isinstance(v, str) and _CLICK_RE.fullmatch(v)
    }


def _write_clicks(clicks: Mapping[str, str]) -> str:
    raw = json.dumps(dict(sorted(clicks.items())), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def resolve_ids(
    cookies: Mapping[str, str],
    host: str,
    click_ids: Mapping[str, str],
    now: float,
    *,
    configured_domain: str = "",
    visitor_cookie: str = "trid",
    ads: bool = True,
    analytics: bool = True,
) -> tuple[dict[str, str], list[CookieSpec]]:
    """The first-party IDs for this hit and the cookies that keep them.

    Each cookie serves a purpose and is read and set only with its consent:
    ``ads`` for Meta's ``_fbp``/``_fbc``, the click-ID cookie and vendor
    browser IDs; ``analytics`` for ``_ga`` and the session; the visitor ID
    for either. Without ``analytics`` the GA client ID is a one-off.

    Reads the browser's cookies, keeps the valid ones, mints what is missing
    or invalid, and replaces ``_fbc`` when the hit carries an fbclid that
    differs from the cookie's. Returns ``ids`` with ``visitor_id``, ``fbp``,
    ``ga_client_id``, ``ga_session_id``, ``ga_session_number`` and, when there
    is a valid ``_fbc`` or an fbclid now, ``fbc``; the latest value of each
    other click ID seen (``gclid``, ``ttclid``, ...: kept in ``trc``); vendor
    browser IDs when the browser has them (``ttp``, ``scid``, ``rdt_uuid``,
    ``epik_cookie``); and every cookie to set
    (all of them, every hit, so their lifetimes extend).
    """
    domain = cookie_domain(host, configured_domain)
    now_ms = int(now * 1000)
    ids: dict[str, str] = {}
    out: list[CookieSpec] = []

    def cookie(name: str) -> str | None:
        value = cookies.get(name)
        return value if isinstance(value, str) else None

    visitor = cookie(visitor_cookie)
    if visitor is None or not _VISITOR_RE.fullmatch(visitor):
        visitor = new_visitor_id()
    ids["visitor_id"] = visitor
    out.append(
        CookieSpec(visitor_cookie, visitor, domain, ID_COOKIE_MAX_AGE_SECS, True)
    )

    if ads:
        _ad_ids(cookie, click_ids, domain, now_ms, ids, out)
    if analytics:
        _analytics_ids(cookie, domain, now, ids, out)
    else:
        ids["ga_client_id"] = one_off_ga_client_id(now)
    return ids, out


def one_off_ga_client_id(now: float) -> str:
    """A GA client ID for one event, kept nowhere: it identifies nobody (GA4 requires one)."""
    return f"{secrets.randbelow(2**31)}.{int(now)}"


def _ad_ids(
    cookie: Callable[[str], str | None],
    click_ids: Mapping[str, str],
    domain: str | None,
    now_ms: int,
    ids: dict[str, str],
    out: list[CookieSpec],
) -> None:
    """Meta's browser and click IDs, the other click IDs and vendor browser IDs (ads consent)."""
    fbp = cookie("_fbp")
    if fbp is None or not is_valid_fb_cookie(fbp):
        fbp = mint_fbp(domain, now_ms)
    ids["fbp"] = fbp
    out.append(CookieSpec("_fbp", fbp, domain, FB_COOKIE_MAX_AGE_SECS, False))

    fbc = cookie("_fbc")
    if fbc is not None and not is_valid_fb_cookie(fbc):
        fbc = None
    fbclid = click_ids.get("fbclid")
    if isinstance(fbclid, str) and _FBCLID_RE.fullmatch(fbclid):
        # The same fbclid again (a reload) keeps the cookie and so its
        # creation time, which is when the click happened.
        if fbc is None or fbc_payload(fbc) != fbclid:
            fbc = build_fbc(fbclid, domain, now_ms)
    elif fbclid:
        log.debug("fbclid ignored: not usable in a cookie")
    if fbc is not None:
        ids["fbc"] = fbc
        out.append(CookieSpec("_fbc", fbc, domain, FB_COOKIE_MAX_AGE_SECS, False))

    clicks = _read_clicks(cookie(CLICK_COOKIE))
    for name, value in click_ids.items():
        if name != "fbclid" and name in CLICK_COOKIE_NAMES and _CLICK_RE.fullmatch(value):
            clicks[name] = value
    if clicks:
        ids.update(clicks)
        out.append(CookieSpec(CLICK_COOKIE, _write_clicks(clicks), domain, FB_COOKIE_MAX_AGE_SECS, True))
    for cookie_name, key in VENDOR_BROWSER_COOKIES.items():
        browser_id = cookie(cookie_name)
        if browser_id and len(browser_id) <= 256 and _FBCLID_RE.fullmatch(browser_id):
            ids[key] = browser_id


def _analytics_ids(
    cookie: Callable[[str], str | None], domain: str | None, now: float, ids: dict[str, str], out: list[CookieSpec]
) -> None:
    """GA's client ID and session, kept in _ga and the session cookie (analytics consent)."""
    now_s = int(now)
    ga = cookie("_ga")
    client_id = ga_client_id(ga) if ga else None
    fresh_client = client_id is None
    if ga is None or client_id is None:
        ga = mint_ga(now)
        client_id = ga_client_id(ga)
        assert client_id is not None  # mint_ga's format is what ga_client_id reads
    ids["ga_client_id"] = client_id
    out.append(CookieSpec("_ga", ga, domain, ID_COOKIE_MAX_AGE_SECS, False))

    start, number = _session(cookie(SESSION_COOKIE), now_s, fresh_client)
    ids["ga_session_id"] = str(start)
    ids["ga_session_number"] = str(number)
    out.append(
        CookieSpec(
            SESSION_COOKIE,
            f"{start}.{number}.{now_s}",
            domain,
            ID_COOKIE_MAX_AGE_SECS,
            True,
        )
    )
