"""GA4 /g/collect hits, as gtag.js sends them, parsed into canonical events.

Expected values are read off the recorded requests in tests/data/hits (see the
README there), and the consent letters off the gcs/gcd tables cited in
proxy/ga4hits.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.collect import HitError
from proxy.ga4hits import (
    GCD_LETTERS,
    GA4Event,
    GA4Hit,
    google_consent,
    parse_gcollect,
    parse_item,
)
from proxy.settings import Settings

NOW = 1_764_000_000.0
S = Settings()
CAPTURES = json.loads(
    (Path(__file__).parent / "data" / "hits" / "ga4_gcollect.json").read_text("utf-8")
)
BASE = "v=2&tid=G-ABC123&cid=1.2&_p=1&_s=1"
ALL_GRANTED = {
    "ads": True,
    "analytics": True,
    "ad_user_data": True,
    "ad_personalization": True,
}
ALL_DENIED = {
    "ads": False,
    "analytics": False,
    "ad_user_data": False,
    "ad_personalization": False,
}


def capture(index: int) -> GA4Hit:
    c = CAPTURES[index]
    return parse_gcollect(urlsplit(c["url"]).query, c["body"].encode("utf-8"), S, NOW)


def gcollect(query: str, body: bytes = b"") -> GA4Hit:
    return parse_gcollect(query, body, S, NOW)


def refused(query: str, body: bytes = b"", settings: Settings = S) -> HitError:
    with pytest.raises(HitError) as info:
        parse_gcollect(query, body, settings, NOW)
    return info.value


# -- every /g/collect capture ------------------------------------------------------

# (capture, event names, page title, measurement ID, client ID, session ID,
#  session number, engaged, consent), written down from each capture's URL.
EXPECTED = [
    (0, ["page_view"], "Food Shop", "G-5T0Z13HKP4", "328947665.1746817858", "1746817858", 1, True, {"ad_personalization": False}),
    (1, ["scroll"], "Food Shop", "G-5T0Z13HKP4", "328947665.1746817858", "1746817858", 1, True, {"ad_personalization": False}),
    (2, ["user_engagement"], "Food Shop", "G-5T0Z13HKP4", "328947665.1746817858", "1746817858", 1, True, {"ad_personalization": False}),
    (3, ["page_view"], "Sesamy Demo Page", "G-F9XM71K45T", "1685369447.1746564151", "1749196701", 41, True, ALL_GRANTED),
    (4, ["add_to_cart"], "Sesamy Demo Page", "G-F9XM71K45T", "1685369447.1746564151", "1749196701", 41, True, ALL_GRANTED),
    (5, ["page_view"], "Geschenksets 2025 \u2013 Kreative Sets f\u00fcr jeden Anlass | geschenkidee.ch", "G-C5FH0JEWES", "890803912.1748871081", "1749197325", 4, True, ALL_GRANTED),
    (6, ["scroll"], "Sesamy", "G-F9XM71K45T", "1943177852.1749196701", "1749196701", 1, False, ALL_DENIED),
    (7, ["scroll"], "Sesamy", "G-F9XM71K45T", "1943177852.1749196701", "1749196701", 1, False, ALL_DENIED),
    (8, ["remove_from_cart"], "Home", "G-F9XM71K45T", "598874271.1715353601", "1716807360", 16, True, {"ad_personalization": False}),
    (9, ["purchase"], "Server Side Tracking Prototype (codename: sniffer)", "G-PZ5ELRCR31", "585475683.1708014725", "1709534872", 10, True, {}),
    (10, ["refund"], "Server Side Tracking Prototype (codename: sniffer)", "G-PZ5ELRCR31", "585475683.1708014725", "1709534872", 10, True, {}),
    (11, ["add_payment_info"], "Server Side Tracking Prototype (codename: sniffer)", "G-123456", "585475683.1708014725", "1709445696", 8, False, {}),
    (12, ["page_view"], "Products | Demo E-commerce Store", "G-F9PE5LESJW", "2136763211.1693483972", "1709204106", 31, True, {}),
    (13, ["page_view"], "Example Site", "G-ABCDEF1234", "678356890.1730448757", "1739008119", 44, False, ALL_GRANTED),
    (14, ["page_view"], "Garbarino", "G-3SQN45GM23", "1071119814.1712890654", "1712890654", 1, False, {}),
    (15, ["page_view"], "\u00a0Advantage Shopping", "G-TBPYED8WSW", "1211858025.1685924478", "1685924478", 1, False, {}),
    (16, ["user_engagement"], "JPetStore Demo", "G-PBGW9BF7P6", "783070699.1682103021", "1682103021", 1, False, {}),
    (17, ["page_view"], "\ud380\ub4dc\ub2e5\ud130", "G-D7RCDX73LB", "1605278724.1791016867", "1791016866", 1, False, {}),
    (18, ["page_view"], "Vivaliz | Loja Online", "G-QWYPLYMZ9", "1380426635.1786754033", "1786754032", 1, False, ALL_DENIED),
    (19, ["page_view"], "Vivaliz | Loja Online", "G-1H55K1TZ5D", "1440533735.1786754032", "1786754031", 1, False, {}),
    (20, ["view_cart"], "Carrinho | Vivaliz", "G-1H55K1TZ5D", "274692810.1786754047", "1786754046", 1, False, ALL_DENIED),
    (21, ["user_engagement"], "Assento Sanit\u00e1rio Oval Universal Soft Branco Astra TPJ/ | Vivaliz", "G-1H55K1TZ5D", "1595140949.1786754044", "1786754043", 1, False, ALL_DENIED),
    (22, ["page_view", "scroll"], "Title APPHOME", "G-CLHX8VZFZ3", "1217002577.1663226662", "1663584410", 5, True, {}),
    (23, ["page_view", "custom_event"], "Shop", "G-ABC123", "130310128.1746817858", "1746817858", 1, True, {}),
    (24, ["view_item"], "OBEGR\u00c4NSAD - LED\u58c1\u71c8, \u9ed1\u8272 | IKEA \u7dda\u4e0a\u8cfc\u7269", "G-816Q2QZJXD", "1576171870.1693786622", "1694993913", 3, True, {}),
    (25, ["view_item"], "\u6c34\u98fd\u98fd\u7dad\u4ed6\u547dB5\u4fdd\u6fd5\u7cbe\u83ef | \u4fdd\u6fd5\u900f\u4eae\u4fee\u8b77\u4e09\u6548\u5230\u4f4d", "G-NQJE8CQ5LR", "736627156.1685071405", "1695081032", 5, True, {}),
    (26, ["page_view"], "Stone Steps 50K and 27K Trail Run | Mt. Airy Forest, Cincinnati", "G-3K0QCR2ZD2", "1451539291.1791086304", "1791086304", 1, False, {}),
]  # fmt: skip


@pytest.mark.parametrize("row", EXPECTED, ids=[f"capture{r[0]}" for r in EXPECTED])
def test_every_gcollect_capture_parses_to_its_events(row):
    """Each recorded /g/collect request gives the events, page title, IDs and consent it carries."""
    index, names, title, tid, cid, sid, sct, seg, consent = row

    hit = capture(index)

    assert [e.name for e in hit.events] == names
    assert {e.page.title for e in hit.events} == {title}
    assert (hit.measurement_id, hit.client_id, hit.session_id) == (tid, cid, sid)
    assert (hit.session_number, hit.session_engaged) == (sct, seg)
    assert hit.consent == consent
    assert all(isinstance(e, GA4Event) and e.time == NOW for e in hit.events)


def test_the_expected_table_covers_every_gcollect_capture():
    """Every capture except the Ads hits (28, 29) and the signals ping (27) is checked above."""
    assert sorted(r[0] for r in EXPECTED) == [
        i for i in range(len(CAPTURES)) if i not in (27, 28, 29)
    ]


def test_signals_ping_without_en_is_a_hit_with_no_events():
    """The stats.g.doubleclick.net /g/collect ping carries no en: accepted, nothing to route."""
    hit = capture(27)

    assert (hit.events, hit.measurement_id, hit.client_id) == (
        [],
        "G-WCN3C8KG6R",
        "249472280.1708661463",
    )


@pytest.mark.parametrize("index", [28, 29])
def test_google_ads_conversion_hits_are_not_ga4(index):
    """Ads conversion requests (no v=2, no tid) are refused at the query."""
    assert "query: v missing" in str(refused(urlsplit(CAPTURES[index]["url"]).query))


def test_page_location_and_referrer_are_decoded():
    """dl and dr arrive percent-decoded as the page URL and referrer."""
    page = capture(0).events[0].page

    assert page.url == "https://d8a-tech.github.io/analytics-playground/index.html"
    assert (
        page.referrer == "https://d8a-tech.github.io/analytics-playground/checkout.html"
    )


def test_string_and_number_event_params():
    """ep.X stays a string and epn.X becomes a number."""
    params = capture(1).events[0].params

    assert params["content_group"] == "product"
    assert params["content_id"] == "C_1234"
    assert params["percent_scrolled"] == 90


def test_string_param_that_looks_boolean_stays_a_string():
    """ep.enable_page_views=false is the string 'false', as gtag sent it."""
    assert capture(8).events[0].params["enable_page_views"] == "false"


def test_engagement_time_becomes_engagement_time_msec():
    """_et=16002 is params['engagement_time_msec'] = 16002."""
    assert capture(2).events[0].params["engagement_time_msec"] == 16002


def test_engagement_time_nan_is_ignored():
    """_et=NaN (seen from real gtag) is dropped, not an error."""
    params = capture(7).events[0].params

    assert "engagement_time_msec" not in params
    assert params["percent_scrolled"] == 90


def test_purchase_carries_value_currency_transaction_and_totals():
    """The purchase hit of a known gtag() call gives back that call's values."""
    params = capture(9).events[0].params

    assert params["value"] == 30.03
    assert params["currency"] == "USD"
    assert params["transaction_id"] == "T_12345"
    assert params["coupon"] == "SUMMER_FUN"
    assert (params["shipping"], params["tax"]) == (3.33, 1.11)


