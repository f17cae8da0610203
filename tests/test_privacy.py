"""PII normalisation and hashing for Meta CAPI and GA4 Measurement Protocol.

Meta's expected values come from ``tests/data/vectors/`` (Meta's own SDK
tests: Python and PHP business SDKs, and the Parameter Builder; see the
README there). Every vector case is run. Where the SDKs disagree we follow
the Parameter Builder except for the cases in ``KNOWN_DISAGREEMENTS``, each
with the value we produce and why. Google's expected values are the examples
on Google's own pages (GA4 MP "Send user-provided data", Data Manager API
"Format user data").
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest

from proxy.model import UserData
from proxy.privacy import (
    MAX_VALUE_CHARS,
    google_user_data,
    hash_meta,
    is_hashed,
    meta_user_data,
    normalize_currency,
    normalize_meta,
    sha256_hex,
)

VECTORS = Path(__file__).parent / "data" / "vectors"
# The Parameter Builder's birth-date bound is "next year"; its vectors were
# written in 2026 (2027 accepted, 2028 refused), so that is "today" for them.
VECTOR_TODAY = date(2026, 6, 1)


def _rows() -> list[tuple[str, str, dict]]:
    rows = []
    for path in sorted(VECTORS.glob("meta_*normalize.json")) + sorted(
        VECTORS.glob("meta_param_builder_*.json")
    ):
        for row in json.loads(path.read_text("utf-8")):
            for field in ("fn", "ln") if row["field"] == "fn/ln" else (row["field"],):
                rows.append((path.stem, field, row))
    return rows


ROWS = _rows()

# (file, field, input) -> (what we produce, why). Every entry must exist in the
# vectors and the vectors must say otherwise (checked below).
KNOWN_DISAGREEMENTS: dict[tuple[str, str, str], tuple[str | None, str]] = {
    ("meta_business_sdk_normalize", "em", "a@b.c"): (
        None,
        "Python SDK accepts anything matching .+@.+\\..+; a one-letter TLD does not exist",
    ),
    ("meta_business_sdk_normalize", "em", '"a b"@c.d'): (
        None,
        "quoted local parts are refused like the Parameter Builder refuses spaces and quotes",
    ),
    ("meta_business_sdk_normalize", "em", "a\\@b@c.d"): (
        None,
        "an escaped @ is refused like the Parameter Builder refuses backslashes",
    ),
    ("meta_business_sdk_normalize", "em", "foo(.bar)@baz.com/"): (
        None,
        "PHP SDK strips odd characters and guesses; the Parameter Builder refuses the address",
    ),
    ("meta_business_sdk_normalize", "em", 'foo"@bar.com'): (
        None,
        "PHP SDK strips the quote; the Parameter Builder refuses 'test\"@example.com'",
    ),
    ("meta_business_sdk_normalize", "em", "foo()@bar.com"): (
        None,
        "PHP SDK strips the parentheses; the Parameter Builder refuses 'test(@example.com'",
    ),
    ("meta_business_sdk_normalize", "ct", "Seattle-98121"): (
        "seattle98121",
        "PHP SDK drops digits; the Parameter Builder keeps them ('Dallas75201')",
    ),
    ("meta_business_sdk_normalize", "country", "United States of America"): (
        "us",
        "PHP SDK refuses country names; the Parameter Builder maps them",
    ),
    ("meta_param_builder_zip", "zp", "A1 B2"): (
        "a1b2",
        "Meta's docs and both business SDKs remove spaces from zip codes ('NR9 5AL' -> 'nr95al')",
    ),
    ("meta_param_builder_external_id", "external_id", "2023-01-01T00:00:00.000Z"): (
        "2023-01-01t00:00:00.000z",
        "the JS test passed a Date object, not this string; a string stays a string",
    ),
}


def _key(stem: str, field: str, row: dict) -> tuple[str, str, str]:
    return (stem, field, row["input"])


def _expected(row: dict) -> str | None:
    return None if "expected_error" in row else row["normalized"]


def _case_id(case: tuple[str, str, dict]) -> str:
    stem, field, row = case
    return (
        f"{stem.removeprefix('meta_')}-{field}-{row['case'][:40]}-{row['input'][:40]!r}"
    )


VECTOR_CASES = [
    c
    for c in ROWS
    if _key(*c) not in KNOWN_DISAGREEMENTS and len(c[2]["input"]) <= MAX_VALUE_CHARS
]
LONG_CASES = [c for c in ROWS if len(c[2]["input"]) > MAX_VALUE_CHARS]


@pytest.mark.parametrize("case", VECTOR_CASES, ids=_case_id)
def test_meta_vector(case: tuple[str, str, dict]) -> None:
    """Each vector input normalises, hashes or is refused as Meta's SDK test expects."""
    _stem, field, row = case
    expected = _expected(row)

    if field == "currency":
        assert normalize_currency(row["input"]) == expected
        return
    assert normalize_meta(field, row["input"], today=VECTOR_TODAY) == expected
    sent = hash_meta(field, row["input"], today=VECTOR_TODAY)
    if expected is None:
        assert sent is None
    elif row["sha256"] is not None:
        assert sent == row["sha256"]
    else:
        # Only the Python SDK's external_id rows: it sends them raw, we hash.
        assert sent == sha256_hex(expected)


