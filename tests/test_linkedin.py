"""LinkedInCAPI: settings, rendering, hashing, building, classification and a round trip.

Expected values come from Microsoft Learn (LinkedIn Marketing "Conversions
API", "Conversions API Schema" li-lms-2026-03, "Marketing API Versioning") and
LinkedIn's Postman collection example ("Stream multiple conversion events"),
with e-mail hashing checked against ``tests/data/vectors/`` (trim, lowercase:
the same rule as Meta's Parameter Builder).

vendors.md corrections found here: ``LinkedIn-Version`` is ``YYYYMM`` and
each version lives at least a year (202603 chosen as default; the versioning
page listed 202601 as "latest" when read); the schema's ``idType`` list is
SHA256_EMAIL, LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID, ACXIOM_ID,
PLAINTEXT_IP_ADDRESS, GOOGLE_AID (ORACLE_MOAT_ID is gone); the batch answer is
200 with ``elements[{status: 201}]``. The 5,000-event batch and 90-day age
limits are from Salesforce's connector page only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.model import Context, Event, Page, UserData
from proxy.vendors.base import Answer, ConfigError, RenderError, Verdict
from proxy.vendors.linkedin import LinkedInCAPI, hash_linkedin_email
from tests.standins import STANDIN
from tests.standins.linkedin import RATE_LIMITED, linkedin_app

TOKEN = "AQX-linkedin-token"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
FAT_ID = "df5gf5-gh6t7-ph4j7h-fgf6n1"
T = 1_700_000_000.0
RULES = {"purchase": "104001", "generate_lead": "104002"}
VECTORS = Path(__file__).parent / "data" / "vectors"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def adapter(**over) -> LinkedInCAPI:
    return LinkedInCAPI(
        "linkedin",
        {
            "access_token": TOKEN,
            "conversion_rules": RULES,
            "conversion_rule_id": "104000",
            **over,
        },
    )


def canonical(name: str, when: float = T, **params) -> Event:
    return Event(
        name=name,
        id=f"evt-{name}",
        time=when,
        page=Page(
            "https://shop.example.com/checkout?step=3",
            "https://www.example.org/",
            "Checkout",
        ),
        user=UserData(
            email=" Foo@Bar.com ",
            phone="+1 (650) 555-1234",
            first_name="Jane",
            last_name="Doe",
        ),
        context=Context(
            ip="203.0.113.9",
            user_agent=UA,
            ids={"visitor_id": "v1", "li_fat_id": FAT_ID},
        ),
        params=params,
    )


def purchase(when: float = T) -> Event:
    return canonical(
        "purchase",
        when,
        transaction_id="T-1001",
        value=59.9,
        currency="eur",
        items=[
            {"item_id": "SKU-1", "price": 19.95, "quantity": 2},
            {"item_id": "SKU-2", "price": 20.0},
        ],
    )


def lead(when: float = T) -> Event:
    return canonical(
        "generate_lead", when, value=25, currency="USD", lead_source="form"
    )


USER = {
    "userIds": [
        {"idType": "SHA256_EMAIL", "idValue": sha("foo@bar.com")},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": FAT_ID},
    ]
}


class TestSettings:
    def test_every_problem_reported_at_once(self):
        """Missing token, bad rule IDs, a bad version and a bad endpoint are reported together."""
        with pytest.raises(ConfigError) as err:
            LinkedInCAPI(
                "li",
                {
                    "conversion_rule_id": "rule-1",
                    "conversion_rules": {"purchase": "x", "Bad Name": "1"},
                    "api_version": "2026-03",
                    "endpoint": "ftp://x",
                },
            )
        assert [k for k, _ in err.value.problems] == [
            "access_token",
            "conversion_rule_id",
            "conversion_rules.purchase",
            "conversion_rules.Bad Name",
            "api_version",
            "endpoint",
        ]

    def test_a_conversion_rule_is_required(self):
        """Without conversion_rule_id or conversion_rules there is nothing to attribute to."""
        with pytest.raises(ConfigError) as err:
            LinkedInCAPI("li", {"access_token": TOKEN})
        assert [k for k, _ in err.value.problems] == ["conversion_rule_id"]

    def test_defaults(self):
        """The default endpoint is api.linkedin.com and the default version 202603."""
        a = LinkedInCAPI("li", {"access_token": TOKEN, "conversion_rule_id": 104000})
        assert (a.endpoint, a.api_version, a.conversion_rule_id) == (
            "https://api.linkedin.com",
            "202603",
            "104000",
        )

    def test_full_urn_is_accepted_as_rule(self):
        """A rule written as its full urn:lla:llaPartnerConversion URN is read as its ID."""
        a = LinkedInCAPI(
            "li",
            {
                "access_token": TOKEN,
                "conversion_rule_id": "urn:lla:llaPartnerConversion:42",
            },
        )
        assert a.conversion_rule_id == "42"

    def test_version_as_toml_integer(self):
        """api_version = 202601 written as a TOML integer is accepted."""
        assert adapter(api_version=202601).api_version == "202601"

    def test_token_is_secret(self):
        """access_token is declared secret."""
        assert LinkedInCAPI.secret_keys == ("access_token",)


class TestLimits:
    def test_batch_limit_is_5000(self):
        """Up to 5,000 events per batch (Salesforce's LinkedIn CAPI connector page)."""
        assert LinkedInCAPI.max_batch == 5000

    def test_max_age_is_90_days(self):
        """Events older than 90 days are rejected (same source)."""
        assert LinkedInCAPI.max_age_secs == 90 * 24 * 3600


class TestRender:
    def test_purchase(self):
        """A canonical purchase: its rule's URN, ms time, eventId, decimal-string value, hashed user IDs."""
        assert adapter().render(purchase()) == {
            "conversion": "urn:lla:llaPartnerConversion:104001",
            "conversionHappenedAt": 1_700_000_000_000,
            "user": USER,
            "eventId": "evt-purchase",
            "conversionValue": {"currencyCode": "EUR", "amount": "59.9"},
        }

    def test_generate_lead(self):
        """A canonical generate_lead uses its own rule and value."""
        assert adapter().render(lead()) == {
            "conversion": "urn:lla:llaPartnerConversion:104002",
            "conversionHappenedAt": 1_700_000_000_000,
            "user": USER,
            "eventId": "evt-generate_lead",
            "conversionValue": {"currencyCode": "USD", "amount": "25.0"},
        }

    def test_page_view(self):
        """A page_view without its own rule goes to conversion_rule_id, without a value."""
        assert adapter().render(canonical("page_view")) == {
            "conversion": "urn:lla:llaPartnerConversion:104000",
            "conversionHappenedAt": 1_700_000_000_000,
            "user": USER,
            "eventId": "evt-page_view",
        }

    def test_event_without_rule_is_refused(self):
        """With only conversion_rules, an event it does not name cannot be attributed."""
        a = LinkedInCAPI("li", {"access_token": TOKEN, "conversion_rules": RULES})
        with pytest.raises(RenderError, match="conversion rule"):
            a.render(canonical("page_view"))

    def test_no_match_key_is_refused(self):
        """Without e-mail or li_fat_id LinkedIn cannot match; names are never sent in clear as userInfo."""
        event = Event(
            "purchase", "e", T, user=UserData(first_name="Jane", last_name="Doe")
        )
        with pytest.raises(RenderError, match="li_fat_id"):
            adapter().render(event)

    def test_li_fat_id_falls_back_to_landing_url(self):
        """Without a server-kept li_fat_id, the landing URL's li_fat_id is used."""
        event = Event(
            "purchase", "e", T, context=Context(click_ids={"li_fat_id": "from-url"})
        )
        assert adapter().render(event)["user"]["userIds"] == [
            {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "from-url"}
        ]

    def test_value_without_currency_is_not_sent(self):
        """conversionValue needs both amount and currency."""
        assert "conversionValue" not in adapter().render(
            canonical("purchase", value=10)
        )

    def test_render_has_no_raw_pii(self):
        """Neither the raw e-mail nor the names appear in the payload."""
        text = orjson.dumps(adapter().render(purchase())).decode().lower()
        assert not any(
            raw in text for raw in ("foo@bar.com", "jane", "doe", "555-1234")
        )


def _email_rows():
    rows = json.loads((VECTORS / "meta_param_builder_email.json").read_text())
    return [r for r in rows if r.get("normalized") and "note" not in r]


class TestHashing:
    @pytest.mark.parametrize("row", _email_rows(), ids=lambda r: repr(r["input"])[:40])
    def test_email_is_trimmed_lowercased_sha256(self, row):
        """SHA256_EMAIL is SHA-256 of the trimmed, lowercased address (vectors for that rule)."""
        assert hash_linkedin_email(row["input"]) == row["sha256"]

    def test_gmail_dots_are_kept(self):
        """LinkedIn asks for no Gmail-specific rewriting: dots stay."""
        assert hash_linkedin_email("Jane.Doe@gmail.com") == sha("jane.doe@gmail.com")


class TestBuild:
    def test_url_headers_and_body(self):
        """POST /rest/conversionEvents as a BATCH_CREATE with the version and Rest.li protocol headers."""
        a = adapter()
        payload = a.render(purchase())
        req = a.build([payload])
        assert req.url == "https://api.linkedin.com/rest/conversionEvents"
        assert {k: v for k, v in req.headers.items() if k != "Content-Type"} == {
            "Authorization": f"Bearer {TOKEN}",
            "LinkedIn-Version": "202603",
            "X-Restli-Protocol-Version": "2.0.0",
            "X-RestLi-Method": "BATCH_CREATE",
        }
        assert orjson.loads(req.body) == {"elements": [payload]}

    def test_token_is_redacted(self):
        """The printable request hides the token."""
        shown = adapter().build([adapter().render(purchase())]).redacted()
        assert TOKEN not in shown.headers["Authorization"]


def answer(status, body, headers=None):
    return Answer(status, headers or {}, orjson.dumps(body))


class TestClassify:
    def test_all_created_is_ok(self):
        """LinkedIn's batch answer with every element 201 is ok."""
        outcome = adapter().classify(
            answer(200, {"elements": [{"status": 201}, {"status": 201}]})
        )
        assert (outcome.verdict, outcome.reason) == (Verdict.OK, "http 200 created 2")

    def test_refused_element_is_final(self):
        """An element refused inside a 200 batch answer is a failure, and its message is kept."""
        body = {
            "elements": [
                {"status": 201},
                {"status": 422, "error": {"message": "bad urn", "status": 422}},
            ]
        }
        outcome = adapter().classify(answer(200, body))
        assert (outcome.verdict, outcome.reason) == (
            Verdict.FINAL,
            "http 200 element 1 status 422: bad urn",
        )

    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            (400, Verdict.FINAL),
            (401, Verdict.FINAL),
            (403, Verdict.FINAL),
            (422, Verdict.FINAL),
            (426, Verdict.FINAL),
            (500, Verdict.RETRY),
        ],
    )
    def test_restli_errors(self, status, verdict):
        """Rest.li errors: request and auth problems final, server errors retried; the reason keeps the message."""
        outcome = adapter().classify(
            answer(status, {"status": status, "message": "m", "serviceErrorCode": 100})
        )
        assert (outcome.verdict, outcome.reason) == (
            verdict,
            f"http {status} code 100: m",
        )

    def test_throttle_retries_after_header(self):
        """LinkedIn's 429 throttle answer retries after Retry-After."""
        outcome = adapter().classify(
            Answer(429, RATE_LIMITED.headers, orjson.dumps(RATE_LIMITED.body))
        )
        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 30.0)

    def test_2xx_without_elements_is_retried(self):
        """A 2xx that is not a batch answer is retried (LinkedIn deduplicates on eventId)."""
        assert adapter().classify(Answer(201, {}, b"")).verdict is Verdict.RETRY


