"""Consent: which purposes a visitor allows, where each answer came from, and the gate.

Purposes
--------
tagrelay gates on four purposes, named after Google Consent Mode v2 so that a
page's ``gtag('consent', ...)`` maps one to one:

- ``analytics`` (``analytics_storage``): measurement for the site itself;
- ``ads`` (``ad_storage``): sending events to ad platforms;
- ``ad_user_data`` (``ad_user_data``): sending user data (hashed PII, click
  IDs) to ad platforms;
- ``ad_personalization`` (``ad_personalization``): remarketing and
  personalised ads.

``storage`` is derived, not signalled: tagrelay may set or read identifier
cookies when ``ads`` or ``analytics`` is granted, each only with its own
purpose's (``_fbp``, ``_fbc`` and the click-ID cookie with ads; ``_ga`` and
the session with analytics; the visitor ID with either: see
:func:`proxy.enrich.ids.resolve_ids`); with both denied nothing it would
store has a use. Without storage, tagrelay sets no cookies and a vendor gets
only what it accepts without identifiers (for GA4, the Measurement Protocol
``consent`` fields via :meth:`Consent.google_fields`).

Signals and precedence
----------------------
For each purpose, :func:`resolve` takes the first of these that has a signal:

1. ``collector``: the site's own consent call (``tagrelay('consent', {...})``,
   which the gtag shim also feeds), the most specific statement we get;
2. ``google``: Consent Mode in GA4 hits (``gcs``/``gcd``/``npa``, read by
   :func:`proxy.ga4hits.google_consent`);
3. ``tcf``: an IAB TCF v2.2 TC string, mapped by :data:`TCF_PURPOSES`;
4. ``default``: the :class:`ConsentPolicy` for the visitor's country.

``Sec-GPC: 1`` (Global Privacy Control) can only deny, and only ``ads``,
``ad_user_data`` and ``ad_personalization``: GPC is the browser's standing
request not to sell or share personal data with third parties (W3C GPC draft;
MDN ``Sec-GPC``), which is what those three do and ``analytics`` (first-party
measurement) does not. By default GPC is a veto that overrides grants from
every source, because a grant in a consent call cannot be told apart from the
page's own ``consent default`` (the gtag shim forwards both alike), and
California's CCPA regulations (§ 7025(c)(3)) treat GPC as an opt-out when it
conflicts with a business-specific setting. ``ConsentPolicy(gpc="fallback")``
ranks GPC after TCF instead, so that an explicit grant wins over it; ``"ignore"``
turns it off.

TCF
---
:func:`decode_tc_string` is a small decoder of the core segment written here
after the IAB Tech Lab spec "Transparency and Consent String with Global Vendor
& CMP List Formats" (TCFv2, section "The Core String"; the v2.2 and v2.3
revisions changed policy rules, not the core encoding). A maintained Python
decoder does not exist: PyPI's ``iab-tcf`` (0.2.2, 2022-10) and its fork
``iab-tcf-bitarray`` (0.2.3, 2024-07) predate TCF v2.2, say "v1.1 and v2" only,
and pull in a bit-array C extension for what is a hundred lines of integer
reading. The decoder is tested against the IAB's own decoder test strings
(iabtcf-java) and gguridi/iab-tcf's fixtures (``tests/data/tcf``).

A TC string that does not decode, or that the spec declares invalid, is not an
exception on the hit path: :func:`resolve` records it in
:attr:`Consent.problems` and decides as if there were no TC string.

Exceptions::

    ValueError
     ├── TCStringError      a TC string cannot be decoded (message says where)
     └── PolicyError        a consent policy setting cannot be parsed
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import pycountry

if TYPE_CHECKING:
    from .model import Event

__all__ = [
    "CONSENT_MODE_KEYS",
    "DEFAULT_POLICY",
    "decide_consent",
    "EEA",
    "GOOGLE_GVL_ID",
    "GPC_PURPOSES",
    "PURPOSES",
    "TCF_PURPOSES",
    "Consent",
    "ConsentPolicy",
    "ConsentSignals",
    "Decision",
    "PolicyError",
    "PublisherRestriction",
    "Source",
    "TCString",
    "TCStringError",
    "VendorSet",
    "decode_tc_string",
    "from_consent_mode",
    "gate",
    "gpc_from_headers",
    "resolve",
]

log = logging.getLogger("proxy.consent")

PURPOSES: tuple[str, ...] = ("analytics", "ads", "ad_personalization", "ad_user_data")

# Google Consent Mode v2 keys → our purposes (Google tag platform "consent mode
# reference": ad_storage, ad_user_data, ad_personalization, analytics_storage).
CONSENT_MODE_KEYS: Mapping[str, str] = {
    "ad_storage": "ads",
    "analytics_storage": "analytics",
    "ad_user_data": "ad_user_data",
    "ad_personalization": "ad_personalization",
}

# What a GPC opt-out of "sale or sharing" covers (see the module docstring).
GPC_PURPOSES: frozenset[str] = frozenset({"ads", "ad_user_data", "ad_personalization"})

# TCF v2.2 purposes (IAB Europe TCF Policies, Appendix A, as listed by the
# Didomi and Usercentrics CMP docs for v2.2): 1 store and/or access information
# on a device; 2 use limited data to select advertising; 3 create profiles for
# personalised advertising; 4 use profiles to select personalised advertising;
# 5/6 the same for content; 7 measure advertising performance; 8 measure
# content performance; 9 understand audiences through statistics or
# combinations of data from different sources; 10 develop and improve
# services; 11 use limited data to select content.
#
# Our purpose is granted by TCF when the visitor consented to every purpose
# listed. ad_user_data and ad_personalization follow Google's own consent mode
# TCF integration (developers.google.com/tag-platform/security/guides/
# implement-TCF-strings: purpose 1 or 7 denied → ad_user_data denied; 3 or 4
# denied → ad_personalization denied). ads needs 7 as well as 1 because our
# "ads" gates sending conversions to ad platforms, i.e. measuring ad
# performance, not only ad cookies. Google's mapping leaves analytics_storage
# out of TCF; ours asks for 1 (the analytics cookie), 8 and 9 (content
# measurement and audience statistics are what web analytics does). Purpose 10
# (the vendor developing its products) is not needed to forward a measurement.
TCF_PURPOSES: Mapping[str, tuple[int, ...]] = {
    "analytics": (1, 8, 9),
    "ads": (1, 7),
    "ad_user_data": (1, 7),
    "ad_personalization": (3, 4),
}

# "Google Advertising Products" in the IAB Global Vendor List (GVL entries as
# quoted by CMP docs and code; Gravito "Google is on the framework with vendor
# id 755"). Meta has no GVL ID: it is not a TCF vendor (Quantcast Choice help,
# "non-IAB vendors ... for example, Facebook"), and Google's Additional Consent
# list, which holds ad tech providers not on the GVL, carries it as ATP 89
# (c15t docs). A Meta destination is gated by purposes only.
GOOGLE_GVL_ID = 755

# EU member states (european-union.europa.eu, "EU countries", 27 since
# 2020-02-01; ISO codes, so Greece is GR where the EU writes EL) and the three
# other EEA states (EEA Agreement: IS, LI, NO). Plus the EU's outermost regions
# and Åland, which are EU territory but have ISO codes of their own that geo
# databases report as the country: GF, GP, MQ, RE, YT, MF (TFEU art. 349) and
# AX. The Azores, Madeira, the Canaries, Ceuta and Melilla report as PT/ES.
EEA: frozenset[str] = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
        "GF",
        "GP",
        "MQ",
        "RE",
        "YT",
        "MF",
        "AX",
    ]
)

# The example policy from issue 4: opt-in where GDPR-style consent law applies
# (EEA, UK GDPR + PECR, Switzerland's revised FADP), opt-out elsewhere.
DEFAULT_POLICY = "EEA,GB,CH:denied;*:granted"

Source = Literal["collector", "google", "tcf", "gpc", "default"]

_SOURCE_TEXT: Mapping[str, str] = {
    "collector": "by the consent call",
    "google": "by Google consent mode",
    "tcf": "by TCF",
    "gpc": "by GPC",
    "default": "by default",
}


class TCStringError(ValueError):
    """A TC string cannot be decoded; the message names the field and why."""


class PolicyError(ValueError):
    """A consent policy setting cannot be parsed; the message names the part and why."""


# --------------------------------------------------------------------------
# TCF v2 TC string decoding


# Longest TC string accepted. Two full 65535-bit vendor bit fields come to
# about 22,000 characters; a real string is a few hundred.
_MAX_TC_CHARS = 32 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_ONES = re.compile("1+")


class _Bits:
    """Reads big-endian unsigned fields, left to right, from one segment's bytes."""

    __slots__ = ("data", "pos", "segment", "size")

    def __init__(self, data: bytes, segment: str) -> None:
        self.data = data
        self.pos = 0
        self.size = len(data) * 8
        self.segment = segment

    def read(self, n: int, name: str) -> int:
        if self.pos + n > self.size:
            raise TCStringError(
                f"TC string {self.segment}: ends at bit {self.size}, "
                f"{name} needs bits {self.pos}-{self.pos + n - 1}"
            )
        if n == 0:
            return 0
        # One int over the bytes the field spans, then shift: bit fields can be
        # 65535 bits long, and a per-bit loop would let a hit buy CPU time.
        first, last = self.pos >> 3, (self.pos + n - 1) >> 3
        span = int.from_bytes(self.data[first : last + 1], "big")
        tail = (last + 1) * 8 - (self.pos + n)
        self.pos += n
        return (span >> tail) & ((1 << n) - 1)

    def field(self, n: int, name: str) -> str:
        """``n`` bits as a string of 0 and 1, for scanning long bit fields in C."""
        return format(self.read(n, name), f"0{n}b") if n else ""

    def flags(self, n: int, name: str) -> frozenset[int]:
        """A bit field where bit i (from 0) set means ID i + 1."""
        return frozenset(
            i + 1 for i, bit in enumerate(self.field(n, name)) if bit == "1"
        )

    def letters(self, name: str) -> str:
        out = []
        for _ in range(2):
            v = self.read(6, name)
            if v > 25:
                raise TCStringError(
                    f"TC string {self.segment}: {name} letter value {v} is not a-z (0-25)"
                )
            out.append(chr(ord("A") + v))
        return "".join(out)


