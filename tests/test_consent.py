"""Consent: signals, precedence, region defaults, TCF decoding and the gate.

TC strings with known decodings come from tests/data/tcf (see its README);
their expected values are the sources'. Strings for TCF v2.2/v2.3 policy rules
are built here field by field from the spec's core-string table (field name,
width), the way the IAB's own Java tests build publisher restrictions.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxy.consent as consent_module
from proxy.consent import (
    EEA,
    GOOGLE_GVL_ID,
    Consent,
    ConsentPolicy,
    ConsentSignals,
    PolicyError,
    TCStringError,
    decode_tc_string,
    from_consent_mode,
    gate,
    gpc_from_headers,
    resolve,
)

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "tcf" / "vectors.json").read_text("utf-8")
)
JAVA = VECTORS["iabtcf_java"]
PY = VECTORS["iab_tcf_python"]
POLICY = ConsentPolicy.parse("EEA,GB,CH:denied;*:granted")
ALL = {"analytics": True, "ads": True, "ad_personalization": True, "ad_user_data": True}


# -- building TC strings from the spec's field table ------------------------


def _n(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def _flags(ids, width: int) -> str:
    return "".join("1" if i in ids else "0" for i in range(1, width + 1))


def _letters(text: str) -> str:
    return "".join(_n(ord(c) - ord("A"), 6) for c in text)


def _b64(bits: str) -> str:
    bits += "0" * (-len(bits) % 8)
    return (
        base64.urlsafe_b64encode(int(bits, 2).to_bytes(len(bits) // 8, "big"))
        .decode()
        .rstrip("=")
    )


def _vendors_bitfield(ids) -> str:
    top = max(ids, default=0)
    return _n(top, 16) + "0" + _flags(ids, top)


def tc_string(
    *,
    purposes=(),
    legitimate_interests=(),
    vendors=(),
    policy_version=4,
    created=datetime(2025, 6, 1, tzinfo=UTC),
    purpose_one_treatment=False,
    vendor_section: str | None = None,
    disclosed_vendors=None,
) -> str:
    """A TC string with these values, encoded per the spec's "The Core String" table."""
    ds = int(created.timestamp() * 10)
    bits = (
        _n(2, 6)  # Version
        + _n(ds, 36)  # Created
        + _n(ds, 36)  # LastUpdated
        + _n(300, 12)  # CmpId
        + _n(5, 12)  # CmpVersion
        + _n(1, 6)  # ConsentScreen
        + _letters("DE")  # ConsentLanguage
        + _n(140, 12)  # VendorListVersion
        + _n(policy_version, 6)  # TcfPolicyVersion
        + "1"  # IsServiceSpecific
        + "0"  # UseNonStandardTexts
        + _flags((), 12)  # SpecialFeatureOptIns
        + _flags(purposes, 24)  # PurposesConsent
        + _flags(legitimate_interests, 24)  # PurposesLITransparency
        + ("1" if purpose_one_treatment else "0")  # PurposeOneTreatment
        + _letters("DE")  # PublisherCC
        + (vendor_section if vendor_section is not None else _vendors_bitfield(vendors))
        + _vendors_bitfield(())  # vendor legitimate interests
        + _n(0, 12)  # NumPubRestrictions
    )
    text = _b64(bits)
    if disclosed_vendors is not None:
        text += "." + _b64(
            _n(1, 3) + _vendors_bitfield(disclosed_vendors)
        )  # SegmentType 1
    return text


def _signals(**kw) -> ConsentSignals:
    return ConsentSignals(**kw)


# -- purposes, Consent Mode keys, storage -----------------------------------


def test_consent_mode_keys_map_to_our_purposes():
    """ad_storage is ads, analytics_storage analytics, the two ad_ keys keep their names."""
    states = {
        "ad_storage": "denied",
        "analytics_storage": "granted",
        "ad_user_data": "GRANTED",
        "ad_personalization": "denied",
    }

    assert from_consent_mode(states) == {
        "ads": False,
        "analytics": True,
        "ad_user_data": True,
        "ad_personalization": False,
    }


