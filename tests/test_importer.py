"""Offline conversions from CSV: which rows import, and which line each bad row is reported on."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.events_api import parse_server_events
from proxy.importer import ImportFileError, RowError, read_conversions_csv
from proxy.settings import Settings

DATA = Path(__file__).parent / "data" / "import"
NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z, the "now" tests/data/import/README.md uses
T = 1_763_632_800.0  # 2025-11-20T10:00:00Z
S = Settings()
HEADER = "event_name,event_id,event_time,action_source"


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "in.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def read(tmp_path: Path, content: str | bytes, **kwargs):
    return read_conversions_csv(write(tmp_path, content), "crm", S, NOW, **kwargs)


def file_error(tmp_path: Path, content: str | bytes) -> str:
    with pytest.raises(ImportFileError) as info:
        read(tmp_path, content)
    return str(info.value)


# -- the sample files ---------------------------------------------------------


def test_crm_export_imports_the_good_rows():
    """The BOM/CRLF sample gives the three good rows of its README, values as written there."""
    events, _ = read_conversions_csv(DATA / "conversions.csv", "crm", S, NOW)

    assert [(e.name, e.id, e.time, e.action_source, e.source) for e in events] == [
        ("purchase", "ord-1001", T, "physical_store", "crm"),
        ("generate_lead", "lead-77", T, "phone_call", "crm"),
        ("purchase", "ord-1005", 1_763_899_200.0, "physical_store", "crm"),
    ]
    first, lead, _ = events
    assert first.user.present() == {"email": "anna@example.com", "phone": "+49 30 1234567"}
    assert first.params == {"value": 129.9, "currency": "EUR", "store_code": "00123"}
    assert (first.click_ids, first.consent) == ({"gclid": "Cj0KCQiA-test"}, {"ads": True})
    assert (lead.consent, lead.params) == ({"ads": False}, {"store_code": "call notes\r\nover two lines"})


def test_crm_export_reports_each_bad_row_on_its_physical_line():
    """Bad rows are reported by physical line, counting the blank line and the two-line value."""
    _, errors = read_conversions_csv(DATA / "conversions.csv", "crm", S, NOW)

    assert [e.line for e in errors] == [4, 7, 8, 9]
    assert errors[0].message.startswith("value: '1,250.00' is not a number")
    assert errors[1].message.startswith("event_time: '2025-11-20 10:00:00' has no time zone")
    assert errors[2].message.startswith("event_id 'ord-1001': purchase with this id is already on line 2")
    assert errors[3].message.startswith("event_time: '2025-08-20T00:00:00Z' is 96 days old")


def test_excel_semicolon_export_is_sniffed_with_decimal_commas():
    """A ';' file with worded headers imports, reading 12,50 as 12.5 and 'Transaction ID' as transaction_id."""
    events, errors = read_conversions_csv(DATA / "conversions_semicolon.csv", "crm", S, NOW)

    assert [(e.id, e.params) for e in events] == [
        ("K-2001", {"value": 12.5, "currency": "EUR", "transaction_id": "T-1"})
    ]
    assert [(e.line, e.message.split(":")[0]) for e in errors] == [(3, "value"), (4, "action_source")]


def test_windows_1252_file_is_refused_naming_byte_and_line():
    """A file that is not UTF-8 is refused whole, naming the first bad byte, its line, and the fix."""
    with pytest.raises(ImportFileError) as info:
        read_conversions_csv(DATA / "conversions_cp1252.csv", "crm", S, NOW)

    assert "not UTF-8 (byte 0xFC on line 2); save it as 'CSV UTF-8'" in str(info.value)


# -- layout edge cases --------------------------------------------------------


def test_byte_order_mark_does_not_become_part_of_the_first_column(tmp_path):
    """A UTF-8 BOM before the header is dropped, so event_name is still found."""
    events, errors = read(tmp_path, "\ufeff" + HEADER + "\npurchase,o1,1763632800,app\n")

    assert ([e.id for e in events], errors) == (["o1"], [])


def test_crlf_and_lf_count_lines_alike(tmp_path):
    """A bad row is on the same line number whether the file uses CRLF or LF."""
    rows = [HEADER, "purchase,o1,1763632800,app", "purchase,o2,soon,app"]

    _, crlf = read(tmp_path, "\r\n".join(rows) + "\r\n")
    _, lf = read(tmp_path, "\n".join(rows) + "\n")

    assert [e.line for e in crlf] == [e.line for e in lf] == [3]


def test_lone_cr_line_ends_are_lines_too(tmp_path):
    """Old Mac-style CR-only line ends separate rows and count as lines."""
    _, errors = read(tmp_path, HEADER + "\rpurchase,o1,1763632800,app\rpurchase,o2,soon,app\r")

    assert [e.line for e in errors] == [3]


def test_row_after_a_multiline_value_is_numbered_by_physical_line(tmp_path):
    """A quoted value over three lines moves the next row's number down by two."""
    content = HEADER + ',note\npurchase,o1,1763632800,app,"a\nb\nc"\npurchase,o2,soon,app,\n'

    events, errors = read(tmp_path, content)

    assert events[0].params == {"note": "a\nb\nc"}
    assert [e.line for e in errors] == [5]