def _b64url_bytes(segment: str, which: str) -> bytes:
    if not segment:
        raise TCStringError(f"TC string {which} is empty")
    if not _B64URL.fullmatch(segment):
        bad = next(
            (c for c in segment if not (c.isascii() and (c.isalnum() or c in "-_="))),
            None,
        )
        if bad is None:
            raise TCStringError(f"TC string {which}: '=' padding inside the segment")
        raise TCStringError(
            f"TC string {which}: {bad!r} is not a web-safe base64 character"
        )
    body = segment.rstrip("=")
    if len(body) % 4 == 1:
        raise TCStringError(
            f"TC string {which}: {len(body)} characters cannot be base64"
        )
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (
        binascii.Error,
        ValueError,
    ) as exc:  # pragma: no cover - the checks above catch these
        raise TCStringError(f"TC string {which}: not base64 ({exc})") from None


@dataclass(frozen=True, slots=True)
class VendorSet:
    """Vendor IDs with a signal, kept as the string encodes them (never expanded).

    A range-encoded section may name up to 4095 ranges of up to 65535 IDs each,
    so membership is answered from sorted ranges rather than a set of IDs.
    """

    max_vendor_id: int
    ranges: tuple[tuple[int, int], ...]  # sorted, merged, inclusive

    def __contains__(self, vendor_id: object) -> bool:
        if not isinstance(vendor_id, int):
            return False
        i = bisect.bisect_right(self.ranges, (vendor_id, 1 << 17)) - 1
        return i >= 0 and self.ranges[i][0] <= vendor_id <= self.ranges[i][1]

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)