def test_consent_mode_skips_other_keys_and_unreadable_values():
    """Keys that gate nothing (functionality_storage) and values other than granted/denied are no signal."""
    states = {
        "functionality_storage": "granted",
        "ad_storage": "maybe",
        "analytics_storage": True,
    }

    assert from_consent_mode(states) == {"analytics": True}


@pytest.mark.parametrize(
    ("ads", "analytics", "storage"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_storage_is_allowed_when_ads_or_analytics_is(ads, analytics, storage):
    """tagrelay may keep identifier cookies exactly when ads or analytics is granted."""
    c = resolve(
        _signals(collector={**ALL, "ads": ads, "analytics": analytics}), "US", POLICY
    )

    assert c.storage is storage
    assert c.granted("storage") is storage


def test_as_dict_lists_every_purpose():
    """as_dict gives Context.consent a value for all four purposes."""
    c = resolve(_signals(collector={"ads": False}), "US", POLICY)

    assert c.as_dict() == {
        "analytics": True,
        "ads": False,
        "ad_personalization": True,
        "ad_user_data": True,
    }


def test_google_fields_are_the_measurement_protocol_consent_object():
    """GA4 MP consent carries ad_user_data and ad_personalization as GRANTED or DENIED."""
    c = resolve(
        _signals(collector={"ad_user_data": True, "ad_personalization": False}),
        "US",
        POLICY,
    )

    assert c.google_fields() == {
        "ad_user_data": "GRANTED",
        "ad_personalization": "DENIED",
    }


# -- Sec-GPC ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{"Sec-GPC": "1"}, {"sec-gpc": "1"}, {"Sec-GPC": " 1 "}]
)
def test_sec_gpc_1_is_a_gpc_signal(headers):
    """The GPC spec's only value, 1, means the visitor opts out of sale and sharing."""
    assert gpc_from_headers(headers) is True


@pytest.mark.parametrize(
    "headers", [{}, {"Sec-GPC": "0"}, {"Sec-GPC": ""}, {"Sec-GPC": "true"}]
)
def test_other_sec_gpc_values_are_no_signal(headers):
    """Without Sec-GPC: 1 the visitor stated nothing."""
    assert gpc_from_headers(headers) is False


def test_gpc_denies_the_ad_purposes_and_leaves_analytics():
    """GPC opts out of sharing with third parties: ads, ad_user_data, ad_personalization; not first-party analytics."""
    c = resolve(_signals(gpc=True), "US", POLICY)

    assert c.as_dict() == {
        "analytics": True,
        "ads": False,
        "ad_personalization": False,
        "ad_user_data": False,
    }
    assert c.reason("ads") == "ads denied by GPC (over a grant by default for US)"
    assert c.reason("analytics") == "analytics granted by default for US"


def test_gpc_veto_overrides_an_explicit_grant():
    """By default GPC wins over a consent call's grant, which may be only the page's default."""
    c = resolve(_signals(collector=ALL, gpc=True), "US", POLICY)

    assert c.granted("ads") is False
    assert c.reason("ads") == "ads denied by GPC (over a grant by the consent call)"


def test_gpc_fallback_yields_to_an_explicit_grant_but_beats_the_default():
    """With gpc=fallback GPC ranks after the signals and before the region default."""
    policy = ConsentPolicy.parse("*:granted", gpc="fallback")

    explicit = resolve(_signals(collector={"ads": True}, gpc=True), "US", policy)

    assert explicit.reason("ads") == "ads granted by the consent call"
    assert explicit.reason("ad_user_data") == "ad_user_data denied by GPC"


def test_gpc_ignore_turns_gpc_off():
    """With gpc=ignore the header changes nothing."""
    c = resolve(
        _signals(gpc=True), "US", ConsentPolicy.parse("*:granted", gpc="ignore")
    )

    assert c.as_dict() == ALL


def test_gpc_never_grants():
    """GPC on a visitor whose default is denied leaves every purpose denied by the default."""
    c = resolve(_signals(gpc=True), "SE", POLICY)

    assert not any(c.as_dict().values())
    assert c.reason("ads") == "ads denied by default for SE"


# -- precedence -------------------------------------------------------------


def test_consent_call_beats_google_consent_mode():
    """The site's own consent call outranks gcs/gcd for the same purpose."""
    c = resolve(_signals(collector={"ads": True}, google={"ads": False}), "SE", POLICY)

    assert c.reason("ads") == "ads granted by the consent call"


def test_google_consent_mode_beats_tcf():
    """gcs/gcd outrank a TC string for the same purpose."""
    tc = tc_string(purposes=range(1, 12))

    c = resolve(_signals(google={"analytics": False}, tcf=tc), "SE", POLICY)

    assert c.reason("analytics") == "analytics denied by Google consent mode"
    assert c.reason("ads") == "ads granted by TCF (purposes 1, 7)"


def test_tcf_beats_the_region_default():
    """A TC string decides where the page sent no consent call or Consent Mode."""
    c = resolve(_signals(tcf=tc_string(purposes=(1, 8, 9))), "SE", POLICY)

    assert c.reason("analytics") == "analytics granted by TCF (purposes 1, 8, 9)"


def test_each_purpose_falls_through_on_its_own():
    """A consent call naming only ads leaves the other purposes to later sources."""
    c = resolve(
        _signals(collector={"ads": True}, google={"analytics": True}), "SE", POLICY
    )

    assert c.reason("ads") == "ads granted by the consent call"
    assert c.reason("analytics") == "analytics granted by Google consent mode"
    assert c.reason("ad_user_data") == "ad_user_data denied by default for SE"


# -- region defaults --------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "granted", "reason"),
    [
        ("SE", False, "analytics denied by default for SE"),
        ("US", True, "analytics granted by default for US"),
        ("GB", False, "analytics denied by default for GB"),
        ("CH", False, "analytics denied by default for CH"),
        ("NO", False, "analytics denied by default for NO"),
        ("se", False, "analytics denied by default for SE"),
        (None, False, "analytics denied by default (no geo)"),
        ("", False, "analytics denied by default (no geo)"),
    ],
)
def test_default_policy_by_region(country, granted, reason):
    """Without signals: denied in the EEA, UK and Switzerland, granted elsewhere, denied with no geo."""
    c = resolve(ConsentSignals(), country, POLICY)

    assert c.granted("analytics") is granted
    assert c.reason("analytics") == reason