def test_blank_lines_and_empty_rows_are_skipped_but_counted(tmp_path):
    """Blank lines and all-empty rows (,,,) import nothing and still count as lines."""
    content = "\n" + HEADER + "\n\n,,,\npurchase,o1,soon,app\n"

    events, errors = read(tmp_path, content)

    assert events == [] and [e.line for e in errors] == [5]


def test_delimiter_argument_overrides_sniffing(tmp_path):
    """A delimiter given by the caller is used even where another is more frequent in the header."""
    content = "event_name|event_id|event_time|action_source|note\npurchase|o1|1763632800|app|a,b;c,d\n"

    events, _ = read(tmp_path, content.replace("|", "\t"), delimiter="\t")

    assert events[0].params == {"note": "a,b;c,d"}


def test_tab_separated_file_is_sniffed(tmp_path):
    """A tab-separated export is recognised from its header line."""
    events, _ = read(tmp_path, HEADER.replace(",", "\t") + "\npurchase\to1\t1763632800\tapp\n")

    assert [e.id for e in events] == ["o1"]


def test_header_names_match_regardless_of_case_and_spacing(tmp_path):
    """'Event Name', ' EVENT-ID ' and 'Event_Time' all name the documented columns."""
    events, _ = read(tmp_path, "Event Name, EVENT-ID ,Event_Time,Action Source\npurchase,o1,1763632800,app\n")

    assert [e.id for e in events] == ["o1"]


def test_trailing_delimiters_are_tolerated(tmp_path):
    """Empty cells past the header's columns (a trailing delimiter) are not an error."""
    events, errors = read(tmp_path, HEADER + "\npurchase,o1,1763632800,app,,\n")

    assert ([e.id for e in events], errors) == (["o1"], [])


# -- columns -------------------------------------------------------------------


def test_every_documented_column_lands_in_its_field(tmp_path):
    """User, page, context, consent, click ID and ID columns fill the event as documented."""
    header = (
        HEADER
        + ",email,phone,first_name,last_name,external_id,user_id,page_url,page_referrer,page_title,ip,user_agent,"
        "consent_ads,consent_analytics,consent_ad_user_data,consent_ad_personalization,gclid,fbclid,ScCid,fbp,"
        "ga_client_id,value,currency,transaction_id"
    )
    row = (
        "purchase,o1,2025-11-20T10:00:00Z,website,a@example.com,+4930123,Anna,Muster,c-9,u-1,https://x.example/,"
        "https://r.example/,Thanks,81.2.69.160,Mozilla/5.0,yes,no,1,0,G1,F1,S1,fb.1.1763632800000.42,1.2,7,eur,T-9"
    )

    [event], errors = read(tmp_path, header + "\n" + row + "\n")

    assert errors == []
    assert event.user.present() == {
        "email": "a@example.com",
        "phone": "+4930123",
        "first_name": "Anna",
        "last_name": "Muster",
        "external_id": "c-9",
    }
    assert (event.user_id, event.page.url, event.page.referrer, event.page.title) == (
        "u-1",
        "https://x.example/",
        "https://r.example/",
        "Thanks",
    )
    assert (event.ip, event.user_agent) == ("81.2.69.160", "Mozilla/5.0")
    assert event.consent == {"ads": True, "analytics": False, "ad_user_data": True, "ad_personalization": False}
    assert event.click_ids == {"gclid": "G1", "fbclid": "F1", "ScCid": "S1"}
    assert event.ids == {"fbp": "fb.1.1763632800000.42", "ga_client_id": "1.2"}
    assert event.params == {"value": 7.0, "currency": "EUR", "transaction_id": "T-9"}


def test_unknown_columns_become_text_params(tmp_path):
    """A column tagrelay does not know is a param under its normalised name, kept as text."""
    [event], _ = read(tmp_path, HEADER + ",Store Code,Items\npurchase,o1,1763632800,app,00123,3\n")

    assert event.params == {"store_code": "00123", "items": "3"}


def test_imported_event_posts_to_the_api_unchanged(tmp_path):
    """An imported row's wire form is a valid events API event that parses back to it."""
    [event], _ = read(tmp_path, HEADER + ",email,value,gclid\npurchase,o1,1763632800,app,a@example.com,3,G1\n")

    body = orjson.dumps({"events": [event.to_wire()]})

    assert parse_server_events(body, "crm", S, NOW) == [event]


