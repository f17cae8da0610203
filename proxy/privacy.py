"""PII normalisation and hashing, per vendor, before anything leaves the process.

Vendors match hashed contact data only when both sides normalised the raw
value the same way before SHA-256. This module holds those rules:

- Meta Conversions API ``user_data`` (:func:`normalize_meta`, :func:`hash_meta`,
  :func:`meta_user_data`). The rules follow Meta's Parameter Builder SDK
  (capi-param-builder, 2025+, Meta's newest code for this); where Meta's older
  business SDKs disagree with it, the comment at the rule says which one we
  follow and why, and ``tests/test_privacy.py`` lists every such case.
- GA4 Measurement Protocol ``user_data`` (user-provided data, the same rules as
  Google Ads enhanced conversions): :func:`google_user_data`.

A rejected value (empty, malformed, not a string, longer than
:data:`MAX_VALUE_CHARS`) is dropped, never sent raw and never an exception.
Values that already are SHA-256 hex digests are passed through lowercased.
Raw values are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import phonenumbers
import pycountry

from proxy.model import UserData

__all__ = [
    "MAX_VALUE_CHARS",
    "META_FIELDS",
    "google_user_data",
    "hash_meta",
    "is_hashed",
    "meta_user_data",
    "normalize_currency",
    "normalize_meta",
    "sha256_hex",
]

log = logging.getLogger("proxy.privacy")

#: Longer values are rejected: no real name, address or e-mail is this long,
#: and normalising megabytes of attacker input per hit would cost CPU.
MAX_VALUE_CHARS = 512

# What JavaScript's String.prototype.trim() and /\s/ treat as white space.
# The Parameter Builder is JavaScript-first and its vectors depend on this
# exact set: Python's str.strip() would also drop U+001C..U+001F and U+0085,
# which the builder keeps ("external\x1fid" stays as it is).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_SPACE_RE = re.compile("[" + re.escape(_JS_SPACE) + "]+")
_ASCII_PUNCT_RE = re.compile("[" + re.escape(string.punctuation) + "]")
_NOT_DIGIT_RE = re.compile(r"[^0-9]")
_DIGIT_RUN_RE = re.compile(r"[0-9]+")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")

# An e-mail as the Parameter Builder accepts it: a dot-atom local part of the
# RFC 5322 "atext" characters, a dotted host name, a TLD of two or more
# letters. Quoted local parts and escapes ("a b"@x, a\@b@x) are refused.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_EMAIL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[a-z]{{2,}}")


def sha256_hex(value: str) -> str:
    """The lowercase hex SHA-256 digest of ``value`` encoded as UTF-8."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_hashed(value: str) -> bool:
    """Whether ``value`` (ignoring surrounding white space) is a SHA-256 hex digest.

    Only 64 hex digits count. Meta's SDKs also pass 32-hex strings through as
    MD5 digests; we do not: a 32-hex string is just as likely a raw identifier
    (a UUID without dashes as ``external_id``), and passing it through would
    send that identifier in clear. Hashing an MD5 again only costs a match.
    """
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return False
    return _SHA256_RE.fullmatch(_trim(value)) is not None


def _trim(value: str) -> str:
    return value.strip(_JS_SPACE)


def _fold_letters(value: str) -> str:
    """Lowercase ASCII letters only, accents folded (``Québec`` -> ``quebec``)."""
    decomposed = unicodedata.normalize("NFKD", value.lower())
    return "".join(ch for ch in decomposed if "a" <= ch <= "z")


# --------------------------------------------------------------------------
# Meta user_data


def _meta_email(value: str) -> str | None:
    # Param Builder: trim, lowercase, then a strict syntax check. The PHP
    # business SDK instead strips odd characters ("foo(.bar)@baz.com/" ->
    # "foo.bar@baz.com"), which guesses at what the user meant and hashes
    # an address nobody typed; the Python SDK accepts anything matching
    # ".+@.+\..+". We refuse both kinds of malformed address.
    email = _trim(value).lower()
    return email if _EMAIL_RE.fullmatch(email) else None


def _meta_phone(value: str) -> str | None:
    # Param Builder: digits only, leading zeros dropped (so "+44 20..." and
    # "0044 20..." agree). The Python business SDK strips only "+", "00" and
    # separators and rejects what still starts with 0; the Builder is newer
    # and more forgiving, and both produce the same digits for real numbers.
    digits = _NOT_DIGIT_RE.sub("", value).lstrip("0")
    return digits or None