def test_purchase_item_matches_the_gtag_call():
    """pr1 of the purchase capture is the item object of the gtag('event', 'purchase') call."""
    item = {
        "item_id": "SKU_12345",
        "item_name": "Stan and Friends Tee",
        "affiliation": "Google Store",
        "coupon": "SUMMER_FUN",
        "discount": 2.22,
        "index": 5,
        "item_brand": "Google",
        "item_category": "Apparel",
        "item_category2": "Adult",
        "item_category3": "Shirts",
        "item_category4": "Crew",
        "item_category5": "Short sleeve",
        "item_list_id": "related_products",
        "item_list_name": "Related products",
        "item_variant": "green",
        "location_id": "ChIJIQBpAG2ahYAR_6128GcTUEo",
        "price": 10.01,
        "quantity": 3,
    }

    assert capture(9).events[0].params["items"] == [item]


def test_item_custom_parameter_pairs_and_non_ascii_values():
    """k0currency~v0TWD becomes item['currency'] = 'TWD'; CJK and Ä survive decoding."""
    item = capture(24).events[0].params["items"][0]

    assert item["currency"] == "TWD"
    assert item["item_name"] == "OBEGR\u00c4NSAD LED wll lmp black TW"
    assert (item["price"], item["quantity"], item["index"]) == (3299, 1, 1)
    assert "k0currency" not in item and "v0" not in item


