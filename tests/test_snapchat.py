"""SnapchatCAPI and Snap hashing: vectors, docs examples, rendering, building, classification, round trip.

Expected values come from Snap's SDK test vectors (tests/data/vectors/snap_*),
the examples on Snap's "Parameters" page, Snap's "Verify Set Up" page and
Snap's server GTM template (GA4 name mapping).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.model import Context, Event, Page, UserData
from proxy.privacy import hash_snap, normalize_snap
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.snapchat import SnapchatCAPI
from tests.standins import STANDIN
from tests.standins.snapchat import snap_app

VECTORS = json.loads(
    (
        Path(__file__).parent / "data/vectors/snap_business_sdk_normalize.json"
    ).read_text()
)
TOKEN = "snap-secret-token"
PIXEL = "1ec32188-754e-4be2-8e55-c949a984a39f"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
NOW = 1_750_000_000
EMAIL_HASH = "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"  # Person@Example.com


def adapter(**over) -> SnapchatCAPI:
    return SnapchatCAPI("snap", {"pixel_id": PIXEL, "access_token": TOKEN, **over})


def event(name="purchase", **kw) -> Event:
    base = {
        "name": name,
        "id": "evt-1",
        "time": NOW,
        "page": Page("https://shop.example.com/thanks", "", "Thanks"),
        "context": Context(
            ip="203.0.113.9",
            user_agent=UA,
            click_ids={"ScCid": "landing-click"},
            ids={"ScCid": "kept-click", "scid": "0b1c2d3e-aaaa-bbbb-cccc-123456789012"},
        ),
    }
    base.update(kw)
    return Event(**base)


USER = {
    "client_ip_address": "203.0.113.9",
    "client_user_agent": UA,
    "sc_click_id": "kept-click",
    "sc_cookie1": "0b1c2d3e-aaaa-bbbb-cccc-123456789012",
}
PURCHASE_PARAMS = {
    "transaction_id": "T-1",
    "value": "59.90",
    "currency": "usd",
    "items": [
        {"item_id": "SKU-1", "price": 19.95, "quantity": 2, "item_brand": "Acme"},
        {"item_id": "SKU-2", "price": 20},
    ],
}


class TestVectors:
    @pytest.mark.parametrize(
        "case", VECTORS, ids=lambda c: f"{c['field']}:{c['input']!r}"
    )
    def test_snap_sdk_vector(self, case):
        """Every case of Snap's SDK tests normalises (and hashes) to the SDK's expected value."""
        assert normalize_snap(case["field"], case["input"]) == case["normalized"]
        if case["field"] != "soundex":
            assert hash_snap(case["field"], case["input"]) == case["sha256"]

    @pytest.mark.parametrize(
        ("field", "raw", "digest"),
        [
            ("em", "Person@Example.com", EMAIL_HASH),
            (
                "ph",
                "+44 844 412 4653",
                "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383",
            ),
            (
                "fn",
                "John",
                "96d9632f363564cc3032521409cf22a852f2032eec099ed5967c0d000cec607a",
            ),
            (
                "fn",
                "Raphaël",
                "e74bb89e718fe1e19c422a48382870399f8bf7ca8dfa008739e75b0be76627b7",
            ),
            (
                "fn",
                "Raphae\u0308l",
                "e74bb89e718fe1e19c422a48382870399f8bf7ca8dfa008739e75b0be76627b7",
            ),
        ],
    )
    def test_docs_examples(self, field, raw, digest):
        """The examples on Snap's Parameters page hash to the digests printed there."""
        assert hash_snap(field, raw) == digest

    def test_plus_without_separator(self):
        """ "+448444124653" keeps country code 44 (Snap's SDKs would wrongly prefix 1 here)."""
        assert normalize_snap("ph", "+448444124653") == "448444124653"

    def test_unknown_field_is_a_bug(self):
        """Asking for a field the module does not know raises ValueError."""
        with pytest.raises(ValueError, match="zz"):
            normalize_snap("zz", "x")


class TestSettings:
    def test_every_problem_reported_at_once(self):
        """Bad pixel, missing token, bad test_mode, region, event_names entry and endpoint come together."""
        with pytest.raises(ConfigError) as err:
            SnapchatCAPI(
                "s",
                {
                    "pixel_id": "123",
                    "test_mode": "yes",
                    "default_region": 1,
                    "event_names": {"newsletter": "NEWSLETTER"},
                    "endpoint": "tr.snapchat.com",
                },
            )
        assert [k for k, _ in err.value.problems] == [
            "pixel_id",
            "access_token",
            "test_mode",
            "default_region",
            "event_names.newsletter",
            "endpoint",
        ]

    def test_limits(self):
        """2,000 events per request; events at most 37 days old; token secret."""
        assert SnapchatCAPI.max_batch == 2000
        assert SnapchatCAPI.max_age_secs == 37 * 24 * 3600
        assert SnapchatCAPI.secret_keys == ("access_token",)
        assert SnapchatCAPI.type == "snapchat_capi"