def test_eea_is_the_eu_plus_iceland_liechtenstein_norway():
    """EEA holds the 27 EU states (ISO codes, Greece GR) and IS, LI, NO; not GB or CH."""
    eu = {
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
    }

    assert len(eu) == 27
    assert eu | {"IS", "LI", "NO"} <= EEA
    assert not {"GB", "CH", "US"} & EEA


def test_eu_outermost_regions_count_as_eea():
    """French outermost regions and Åland, which geo reports under their own codes, are EU territory."""
    assert {"GF", "GP", "MQ", "RE", "YT", "MF", "AX"} <= EEA


def test_a_country_named_directly_beats_its_group():
    """SE:granted overrides EEA:denied for Sweden only."""
    policy = ConsentPolicy.parse("EEA:denied; SE:granted; *:granted")

    assert resolve(ConsentSignals(), "SE", policy).granted("ads") is True
    assert resolve(ConsentSignals(), "DE", policy).granted("ads") is False


def test_per_purpose_defaults():
    """A rule may grant some purposes and deny others."""
    policy = ConsentPolicy.parse("US:granted ad_personalization=denied; *:denied")

    c = resolve(ConsentSignals(), "US", policy)

    assert c.as_dict() == {
        "analytics": True,
        "ads": True,
        "ad_personalization": False,
        "ad_user_data": True,
    }


def test_no_geo_fallback_is_configurable():
    """A ? rule sets what a visitor geo cannot place gets."""
    policy = ConsentPolicy.parse("EEA:denied; *:granted; ?:granted")

    assert (
        resolve(ConsentSignals(), None, policy).reason("ads")
        == "ads granted by default (no geo)"
    )


def test_without_star_unlisted_countries_get_the_strictest_default():
    """A country no rule names gets, per purpose, the strictest state any rule gives."""
    policy = ConsentPolicy.parse("EEA:denied; US:granted")

    assert resolve(ConsentSignals(), "JP", policy).granted("analytics") is False