def test_item_name_with_trademark_sign_and_slash_category():
    """%E2%84%A2 and %2F inside an item field decode to ™ and /."""
    item = capture(25).events[0].params["items"][0]

    assert (
        item["item_name"]
        == "\u6c34\u98fd\u98fd\u7dad\u4ed6\u547dB5\u4fdd\u6fd5\u7cbe\u83ef | B-Hydra\u2122 Intensive Hydration Serum"
    )
    assert item["item_list_name"] == "/"
    assert item["item_auto_replen"] == "NO"


def test_conversion_first_visit_and_session_start_flags():
    """_c, _fv and _ss are per-event flags, and the hit says whether any event has them."""
    purchase = capture(9).events[0]
    first = capture(14)

    assert (purchase.conversion, purchase.first_visit, purchase.session_start) == (
        True,
        False,
        False,
    )
    assert (first.events[0].first_visit, first.events[0].session_start) == (True, True)
    assert (first.first_visit, first.session_start) == (True, True)


def test_session_start_on_a_non_page_view_event():
    """add_payment_info with _ss=1 starts a session without being a first visit."""
    hit = capture(11)

    assert (hit.events[0].session_start, hit.events[0].first_visit) == (True, False)


def test_gclid_in_page_location_becomes_a_click_id():
    """The gclid inside dl's query is read into click_ids; utm_* are not click IDs."""
    assert capture(3).click_ids == {"gclid": "Cj0KCQjwAAAABhDnARIsAAAAAAAA"}


def test_language_and_screen():
    """ul and sr are the hit's language and screen, unchanged (even a non-BCP47 'Chinese')."""
    assert (capture(0).language, capture(0).screen) == ("en-us", "1745x982")
    assert capture(25).language == "Chinese"


