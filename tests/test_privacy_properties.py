"""Properties of the PII normalisers in proxy.privacy, for any input (hypothesis).

The vector tests (``test_privacy.py``, ``test_snapchat.py``, ``test_tiktok.py``)
pin single cases to the vendors' own values; these tests state what must hold
for every input: normalising twice is normalising once, what leaves is 64
lowercase hex, a SHA-256 digest passes untouched, the case and surrounding
white space of an e-mail address change nothing, every way of writing one
phone number hashes alike, and no input makes a normaliser raise.

Phone numbers come from libphonenumber's own example numbers for every
region it knows, with their last digits varied and kept only when still
valid, written in libphonenumber's E.164, international, RFC 3966 and
national formats.
"""

from __future__ import annotations

import re
import string
from datetime import date

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from proxy.model import UserData
from proxy.privacy import (
    META_FIELDS,
    SNAP_FIELDS,
    google_user_data,
    hash_meta,
    hash_snap,
    meta_user_data,
    normalize_meta,
    normalize_snap,
    snap_user_data,
    tiktok_user,
)

# Derandomised so that CI runs the same examples every time; no deadline,
# because these tests state behaviour, not speed; no example database kept
# in the working tree.
# Samples are generic text for every field, so assume() filters many out for
# strict fields such as emails; that is by design, not slowness.
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)

TODAY = date(2026, 6, 1)  # fixes the birth-date year bound
HEX64 = re.compile(r"[0-9a-f]{64}")
# White space both JavaScript's trim() (Meta's Parameter Builder) and the
# vendors' SDKs remove around a value.
SPACE = st.text(alphabet=" \t\n\r\u00a0", max_size=3)

# Snap's legacy v2 "soundex" is a code, not a normal form ("A123" read again
# is "A000"), and it never takes digests: it is left out where those matter.
SNAP_NORMAL_FORMS = sorted(SNAP_FIELDS - {"soundex"})

# --------------------------------------------------------------------------
# Strategies

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)


@st.composite
def emails(draw: st.DrawFn) -> str:
    """Addresses Meta's Parameter Builder accepts: dot-atom local part, dotted host, letters TLD."""
    atoms = draw(
        st.lists(
            st.text(alphabet=_ATEXT, min_size=1, max_size=10), min_size=1, max_size=3
        )
    )
    labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
    tld = draw(st.text(alphabet=string.ascii_letters, min_size=2, max_size=6))
    return ".".join(atoms) + "@" + ".".join(labels) + "." + tld


@st.composite
def case_variants(draw: st.DrawFn, text: str) -> str:
    """``text`` with each letter's case flipped or not."""
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(
        ch.swapcase() if flip else ch for ch, flip in zip(text, flips, strict=True)
    )


_REGIONS = sorted(
    r
    for r in phonenumbers.SUPPORTED_REGIONS
    if phonenumbers.example_number_for_type(r, PhoneNumberType.MOBILE) is not None
)