def test_a_policy_granting_everywhere_grants_without_geo():
    """When no rule denies, a visitor without geo is granted too: no region would deny."""
    policy = ConsentPolicy.parse("*:granted")

    assert resolve(ConsentSignals(), None, policy).as_dict() == ALL


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("EEA", "no ':'"),
        ("EEA:", "no state"),
        ("EEA:maybe", "'maybe' is not purpose=granted"),
        ("XX:denied", "'XX' is not an ISO 3166-1 alpha-2"),
        ("UK:denied", "the United Kingdom is GB"),
        ("SE:denied;SE:granted", "SE is already in rule"),
        (
            "*:ads=denied",
            "says nothing for analytics, ad_personalization, ad_user_data",
        ),
        ("*:granted cookies=denied", "unknown purpose 'cookies'"),
        ("*:granted ads=yes", "'ads=yes' is not purpose=granted"),
    ],
)
def test_policy_syntax_errors_name_the_rule_and_the_reason(text, fragment):
    """A policy that cannot be read is refused with the part and why."""
    with pytest.raises(PolicyError, match="consent policy") as info:
        ConsentPolicy.parse(text)

    assert fragment in str(info.value)


def test_policy_reports_every_problem_at_once():
    """Two bad rules give one error naming both."""
    with pytest.raises(PolicyError) as info:
        ConsentPolicy.parse("XX:denied; UK:granted; *:granted")

    assert "'XX'" in str(info.value) and "United Kingdom is GB" in str(info.value)


def test_policy_refuses_an_unknown_gpc_mode():
    """gpc must be veto, fallback or ignore."""
    with pytest.raises(PolicyError, match="gpc 'sometimes'"):
        ConsentPolicy.parse("*:granted", gpc="sometimes")


# -- TC string decoding: IAB and library test vectors -----------------------


def test_decodes_every_core_field():
    """The IAB decoder test string reads as the IAB test says, field by field."""
    v = JAVA["all_core_fields"]

    tc = decode_tc_string(v["tc"])

    assert tc.version == v["version"]
    assert tc.created == datetime.fromisoformat(v["created"])
    assert tc.last_updated == datetime.fromisoformat(v["last_updated"])
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (
        v["cmp_id"],
        v["cmp_version"],
        v["consent_screen"],
    )
    assert tc.vendor_list_version == v["vendor_list_version"]
    assert tc.policy_version == v["policy_version"]
    assert tc.consent_language == v["consent_language"]
    assert tc.publisher_cc == v["publisher_cc"]
    assert tc.is_service_specific is v["is_service_specific"]
    assert tc.purpose_one_treatment is v["purpose_one_treatment"]
    assert tc.use_non_standard_texts is v["use_non_standard_stacks"]
    assert tc.special_feature_optins == set(v["special_feature_optins"])
    assert tc.purpose_consents == set(v["purpose_consents"])
    assert tc.purpose_legitimate_interests == set(v["purpose_legitimate_interests"])


def test_decodes_bit_field_vendor_sections():
    """Bit-field vendor consents and legitimate interests match the IAB test."""
    v = JAVA["bit_fields"]

    tc = decode_tc_string(v["tc"])

    assert tc.purpose_consents == set(v["purpose_consents"])
    assert list(tc.vendor_consents) == v["vendor_consents"]
    assert list(tc.vendor_legitimate_interests) == v["vendor_legitimate_interests"]


@pytest.mark.parametrize("name", ["range_two_entries", "range_one_entry"])
def test_decodes_range_encoded_vendor_consents(name):
    """Range-encoded vendor consents match the IAB test."""
    v = JAVA[name]

    assert list(decode_tc_string(v["tc"]).vendor_consents) == v["vendor_consents"]


def test_decodes_range_encoded_legitimate_interests():
    """A range-encoded vendor legitimate-interest section matches the IAB test."""
    v = JAVA["range_legitimate_interests"]

    assert (
        list(decode_tc_string(v["tc"]).vendor_legitimate_interests)
        == v["vendor_legitimate_interests"]
    )