def _meta_name(value: str) -> str | None:
    # Lowercase, no white space, no ASCII punctuation; letters of any script
    # stay (Meta: "UTF-8 allowed for non-Latin names").
    name = _ASCII_PUNCT_RE.sub("", _JS_SPACE_RE.sub("", value.lower()))
    return name or None


def _meta_city(value: str) -> str | None:
    # Param Builder: only Latin letters and digits survive ("São Paulo" ->
    # "sopaulo", non-Latin cities are refused), and the result must start with
    # a letter. The PHP SDK also drops digits ("Seattle-98121" -> "seattle");
    # we keep them like the Builder, the newer of the two.
    city = re.sub(r"[^a-z0-9]", "", value.lower())
    return city if city[:1].isalpha() else None


_US_CA_REGIONS = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar",
    "california": "ca", "colorado": "co", "connecticut": "ct", "delaware": "de",
    "districtofcolumbia": "dc", "florida": "fl", "georgia": "ga", "hawaii": "hi",
    "idaho": "id", "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks",
    "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md",
    "massachusetts": "ma", "michigan": "mi", "minnesota": "mn", "mississippi": "ms",
    "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok",
    "oregon": "or", "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc",
    "southdakota": "sd", "tennessee": "tn", "texas": "tx", "utah": "ut",
    "vermont": "vt", "virginia": "va", "washington": "wa", "westvirginia": "wv",
    "wisconsin": "wi", "wyoming": "wy",
    "alberta": "ab", "britishcolumbia": "bc", "manitoba": "mb", "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl", "newfoundland": "nl", "northwestterritories": "nt",
    "novascotia": "ns", "nunavut": "nu", "ontario": "on", "princeedwardisland": "pe",
    "quebec": "qc", "saskatchewan": "sk", "yukon": "yt",
}  # fmt: skip


def _country_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2.lower()
        for attr in ("name", "official_name", "common_name"):
            if folded := _fold_letters(getattr(country, attr, "") or ""):
                names.setdefault(folded, code)
    # Names people still type that ISO 3166 no longer uses (or never did).
    names.update({
        "russia": "ru", "vatican": "va", "palestine": "ps", "macedonia": "mk",
        "micronesia": "fm", "democraticrepublicofthecongo": "cd", "turkey": "tr",
        "czechrepublic": "cz", "ivorycoast": "ci", "capeverde": "cv", "swaziland": "sz",
        "burma": "mm", "moldova": "md", "tanzania": "tz", "easttimor": "tl",
        "brunei": "bn", "netherlands": "nl",
    })  # fmt: skip
    return names


# Searched longest first, so "westvirginia" wins over "virginia" and
# "romania" over "oman".
_REGION_NAMES = sorted(_US_CA_REGIONS.items(), key=lambda kv: -len(kv[0]))
_COUNTRY_NAMES = sorted(_country_names().items(), key=lambda kv: -len(kv[0]))
# Matched only as the whole value: "usa" hides inside words ("jerusalem").
_COUNTRY_EXACT = {"usa": "us"}


def _two_letter(
    value: str, names: list[tuple[str, str]], exact: dict[str, str]
) -> str | None:
    # Param Builder: keep letters only, map a full name found anywhere in the
    # value to its code, else keep the first two letters ("U.K." -> "uk",
    # which is not ISO but is what the Builder sends). We also fold accents
    # first, so "Québec" maps to "qc" instead of "qu"; no vector disagrees.
    letters = _fold_letters(value)
    if not letters:
        return None
    if letters in exact:
        return exact[letters]
    for name, code in names:
        if name in letters:
            return code
    return letters[:2]


def _meta_state(value: str) -> str | None:
    return _two_letter(value, _REGION_NAMES, {})


def _meta_country(value: str) -> str | None:
    return _two_letter(value, _COUNTRY_NAMES, _COUNTRY_EXACT)