@st.composite
def phone_numbers(draw: st.DrawFn) -> tuple[str, phonenumbers.PhoneNumber]:
    """(region, a valid mobile or fixed-line number of that region)."""
    region = draw(st.sampled_from(_REGIONS))
    kind = draw(st.sampled_from([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    national = str(example.national_number)
    tail = draw(st.text(alphabet=string.digits, min_size=2, max_size=2))
    number = phonenumbers.PhoneNumber(
        country_code=example.country_code,
        national_number=int(national[:-2] + tail),
        italian_leading_zero=example.italian_leading_zero,
        number_of_leading_zeros=example.number_of_leading_zeros,
    )
    assume(phonenumbers.is_valid_number_for_region(number, region))
    return region, number


def international_forms(number: phonenumbers.PhoneNumber) -> list[str]:
    """Ways to write ``number`` with "+" and its country code."""
    spaced = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    return [
        phonenumbers.format_number(number, PhoneNumberFormat.E164),
        spaced,
        spaced.replace(" ", "-"),
        spaced.replace(" ", "."),
        phonenumbers.format_number(number, PhoneNumberFormat.RFC3966).removeprefix(
            "tel:"
        ),
    ]


def double_zero_form(number: phonenumbers.PhoneNumber) -> str:
    """The number with "00", the ITU international prefix, in place of "+"."""
    return "00" + phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]


def national_form(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)


ANYTHING = st.one_of(
    st.text(max_size=200),
    st.none(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
DIGESTS = st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)
# Inputs that reach each field's accepting paths, not only its refusals.
META_SAMPLES = st.one_of(
    st.text(max_size=80),
    emails(),
    phone_numbers().map(
        lambda p: phonenumbers.format_number(p[1], PhoneNumberFormat.INTERNATIONAL)
    ),
    st.dates(min_value=date(1900, 1, 1), max_value=TODAY).map(
        lambda d: d.strftime("%m/%d/%Y")
    ),
    st.sampled_from(
        [
            "Male",
            " f ",
            "woman",
            "California",
            "São Paulo",
            "NR9 5AL",
            "98121-1234",
            "United Kingdom",
        ]
    ),
)

# Fields whose accepted values arbitrary text almost never hits (arbitrary
# input for them is covered by the never-raises tests).
_FIELD_SAMPLES = {
    "dobd": st.integers(min_value=0, max_value=40).map(str),
    "dobm": st.integers(min_value=0, max_value=14).map(str),
    "doby": st.integers(min_value=1000, max_value=2100).map(str),
    "ge": st.sampled_from(["m", "F", " Male ", "woman", "Sir", "she", "x"]),
}


def samples(field: str) -> st.SearchStrategy[str]:
    """Inputs for ``field`` that reach its accepting path often enough to test it."""
    return _FIELD_SAMPLES.get(field, META_SAMPLES)


# --------------------------------------------------------------------------
# Idempotence


@pytest.mark.parametrize("field", sorted(META_FIELDS))
@PROPERTY
@given(data=st.data())
def test_meta_normalising_twice_is_normalising_once(field, data):
    """For every Meta user_data field, a normalised value normalises to itself."""
    value = data.draw(samples(field))
    once = normalize_meta(field, value, today=TODAY)
    assume(once is not None)
    assert normalize_meta(field, once, today=TODAY) == once


# Snap's "ph" normal form is the digits without "+"; read again, it is a
# national number of the default region (as in Snap's SDKs), so "ph" has no
# fixed point by design and is covered by the phone-variant tests instead.
@pytest.mark.parametrize("field", [f for f in SNAP_NORMAL_FORMS if f != "ph"])
@PROPERTY
@given(value=META_SAMPLES)
def test_snap_normalising_twice_is_normalising_once(field, value):
    """For every Snap user_data field with a normal form, a normalised value normalises to itself."""
    once = normalize_snap(field, value)
    assume(once is not None)
    assert normalize_snap(field, once) == once


# --------------------------------------------------------------------------
# What leaves is 64 lowercase hex


@pytest.mark.parametrize("field", sorted(META_FIELDS))
@PROPERTY
@given(value=META_SAMPLES)
def test_meta_hash_is_64_lowercase_hex_or_nothing(field, value):
    """hash_meta returns None or 64 lowercase hex digits."""
    hashed = hash_meta(field, value, today=TODAY)
    assert hashed is None or HEX64.fullmatch(hashed)


@pytest.mark.parametrize("field", sorted(SNAP_FIELDS))
@PROPERTY
@given(value=META_SAMPLES)
def test_snap_hash_is_64_lowercase_hex_or_nothing(field, value):
    """hash_snap returns None or 64 lowercase hex digits."""
    hashed = hash_snap(field, value)
    assert hashed is None or HEX64.fullmatch(hashed)


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


USERS = st.builds(
    UserData,
    email=st.none() | emails() | st.text(max_size=60),
    phone=st.none()
    | phone_numbers().map(
        lambda p: phonenumbers.format_number(p[1], PhoneNumberFormat.INTERNATIONAL)
    )
    | st.text(max_size=30),
    first_name=st.none() | st.text(max_size=40),
    last_name=st.none() | st.text(max_size=40),
    external_id=st.none() | st.text(max_size=40),
)


@PROPERTY
@given(user=USERS, region=st.sampled_from(["US", "GB", "DE", None]))
def test_user_data_builders_send_only_64_lowercase_hex(user, region):
    """Every value Meta, Google, TikTok and Snap user data carries is a SHA-256 digest in lowercase hex."""
    built = [
        meta_user_data(user),
        google_user_data(user, region),
        tiktok_user(user, region),
    ]
    built.append(snap_user_data(user, region))
    for leaf in _leaves(built):
        assert isinstance(leaf, str) and HEX64.fullmatch(leaf), leaf


# --------------------------------------------------------------------------
# Digests pass untouched


@pytest.mark.parametrize("field", sorted(META_FIELDS))
@PROPERTY
@given(digest=DIGESTS, before=SPACE, after=SPACE)
def test_meta_digest_passes_through_lowercased(field, digest, before, after):
    """A SHA-256 hex digest (any case, padded with white space) is sent as its lowercase self."""
    assert hash_meta(field, before + digest + after, today=TODAY) == digest.lower()


@pytest.mark.parametrize("field", SNAP_NORMAL_FORMS)
@PROPERTY
@given(digest=DIGESTS, before=SPACE, after=SPACE)
def test_snap_digest_passes_through_lowercased(field, digest, before, after):
    """A SHA-256 hex digest is sent to Snap as its lowercase self, never hashed again."""
    assert hash_snap(field, before + digest + after) == digest.lower()


@PROPERTY
@given(digest=DIGESTS, before=SPACE, after=SPACE)
def test_google_and_tiktok_digests_pass_through_lowercased(digest, before, after):
    """Google's and TikTok's user data send a digest as its lowercase self in every field."""
    padded = before + digest + after
    user = UserData(
        email=padded,
        phone=padded,
        first_name=padded,
        last_name=padded,
        external_id=padded,
    )
    google = google_user_data(user, "US")
    tiktok = tiktok_user(user, "US")
    assert (
        google["sha256_email_address"]
        == google["sha256_phone_number"]
        == [digest.lower()]
    )
    assert google["address"] == [
        {"sha256_first_name": digest.lower(), "sha256_last_name": digest.lower()}
    ]
    assert tiktok == {
        "email": digest.lower(),
        "phone": digest.lower(),
        "external_id": digest.lower(),
    }


# --------------------------------------------------------------------------
# E-mail: case and surrounding white space change nothing


@st.composite
def email_variants(draw: st.DrawFn) -> tuple[str, str]:
    address = draw(emails())
    return address, draw(SPACE) + draw(case_variants(address)) + draw(SPACE)


@PROPERTY
@given(pair=email_variants())
def test_email_case_and_surrounding_space_do_not_change_any_vendors_hash(pair):
    """``  Jo@Example.COM `` hashes like ``jo@example.com`` for Meta, Google, TikTok and Snap."""
    address, variant = pair
    plain, varied = UserData(email=address), UserData(email=variant)
    assert hash_meta("em", varied.email) == hash_meta("em", plain.email) is not None
    assert hash_snap("em", varied.email) == hash_snap("em", plain.email) is not None
    assert google_user_data(varied, None) == google_user_data(plain, None) != {}
    assert tiktok_user(varied, None) == tiktok_user(plain, None) != {}


# --------------------------------------------------------------------------
# Phone: every way of writing one number hashes alike


@PROPERTY
@given(phone_numbers())
def test_meta_hashes_every_international_form_of_a_number_alike(region_number):
    """E.164, spaced, dashed, dotted, RFC 3966 and 00-prefixed forms give Meta one hash: of the E.164 digits."""
    _, number = region_number
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    forms = [*international_forms(number), double_zero_form(number)]
    assert {hash_meta("ph", form) for form in forms} == {hash_meta("ph", e164[1:])}


def _google_phone(value, region):
    return google_user_data(UserData(phone=value), region).get("sha256_phone_number")


def _tiktok_phone(value, region):
    return tiktok_user(UserData(phone=value), region).get("phone")


def _snap_phone(value, region):
    return snap_user_data(UserData(phone=value), region).get("ph")


@pytest.mark.parametrize(
    "build",
    [_google_phone, _tiktok_phone, _snap_phone],
    ids=["google", "tiktok", "snap"],
)
@PROPERTY
@given(region_number=phone_numbers())
def test_every_form_of_a_number_hashes_alike(build, region_number):
    """International forms, and the national form read in its own region, give Google, TikTok and Snap one hash."""
    region, number = region_number
    forms = [*international_forms(number), national_form(number)]
    hashes = [build(form, region) for form in forms]
    assert hashes[0] is not None and hashes == [hashes[0]] * len(forms), forms


@pytest.mark.parametrize(
    "build",
    [
        _google_phone,
        _tiktok_phone,
        _snap_phone,
    ],
    ids=["google", "tiktok", "snap"],
)
@PROPERTY
@given(region_number=phone_numbers())
def test_a_00_prefix_is_read_as_plus_in_every_region(build, region_number):
    """``0044 20 7946 0958`` hashes like ``+44 20 7946 0958`` whatever the default region."""
    region, number = region_number
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    assert build(double_zero_form(number), region) == build(e164, region) is not None


# --------------------------------------------------------------------------
# No input makes a normaliser raise


@pytest.mark.parametrize("field", sorted(META_FIELDS))
@PROPERTY
@given(value=ANYTHING)
def test_meta_normaliser_never_raises(field, value):
    """Any value, of any type, gives a string or None."""
    assert isinstance(hash_meta(field, value, today=TODAY), str | None)


@pytest.mark.parametrize("field", sorted(SNAP_FIELDS))
@PROPERTY
@given(value=ANYTHING, region=st.none() | st.text(max_size=4))
def test_snap_normaliser_never_raises(field, value, region):
    """Any value and any default region give a string or None."""
    assert isinstance(hash_snap(field, value, default_region=region), str | None)


@PROPERTY
@given(
    user=st.builds(
        UserData,
        email=st.none() | st.text(max_size=80),
        phone=st.none() | st.text(max_size=40),
        first_name=st.none() | st.text(max_size=40),
        last_name=st.none() | st.text(max_size=40),
        external_id=st.none() | st.text(max_size=40),
    ),
    region=st.none() | st.text(max_size=4),
)
def test_user_data_builders_never_raise(user, region):
    """Any text in any field, and any default region, gives a dict for every vendor."""
    for built in (
        meta_user_data(user),
        google_user_data(user, region),
        tiktok_user(user, region),
        snap_user_data(user, region),
    ):
        assert isinstance(built, dict)