def test_purpose_consents_of_the_iab_purposes_test():
    """The IAB purposes test string consents to purposes 1 and 2."""
    v = JAVA["purposes_consent"]

    assert (
        set(v["purpose_consents_include"]) <= decode_tc_string(v["tc"]).purpose_consents
    )


def test_other_segments_are_identified_and_leave_the_core_alone():
    """Disclosed vendors, allowed vendors and publisher TC segments are named by type; the core reads the same."""
    tc = decode_tc_string(JAVA["all_parts"]["tc"])

    assert tc.other_segments == (1, 2, 3)
    assert list(tc.vendor_consents) == JAVA["bit_fields"]["vendor_consents"]


def _seconds(when: datetime) -> str:
    return when.replace(microsecond=0, tzinfo=None).isoformat()


@pytest.mark.parametrize("name", ["consent_a", "consent_b"])
def test_decodes_the_iab_tcf_library_fixtures(name):
    """gguridi/iab-tcf's fixtures read as the fixtures say (times to the second, as recorded)."""
    v = PY[name]

    tc = decode_tc_string(v["tc"])

    assert _seconds(tc.created) == v["created"]
    assert _seconds(tc.last_updated) == v["last_updated"]
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (
        v["cmp_id"],
        v["cmp_version"],
        v["consent_screen"],
    )
    assert (tc.consent_language, tc.publisher_cc) == (
        v["consent_language"],
        v["publisher_cc"],
    )
    assert (tc.vendor_list_version, tc.policy_version) == (
        v["vendor_list_version"],
        v["policy_version"],
    )
    assert tc.is_service_specific is v["is_service_specific"]
    assert tc.use_non_standard_texts is v["use_non_standard_stacks"]
    assert tc.purpose_one_treatment is v["purpose_one_treatment"]
    assert tc.special_feature_optins == set(v["special_feature_optins"])
    assert tc.purpose_consents == set(v["purpose_consents"])
    assert tc.purpose_legitimate_interests == set(v["purpose_legitimate_interests"])
    assert tc.vendor_consents.max_vendor_id == v["max_vendor_id"]
    assert (
        tc.vendor_legitimate_interests.max_vendor_id
        == v["max_vendor_legitimate_interests_id"]
    )


def test_decodes_a_full_vendor_list():
    """consent_b's 250 vendor consents and 103 legitimate interests come out exactly."""
    v = PY["consent_b"]

    tc = decode_tc_string(v["tc"])

    assert list(tc.vendor_consents) == v["vendor_consents"]
    assert list(tc.vendor_legitimate_interests) == v["vendor_legitimate_interests"]
    assert tc.publisher_restrictions == ()


def test_decodes_vendor_lists_and_publisher_restrictions():
    """consent_a's vendor lists start and end as recorded and its publisher restrictions are there."""
    v = PY["consent_a"]

    tc = decode_tc_string(v["tc"])
    consents, interests = list(tc.vendor_consents), list(tc.vendor_legitimate_interests)
    restrictions = {
        (r.purpose, r.restriction, vendor)
        for r in tc.publisher_restrictions
        for vendor in r.vendors
    }

    assert consents[:20] == v["vendor_consents_first"]
    assert consents[-7:] == v["vendor_consents_last"]
    assert interests[:10] == v["vendor_legitimate_interests_first"]
    assert interests[-6:] == v["vendor_legitimate_interests_last"]
    assert {tuple(r) for r in v["publisher_restrictions_include"]} <= restrictions


def test_decodes_a_tcf_v2_2_string():
    """A policy-version-4 string (TCF v2.2) decodes with the values it was built from."""
    tc = decode_tc_string(
        tc_string(purposes=(1, 2, 7, 11), legitimate_interests=(2, 7), vendors=(2, 755))
    )

    assert tc.policy_version == 4
    assert tc.created == datetime(2025, 6, 1, tzinfo=UTC)
    assert (tc.cmp_id, tc.cmp_version, tc.vendor_list_version) == (300, 5, 140)
    assert (tc.consent_language, tc.publisher_cc) == ("DE", "DE")
    assert tc.is_service_specific is True
    assert tc.purpose_consents == {1, 2, 7, 11}
    assert tc.purpose_legitimate_interests == {2, 7}
    assert list(tc.vendor_consents) == [2, 755]