def _meta_zip(value: str) -> str | None:
    # Param Builder: trim, lowercase, keep what precedes the first "-" (ZIP+4
    # -> ZIP), at least two characters. We also remove inner white space as
    # Meta's docs and both business SDKs do ("NR9 5AL" -> "nr95al"); the
    # Builder keeps it ("a1 b2"), which hashes a form Meta's docs rule out.
    code = _JS_SPACE_RE.sub("", value.lower()).split("-", 1)[0]
    return code if len(code) >= 2 else None


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _meta_dob(value: str, today: date | None) -> str | None:
    """``YYYYMMDD`` from a free-form date, as the Param Builder reads it.

    One run of exactly 8 digits is ``YYYYMMDD``. Otherwise the first three
    digit runs are the date: exactly one of them a 4-digit year, first or
    last; of the other two, the first is the month unless it is above 12
    (then the day). Years run from 1800 to next year.
    """
    runs = _DIGIT_RUN_RE.findall(value)
    if len(runs) == 1 and len(runs[0]) == 8:
        year, month, day = int(runs[0][:4]), int(runs[0][4:6]), int(runs[0][6:])
    elif len(runs) >= 3:
        first3 = runs[:3]
        years = [i for i, run in enumerate(first3) if len(run) == 4]
        if years not in ([0], [2]) or any(
            len(r) > 2 for i, r in enumerate(first3) if i != years[0]
        ):
            return None
        rest = [int(r) for i, r in enumerate(first3) if i != years[0]]
        year = int(first3[years[0]])
        month, day = (rest[1], rest[0]) if rest[0] > 12 else (rest[0], rest[1])
    else:
        return None
    this_year = (today or datetime.now(UTC).date()).year
    # The Builder checks the day against the longest month (February 29 is
    # taken in any year, 1900 included); we keep that rather than drop a date
    # the user typed that way.
    if not (
        1800 <= year <= this_year + 1
        and 1 <= month <= 12
        and 1 <= day <= _DAYS_IN_MONTH[month - 1]
    ):
        return None
    return f"{year:04d}{month:02d}{day:02d}"


_MALE_WORDS = frozenset(
    [
        "m",
        "male",
        "man",
        "boy",
        "gentleman",
        "guy",
        "sir",
        "mister",
        "mr",
        "son",
        "father",
        "dad",
        "daddy",
        "papa",
        "uncle",
        "nephew",
        "brother",
        "husband",
        "boyfriend",
        "groom",
        "widower",
        "king",
        "prince",
        "duke",
        "count",
        "emperor",
        "god",
        "lord",
        "lad",
        "fellow",
        "chap",
        "bloke",
        "dude",
        "he",
        "him",
        "his",
        "himself",
    ]
)
_FEMALE_WORDS = frozenset(
    [
        "f",
        "female",
        "woman",
        "girl",
        "lady",
        "miss",
        "ms",
        "mrs",
        "madam",
        "ma'am",
        "daughter",
        "mother",
        "mom",
        "mama",
        "mommy",
        "aunt",
        "niece",
        "sister",
        "wife",
        "girlfriend",
        "bride",
        "widow",
        "queen",
        "princess",
        "duchess",
        "countess",
        "empress",
        "goddess",
        "maiden",
        "lass",
        "gal",
        "chick",
        "dame",
        "belle",
        "she",
        "her",
        "hers",
        "herself",
    ]
)


def _meta_gender(value: str) -> str | None:
    # The whole trimmed, lowercased value must be one known word: "male." or
    # "male female" are refused, never guessed.
    word = _trim(value).lower()
    if word in _MALE_WORDS:
        return "m"
    if word in _FEMALE_WORDS:
        return "f"
    return None


def _meta_external_id(value: str) -> str | None:
    # Param Builder: lowercase and drop every white space character; the
    # punctuation of an ID is kept.
    ext = _JS_SPACE_RE.sub("", value.lower())
    return ext or None


def _two_digits(low: int, high: int) -> Callable[[str], str | None]:
    def normalize(value: str) -> str | None:
        text = _trim(value)
        if not re.fullmatch(r"[0-9]{1,2}", text) or not low <= int(text) <= high:
            return None
        return f"{int(text):02d}"

    return normalize


def _first_chars(count: int) -> Callable[[str], str | None]:
    def normalize(value: str) -> str | None:
        name = _meta_name(value)
        return name[:count] if name else None

    return normalize


def _year(value: str) -> str | None:
    text = _trim(value)
    return text if re.fullmatch(r"[0-9]{4}", text) else None