@pytest.mark.parametrize(
    "key", list(KNOWN_DISAGREEMENTS), ids=lambda k: f"{k[1]}-{k[2]!r}"
)
def test_known_disagreement(key: tuple[str, str, str]) -> None:
    """Where an SDK's vector disagrees with our chosen rule, we produce the value written down here."""
    ours, _why = KNOWN_DISAGREEMENTS[key]
    rows = [row for stem, field, row in ROWS if (stem, field, row["input"]) == key]

    assert rows, "the disagreeing case must exist in the vectors"
    assert all(_expected(row) != ours for row in rows)
    assert normalize_meta(key[1], key[2], today=VECTOR_TODAY) == ours


@pytest.mark.parametrize("case", LONG_CASES, ids=_case_id)
def test_vector_input_over_max_chars_is_refused(case: tuple[str, str, dict]) -> None:
    """Inputs over 512 characters are refused, even where the Parameter Builder extracts a value from them."""
    _stem, field, row = case

    assert normalize_meta(field, row["input"], today=VECTOR_TODAY) is None


def test_vectors_cover_every_meta_file() -> None:
    """All twelve Meta normalisation files are loaded (a missing file would silently shrink the suite)."""
    assert {stem for stem, _, _ in ROWS} == {
        p.stem for p in VECTORS.glob("meta_*.json")
    } - {"meta_fbc_fbp_param_builder"}
    assert (
        len(ROWS) == 97 + 123 + 104 + 2 * 248 + 185 + 246 + 116 + 191 + 119 + 420 + 104
    )


