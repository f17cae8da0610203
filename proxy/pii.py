"""Keep raw PII out of everything that is not a hashed user-data field.

:mod:`proxy.privacy` hashes the PII a site hands over on purpose (``user``).
This module catches the PII that arrives by accident, in places that are sent
or stored as they are:

- :func:`strip_url`: page URLs and referrers. Query and fragment parameters
  whose *name* says PII (``email=``, ``user[phone]=``, ``firstName=``, ...) or
  whose *value* holds an e-mail address or an international phone number are
  removed, key and value, as GA4's own data redaction does; e-mail addresses
  in the path are replaced by :data:`REDACTED`; ``user:password@`` is removed
  from the authority. Everything else stays byte for byte (order, encoding,
  ``fbclid`` and the other click IDs).
- :func:`scrub_text`: free text (page titles): e-mail addresses replaced.
- :func:`scrub_params`: custom event parameters, recursively: PII-named keys
  and values that hold an e-mail address or an international phone number
  are dropped.
- :func:`truncate_ip`: the client IP per destination: full, truncated (/24 for
  IPv4, /48 for IPv6, as Google Analytics' IP anonymisation) or none.
- :class:`AccessLogger`: aiohttp's access log without query strings and with a
  stripped ``Referer``: the collector's ``GET ?d=`` carries a whole hit, user
  data included, in its query string.

Names are matched case-insensitively after splitting ``snake_case``,
``kebab-case``, ``camelCase``, dotted and ``a[b]`` keys into words, so
``customer_phone``, ``billing-address``, ``contactEmail`` and ``user[email]``
are all caught while ``item_name``, ``utm_medium`` or ``hotel`` are not.
Detection errs on the side of removing: a dropped harmless parameter costs a
report column, a kept e-mail address costs a breach.

Nothing here logs a removed value; counts only, at DEBUG.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote

import phonenumbers
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

__all__ = [
    "IP_MODES",
    "REDACTED",
    "AccessLogger",
    "has_email",
    "is_pii_name",
    "looks_like_phone",
    "scrub_params",
    "scrub_text",
    "strip_url",
    "truncate_ip",
]

log = logging.getLogger("proxy.pii")

#: What an e-mail address found in a URL path or in free text becomes. The
#: parentheses are sub-delimiters (RFC 3986), valid in a path as they are.
REDACTED = "(redacted)"

#: The values :func:`truncate_ip` takes for ``mode``.
IP_MODES = frozenset({"full", "truncated", "none"})
_V4_KEEP = (2**32 - 1) ^ (2**8 - 1)  # the /24: the last octet zeroed
_V6_KEEP = (2**128 - 1) ^ (2**80 - 1)  # the /48: the last 80 bits zeroed

# Words that make a parameter name PII wherever they stand in it
# ("customer_phone", "billingAddress", "user[email]").
_PII_WORDS = frozenset(
    {
        # contact
        "email", "mail", "emailaddress", "mailaddress", "phone", "phonenumber",
        "tel", "telephone", "mobile", "mobilephone", "mobilenumber", "cellphone",
        "fax", "whatsapp",
        # names (a bare "name" is handled apart: see _URL_ONLY_WORDS)
        "firstname", "lastname", "fullname", "givenname", "familyname", "surname",
        "middlename", "maidenname", "username", "fname", "lname", "customername",
        "contactname", "billingname", "shippingname",
        # where the person lives
        "address", "address1", "address2", "streetaddress", "street", "zip",
        "zipcode", "postcode", "postalcode",
        # who the person is
        "birthday", "birthdate", "dateofbirth", "dob", "ssn", "passport",
        "nationalid", "taxid", "iban", "creditcard", "cardnumber", "ccnumber",
        "cvv", "cvc",
        # credentials: not PII, but never to be sent to a vendor either
        "password", "passwd", "pwd", "passcode", "token", "accesstoken", "idtoken",
        "refreshtoken", "authtoken", "apikey", "secret", "clientsecret",
    }
)  # fmt: skip

# A parameter named just "name" is a person
# on a landing or thank-you URL (?name=Jo+Bloggs), but an item in event
# params ({"name": "Blue shirt"}), so it is PII only in URLs.
_URL_ONLY_WORDS = frozenset({"name"})

# Click IDs and campaign keys vendors need unchanged; never removed, whatever
# their value looks like (a click ID has no "@" and no leading "+" anyway).
_KEEP = frozenset(
    {
        "fbclid", "gclid", "gbraid", "wbraid", "dclid", "ttclid", "msclkid",
        "li_fat_id", "sccid", "epik", "rdt_cid", "twclid",
    }
)  # fmt: skip

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# An e-mail address as it shows up inside other text: a local part without the
# URL delimiters "/?#&=" (RFC 5322 allows some of them, real addresses do not
# use them), "@", a dotted host, a top-level domain of two or more letters.
# Letters of any script count (internationalised addresses).
# The lookbehind and the possessive "++" keep the search linear: a match can
# only start where a run of local-part characters starts, and a run without
# "@" after it is given up in one step (no quadratic backtracking on 2 KB of
# hostile text).
_LOCAL = r"[\w.!$%*+^`{|}~'-]"
_EMAIL_RE = re.compile(rf"(?<!{_LOCAL}){_LOCAL}++@(?:[\w-]+\.)+[^\W\d_]{{2,}}")
# An international number: "+" (or "%2B" decoded), then digits with the usual
# separators; greedy, bounded, so linear. libphonenumber then decides.
_PHONE_RE = re.compile(r"\+[0-9][0-9 ().\-/]{5,24}")
# "%2540" is "@" encoded twice; three rounds cover a redirect in a redirect.
_MAX_DECODE_ROUNDS = 3


def _words(name: str) -> list[str]:
    """The lowercase words of a parameter name (``billingFirst_name[0]`` -> billing, first, name, 0)."""
    return [w.lower() for w in _WORD_RE.findall(name)]


@functools.lru_cache(maxsize=4096)  # names repeat from hit to hit; bounded, visitors choose them
def is_pii_name(name: str, *, in_url: bool = False) -> bool:
    """Whether a parameter called ``name`` carries PII by its name alone.

    A word of the name, two neighbouring words run together (``first_name``),
    or the whole name without separators (``e-mail``) must be one of the PII
    words. ``in_url`` also counts a bare ``name``, which in event params
    usually names an item.
    """
    words = _words(unquote(name))
    if not words:
        return False
    candidates = set(words)
    candidates.update(a + b for a, b in itertools.pairwise(words))
    candidates.add("".join(words))
    if not candidates.isdisjoint(_PII_WORDS):
        return True
    return in_url and "".join(words) in _URL_ONLY_WORDS


def _decodings(text: str) -> Iterator[str]:
    """``text`` and its percent-decodings, until decoding changes nothing."""
    yield text
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            return
        text = decoded
        yield text


def has_email(text: str) -> bool:
    """Whether ``text``, percent-decoded or not, contains an e-mail address."""
    if "@" not in text and "%" not in text:
        return False  # no "@", and no escape that could decode to one
    return any(_EMAIL_RE.search(form) for form in _decodings(text))


def looks_like_phone(text: str) -> bool:
    """Whether ``text`` is or contains an international phone number (``+`` and country code).

    Only numbers written with ``+`` count: bare digit runs are order numbers,
    timestamps and prices far more often than phone numbers. In a query string
    ``+`` may stand for a space, so ``+44+20+7946+0958`` is read as a number too.
    libphonenumber decides whether the digits can be a number of that country.
    """
    if "+" not in text and "%2" not in text.upper():
        return False
    for form in _decodings(text):
        stripped = form.strip()
        if stripped.startswith("+"):
            # "+44+20+7946+0958": a form-encoded number, "+" for spaces.
            form = "+" + stripped[1:].replace("+", " ")
        for match in _PHONE_RE.finditer(form):
            try:
                number = phonenumbers.parse(match.group().rstrip(" ().-/"), None)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(number):
                return True
    return False


def _is_pii_value(value: str) -> bool:
    return has_email(value) or looks_like_phone(value)


def scrub_text(text: str) -> str:
    """``text`` with every e-mail address replaced by :data:`REDACTED`.

    For free text such as page titles. Names in text cannot be told from
    other words and stay.
    """
    # TODO(issue 4): names in titles ("Thanks, Jo!") stay until the collector
    # lets a site mark its titles as personal; no pattern can find them.
    if "@" not in text:
        return text
    return _EMAIL_RE.sub(REDACTED, text)


def _strip_pairs(query: str) -> tuple[str, int]:
    """A query string without its PII parameters, and how many were removed."""
    kept: list[str] = []
    removed = 0
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name.lower() in _KEEP:
            kept.append(pair)
            continue
        if is_pii_name(name, in_url=True) or has_email(name) or _is_pii_value(value):
            removed += 1
            continue
        kept.append(pair)
    return "&".join(kept), removed


def _redact_path(path: str) -> str:
    """``path`` with e-mail addresses replaced, segment by segment (encoded ones too)."""
    if "@" not in path and "%40" not in path.lower():
        return path
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if _EMAIL_RE.search(segment):
            segments[i] = _EMAIL_RE.sub(REDACTED, segment)
        elif has_email(segment):
            # Only an encoded address: this segment is re-encoded, the others
            # keep their bytes.
            *_, decoded = _decodings(segment)
            segments[i] = quote(
                _EMAIL_RE.sub(REDACTED, decoded), safe="!$&'()*+,;=:@~-._"
            )
    return "/".join(segments)


def _strip_fragment(fragment: str) -> tuple[str, int]:
    # "#/users/jo@x.com?tab=orders" (hash routing): a path and a query;
    # "#access_token=...&state=..." (OAuth implicit flow): a query; else text.
    if "?" in fragment:
        route, _, query = fragment.partition("?")
        query, removed = _strip_pairs(query)
        return _redact_path(route) + ("?" + query if query else ""), removed
    if "=" in fragment:
        return _strip_pairs(fragment)
    return _redact_path(fragment), 0


def strip_url(url: str) -> str:
    """``url`` without the PII it carries; otherwise unchanged, byte for byte.

    Removed: query and fragment parameters with a PII name or with a value
    holding an e-mail address or an international phone number (key and
    value both), and ``user:password@`` in the authority. Replaced by
    :data:`REDACTED`: e-mail addresses in the path or in a fragment that is
    not a query. A URL that is not a string or is empty comes back as it is.
    """
    if not isinstance(url, str) or not url:
        return url
    rest, hash_mark, fragment = url.partition("#")
    rest, question_mark, query = rest.partition("?")

    # The authority's user info: "https://jo:secret@host/" -> "https://host/".
    scheme_end = rest.find("://")
    path_start = 0
    if scheme_end != -1:
        authority_start = scheme_end + 3
        slash = rest.find("/", authority_start)
        authority_end = len(rest) if slash == -1 else slash
        authority = rest[authority_start:authority_end]
        if "@" in authority:
            authority = authority.rpartition("@")[2]
        rest = rest[:authority_start] + authority + rest[authority_end:]
        path_start = authority_start + len(authority)
    rest = rest[:path_start] + _redact_path(rest[path_start:])

    from_query = from_fragment = 0
    if question_mark:
        query, from_query = _strip_pairs(query)
    if hash_mark:
        fragment, from_fragment = _strip_fragment(fragment)
    if from_query or from_fragment:
        log.debug(
            "url: removed %d parameter(s) carrying PII", from_query + from_fragment
        )
    # An empty "?" or "#" stays unless stripping emptied it.
    out = rest
    if question_mark and (query or not from_query):
        out += "?" + query
    if hash_mark and (fragment or not from_fragment):
        out += "#" + fragment
    return out


def _scrub_value(value: Any) -> tuple[bool, Any]:
    """(keep, scrubbed value) for one parameter value."""
    if isinstance(value, str):
        if value.startswith(("http://", "https://", "/")):
            value = strip_url(value)
        return not _is_pii_value(value), value
    if isinstance(value, Mapping):
        return True, scrub_params(value)
    if isinstance(value, (list, tuple)):
        kept = []
        for item in value:
            keep, clean = _scrub_value(item)
            if keep:
                kept.append(clean)
        return True, kept
    return True, value


def scrub_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` without PII, at any depth.

    Dropped: keys with a PII name (:func:`is_pii_name`; a bare ``name`` is an
    item, not a person, here) or that themselves hold an e-mail address, and
    string values holding an e-mail address or an international phone number
    (from lists, the one entry). URL-like string values go through
    :func:`strip_url`. Numbers, booleans and None stay.

    Dropped, not hashed: a hash only helps where a vendor matches it as user
    data, and each vendor normalises differently before hashing; as a plain
    custom parameter it matches nothing and is still a stable identifier of
    the person, sent without the consent user data needs. Sites that want
    matching put PII in ``user``, which adapters hash per vendor.
    """
    out: dict[str, Any] = {}
    dropped = 0
    for key, value in params.items():
        if not isinstance(key, str) or is_pii_name(key) or has_email(key):
            dropped += 1
            continue
        keep, clean = _scrub_value(value)
        if not keep:
            dropped += 1
            continue
        out[key] = clean
    if dropped:
        log.debug("params: dropped %d value(s) carrying PII", dropped)
    return out