_META_RULES: dict[str, Callable[[str], str | None]] = {
    "em": _meta_email,
    "ph": _meta_phone,
    "fn": _meta_name,
    "ln": _meta_name,
    "ge": _meta_gender,
    "ct": _meta_city,
    "st": _meta_state,
    "zp": _meta_zip,
    "country": _meta_country,
    "external_id": _meta_external_id,
    # Older user_data keys Meta still accepts (Python business SDK):
    # first five letters of first/last name, first initial, birth day/month/year.
    "f5first": _first_chars(5),
    "f5last": _first_chars(5),
    "fi": _first_chars(1),
    "dobd": _two_digits(1, 31),
    "dobm": _two_digits(1, 12),
    "doby": _year,
}

#: The Meta ``user_data`` keys :func:`normalize_meta` knows, ``db`` included.
META_FIELDS = frozenset(_META_RULES) | {"db"}


def normalize_meta(field: str, value: Any, *, today: date | None = None) -> str | None:
    """The value Meta expects before hashing for ``user_data[field]``, or None.

    None means "do not send this field": the value is not a string, is empty,
    longer than :data:`MAX_VALUE_CHARS`, or malformed for the field. A value
    that already is a SHA-256 digest comes back trimmed (case kept).
    ``today`` fixes "now" for the birth-date year bound (default: UTC today).

    Raises:
        ValueError: ``field`` is not one of :data:`META_FIELDS` (a bug in the
            caller, not bad input).
    """
    if field not in META_FIELDS:
        raise ValueError(
            f"Meta user_data field {field!r}: not normalised here (known: {', '.join(sorted(META_FIELDS))})"
        )
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return None
    if is_hashed(value):
        return _trim(value)
    normalized = _meta_dob(value, today) if field == "db" else _META_RULES[field](value)
    if normalized is None:
        log.debug("Meta user_data %s: value rejected by normalisation", field)
    return normalized


def hash_meta(field: str, value: Any, *, today: date | None = None) -> str | None:
    """The SHA-256 hex Meta expects for ``user_data[field]``, or None when rejected.

    An already-hashed value is passed through trimmed and lowercased, never
    hashed twice.
    """
    normalized = normalize_meta(field, value, today=today)
    if normalized is None:
        return None
    if is_hashed(normalized):
        return normalized.lower()
    return sha256_hex(normalized)


def normalize_currency(value: Any) -> str | None:
    """``custom_data.currency`` as Meta's SDKs send it: three lowercase letters, never hashed."""
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return None
    code = re.sub(r"[^a-z]", "", value.lower())
    return code if len(code) == 3 else None


_META_USER_KEYS = (
    ("email", "em"),
    ("phone", "ph"),
    ("first_name", "fn"),
    ("last_name", "ln"),
    # Meta's docs recommend hashing external_id; the Python business SDK
    # sends it raw. We hash: the site's user ID is an identifier of a person,
    # and raw PII never leaves (DESIGN.md). Meta matches on the hash as long
    # as the Pixel, if kept, is given the same hashed value.
    ("external_id", "external_id"),
)


def meta_user_data(user: UserData) -> dict[str, list[str]]:
    """Hashed Meta ``user_data`` keys (``em``, ``ph``, ``fn``, ``ln``, ``external_id``).

    Each present, valid value becomes a one-element list; rejected values are
    left out, so the result may be empty.
    """
    out: dict[str, list[str]] = {}
    for attr, key in _META_USER_KEYS:
        raw = getattr(user, attr)
        if raw is None:
            continue
        hashed = hash_meta(key, raw)
        if hashed is not None:
            out[key] = [hashed]
    return out


# --------------------------------------------------------------------------
# Google (GA4 Measurement Protocol user_data)

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def _google_email(value: str) -> str | None:
    # GA4 MP: lowercase, remove all spaces, remove periods before "@" for
    # gmail.com / googlemail.com only. Google's newer Data Manager API also
    # drops a "+tag" on those domains; the GA4 MP page does not ask for it,
    # so we leave it.
    email = _JS_SPACE_RE.sub("", value.lower())
    if not _EMAIL_RE.fullmatch(email):
        return None
    local, _, domain = email.rpartition("@")
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def _google_phone(value: str, default_region: str | None) -> str | None:
    # E.164 with "+": the number's own country code when it starts with "+",
    # else the site's default region. Without either we cannot know the
    # country and send nothing rather than a wrong number.
    text = _trim(value)
    region = None if text.startswith("+") else (default_region or "").upper() or None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _google_name(value: str) -> str | None:
    # GA4 MP: remove digits and symbol characters, lowercase, trim. Letters
    # of any script and combining marks stay, as do inner spaces.
    kept = "".join(
        ch
        for ch in value.lower()
        if unicodedata.category(ch)[0] in "LM" or ch in _JS_SPACE
    )
    name = _trim(kept)
    return name or None