def test_debug_hits_are_flagged():
    """_dbg=1 and ep.debug_mode=true both mark a DebugView hit; a normal hit is not one."""
    assert capture(5).debug and capture(12).debug
    assert not capture(0).debug


def test_empty_uid_is_no_user_id():
    """uid= (present, empty) means no user ID."""
    assert capture(24).user_id is None


def test_a_blank_uid_is_no_user_id():
    """uid=%20 names no one; kept, it would make every such visitor one user to the vendors."""
    assert gcollect(BASE + "&en=page_view&uid=%20%20").user_id is None


def test_user_id_is_read():
    """A non-empty uid is the user ID."""
    assert gcollect(BASE + "&uid=user-42&en=login").user_id == "user-42"


def test_user_properties_string_and_number():
    """up.b is a string and upn.2 a number, from a batched body line."""
    assert capture(23).user_properties == {"b": "b", "2": 2}


def test_non_ascii_title_with_leading_no_break_space_is_kept():
    """%C2%A0 at the start of dt is kept, not trimmed."""
    assert capture(15).events[0].page.title.startswith("\u00a0")


# -- batches -------------------------------------------------------------------------


def test_batched_body_gives_one_event_per_line_with_shared_query():
    """Each \\n-separated body line is an event; the query's page applies to each."""
    hit = capture(22)

    assert [(e.name, e.page.url) for e in hit.events] == [
        ("page_view", "http://localhost/nextron-ga4/resources/ga.html"),
        ("scroll", "http://localhost/nextron-ga4/resources/ga.html"),
    ]
    assert hit.events[1].params == {"percent_scrolled": 90, "engagement_time_msec": 11}


def test_crlf_body_lines_and_empty_lines():
    """\\r\\n separates lines as \\n does, and empty lines are skipped."""
    hit = gcollect(BASE + "&dt=T", b"en=a\r\n\r\nen=b&ep.x=1\r\n")

    assert [(e.name, e.params) for e in hit.events] == [("a", {}), ("b", {"x": "1"})]


def test_body_line_overrides_the_query_for_its_event():
    """A parameter both in the query and in a line takes the line's value for that event."""
    hit = gcollect(BASE + "&en=page_view&dt=Shared&ep.k=q", b"dt=Own&ep.k=l\nen=scroll")

    assert [(e.name, e.page.title, e.params["k"]) for e in hit.events] == [
        ("page_view", "Own", "l"),
        ("scroll", "Shared", "q"),
    ]


def test_events_of_one_batch_get_distinct_stable_ids():
    """Two lines of one request get different ids, and the same request gives the same ids again."""
    first = [e.id for e in capture(22).events]

    assert len(set(first)) == 2
    assert first == [e.id for e in capture(22).events]


def test_event_id_param_becomes_the_dedup_key():
    """ep.event_id (shared with a Meta pixel's eventID) is the event's id, not a param."""
    event = gcollect(BASE + "&en=purchase&ep.event_id=ord-77.a").events[0]

    assert event.id == "ord-77.a"
    assert "event_id" not in event.params


def test_percent_encoded_utf8_title_in_a_body_line():
    """Non-ASCII in a body line is percent-encoded UTF-8 like in the query, '+' is a space."""
    hit = gcollect(BASE, b"en=page_view&dt=%E6%97%A5%E6%9C%AC+%C3%BC")

    assert hit.events[0].page.title == "\u65e5\u672c \u00fc"


def test_string_value_becomes_a_number():
    """ep.value=12.50 (value passed as a string) is the number 12.5."""
    assert (
        gcollect(BASE + "&en=purchase&ep.value=12.50").events[0].params["value"] == 12.5
    )


def test_a_number_past_64_bits_is_the_double_a_browser_holds():
    """epn.v=99999999999999999999 (a 20-digit order number) is 1e20, as in JavaScript; no encoder takes the int."""
    assert gcollect(BASE + "&en=e&epn.v=99999999999999999999").events[0].params["v"] == 1e20


def test_a_number_of_thousands_of_digits_is_refused_as_not_a_number():
    """epn.v with 5,000 digits is Infinity in JavaScript: a 400 naming it, not int()'s 4,300-digit error."""
    error = refused(BASE + "&en=e&epn.v=" + "9" * 5000)
    assert (error.status, "epn.v" in str(error)) == (400, True)


def test_an_item_numbered_with_thousands_of_digits_is_refused_as_out_of_range():
    """pr999…9 is past the last item number: 413, not int()'s 4,300-digit error."""
    assert refused(BASE + "&en=e&pr" + "9" * 5000 + "=idA").status == 413