async def send(req):
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            req.method, req.url, headers=req.headers, data=req.body
        ) as resp,
    ):
        return Answer(resp.status, dict(resp.headers), await resp.read())


class TestRoundTrip:
    @pytest.mark.parametrize(
        "make",
        [purchase, lead, lambda when: canonical("page_view", when)],
        ids=["purchase", "generate_lead", "page_view"],
    )
    async def test_stand_in_accepts_what_is_built(self, aiohttp_server, make):
        """The stand-in creates the element built for each canonical event and classify says ok."""
        app = linkedin_app(
            access_token=TOKEN,
            rule_ids={"104000", "104001", "104002"},
            versions={"202603"},
        )
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(await send(a.build([a.render(make(time.time() - 30))])))

        assert app[STANDIN].problems == []
        assert outcome.verdict is Verdict.OK
        assert len(app[STANDIN].received) == 1

    async def test_mixed_batch_is_created_together(self, aiohttp_server):
        """All three canonical events in one batch are created."""
        app = linkedin_app(access_token=TOKEN)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))
        now = time.time() - 30

        outcome = a.classify(
            await send(
                a.build(
                    [
                        a.render(e)
                        for e in (purchase(now), lead(now), canonical("page_view", now))
                    ]
                )
            )
        )

        assert outcome.reason == "http 200 created 3"

    async def test_unknown_rule_is_final(self, aiohttp_server):
        """A rule the account does not have is refused in its element slot; that is final."""
        app = linkedin_app(access_token=TOKEN, rule_ids={"999"})
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert outcome.verdict is Verdict.FINAL
        assert "conversion rule 104001 does not exist" in outcome.reason

    async def test_sunset_version_is_final(self, aiohttp_server):
        """A LinkedIn-Version the server no longer serves is refused (426) and needs a human."""
        app = linkedin_app(access_token=TOKEN, versions={"202603"})
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")), api_version="202401")

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert (outcome.verdict, outcome.reason) == (
            Verdict.FINAL,
            "http 426: Requested version 202401 is not active",
        )

    async def test_scripted_throttle_retries(self, aiohttp_server):
        """The stand-in's scripted 429 is classified as retry."""
        app = linkedin_app(access_token=TOKEN)
        app[STANDIN].script(RATE_LIMITED)
        server = await aiohttp_server(app)
        a = adapter(endpoint=str(server.make_url("")))

        outcome = a.classify(
            await send(a.build([a.render(purchase(time.time() - 30))]))
        )

        assert (outcome.verdict, outcome.retry_after_secs) == (Verdict.RETRY, 30.0)