def _google_hash(value: Any, normalize: Callable[[str], str | None]) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return None
    if is_hashed(value):
        return _trim(value).lower()
    normalized = normalize(value)
    return sha256_hex(normalized) if normalized else None


def google_user_data(user: UserData, default_region: str | None) -> dict[str, Any]:
    """GA4 Measurement Protocol ``user_data`` (user-provided data) for ``user``.

    Keys appear only when they have a value: ``sha256_email_address`` and
    ``sha256_phone_number`` (lists), and ``address`` (a list of one mapping
    with ``sha256_first_name`` and/or ``sha256_last_name``).
    ``default_region`` (ISO 3166-1 alpha-2, e.g. "US") places phone numbers
    written without "+"; without it such numbers are left out. Google asks
    for ``user_id`` whenever ``user_data`` is sent: that is the caller's part.
    """
    out: dict[str, Any] = {}
    email = _google_hash(user.email, _google_email)
    if email:
        out["sha256_email_address"] = [email]
    # "00" + country code is read as "+" here too, as for TikTok and Snap: in
    # most regions 00 is the international prefix, and a number written so
    # must not hash as another (or no) number where it is not.
    phone = _google_hash(user.phone, lambda v: _google_phone(_zeros_to_plus(v), default_region))
    if phone:
        out["sha256_phone_number"] = [phone]
    # TODO(model): add sha256_street, city, region, postal_code and country
    # once UserData carries an address; GA4 MP accepts them in address[].
    address: dict[str, str] = {}
    for attr, key in (
        ("first_name", "sha256_first_name"),
        ("last_name", "sha256_last_name"),
    ):
        hashed = _google_hash(getattr(user, attr), _google_name)
        if hashed:
            address[key] = hashed
    if address:
        out["address"] = [address]
    return out


# --------------------------------------------------------------------------
# TikTok Events API (user.email, user.phone, user.external_id)


def _tiktok_email(value: str) -> str | None:
    # TikTok: trim and lowercase before SHA-256 (TikTok's own server GTM
    # template, tiktok/gtm-template-eapi). We also refuse what is not an
    # address, as for Meta.
    email = _trim(value).lower()
    return email if _EMAIL_RE.fullmatch(email) else None


def _tiktok_external_id(value: str) -> str | None:
    # TikTok's template trims the ID and keeps its case: "ABC" and "abc" are
    # different customers in the site's own database.
    ext = _trim(value)
    return ext or None


def tiktok_user(user: UserData, default_region: str | None) -> dict[str, str]:
    """Hashed TikTok ``user`` keys (``email``, ``phone``, ``external_id``), strings.

    The phone is hashed in E.164 form *with* the leading ``+``
    (``+1 213-373-4253`` -> ``+12133734253``), unlike Meta and Snap, which
    hash the digits alone. Numbers written without ``+``/``00`` are placed in
    ``default_region`` (ISO 3166-1 alpha-2); without one they are left out.
    Already-hashed values pass through lowercased; rejected values are left out.
    """
    out: dict[str, str] = {}
    pairs: tuple[tuple[str, Any, Callable[[str], str | None]], ...] = (
        ("email", user.email, _tiktok_email),
        (
            "phone",
            user.phone,
            lambda v: _google_phone(_zeros_to_plus(v), default_region),
        ),
        ("external_id", user.external_id, _tiktok_external_id),
    )
    for key, raw, normalize in pairs:
        hashed = _google_hash(raw, normalize)
        if hashed:
            out[key] = hashed
    return out


def _zeros_to_plus(value: str) -> str:
    # "0044 20 ..." is the international prefix written out: the same as "+44".
    text = _trim(value)
    return "+" + text[2:] if text.startswith("00") else text


# --------------------------------------------------------------------------
# Snapchat Conversions API v3 user_data

#: Fields :func:`normalize_snap` knows. ``ip`` and ``soundex`` serve only
#: Snap's legacy v2 API (``hashed_ip_address``, ``*_soundex``) and are kept so
#: that every case of Snap's SDK test vectors is covered.
SNAP_FIELDS = frozenset(
    {"em", "ph", "fn", "ln", "external_id", "ip", "generic_string", "soundex"}
)