def test_numeric_nan_param_is_dropped():
    """epn.x=NaN (a site's NaN) is left out rather than refusing the hit."""
    assert gcollect(BASE + "&en=e&epn.x=NaN&epn.y=2").events[0].params == {"y": 2}


def test_tilde_doubled_in_an_item_is_a_literal_tilde():
    """'~~' inside an item value is one '~', as Google's own GA4 item parser reads it."""
    assert parse_item("idA~~B~nmC", "pr1") == {"item_id": "A~B", "item_name": "C"}


def test_items_are_ordered_by_their_number():
    """pr2 before pr1 in the query still gives items in pr1, pr2 order."""
    items = gcollect(BASE + "&en=view_cart&pr2=idB&pr1=idA").events[0].params["items"]

    assert items == [{"item_id": "A"}, {"item_id": "B"}]


# -- consent -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gcs, expected",
    [
        ("G100", {"ads": False, "analytics": False}),
        ("G101", {"ads": False, "analytics": True}),
        ("G110", {"ads": True, "analytics": False}),
        ("G111", {"ads": True, "analytics": True}),
        ("G1--", {}),
        ("G1-1", {"analytics": True}),
    ],
)
def test_gcs_digits(gcs, expected):
    """gcs is G1 + ad_storage + analytics_storage: 1 granted, 0 denied, - not set."""
    assert google_consent(gcs, None) == expected


# The letter table of proxy/ga4hits.py (Markus Baersch on simoahava.com).
LETTERS = {
    "l": None,
    "p": False,
    "q": False,
    "t": True,
    "r": True,
    "m": False,
    "n": True,
    "u": False,
    "v": True,
}


@pytest.mark.parametrize("letter, state", sorted(LETTERS.items()))
def test_every_gcd_letter_in_every_position(letter, state):
    """Each gcd letter gives its state to whichever of the four signals it stands for."""
    purposes = ["ads", "analytics", "ad_user_data", "ad_personalization"]
    for position, purpose in enumerate(purposes):
        letters = ["l"] * 4
        letters[position] = letter
        gcd = "13{}3{}3{}3{}5".format(*letters)

        expected = {} if state is None else {purpose: state}
        assert google_consent(None, gcd) == expected, gcd


def test_letter_table_is_the_documented_one():
    """The module's table is exactly the nine documented letters."""
    assert GCD_LETTERS == LETTERS


def test_gcd_with_capital_separator_and_dma_trailer():
    """13t3tPt2t5l1 (capture 13) grants all four: separators may be capitals."""
    assert google_consent(None, "13t3tPt2t5l1") == ALL_GRANTED


def test_unknown_gcd_letter_is_no_signal():
    """A letter outside the table leaves that purpose to the policy instead of refusing the hit."""
    assert google_consent(None, "13x3t3t3t5") == {
        "analytics": True,
        "ad_user_data": True,
        "ad_personalization": True,
    }


def test_gcs_and_gcd_disagreeing_deny():
    """When gcs grants ad_storage but gcd denies it, ads is denied."""
    assert google_consent("G111", "13p3r3r3r5")["ads"] is False


def test_npa_denies_ad_personalization_only():
    """npa=1 denies ad_personalization; npa=0 grants nothing."""
    assert google_consent(None, None, "1") == {"ad_personalization": False}
    assert google_consent(None, None, "0") == {}