def _merge(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(pairs):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _ranges(bits: _Bits, name: str, max_id: int | None) -> list[tuple[int, int]]:
    """NumEntries, then IsARange + StartOrOnlyVendorId [+ EndVendorId] per entry."""
    pairs = []
    count = bits.read(12, f"{name} NumEntries")
    for n in range(count):
        is_range = bits.read(1, f"{name} entry {n + 1} IsARange")
        start = bits.read(16, f"{name} entry {n + 1} StartOrOnlyVendorId")
        end = bits.read(16, f"{name} entry {n + 1} EndVendorId") if is_range else start
        if start < 1 or end < start or (max_id is not None and end > max_id):
            bound = f" within 1-{max_id}" if max_id is not None else ""
            raise TCStringError(
                f"TC string core segment: {name} entry {n + 1} is {start}-{end}, not an ascending range{bound}"
            )
        pairs.append((start, end))
    return pairs


def _vendor_section(bits: _Bits, name: str) -> VendorSet:
    max_id = bits.read(16, f"{name} MaxVendorId")
    if bits.read(1, f"{name} IsRangeEncoding"):
        return VendorSet(max_id, _merge(_ranges(bits, name, max_id)))
    raw = bits.field(max_id, f"{name} BitField")
    pairs = [(m.start() + 1, m.end()) for m in _ONES.finditer(raw)]
    return VendorSet(max_id, tuple(pairs))


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One PubRestrictionEntry: the publisher's rule for a purpose and some vendors.

    ``restriction``: 0 not allowed, 1 require consent, 2 require legitimate interest.
    """

    purpose: int
    restriction: int
    vendors: VendorSet


@dataclass(frozen=True, slots=True)
class TCString:
    """The core segment of a TCF v2 TC string, and which other segments came with it."""

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool  # "UseNonStandardStacks" before v2.2
    special_feature_optins: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorSet
    vendor_legitimate_interests: VendorSet
    publisher_restrictions: tuple[PublisherRestriction, ...]
    # SegmentType of each segment after the core: 1 disclosed vendors,
    # 2 allowed vendors, 3 publisher TC. Their contents are not decoded.
    other_segments: tuple[int, ...] = ()


def _time(bits: _Bits, name: str) -> datetime:
    deciseconds = bits.read(36, name)
    return datetime.fromtimestamp(deciseconds / 10, tz=UTC)


def decode_tc_string(value: str) -> TCString:
    """Decode a TCF v2 TC string (core segment; other segments are only identified).

    Raises :class:`TCStringError` naming the field when the string is not a
    well-formed v2 TC string. Policy validity (dates, policy versions) is not
    judged here; :func:`resolve` does that.
    """
    if not isinstance(value, str):
        raise TCStringError(f"TC string must be text, not {type(value).__name__}")
    value = value.strip()
    if len(value) > _MAX_TC_CHARS:
        raise TCStringError(
            f"TC string is {len(value)} characters; at most {_MAX_TC_CHARS} are accepted"
        )
    core_text, *rest = value.split(".")
    bits = _Bits(_b64url_bytes(core_text, "core segment"), "core segment")

    version = bits.read(6, "Version")
    if version != 2:
        # A v1 string ("B...") has a different layout; TCF v1 ended 2020-09-30.
        raise TCStringError(
            f"TC string core segment: Version is {version}, only TCF v2 strings are read"
        )
    created = _time(bits, "Created")
    last_updated = _time(bits, "LastUpdated")
    cmp_id = bits.read(12, "CmpId")
    cmp_version = bits.read(12, "CmpVersion")
    consent_screen = bits.read(6, "ConsentScreen")
    consent_language = bits.letters("ConsentLanguage")
    vendor_list_version = bits.read(12, "VendorListVersion")
    policy_version = bits.read(6, "TcfPolicyVersion")
    is_service_specific = bool(bits.read(1, "IsServiceSpecific"))
    use_non_standard_texts = bool(bits.read(1, "UseNonStandardTexts"))
    special_features = bits.flags(12, "SpecialFeatureOptIns")
    purpose_consents = bits.flags(24, "PurposesConsent")
    purpose_lis = bits.flags(24, "PurposesLITransparency")
    purpose_one_treatment = bool(bits.read(1, "PurposeOneTreatment"))
    publisher_cc = bits.letters("PublisherCC")
    vendor_consents = _vendor_section(bits, "VendorConsents")
    vendor_lis = _vendor_section(bits, "VendorLegitimateInterests")
    restrictions = []
    for n in range(bits.read(12, "NumPubRestrictions")):
        purpose = bits.read(6, f"PubRestrictionEntry {n + 1} PurposeId")
        kind = bits.read(2, f"PubRestrictionEntry {n + 1} RestrictionType")
        pairs = _ranges(bits, f"PubRestrictionEntry {n + 1}", None)
        top = max((end for _, end in pairs), default=0)
        restrictions.append(
            PublisherRestriction(purpose, kind, VendorSet(top, _merge(pairs)))
        )

    others = []
    for i, text in enumerate(rest, start=2):
        seg = _Bits(_b64url_bytes(text, f"segment {i}"), f"segment {i}")
        others.append(seg.read(3, "SegmentType"))

    return TCString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        policy_version=policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_features,
        purpose_consents=purpose_consents,
        purpose_legitimate_interests=purpose_lis,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_lis,
        publisher_restrictions=tuple(restrictions),
        other_segments=tuple(others),
    )


# Spec, "Managing conflicting string versions": "Post 30 September 2023 a TC
# String created with a policy version set to smaller than 4 will be deemed
# invalid." TCF v2.3 (policy version 5): "TC Strings created after 28 February
# 2026 without [a disclosed vendors segment] will be considered invalid."
_V22_CUTOFF = datetime(2023, 10, 1, tzinfo=UTC)
_V23_CUTOFF = datetime(2026, 3, 1, tzinfo=UTC)
_DISCLOSED_VENDORS = 1


def _tcf_invalid(tc: TCString) -> str | None:
    """Why the TCF policy declares this (well-formed) string invalid, if it does."""
    if tc.policy_version < 4 and tc.created >= _V22_CUTOFF:
        return f"policy version {tc.policy_version} in a string created {tc.created:%Y-%m-%d} (v2.2 needs 4 since 2023-09-30)"
    if tc.created >= _V23_CUTOFF and _DISCLOSED_VENDORS not in tc.other_segments:
        return f"no disclosed vendors segment in a string created {tc.created:%Y-%m-%d} (required since 2026-02-28)"
    return None


# --------------------------------------------------------------------------
# Signals from requests


def gpc_from_headers(headers: Mapping[str, str]) -> bool:
    """True when the request carries ``Sec-GPC: 1``; any other value is no signal.

    The GPC spec defines only the value ``1``; a browser without the
    preference sends no header at all.
    """
    value = headers.get("Sec-GPC")
    if value is None:
        value = headers.get("sec-gpc")
    return value is not None and value.strip() == "1"


def from_consent_mode(states: Mapping[str, object]) -> dict[str, bool]:
    """Our purposes from Google Consent Mode keys (``{"ad_storage": "denied", ...}``).

    Values are ``"granted"`` or ``"denied"`` (any case) or booleans. Keys
    Consent Mode has beyond the four (``functionality_storage``,
    ``security_storage``, ...) gate nothing here and are skipped; so are
    values that are neither, so that the policy decides.
    """
    out: dict[str, bool] = {}
    for key, value in states.items():
        purpose = CONSENT_MODE_KEYS.get(key)
        if purpose is None:
            continue
        if isinstance(value, bool):
            out[purpose] = value
        elif isinstance(value, str) and value.strip().lower() in ("granted", "denied"):
            out[purpose] = value.strip().lower() == "granted"
    return out


# --------------------------------------------------------------------------
# Default policy by region


_RULE_STATE = {"granted": True, "denied": False}


@dataclass(frozen=True)
class ConsentPolicy:
    """What "no signal" means for each purpose, by the visitor's country.

    Build it with :meth:`parse`. ``countries`` maps ISO 3166-1 alpha-2 codes
    to per-purpose defaults; ``other`` covers countries not listed;
    ``unknown`` covers a visitor whose country geo cannot tell.
    ``gpc`` is ``"veto"``, ``"fallback"`` or ``"ignore"`` (module docstring).
    """

    countries: Mapping[str, Mapping[str, bool]]
    other: Mapping[str, bool]
    unknown: Mapping[str, bool]
    gpc: Literal["veto", "fallback", "ignore"] = "veto"
    text: str = ""

    @classmethod
    def parse(cls, text: str = DEFAULT_POLICY, *, gpc: str = "veto") -> ConsentPolicy:
        """Parse ``REGIONS:STATES`` rules separated by ``;``.

        ``REGIONS`` is a comma list of ISO 3166-1 alpha-2 codes, ``EEA`` (see
        :data:`EEA`), ``*`` (every country not named elsewhere) or ``?`` (no
        geo). ``STATES`` is ``granted`` or ``denied``, optionally followed by
        space-separated per-purpose overrides (``granted ad_personalization=denied``),
        or only overrides naming all four purposes. A country named directly
        beats ``EEA``. Without ``*``, and without ``?``, those visitors get
        the strictest state any rule gives each purpose: a visitor we cannot
        place may be in the strictest region. Example::

            EEA,GB,CH:denied; US:granted ad_personalization=denied; *:granted

        Raises :class:`PolicyError` listing every problem.
        """
        if gpc not in ("veto", "fallback", "ignore"):
            raise PolicyError(f"consent gpc {gpc!r}: must be veto, fallback or ignore")
        problems: list[str] = []
        direct: dict[str, dict[str, bool]] = {}
        grouped: dict[str, dict[str, bool]] = {}
        other: dict[str, bool] | None = None
        unknown: dict[str, bool] | None = None
        seen: dict[str, str] = {}
        all_states: list[dict[str, bool]] = []
        if not text.strip():
            raise PolicyError(
                "consent policy is empty; write rules like 'EEA,GB,CH:denied;*:granted'"
            )
        for raw in text.split(";"):
            rule = raw.strip()
            if not rule:
                continue
            regions_text, sep, states_text = rule.partition(":")
            if not sep:
                problems.append(f"rule {rule!r}: no ':' between regions and states")
                continue
            states = _parse_states(rule, states_text, problems)
            if states is None:
                continue
            all_states.append(states)
            for region in (r.strip().upper() for r in regions_text.split(",")):
                if region in seen:
                    problems.append(
                        f"rule {rule!r}: {region or 'an empty region'} is already in rule {seen[region]!r}"
                    )
                    continue
                seen[region] = rule
                if region == "*":
                    other = states
                elif region == "?":
                    unknown = states
                elif region == "EEA":
                    grouped.update({c: states for c in EEA})
                elif region == "UK":
                    problems.append(
                        f"rule {rule!r}: 'UK' is not an ISO 3166-1 code; the United Kingdom is GB"
                    )
                elif _is_country(region):
                    direct[region] = states
                else:
                    problems.append(
                        f"rule {rule!r}: region {region!r} is not an ISO 3166-1 alpha-2 country code, EEA, * or ?"
                    )
        if problems:
            raise PolicyError("consent policy: " + "; ".join(problems))
        strictest = {p: all(s[p] for s in all_states) for p in PURPOSES}
        return cls(
            countries={**grouped, **direct},
            other=other if other is not None else strictest,
            unknown=unknown if unknown is not None else strictest,
            gpc=gpc,  # type: ignore[arg-type]  # checked above
            text=text,
        )

    # TODO(issue 4): rules name countries only; US states with opt-out laws
    # (US-CA, ...) need subdivision rules once Geo.region feeds resolve().
    def default(self, country: str | None) -> tuple[Mapping[str, bool], str]:
        """The defaults for a visitor from ``country`` and the label reasons use."""
        if not country:
            return self.unknown, "(no geo)"
        code = country.upper()
        states = self.countries.get(code)
        return (states if states is not None else self.other), f"for {code}"


def _is_country(code: str) -> bool:
    # XK: Kosovo has no ISO code yet, but MaxMind and others report it so.
    return len(code) == 2 and (
        code == "XK" or pycountry.countries.get(alpha_2=code) is not None
    )


def _parse_states(rule: str, text: str, problems: list[str]) -> dict[str, bool] | None:
    words = text.split()
    if not words:
        problems.append(f"rule {rule!r}: no state after ':' (granted or denied)")
        return None
    states: dict[str, bool] = {}
    if words[0].lower() in _RULE_STATE:
        states = dict.fromkeys(PURPOSES, _RULE_STATE[words[0].lower()])
        words = words[1:]
    ok = True
    for word in words:
        purpose, eq, state = word.partition("=")
        if not eq or state.lower() not in _RULE_STATE:
            problems.append(
                f"rule {rule!r}: {word!r} is not purpose=granted or purpose=denied"
            )
            ok = False
        elif purpose not in PURPOSES:
            problems.append(
                f"rule {rule!r}: unknown purpose {purpose!r} (known: {', '.join(PURPOSES)})"
            )
            ok = False
        else:
            states[purpose] = _RULE_STATE[state.lower()]
    missing = [p for p in PURPOSES if p not in states]
    if ok and missing:
        problems.append(
            f"rule {rule!r}: says nothing for {', '.join(missing)} (start with granted or denied)"
        )
        ok = False
    return states if ok else None


# --------------------------------------------------------------------------
# Resolution and the gate


@dataclass(frozen=True, slots=True)
class ConsentSignals:
    """Everything one hit said about consent, before any policy is applied.

    ``collector``: the site's consent call; ``google``: purposes from GA4
    ``gcs``/``gcd``/``npa``; ``tcf``: a TC string (``gdpr_consent``) and
    ``gdpr_applies`` (the ``gdpr`` flag sent with it: False means the TC
    string does not apply); ``gpc``: ``Sec-GPC: 1`` was sent.
    """

    collector: Mapping[str, bool] = field(default_factory=dict)
    google: Mapping[str, bool] = field(default_factory=dict)
    tcf: str | None = None
    gdpr_applies: bool | None = None
    gpc: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """One purpose's answer and where it came from."""

    granted: bool
    source: Source
    why: str = ""  # the source's detail: "for SE", "purpose 7 not consented"


@dataclass(frozen=True)
class Consent:
    """Per purpose granted or denied, with the source of each decision."""

    decisions: Mapping[str, Decision]
    # Vendor consents of a valid, applicable TC string; None when TCF is not in play.
    tcf_vendors: VendorSet | None = None
    # Signals that were present but could not be used (bad TC string, ...).
    problems: tuple[str, ...] = ()

    def granted(self, purpose: str) -> bool:
        """Whether ``purpose`` is allowed; ``storage`` means ads or analytics; unknown purposes are denied."""
        if purpose == "storage":
            return self.storage
        decision = self.decisions.get(purpose)
        return decision is not None and decision.granted

    @property
    def storage(self) -> bool:
        """May tagrelay set or read identifier cookies: ads or analytics granted."""
        return self.granted("ads") or self.granted("analytics")

    def reason(self, purpose: str) -> str:
        """A ledger line for one purpose: ``"ads denied by GPC"``, ``"analytics denied by default for SE"``."""
        if purpose == "storage":
            state = "granted" if self.storage else "denied"
            return f"storage {state} (ads {self._state('ads')}, analytics {self._state('analytics')})"
        decision = self.decisions.get(purpose)
        if decision is None:
            return f"{purpose} denied: not a consent purpose (known: {', '.join(PURPOSES)}, storage)"
        text = f"{purpose} {self._state(purpose)} {_SOURCE_TEXT[decision.source]}"
        return f"{text} {decision.why}" if decision.why else text

    def _state(self, purpose: str) -> str:
        return "granted" if self.granted(purpose) else "denied"

    def as_dict(self) -> dict[str, bool]:
        """``{purpose: granted}`` for every purpose, as ``Context.consent`` holds it."""
        return {p: self.granted(p) for p in PURPOSES}

    def google_fields(self) -> dict[str, str]:
        """GA4 Measurement Protocol ``consent``: ad_user_data and ad_personalization as GRANTED/DENIED."""
        return {
            p: "GRANTED" if self.granted(p) else "DENIED"
            for p in ("ad_user_data", "ad_personalization")
        }


def _tcf_decisions(
    signals: ConsentSignals, problems: list[str]
) -> tuple[dict[str, Decision], VendorSet | None]:
    if signals.tcf is None or not signals.tcf.strip():
        return {}, None
    if signals.gdpr_applies is False:
        # gdpr=0: the CMP says GDPR does not apply; its string then carries no decision.
        return {}, None
    try:
        tc = decode_tc_string(signals.tcf)
    except TCStringError as exc:
        log.debug(
            "consent: TC string of %d characters ignored: %s", len(signals.tcf), exc
        )
        problems.append(f"TC string ignored: {exc}")
        return {}, None
    invalid = _tcf_invalid(tc)
    if invalid:
        problems.append(f"TC string ignored: invalid under TCF policy: {invalid}")
        return {}, None
    # TODO(issue 4): legitimate-interest bits and publisher restrictions are
    # decoded but do not enter the decision; only purpose consent opens a gate.
    # Use them once a destination can declare the legal basis its vendor relies
    # on (consent or legitimate interest, per the GVL's flexible purposes).
    decisions = {}
    for purpose, needed in TCF_PURPOSES.items():
        # PurposeOneTreatment: purpose 1 was not disclosed (a jurisdiction that
        # does not require it), so its bit says nothing either way.
        needed = tuple(n for n in needed if not (n == 1 and tc.purpose_one_treatment))
        missing = [n for n in needed if n not in tc.purpose_consents]
        if missing:
            decisions[purpose] = Decision(
                False, "tcf", f"(no consent for purpose {', '.join(map(str, missing))})"
            )
        else:
            decisions[purpose] = Decision(
                True, "tcf", f"(purposes {', '.join(map(str, needed))})"
            )
    return decisions, tc.vendor_consents


def resolve(
    signals: ConsentSignals, country: str | None, policy: ConsentPolicy
) -> Consent:
    """Decide every purpose from the signals, in the precedence the module docstring gives.

    Never raises for bad signals: an unusable TC string is listed in
    :attr:`Consent.problems` and treated as absent.
    """
    problems: list[str] = []
    tcf, vendors = _tcf_decisions(signals, problems)
    defaults, where = policy.default(country)
    gpc = signals.gpc and policy.gpc != "ignore"
    decisions: dict[str, Decision] = {}
    for purpose in PURPOSES:
        decision: Decision | None = None
        if purpose in signals.collector:
            decision = Decision(bool(signals.collector[purpose]), "collector")
        elif purpose in signals.google:
            decision = Decision(bool(signals.google[purpose]), "google")
        elif purpose in tcf:
            decision = tcf[purpose]
        elif gpc and policy.gpc == "fallback" and purpose in GPC_PURPOSES:
            decision = Decision(False, "gpc")
        if decision is None:
            decision = Decision(defaults[purpose], "default", where)
        if (
            gpc
            and policy.gpc == "veto"
            and purpose in GPC_PURPOSES
            and decision.granted
        ):
            was = _SOURCE_TEXT[decision.source] + (
                f" {decision.why}" if decision.why else ""
            )
            decision = Decision(False, "gpc", f"(over a grant {was})")
        decisions[purpose] = decision
    return Consent(decisions, vendors, tuple(problems))


def gate(
    required: Sequence[str], consent: Consent, tcf_vendor: int | None = None
) -> str | None:
    """None when ``consent`` allows every purpose in ``required``, else why not.

    ``required`` holds purposes (and may hold ``storage``). ``tcf_vendor``, a
    destination's IAB GVL vendor ID (e.g. :data:`GOOGLE_GVL_ID`), must also
    have vendor consent whenever a valid TC string applies to the visitor;
    without a TC string, TCF is not in play and only the purposes count. The
    reason reads ``"consent: ads denied by GPC; analytics denied by default for SE"``.
    """
    refused = [consent.reason(p) for p in required if not consent.granted(p)]
    if (
        tcf_vendor is not None
        and consent.tcf_vendors is not None
        and tcf_vendor not in consent.tcf_vendors
    ):
        refused.append(f"TCF vendor {tcf_vendor} has no consent in the TC string")
    return "consent: " + "; ".join(refused) if refused else None


def decide_consent(events: Sequence[Event], policy: ConsentPolicy) -> None:
    """Events that carry their own signals (server events, imports, ``tagrelay try``).

    Each event's ``context.consent`` counts as the site's consent call; the
    regional default fills in what it leaves open. The decision is stored on
    the event's context, as the collection endpoint stores a hit's.
    """
    for event in events:
        ctx = event.context
        consent = resolve(ConsentSignals(collector=dict(ctx.consent)), ctx.geo.country if ctx.geo else None, policy)
        ctx.consent, ctx.consent_state = consent.as_dict(), consent