_SOUNDEX_CODES = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


def _snap_generic(value: str) -> str | None:
    # Snap's SDKs (Python capi_utils, Go capi_hash): trim and lowercase.
    text = _trim(value).lower()
    return text or None


def _snap_email(value: str) -> str | None:
    email = _trim(value).lower()
    return email if _EMAIL_RE.fullmatch(email) else None


def _snap_phone(value: str, default_region: str | None) -> str | None:
    # Snap's docs: country code included, no "00" before it, no national
    # leading 0, digits only ("+44 844 412 4653" -> "448444124653"). Snap's
    # SDKs assume country code 1 for numbers without "+"/"00"; the adapter's
    # default_region is "US" by default for that reason. The SDKs need a
    # separator after the country code ("+44-447..."); libphonenumber knows
    # the country codes, so "+447..." is read right too.
    e164 = _google_phone(_zeros_to_plus(value), default_region)
    return e164[1:] if e164 else None


def _snap_name(value: str) -> str | None:
    # Snap's docs: lower case letters only, punctuation removed, non-ASCII
    # letters kept as UTF-8 ("Raphaël" -> "raphaël"). NFC first, so a
    # decomposed "e" + U+0308 hashes like the composed letter.
    text = unicodedata.normalize("NFC", value.lower())
    name = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LM")
    return name or None


def _soundex(value: str) -> str | None:
    # American Soundex of the trimmed, lowercased value, as Snap's SDKs
    # compute it for the legacy v2 *_soundex fields.
    letters = [ch for ch in _trim(value).lower() if "a" <= ch <= "z"]
    if not letters:
        return None
    code = letters[0].upper()
    last = _SOUNDEX_CODES.get(letters[0], "")
    for ch in letters[1:]:
        digit = _SOUNDEX_CODES.get(ch, "")
        if digit and digit != last:
            code += digit
        if ch not in "hw":
            last = digit
        if len(code) == 4:
            break
    return code.ljust(4, "0")


def normalize_snap(
    field: str, value: Any, *, default_region: str | None = "US"
) -> str | None:
    """The value Snap expects before hashing for ``user_data[field]``, or None.

    ``default_region`` places phone numbers written without ``+``/``00``
    (Snap's SDKs assume the US). A SHA-256 digest comes back trimmed.

    Raises:
        ValueError: ``field`` is not one of :data:`SNAP_FIELDS`.
    """
    if field not in SNAP_FIELDS:
        raise ValueError(
            f"Snap user_data field {field!r}: not normalised here (known: {', '.join(sorted(SNAP_FIELDS))})"
        )
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return None
    if field != "soundex" and is_hashed(value):
        return _trim(value)
    if field == "em":
        return _snap_email(value)
    if field == "ph":
        return _snap_phone(value, default_region)
    if field in ("fn", "ln"):
        return _snap_name(value)
    if field == "soundex":
        return _soundex(value)
    return _snap_generic(value)


def hash_snap(
    field: str, value: Any, *, default_region: str | None = "US"
) -> str | None:
    """SHA-256 hex of :func:`normalize_snap`'s result; digests pass through lowercased."""
    normalized = normalize_snap(field, value, default_region=default_region)
    if normalized is None:
        return None
    if is_hashed(normalized):
        return normalized.lower()
    return sha256_hex(normalized)


_SNAP_USER_KEYS = (
    ("email", "em"),
    ("phone", "ph"),
    ("first_name", "fn"),
    ("last_name", "ln"),
    ("external_id", "external_id"),
)


def snap_user_data(
    user: UserData, default_region: str | None = "US"
) -> dict[str, list[str]]:
    """Hashed Snap ``user_data`` keys (``em``, ``ph``, ``fn``, ``ln``, ``external_id``), as lists."""
    out: dict[str, list[str]] = {}
    for attr, key in _SNAP_USER_KEYS:
        raw = getattr(user, attr)
        if raw is None:
            continue
        hashed = hash_snap(key, raw, default_region=default_region)
        if hashed is not None:
            out[key] = [hashed]
    return out


__all__ += [
    "SNAP_FIELDS",
    "hash_snap",
    "normalize_snap",
    "snap_user_data",
    "tiktok_user",
]