def test_vendor_ranges_are_not_expanded():
    """One range entry of 65535 vendors answers membership without building a set of them."""
    section = _n(65535, 16) + "1" + _n(1, 12) + "1" + _n(1, 16) + _n(65535, 16)

    vendors = decode_tc_string(tc_string(vendor_section=section)).vendor_consents

    assert vendors.ranges == ((1, 65535),)
    assert len(vendors) == 65535
    assert 755 in vendors and 0 not in vendors and "755" not in vendors


def test_tcf_v1_strings_are_refused():
    """The spec's example strings are encoding version 1, which a v2 decoder refuses by name."""
    for text in (
        VECTORS["iab_spec"]["v1_global"],
        VECTORS["iab_spec"]["v1_service_specific"],
    ):
        with pytest.raises(TCStringError, match="Version is 1"):
            decode_tc_string(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "core segment is empty"),
        ("CO+ybn4P", "'+' is not a web-safe base64 character"),
        ("COtyb", "5 characters cannot be base64"),
        ("COty=bn4", "'=' padding inside the segment"),
        (
            "COtybn4PA_zT4KjACBENAPCI",
            "core segment: ends at bit 144, SpecialFeatureOptIns needs bits 140-151",
        ),
        ("A" * 40_000, "at most 32768"),
        (tc_string()[:-8], "ends at bit"),
        (tc_string() + ".", "segment 2 is empty"),
    ],
)
def test_malformed_tc_strings_raise_a_clear_error(text, fragment):
    """A string that is not a TC string fails with TCStringError saying where."""
    with pytest.raises(TCStringError) as info:
        decode_tc_string(text)

    assert fragment in str(info.value)


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_tc_string_error(text):
    """Arbitrary input never escapes as anything but TCStringError."""
    try:
        decode_tc_string(text)
    except TCStringError:
        pass


@given(
    st.binary(max_size=400), st.lists(st.binary(min_size=1, max_size=40), max_size=3)
)
def test_any_bytes_after_a_v2_header_decode_or_raise_tc_string_error(body, segments):
    """Random bit patterns behind a valid version field reach deep into the decoder and fail cleanly."""
    core = base64.urlsafe_b64encode(bytes([0b00001000]) + body).decode().rstrip("=")
    text = ".".join(
        [core] + [base64.urlsafe_b64encode(s).decode().rstrip("=") for s in segments]
    )
    try:
        decode_tc_string(text)
    except TCStringError:
        pass
    consent = resolve(ConsentSignals(tcf=text), "DE", POLICY)
    assert set(consent.as_dict()) == set(ALL)


def test_a_descending_vendor_range_is_refused():
    """A range entry whose end precedes its start is an error, not a silent empty range."""
    section = _n(800, 16) + "1" + _n(1, 12) + "1" + _n(700, 16) + _n(600, 16)

    with pytest.raises(TCStringError, match="VendorConsents entry 1 is 700-600"):
        decode_tc_string(tc_string(vendor_section=section))


def test_a_vendor_range_beyond_max_vendor_id_is_refused():
    """A range past MaxVendorId contradicts the section header."""
    section = _n(10, 16) + "1" + _n(1, 12) + "0" + _n(11, 16)

    with pytest.raises(TCStringError, match="within 1-10"):
        decode_tc_string(tc_string(vendor_section=section))


def test_a_letter_beyond_z_is_refused():
    """ConsentLanguage letters are 0-25; a larger value is named."""
    bits = (
        _n(2, 6)
        + _n(0, 36) * 2
        + _n(0, 12) * 2
        + _n(0, 6)
        + _n(26, 6)
        + _n(0, 6)
        + "0" * 200
    )

    with pytest.raises(TCStringError, match="ConsentLanguage letter value 26"):
        decode_tc_string(_b64(bits))


# -- TCF purposes to ours ---------------------------------------------------


def test_tcf_accept_all_grants_every_purpose():
    """Consent to all eleven TCF v2.2 purposes grants all four of ours."""
    c = resolve(_signals(tcf=tc_string(purposes=range(1, 12))), "SE", POLICY)

    assert c.as_dict() == ALL
    assert {d.source for d in c.decisions.values()} == {"tcf"}