class TestRender:
    def test_purchase(self):
        """purchase -> PURCHASE with value, currency, contents, num_items, order_id and Snap's IDs."""
        assert adapter().render(event(params=PURCHASE_PARAMS)) == {
            "event_name": "PURCHASE",
            "event_time": NOW,
            "action_source": "WEB",
            "event_id": "evt-1",
            "event_source_url": "https://shop.example.com/thanks",
            "user_data": USER,
            "custom_data": {
                "value": 59.9,
                "currency": "USD",
                "contents": [
                    {
                        "id": "SKU-1",
                        "quantity": 2,
                        "item_price": 19.95,
                        "brand": "Acme",
                    },
                    {"id": "SKU-2", "quantity": 1, "item_price": 20.0},
                ],
                "num_items": 3,
                "order_id": "T-1",
            },
        }

    def test_generate_lead(self):
        """generate_lead -> SIGN_UP (Snap's GTM template mapping), email hashed into em."""
        out = adapter().render(
            event("generate_lead", user=UserData(email="Person@Example.com"))
        )
        assert out == {
            "event_name": "SIGN_UP",
            "event_time": NOW,
            "action_source": "WEB",
            "event_id": "evt-1",
            "event_source_url": "https://shop.example.com/thanks",
            "user_data": {"em": [EMAIL_HASH], **USER},
        }

    def test_page_view(self):
        """page_view -> PAGE_VIEW."""
        out = adapter().render(event("page_view"))
        assert out["event_name"] == "PAGE_VIEW" and "custom_data" not in out

    def test_purchase_without_value_is_refused(self):
        """Snap marks a PURCHASE without price or currency INVALID, so it fails to render."""
        with pytest.raises(RenderError, match="value"):
            adapter().render(event(params={"currency": "USD"}))

    def test_unknown_name_needs_mapping(self):
        """Snap takes only its own names: an unmapped custom event fails, a mapped one is sent."""
        with pytest.raises(RenderError, match="event_names"):
            adapter().render(event("newsletter_open"))
        mapped = adapter(event_names={"newsletter_open": "CUSTOM_EVENT_1"}).render(
            event("newsletter_open")
        )
        assert mapped["event_name"] == "CUSTOM_EVENT_1"

    def test_store_purchase_is_offline(self):
        """A physical_store event is action_source OFFLINE; app events are refused."""
        assert (
            adapter().render(
                event(action_source="physical_store", params=PURCHASE_PARAMS)
            )["action_source"]
            == "OFFLINE"
        )
        with pytest.raises(RenderError, match="action_source"):
            adapter().render(event(action_source="app"))


class TestBuild:
    def test_request(self):
        """POST /v3/{pixel}/events?access_token=..., body {"data": [...]}; token redacted."""
        a = adapter()
        payload = a.render(event("page_view"))
        req = a.build([payload])
        assert (
            req.url == f"https://tr.snapchat.com/v3/{PIXEL}/events?access_token={TOKEN}"
        )
        assert orjson.loads(req.body) == {"data": [payload]}
        assert TOKEN not in req.redacted().url

    def test_test_mode_uses_validate(self):
        """test_mode sends to Snap's Test Event Tool, /events/validate."""
        req = adapter(test_mode=True).build([adapter().render(event("page_view"))])
        assert req.url.startswith(
            f"https://tr.snapchat.com/v3/{PIXEL}/events/validate?"
        )


class TestClassify:
    @pytest.mark.parametrize(
        ("ans", "verdict"),
        [
            (Answer(200, {}, b'{"status": "VALID", "reason": "ok"}'), Verdict.OK),
            (
                Answer(200, {}, b'{"status": "INVALID", "reason": "Unhashed PII"}'),
                Verdict.FINAL,
            ),
            (
                Answer(400, {}, b'{"status": "INVALID", "reason": "Insufficient PII"}'),
                Verdict.FINAL,
            ),
            (Answer(401, {}, b""), Verdict.FINAL),
            (Answer(429, {"Retry-After": "3"}, b""), Verdict.RETRY),
            (Answer(503, {}, b""), Verdict.RETRY),
            (Answer(None, error="timeout"), Verdict.RETRY),
        ],
    )
    def test_table(self, ans, verdict):
        """2xx is ok unless the body says INVALID; 400/401 final; 429/5xx/timeouts retry."""
        assert adapter().classify(ans).verdict is verdict

    def test_reason_keeps_snaps_reason(self):
        """Snap's reason text is kept in the outcome."""
        out = adapter().classify(
            Answer(400, {}, b'{"status": "INVALID", "reason": "Insufficient PII"}')
        )
        assert out.reason == "http 400: Insufficient PII"


async def _send(a, payloads):
    req = a.build(payloads)
    async with aiohttp.ClientSession() as session:
        async with session.post(req.url, data=req.body, headers=req.headers) as resp:
            return Answer(resp.status, dict(resp.headers), await resp.read())


@pytest.mark.parametrize("test_mode", [False, True])
async def test_round_trip(aiohttp_server, test_mode):
    """purchase, generate_lead and page_view built by the adapter are accepted (and validated in test mode)."""
    app = snap_app(access_token=TOKEN, now=lambda: NOW + 60)
    server = await aiohttp_server(app)
    a = adapter(endpoint=str(server.make_url("")).rstrip("/"), test_mode=test_mode)
    payloads = [
        a.render(
            event(
                params=PURCHASE_PARAMS,
                user=UserData(email="a@b.co", phone="+44 844 412 4653"),
            )
        ),
        a.render(event("generate_lead")),
        a.render(event("page_view")),
    ]
    assert a.classify(await _send(a, payloads)).verdict is Verdict.OK
    state = app[STANDIN]
    assert state.problems == []
    target = state.validated if test_mode else state.received
    assert [e["event_name"] for e in target] == ["PURCHASE", "SIGN_UP", "PAGE_VIEW"]


async def test_unhashed_pii_is_final(aiohttp_server):
    """A payload with a raw email (a route overwrote em) is refused 400 INVALID and not retried."""
    app = snap_app(access_token=TOKEN, now=lambda: NOW + 60)
    server = await aiohttp_server(app)
    a = adapter(endpoint=str(server.make_url("")).rstrip("/"))
    payload = a.render(event("page_view"))
    payload["user_data"]["em"] = ["person@example.com"]
    got = await _send(a, [payload])
    assert (got.status, a.classify(got).verdict) == (400, Verdict.FINAL)