def test_no_consent_parameters_is_no_signal():
    """A hit without gcs, gcd or npa (older gtag) has empty consent."""
    assert capture(15).consent == {}


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, body, place",
    [
        ("tid=G-A&en=x", b"", "query: v missing"),
        ("v=1&tid=G-A&en=x", b"", "query: v '1'"),
        ("v=2&en=x", b"", "query: tid ''"),
        ("v=2&tid=UA-1-1&en=x", b"", "query: tid 'UA-1-1'"),
        ("v=2&tid=G-A&sid=abc&en=x", b"", "query: sid"),
        ("v=2&tid=G-A&sct=-1&en=x", b"", "query: sct"),
        ("v=2&tid=G-A&seg=2&en=x", b"", "query: seg"),
        ("v=2&tid=G-A&cid=a%00b&en=x", b"", "query: cid"),
        ("v=2&tid=G-A&uid=a%0Ab&en=x", b"", "query: uid"),
        ("v=2&tid=G-A&sr=" + "9" * 40 + "&en=x", b"", "query: sr"),
        ("v=2&tid=G-A&gcs=G2&en=x", b"", "query: gcs 'G2'"),
        ("v=2&tid=G-A&gcd=11&en=x", b"", "query: gcd '11'"),
        ("v=2&tid=G-A&en=not%20a%20name", b"", "query: en 'not a name'"),
        ("v=2&tid=G-A&en=x&epn.v=abc", b"", "query: 'epn.v' 'abc' is not a number"),
        ("v=2&tid=G-A&en=x&ep.=1", b"", "query: 'ep.' is not a parameter name"),
        ("v=2&tid=G-A&en=x&upn.a=z", b"", "query: 'upn.a' 'z' is not a number"),
        ("v=2&tid=G-A&en=x&_et=12s", b"", "query: _et '12s'"),
        ("v=2&tid=G-A&en=x&pr0=idA", b"", "query: pr0"),
        ("v=2&tid=G-A&en=x&pr1=idA~prcheap", b"", "query: pr1: item field pr 'cheap'"),
        (
            "v=2&tid=G-A&dt=x%FFy&en=x",
            b"",
            "query: a percent-encoded value is not valid UTF-8",
        ),
        (
            "v=2&tid=G-A",
            b"en=ok\nep.x=1",
            "body line 2: en (the event name) is missing",
        ),
        (
            "v=2&tid=G-A",
            b"en=ok\nen=x&dt=%C3%28",
            "body line 2: a percent-encoded value is not valid UTF-8",
        ),
        ("v=2&tid=G-A", b"en=ok\xff", "body: not valid UTF-8 at byte 5"),
    ],
)
def test_malformed_hits_are_refused_with_the_place(query, body, place):
    """Each malformed form raises HitError 400 whose message starts with the failing place."""
    error = refused(query, body)

    assert str(error).startswith(place), str(error)
    assert error.status == 400


@pytest.mark.parametrize(
    "query, body, place",
    [
        ("v=2&tid=G-A&en=x&pr201=idA", b"", "query: pr201"),
        ("v=2&tid=G-A", b"en=x\n" * 51, "body: 51 events is over the limit of 50"),
        ("v=2&tid=G-A&en=x", b"a" * (64 * 1024 + 1), "body: 65537 bytes"),
        ("v=2&tid=G-A&en=x&dt=" + "a" * 2049, b"", "query: 'dt': 2049 characters"),
        (
            "v=2&tid=G-A&en=x&" + "&".join(f"ep.p{i}=1" for i in range(101)),
            b"",
            "query: 101 parameters",
        ),
    ],
)
def test_over_the_limits_is_413_with_the_place(query, body, place):
    """Hits over Settings' limits answer 413, naming what is over."""
    error = refused(query, body)

    assert str(error).startswith(place), str(error)
    assert error.status == 413


def test_uid_is_not_echoed_in_errors():
    """A refused uid does not appear in the error: it may be PII."""
    assert "secret@example.com" not in str(
        refused("v=2&tid=G-A&uid=secret%40example.com%0A&en=x")
    )


JUNK = [
    ("v=2&tid=G-A&en=x&pr1=~~~", b""),
    ("v=2&tid=G-A&en=x&pr1=k0~v0", b""),
    ("v=2&tid=G-A&en=x&gcd=13" + "%FF" * 3, b""),
    ("v=2&tid=G-A&%%%=%%%", b"en=x&%E0%A4=1"),
    ("v=2&tid=G-A&dl=http://[::1&en=x", b""),
    ("v=2&tid=G-A&en=x&epn.x=1e999", b""),
    ("", b"\r\n\r\n"),
]


@settings(max_examples=300, deadline=None)
@given(
    query=st.one_of(st.text(max_size=300), st.sampled_from([q for q, _ in JUNK])),
    body=st.one_of(st.binary(max_size=300), st.sampled_from([b for _, b in JUNK])),
    tail=st.text(alphabet="=&.~%0123456789abcdefGprneptvlu", max_size=60),
)
def test_hostile_input_gives_a_hit_or_hiterror_only(query, body, tail):
    """Any query and body end as a parsed hit or a HitError, never another exception."""
    try:
        gcollect("v=2&tid=G-A&en=x&" + tail + query, body)
        gcollect(query, body)
    except HitError:
        pass


def test_blank_body_lines_are_no_events():
    """A line of spaces or a tab between or after gtag's lines is not an event."""
    hit = gcollect("v=2&tid=G-X1&cid=1.2", b"en=page_view\n \nen=scroll\n\t")
    assert [e.name for e in hit.events] == ["page_view", "scroll"]