def test_sha256_hex_is_lowercase_hex_of_utf8() -> None:
    """sha256_hex gives the FIPS 180-2 digests of "" and "abc", and hashes text as UTF-8 bytes."""
    assert (
        sha256_hex("")
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert (
        sha256_hex("abc")
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert sha256_hex("\u00e9") == hashlib.sha256(b"\xc3\xa9").hexdigest()


@pytest.mark.parametrize(
    ("value", "hashed"),
    [
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", True),
        (" E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n", True),
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85", False),
        ("d41d8cd98f00b204e9800998ecf8427e", False),  # MD5: see is_hashed's docstring
        ("not a digest", False),
        (12345, False),
    ],
)
def test_is_hashed_accepts_only_sha256_hex(value: object, hashed: bool) -> None:
    """Only a 64-hex-digit value (any case, surrounding space ignored) counts as already hashed."""
    assert is_hashed(value) is hashed  # type: ignore[arg-type]


def test_hash_meta_passes_a_digest_through_lowercased() -> None:
    """An already-hashed email is sent trimmed and lowercased, never hashed again."""
    digest = "A665A45920422F9D417E4867EFDC4FB8A04A1F3FFF1FA07E998E86F7F7A27AE3"

    assert hash_meta("em", f"  {digest} ") == digest.lower()


def test_md5_looking_external_id_is_hashed_not_passed_through() -> None:
    """A 32-hex external_id (a dashless UUID, say) is hashed: it may be a raw identifier."""
    raw = "550e8400e29b41d4a716446655440000"

    assert hash_meta("external_id", raw) == sha256_hex(raw)


@pytest.mark.parametrize(
    "value", [None, 42, 4.2, ["a@b.co"], {"em": "a@b.co"}, b"a@b.co"]
)
def test_meta_non_string_value_is_refused(value: object) -> None:
    """A value that is not a string is refused, not coerced and not an exception."""
    assert normalize_meta("em", value) is None
    assert hash_meta("em", value) is None


def test_meta_value_over_max_chars_is_refused() -> None:
    """A 513-character name is refused; 512 characters still normalise."""
    assert normalize_meta("fn", "a" * (MAX_VALUE_CHARS + 1)) is None
    assert normalize_meta("fn", "a" * MAX_VALUE_CHARS) == "a" * MAX_VALUE_CHARS


def test_normalize_meta_unknown_field_names_the_field() -> None:
    """Asking for a field we do not know is a caller bug, reported with the field's name."""
    with pytest.raises(ValueError, match="'client_ip_address'"):
        normalize_meta("client_ip_address", "1.2.3.4")


def test_birth_year_bound_moves_with_today() -> None:
    """A birth year is accepted up to next year, counted from the given day."""
    assert normalize_meta("db", "01-01-2028", today=date(2026, 6, 1)) is None
    assert normalize_meta("db", "01-01-2028", today=date(2027, 6, 1)) == "20280101"


def test_meta_user_data_maps_and_hashes_each_field() -> None:
    """email, phone, names and external_id become hashed em, ph, fn, ln and external_id lists."""
    user = UserData(
        email=" Joe@Eg.com ",
        phone="+1 (206) 207-2008",
        first_name="Joe",
        last_name="Smith",
        external_id="123",
    )

    assert meta_user_data(user) == {
        "em": [sha256_hex("joe@eg.com")],
        "ph": [sha256_hex("12062072008")],
        "fn": [sha256_hex("joe")],
        "ln": [sha256_hex("smith")],
        "external_id": [sha256_hex("123")],
    }


def test_meta_user_data_drops_rejected_values() -> None:
    """A malformed email and a digit-free phone are left out; the rest is sent."""
    user = UserData(email="not-an-email", phone="call me", first_name="Mary")

    assert meta_user_data(user) == {"fn": [sha256_hex("mary")]}


def test_meta_user_data_of_empty_user_is_empty() -> None:
    """No PII, no user_data keys."""
    assert meta_user_data(UserData()) == {}


# ---------------------------------------------------------------------------
# Google: GA4 Measurement Protocol user_data


def test_google_email_keeps_dots_and_plus_outside_gmail() -> None:
    """Google's example: user.name+NYC@Example.com is sent as user.name+nyc@example.com."""
    data = google_user_data(UserData(email="user.name+NYC@Example.com"), None)

    assert data == {"sha256_email_address": [sha256_hex("user.name+nyc@example.com")]}


@pytest.mark.parametrize("domain", ["gmail.com", "googlemail.com", "GMail.com"])
def test_google_email_drops_dots_before_at_on_gmail(domain: str) -> None:
    """Periods before the @ are removed on gmail.com and googlemail.com (Google's cloudy.sanfrancisco example)."""
    data = google_user_data(UserData(email=f" cloudy.sanfrancisco@{domain} "), None)

    assert data["sha256_email_address"] == [
        sha256_hex(f"cloudysanfrancisco@{domain.lower()}")
    ]


def test_google_phone_without_plus_uses_default_region() -> None:
    """Google's example: the US number (800)555-0100 is sent as +18005550100."""
    data = google_user_data(UserData(phone="(800)555-0100"), "US")

    assert data == {"sha256_phone_number": [sha256_hex("+18005550100")]}


def test_google_phone_with_plus_ignores_default_region() -> None:
    """A number with its own country code keeps it, whatever the site's region."""
    data = google_user_data(UserData(phone="+44 20 7946 0958"), "US")

    assert data["sha256_phone_number"] == [sha256_hex("+442079460958")]


def test_google_phone_without_country_is_left_out() -> None:
    """Without "+" and without a default region the country is unknown, so nothing is sent."""
    assert google_user_data(UserData(phone="(800)555-0100"), None) == {}


def test_google_phone_that_is_not_a_number_is_left_out() -> None:
    """Text that no region can read as a phone number is dropped."""
    assert google_user_data(UserData(phone="call me maybe"), "US") == {}


def test_google_names_lose_digits_and_symbols_and_outer_space() -> None:
    """First and last names: digits and symbols removed, lowercase, trimmed; inner spaces and accents stay."""
    data = google_user_data(
        UserData(first_name=" Mary Ann2! ", last_name="Ôdé-Smith"), None
    )

    assert data == {
        "address": [
            {
                "sha256_first_name": sha256_hex("mary ann"),
                "sha256_last_name": sha256_hex("ôdésmith"),
            }
        ]
    }


def test_google_already_hashed_values_pass_through() -> None:
    """A SHA-256 digest given for the email is sent lowercased, not hashed again."""
    digest = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"

    assert google_user_data(UserData(email=digest), None) == {
        "sha256_email_address": [digest.lower()]
    }


def test_google_invalid_and_oversized_values_are_left_out() -> None:
    """A malformed email, a non-string name and a 513-character name give no keys, not an error."""
    user = UserData(
        email="nobody@", first_name=42, last_name="x" * (MAX_VALUE_CHARS + 1)
    )  # type: ignore[arg-type]

    assert google_user_data(user, "US") == {}