# -- bad rows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, expected",
    [
        pytest.param("purchase,,1763632800,app", "event_id: empty; it is required", id="id-empty"),
        pytest.param("purchase,o 1,1763632800,app", "event_id: must be 1 to 64 characters", id="id-bad"),
        pytest.param("Kauf!,o1,1763632800,app", "event_name: not an event name", id="name-bad"),
        pytest.param("purchase,o1,1763632800,store", "action_source: 'store' is not one of", id="source-bad"),
        pytest.param("purchase,o1,1763632800000,app", "event_time: '1763632800000' looks like milliseconds", id="ms"),
        pytest.param("purchase,o1,24.11.2025 10:00,app", "event_time: '24.11.2025 10:00' is neither", id="date-de"),
        pytest.param("purchase,o1,1763632800,app,maybe", "consent_ads: 'maybe' is not true/false", id="consent"),
        pytest.param("purchase,o1,1763632800,app,,12 EUR", "value: '12 EUR' is not a number", id="value-text"),
        pytest.param("purchase,o1,1763632800,app,,1_000", "value: '1_000' is not a number", id="value-underscore"),
        pytest.param("purchase,o1,1763632800,app,,,euro", "currency: 'euro' is not a three-letter", id="currency"),
        pytest.param("purchase,o1,1763632800,app,,,,x", "ip: not an IPv4 or IPv6 address", id="ip"),
        pytest.param("purchase,o1,1763632800,app,,,,,fb.1.x.y", "fbc: not a Meta cookie value", id="fbc"),
        pytest.param('purchase,o1,1763632800,app,"yes"x', "not valid CSV: ',' expected after '\"'", id="bad-quote"),
    ],
)
def test_bad_row_is_reported_with_its_line_and_column(tmp_path, row, expected):
    """Each kind of bad cell is a RowError on the row's line whose message starts with the column."""
    content = HEADER + ",consent_ads,value,currency,ip,fbc" + "\npurchase,ok,1763632800,app\n" + row + "\n"

    events, errors = read(tmp_path, content)

    assert [e.id for e in events] == ["ok"]
    assert len(errors) == 1 and errors[0].line == 3
    assert errors[0].message.startswith(expected)


def test_row_with_more_fields_than_the_header_is_a_row_error(tmp_path):
    """An unquoted delimiter inside a value shifts the cells; the row is reported, saying how to quote."""
    _, errors = read(tmp_path, HEADER + ",note\npurchase,o1,1763632800,app,Smith, John\n")

    assert errors == [RowError(2, "6 fields but the header has 5 columns (a value holding ',' needs double quotes)")]


def test_a_value_under_an_unnamed_column_is_a_row_error(tmp_path):
    """A value in a column whose header cell is empty is reported rather than dropped."""
    _, errors = read(tmp_path, HEADER + ",,note\npurchase,o1,1763632800,app,lost,kept\n")

    assert errors == [RowError(2, "column 5 has a value but no name in the header")]


def test_a_stray_quote_that_runs_on_over_rows_names_every_line_it_took(tmp_path):
    """A quote opened on line 3 runs on until a later quote breaks it (line 5): lines 3-5 are named, line 6 still imports."""
    content = (HEADER + ',note\npurchase,o1,1763632800,app\npurchase,"o2,1763632800,app\n'
               'purchase,o3,1763632800,app\npurchase,o4,1763632800,app,5" screen\npurchase,o5,1763632800,app\n')  # fmt: skip

    events, errors = read(tmp_path, content)

    assert [e.id for e in events] == ["o1", "o5"]
    assert [(e.line, e.message) for e in errors] == [
        (3, "not valid CSV: ',' expected after '\"': a quote opened here ran on to line 5;"
            " lines 3 to 5 were read as one row and none of them imported")  # fmt: skip
    ]


def test_unclosed_quote_is_reported_on_the_line_it_opens(tmp_path):
    """A quote never closed swallows the rest of the file; it is reported where it opened."""
    content = HEADER + ',note\npurchase,o1,1763632800,app\npurchase,o2,1763632800,app,"open\nmore\n'

    events, errors = read(tmp_path, content)

    assert [e.id for e in events] == ["o1"]
    assert [(e.line, e.message) for e in errors] == [
        (3, 'a quote (") opened here is never closed: lines 3 to 4 were read as one row and none of them imported')
    ]


def test_rows_after_a_broken_quote_still_import(tmp_path):
    """A row with bad quoting is skipped and the rows after it are read."""
    content = HEADER + ',note\npurchase,o1,1763632800,app,"a"b\npurchase,o2,1763632800,app,c\n'

    events, errors = read(tmp_path, content)

    assert ([e.id for e in events], [e.line for e in errors]) == (["o2"], [2])