def truncate_ip(ip: str, mode: str) -> str | None:
    """The client IP as a destination may receive it, or None for "send none".

    ``mode``: ``"full"`` (the address as it is), ``"truncated"`` (IPv4 to its
    /24, IPv6 to its /48, the rest zeroed, as Google Analytics' IP
    anonymisation does; an IPv4-mapped IPv6 address is treated as the IPv4
    address it maps) or ``"none"``. An empty or unparseable ``ip`` gives None
    in every mode: there is nothing safe to send.

    Raises:
        ValueError: ``mode`` is not one of :data:`IP_MODES` (a configuration
            bug, caught when rules load; not bad input from a hit).
    """
    if mode not in IP_MODES:
        raise ValueError(
            f"IP mode {mode!r}: unknown (known: {', '.join(sorted(IP_MODES))})"
        )
    if mode == "none" or not isinstance(ip, str) or not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        # The value is not repeated: whatever it is, it came from a client.
        log.debug("client IP not an IP address; sending none")
        return None
    if mode == "full":
        return ip.strip()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Masked as integers: an IPv6 zone ("fe80::1%eth0") has no place in a
    # network and goes with the host bits.
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & _V4_KEEP))
    return str(ipaddress.IPv6Address(int(address) & _V6_KEEP))


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line, safe to keep: no query string, stripped Referer.

    ``remote "METHOD path" status bytes "referer" "user agent" seconds``,
    with the remote address truncated (/24, /48). The collector's ``GET ?d=``
    carries a whole hit in its query and the ``Referer`` of every hit is the
    page URL, so aiohttp's default format would write both, PII included,
    whenever its access log is on. Pass it as ``access_log_class`` to
    ``web.run_app`` or ``web.AppRunner``.
    """

    @property
    def enabled(self) -> bool:
        """Only build the line when it will be written (aiohttp asks before each request)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = truncate_ip(request.remote or "", "truncated") or "-"
        query = "?..." if request.query_string else ""
        self.logger.info(
            '%s "%s %s%s" %d %d "%s" "%s" %.3fs',
            remote,
            request.method,
            _redact_path(request.rel_url.raw_path),
            query,
            response.status,
            response.body_length,
            strip_url(request.headers.get("Referer", "")) or "-",
            request.headers.get("User-Agent", "-"),
            time,
        )