def test_tcf_reject_all_denies_every_purpose():
    """A TC string without purpose consents denies all four, naming the missing purposes."""
    c = resolve(_signals(tcf=tc_string()), "US", POLICY)

    assert not any(c.as_dict().values())
    assert c.reason("ads") == "ads denied by TCF (no consent for purpose 1, 7)"
    assert (
        c.reason("ad_personalization")
        == "ad_personalization denied by TCF (no consent for purpose 3, 4)"
    )


@pytest.mark.parametrize(
    ("purposes", "expected"),
    [
        # Google's TCF mapping: 1 and 7 for ad_user_data, 3 and 4 for ad_personalization.
        (
            (1, 7),
            {
                "ads": True,
                "ad_user_data": True,
                "analytics": False,
                "ad_personalization": False,
            },
        ),
        (
            (3, 4),
            {
                "ads": False,
                "ad_user_data": False,
                "analytics": False,
                "ad_personalization": True,
            },
        ),
        (
            (1, 3),
            {
                "ads": False,
                "ad_user_data": False,
                "analytics": False,
                "ad_personalization": False,
            },
        ),
        (
            (1, 8, 9),
            {
                "ads": False,
                "ad_user_data": False,
                "analytics": True,
                "ad_personalization": False,
            },
        ),
        (
            (1, 8, 10),
            {
                "ads": False,
                "ad_user_data": False,
                "analytics": False,
                "ad_personalization": False,
            },
        ),
    ],
)
def test_tcf_purposes_map_to_ours(purposes, expected):
    """Each of our purposes needs consent to every TCF purpose TCF_PURPOSES lists for it."""
    c = resolve(_signals(tcf=tc_string(purposes=purposes)), "SE", POLICY)

    assert c.as_dict() == expected


def test_tcf_legitimate_interest_does_not_open_the_gate():
    """Legitimate-interest bits are decoded but only consent bits grant a purpose."""
    c = resolve(
        _signals(tcf=tc_string(purposes=(1,), legitimate_interests=(2, 7, 8, 9, 10))),
        "US",
        POLICY,
    )

    assert c.granted("ads") is False
    assert c.granted("analytics") is False


def test_purpose_one_treatment_takes_purpose_1_out_of_the_decision():
    """When purpose 1 was not disclosed (PurposeOneTreatment), its bit neither grants nor denies."""
    c = resolve(
        _signals(tcf=tc_string(purposes=(7,), purpose_one_treatment=True)), "SE", POLICY
    )

    assert c.reason("ads") == "ads granted by TCF (purposes 7)"


def test_a_tc_string_does_not_count_where_gdpr_does_not_apply():
    """gdpr=0 beside the TC string leaves the decision to the region default."""
    c = resolve(_signals(tcf=tc_string(), gdpr_applies=False), "US", POLICY)

    assert c.as_dict() == ALL
    assert c.tcf_vendors is None


def test_a_bad_tc_string_is_a_problem_not_an_exception():
    """An undecodable TC string is recorded and ignored; the default decides."""
    c = resolve(_signals(tcf="not a tc string"), "SE", POLICY)

    assert c.reason("ads") == "ads denied by default for SE"
    assert c.problems == (
        "TC string ignored: TC string core segment: ' ' is not a web-safe base64 character",
    )


def test_policy_version_below_4_after_september_2023_is_invalid():
    """The spec deems a string created after 2023-09-30 with policy version under 4 invalid."""
    tc = tc_string(
        purposes=range(1, 12),
        policy_version=2,
        created=datetime(2024, 1, 5, tzinfo=UTC),
    )

    c = resolve(_signals(tcf=tc), "SE", POLICY)

    assert c.granted("ads") is False
    assert c.problems and "policy version 2" in c.problems[0]


def test_an_older_policy_version_string_created_before_the_cutoff_counts():
    """consent_b (policy version 2, created 2020) still decides: the v2.2 rule covers later strings."""
    c = resolve(_signals(tcf=PY["consent_b"]["tc"]), "SE", POLICY)

    assert c.as_dict() == ALL
    assert c.problems == ()