def test_row_errors_never_show_personal_data(tmp_path):
    """An over-long email or a bad IP is named by its column, its value left out."""
    email = "a" * 520 + "@example.com"
    content = HEADER + f",email,ip\npurchase,o1,1763632800,app,{email},\npurchase,o2,1763632800,app,,anna@example.com\n"

    _, errors = read(tmp_path, content)

    assert [str(e) for e in errors] == [
        "line 2: email: must be a string of at most 512 characters",
        "line 3: ip: not an IPv4 or IPv6 address",
    ]


def test_row_error_reads_as_line_and_message():
    """A RowError prints as 'line N: message', ready for the import report."""
    assert str(RowError(7, "value: 'x' is not a number")) == "line 7: value: 'x' is not a number"


# -- whole-file problems ------------------------------------------------------------


def test_empty_file_has_no_header(tmp_path):
    """A file with nothing in it (or only blank lines) is refused as having no header."""
    assert "no header row" in file_error(tmp_path, "\r\n\r\n")


def test_missing_required_column_is_one_error_for_the_file(tmp_path):
    """A header without a required column refuses the file once, naming the column."""
    message = file_error(tmp_path, "event_name,event_time,action_source\npurchase,1763632800,app\n")

    assert message.endswith(
        "required column(s) event_id missing from the header (required: event_name, event_id, event_time, action_source)"
    )


def test_file_without_a_header_is_refused_without_echoing_its_data(tmp_path):
    """A file whose first line is data is refused, and that data (maybe PII) is not repeated."""
    message = file_error(tmp_path, "purchase,o1,1763632800,app,anna@example.com\n")

    assert "must be a header row" in message and "anna@example.com" not in message


def test_header_naming_a_column_twice_is_refused(tmp_path):
    """Two columns with the same (normalised) name make the file ambiguous."""
    assert "the header names column 'email' twice" in file_error(tmp_path, HEADER + ",email, Email \n")


def test_utf16_file_is_refused_with_the_fix(tmp_path):
    """Excel's 'Unicode text' (UTF-16 with BOM) is refused, saying to save as CSV UTF-8."""
    message = file_error(tmp_path, (HEADER + "\n").encode("utf-16"))

    assert "UTF-16" in message and "CSV UTF-8" in message


def test_nul_bytes_are_refused(tmp_path):
    """A file with NUL characters is not a text CSV."""
    assert "NUL" in file_error(tmp_path, HEADER + "\npurchase,o1\x00,1763632800,app\n")


def test_missing_file_is_a_clear_error(tmp_path):
    """A path that does not exist is an ImportFileError naming the path."""
    with pytest.raises(ImportFileError, match=r"nope\.csv: cannot read: No such file or directory"):
        read_conversions_csv(tmp_path / "nope.csv", "crm", S, NOW)


def test_source_must_be_a_plain_name(tmp_path):
    """The source stamped on imported events follows the API key setting's naming rule."""
    with pytest.raises(ImportFileError, match="source 'browser'"):
        read_conversions_csv(write(tmp_path, HEADER + "\n"), "browser", S, NOW)


def test_header_with_broken_quoting_refuses_the_file(tmp_path):
    """A header row that is not valid CSV refuses the file rather than taking a data row for the header."""
    message = file_error(tmp_path, 'event_name,"event_id"x,event_time,action_source\npurchase,o1,1763632800,app\n')

    assert "line 1: the header row is not valid CSV" in message


@settings(max_examples=300, deadline=None)
@given(body=st.text(alphabet='ab1_:-.Z,;\t"\r\n é', max_size=200))
def test_any_text_after_a_header_gives_events_and_row_errors_never_a_crash(tmp_path_factory, body):
    """Whatever follows a valid header, the file yields events and row errors, or one ImportFileError."""
    path = tmp_path_factory.mktemp("fuzz") / "in.csv"
    path.write_text(HEADER + ",value,ip,consent_ads\n" + body, encoding="utf-8")

    try:
        events, errors = read_conversions_csv(path, "crm", S, NOW)
    except ImportFileError:
        return
    assert all(e.source == "crm" for e in events)
    assert all(isinstance(e, RowError) and e.line >= 2 for e in errors)


def test_more_param_columns_than_the_limit_refuse_the_file(tmp_path):
    """Over max_params columns that would become params is one error for the file, not one per row."""
    header = HEADER + ",value," + ",".join(f"c{i}" for i in range(S.max_params))

    assert "101 columns would be params, over the limit of 100" in file_error(tmp_path, header + "\n")