def test_a_v2_3_string_without_disclosed_vendors_is_invalid_after_february_2026():
    """TCF v2.3: strings created after 2026-02-28 need the disclosed vendors segment."""
    created = datetime(2026, 6, 1, tzinfo=UTC)

    without = resolve(
        _signals(
            tcf=tc_string(purposes=range(1, 12), policy_version=5, created=created)
        ),
        "SE",
        POLICY,
    )
    with_dv = resolve(
        _signals(
            tcf=tc_string(
                purposes=range(1, 12),
                policy_version=5,
                created=created,
                disclosed_vendors=(755,),
            )
        ),
        "SE",
        POLICY,
    )

    assert without.granted("ads") is False
    assert "no disclosed vendors segment" in without.problems[0]
    assert with_dv.as_dict() == ALL


# -- the gate ---------------------------------------------------------------


def test_gate_lets_an_event_through_when_every_purpose_is_granted():
    """No reason means the destination gets the event."""
    c = resolve(_signals(collector=ALL), "SE", POLICY)

    assert gate(["ads", "ad_user_data"], c) is None


def test_gate_reason_names_each_refused_purpose_and_its_source():
    """The ledger line says which purposes were missing and what decided each."""
    c = resolve(_signals(collector={"analytics": True}, gpc=True), "US", POLICY)

    assert gate(["analytics", "ads", "ad_user_data"], c) == (
        "consent: ads denied by GPC (over a grant by default for US); "
        "ad_user_data denied by GPC (over a grant by default for US)"
    )


def test_gate_with_no_requirements_always_allows():
    """A destination that declares no purposes is not gated."""
    c = resolve(ConsentSignals(), None, POLICY)

    assert gate([], c) is None


def test_gate_refuses_an_unknown_purpose():
    """A purpose the model does not know is refused, not waved through."""
    c = resolve(_signals(collector=ALL), "US", POLICY)

    assert gate(["marketing"], c) == (
        "consent: marketing denied: not a consent purpose "
        "(known: analytics, ads, ad_personalization, ad_user_data, storage)"
    )


def test_gate_on_storage():
    """A destination may require storage: it passes when ads or analytics is granted."""
    denied = resolve(
        _signals(collector={"ads": False, "analytics": False}), "US", POLICY
    )
    granted = resolve(
        _signals(collector={"ads": False, "analytics": True}), "US", POLICY
    )

    assert (
        gate(["storage"], denied)
        == "consent: storage denied (ads denied, analytics denied)"
    )
    assert gate(["storage"], granted) is None


def test_gate_refuses_a_tcf_vendor_without_vendor_consent():
    """Under a TC string, a destination's GVL vendor needs vendor consent as well as the purposes."""
    tc = tc_string(purposes=range(1, 12), vendors=(2, 25))

    c = resolve(_signals(tcf=tc), "SE", POLICY)

    assert (
        gate(["ads"], c, tcf_vendor=GOOGLE_GVL_ID)
        == "consent: TCF vendor 755 has no consent in the TC string"
    )
    assert gate(["ads"], c, tcf_vendor=25) is None


def test_gate_allows_a_tcf_vendor_with_vendor_consent():
    """Google (GVL 755) with vendor consent and purpose consent passes."""
    c = resolve(
        _signals(tcf=tc_string(purposes=range(1, 12), vendors=(GOOGLE_GVL_ID,))),
        "SE",
        POLICY,
    )

    assert gate(["ads", "ad_user_data"], c, tcf_vendor=GOOGLE_GVL_ID) is None


def test_gate_ignores_the_tcf_vendor_without_a_tc_string():
    """Where no TC string came, TCF is not in play and only purposes count."""
    c = resolve(_signals(collector=ALL), "SE", POLICY)

    assert gate(["ads"], c, tcf_vendor=GOOGLE_GVL_ID) is None


def test_consent_is_a_plain_value():
    """Consent built by hand gates like a resolved one (for callers and other tests)."""
    c = Consent({})

    assert c.granted("ads") is False and c.storage is False


def test_public_names_exist():
    """Everything __all__ lists is defined."""
    assert all(hasattr(consent_module, name) for name in consent_module.__all__)
