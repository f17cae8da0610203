"""Rule files: loading, validation with every problem at once, matching and planning."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.model import Context, Event, Geo, Page, UAInfo
from proxy.rules import RulesError, load_rules

FILE_DEST = """
[destinations.log]
type = "file"
path = "{tmp}/events.jsonl"
"""


def write(tmp_path: Path, text: str, name: str = "10-test.toml") -> Path:
    (tmp_path / name).write_text(text.replace("{tmp}", str(tmp_path)), encoding="utf-8")
    return tmp_path


def event(name: str = "purchase", **kw) -> Event:
    ctx = Context(geo=Geo(country="SE"), ua=UAInfo(is_bot=kw.pop("bot", False)), consent=kw.pop("consent", {}))
    return Event(name=name, id="e1", time=0.0, page=Page(url="https://shop.example.com/p?x=1"), context=ctx, **kw)


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, env={})
    return info.value.problems


def test_example_rules_in_the_repo_load_without_vendor_accounts():
    """The shipped rules/ work with no environment at all (vendors disabled, file on)."""
    rules = load_rules(Path(__file__).parent.parent / "rules", env={})
    assert set(rules.destinations) == {"local_log"} and {"meta", "ga4"} <= set(rules.disabled)


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path):
    """Three mistakes in two files give three problems, each with its file and key path."""
    write(tmp_path, FILE_DEST + '[[routes]]\nto = ["nope"]\nmatch = { "page.hots" = "x" }\n')
    write(tmp_path, "[destinations.m]\ntype = \"meta_capi\"\npixel_id = \"${PIXEL}\"\n", "20-b.toml")
    found = problems(tmp_path)
    assert len(found) == 3
    assert any("10-test.toml: routes[0].to" in p and "'nope'" in p for p in found)
    assert any("10-test.toml: routes[0].match.page.hots" in p for p in found)
    assert any("20-b.toml: destinations.m" in p and "PIXEL" in p for p in found)


def test_a_named_routes_problem_names_the_route_beside_its_index(tmp_path):
    """In a file of many routes, 'routes[1]' alone sends the user counting; the name finds it at once."""
    write(tmp_path, FILE_DEST + '[[routes]]\nname = "all"\nto = ["log"]\n[[routes]]\nname = "checkout"\nto = ["lgo"]\n')
    (found,) = problems(tmp_path)
    assert "10-test.toml: routes[1].to in route 'checkout': no destination named 'lgo'" in found


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    """A TOML error is reported with its file and line."""
    write(tmp_path, "[destinations.x\n")
    (found,) = problems(tmp_path)
    assert "10-test.toml: not valid TOML" in found and "line 1" in found


def test_secret_written_in_a_rule_file_is_refused(tmp_path):
    """An access token written literally is refused: secrets come from the environment."""
    write(tmp_path, '[destinations.m]\ntype = "meta_capi"\npixel_id = "1"\naccess_token = "EAABsecret"\n')
    found = problems(tmp_path)
    assert any("access_token" in p and "${ENV_NAME}" in p for p in found)
    assert not any("EAABsecret" in p for p in found)


def test_env_reference_and_default_are_expanded(tmp_path):
    """${NAME} reads the environment and ${NAME:-default} falls back."""
    write(tmp_path, '[destinations.log]\ntype = "file"\npath = "${DIR:-/nowhere}/${FILE}"\n[[routes]]\nto = ["log"]\n')
    rules = load_rules(tmp_path, env={"FILE": "a.jsonl"})
    assert str(rules.destinations["log"].adapter.path) == "/nowhere/a.jsonl"


def test_unknown_adapter_type_lists_the_known_ones(tmp_path):
    """A misspelt type says which types exist."""
    write(tmp_path, '[destinations.x]\ntype = "meta"\n')
    (found,) = problems(tmp_path)
    assert "meta_capi" in found and "file" in found


def test_empty_directory_is_an_error(tmp_path):
    """A rules directory without rule files is refused, not silently empty."""
    assert "no *.toml" in problems(tmp_path)[0]


@pytest.mark.parametrize(
    "match, hit",
    [
        ('{ event = "purchase" }', True),
        ('{ event = ["page_view", "purchase"] }', True),
        ('{ event = "page_view" }', False),
        ('{ "page.host" = "shop.example.com" }', True),
        ('{ "page.path" = { prefix = "/p" } }', True),
        ('{ "params.value" = { gte = 100 } }', True),
        ('{ "params.value" = { lt = 100 } }', False),
        ('{ "params.currency" = { not = "USD" } }', True),
        ('{ "params.coupon" = { exists = false } }', True),
        ('{ "geo.country" = ["SE", "NO"] }', True),
        ('{ bot = true }', False),
        ('{ "page.url" = { regex = "x=\\\\d" } }', True),
    ],
)
def test_match_conditions(tmp_path, match, hit):
    """Each match form selects the purchase of 120 EUR from Sweden as written."""
    write(tmp_path, FILE_DEST + f'[[routes]]\nmatch = {match}\nto = ["log"]\n')
    rules = load_rules(tmp_path, env={})
    sends, _ = rules.plan(event(params={"value": 120, "currency": "EUR"}))
    assert bool(sends) is hit


def test_bad_operator_and_bad_regex_are_load_problems(tmp_path):
    """Unknown operators and broken regexes fail at load, not per hit."""
    write(tmp_path, FILE_DEST + '[[routes]]\nmatch = { "params.v" = { around = 3 }, "page.url" = { regex = "(" } }\nto = ["log"]\n')
    found = problems(tmp_path)
    assert any("unknown operator 'around'" in p for p in found) and any("regex" in p for p in found)


def test_first_matching_route_per_destination_wins(tmp_path):
    """An event reaches a destination once, through the first route that matches."""
    write(tmp_path, FILE_DEST + '[[routes]]\nname = "a"\nto = ["log"]\n[[routes]]\nname = "b"\nto = ["log"]\n')
    sends, _ = load_rules(tmp_path, env={}).plan(event())
    assert [r.name for _, r in sends] == ["a"]


def test_denied_consent_skips_the_destination_with_the_reason(tmp_path):
    """A destination needing 'ads' does not get an event whose ads consent is denied."""
    write(tmp_path, FILE_DEST.replace('type = "file"', 'type = "file"\nconsent = ["ads"]') + '[[routes]]\nto = ["log"]\n')
    sends, skips = load_rules(tmp_path, env={}).plan(event(consent={"ads": False}))
    assert sends == [] and [(s.destination, s.reason) for s in skips] == [("log", "consent: ads")]


def test_optional_destination_without_env_is_disabled_with_a_warning(tmp_path):
    """optional = true turns a missing secret into a warning and a disabled destination."""
    write(tmp_path, FILE_DEST + '[destinations.m]\ntype = "meta_capi"\noptional = true\npixel_id = "${P}"\naccess_token = "${T}"\n'
          '[[routes]]\nto = ["log", "m"]\n')
    rules = load_rules(tmp_path, env={})
    _, skips = rules.plan(event())
    assert "m" in rules.disabled and [(s.destination, s.reason) for s in skips] == [("m", "disabled")]
    assert any("disabled" in w for w in rules.warnings)


def test_a_route_shadowed_by_an_earlier_wider_route_is_warned_about(tmp_path):
    """A purchase route after a route taking all shop events to the same destination gets a warning."""
    write(tmp_path, FILE_DEST + '[[routes]]\nname = "wide"\nmatch = { event = ["page_view", "purchase"], bot = false }\nto = ["log"]\n'
          '[[routes]]\nname = "narrow"\nmatch = { event = "purchase", "params.value" = { gte = 100 }, bot = false }\nto = ["log"]\n')
    (warning,) = [w for w in load_rules(tmp_path, env={}).warnings if "never sends" in w]
    assert "route 'narrow' never sends to 'log'" in warning and "'wide'" in warning


def test_narrower_route_first_is_not_warned_about(tmp_path):
    """The same two routes in the right order give no warning."""
    write(tmp_path, FILE_DEST + '[[routes]]\nname = "narrow"\nmatch = { event = "purchase", "params.value" = { gte = 100 } }\nto = ["log"]\n'
          '[[routes]]\nname = "wide"\nmatch = { event = ["page_view", "purchase"] }\nto = ["log"]\n')
    assert not [w for w in load_rules(tmp_path, env={}).warnings if "never sends" in w]


def test_misspelt_match_field_gets_a_suggestion(tmp_path):
    """'evnt' is answered with: did you mean 'event'?"""
    write(tmp_path, FILE_DEST + '[[routes]]\nmatch = { evnt = "purchase" }\nto = ["log"]\n')
    assert "did you mean 'event'?" in problems(tmp_path)[0]


def route_with(tmp_path: Path, line: str) -> Path:
    """A file destination and one route to it with ``line`` (its set or match table)."""
    return write(tmp_path, FILE_DEST + f'[[routes]]\nto = ["log"]\n{line}\n')


@pytest.mark.parametrize(
    ("line", "where", "hint"),
    [
        # '{{ parms.value }}' would be undefined for every event: the key would never be set.
        ('set = { "x.value" = "{{ parms.value }}" }', "set.x.value: template reads 'parms'", "'params'"),
        # page has fixed fields, read by attribute or by key.
        ('set = { "x.host" = "{{ page[\'hots\'] | upper }}" }', "template reads page.hots", "'page.host'"),
        # context's fields are fixed too, in templates and in match keys.
        ('set = { v = "{{ context.user_agnet }}" }', "template reads context.user_agnet", "'context.user_agent'"),
        ('match = { "context.ipp" = "1.2.3.4" }', "match.context.ipp", "'context.ip'"),
        # The hint ignores case.
        ('set = { h = "{{ PAGE.host }}" }', "template reads 'PAGE'", "'page'"),
    ],
    ids=["misspelt-table", "page-field", "context-field-template", "context-field-match", "wrong-case"],
)
def test_a_field_events_do_not_have_is_refused_with_a_suggestion(tmp_path, line, where, hint):
    """A template or match key naming a field events lack is a load error, with did-you-mean."""
    (found,) = problems(route_with(tmp_path, line))
    assert where in found and f"did you mean {hint}?" in found


@pytest.mark.parametrize(
    "line",
    [
        # params is free-form; range is Jinja's; a loop variable and a str method are the template's own.
        'set = { a = "{{ params.anything }}", b = "{% for h in user.has %}{{ h }}{% endfor %}{{ range(2) | list | length }}",'
        ' c = "{{ name.upper() }}" }',
        # A loop may rebind a field's name: page.price is the loop's page.
        'set = { x = "{{ page.url }}{% for page in params[\'items\'] %}{{ page.price }}{% endfor %}" }',
        # Below context's fields the keys vary (IDs, purposes).
        'match = { "context.ids.visitor_id" = { exists = true } }\nset = { v = "{{ context.consent.ads }}-{{ context.ids.x }}" }',
    ],
    ids=["free-form-and-globals", "rebound-name", "context-tables"],
)
def test_templates_and_match_keys_that_read_real_fields_load(tmp_path, line):
    """No false alarms: what works at render time loads."""
    assert load_rules(route_with(tmp_path, line), env={}).routes


def test_a_destination_name_ending_in_a_newline_is_refused(tmp_path):
    """'log\\n' would print as a second 'log' in check and trace: names are a-z, 0-9 and _ only."""
    write(tmp_path, '[destinations."log\\n"]\ntype = "file"\npath = "{tmp}/e.jsonl"\n[[routes]]\nto = ["log\\n"]\n')
    assert any("destinations.'log\\n': name must be lowercase letters" in p for p in problems(tmp_path))


def test_duplicate_destination_names_the_first_file(tmp_path):
    """A destination declared twice says where the first one is."""
    write(tmp_path, FILE_DEST + '[[routes]]\nto = ["log"]\n')
    write(tmp_path, FILE_DEST, "20-again.toml")
    (found,) = problems(tmp_path)
    assert "already declared in" in found and "10-test.toml" in found


def test_regex_is_re2_so_backreferences_are_refused_at_load(tmp_path):
    """Rule regexes run on RE2 (linear time); a backreference is a load problem."""
    write(tmp_path, FILE_DEST + '[[routes]]\nmatch = { "page.url" = { regex = "(a)\\\\1" } }\nto = ["log"]\n')
    assert "RE2" in problems(tmp_path)[0]


def test_catastrophic_pattern_runs_in_linear_time(tmp_path):
    """A pattern that makes backtracking engines explode matches a long hostile URL at once."""
    write(tmp_path, FILE_DEST + '[[routes]]\nmatch = { "page.url" = { regex = "^(a+)+$" } }\nto = ["log"]\n')
    rules = load_rules(tmp_path, env={})
    ev = event()
    ev.page = Page(url="a" * 5000 + "!")
    sends, _ = rules.plan(ev)
    assert sends == []


def test_values_from_the_environment_are_never_echoed_in_errors(tmp_path):
    """A secret put in the wrong variable does not appear in the problem text."""
    write(tmp_path, '[destinations.g]\ntype = "ga4"\nmeasurement_id = "${MID}"\napi_secret = "${SECRET}"\n')
    found = " ".join(problems_with(tmp_path, {"MID": "s3cr3t-value", "SECRET": "x"}))
    assert "measurement_id" in found and "s3cr3t-value" not in found


def test_a_route_to_a_broken_destination_adds_no_misleading_problem(tmp_path):
    """Only the destination's own problem is reported, not 'no destination named'."""
    write(tmp_path, '[destinations.g]\ntype = "ga4"\nmeasurement_id = "UA-1"\napi_secret = "${S}"\n[[routes]]\nto = ["g"]\n')
    found = problems_with(tmp_path, {"S": "x"})
    assert found and not any("no destination named" in p for p in found)


def problems_with(tmp_path: Path, env: dict) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, env=env)
    return info.value.problems


EVERY_VENDOR_ENV = {
    "META_PIXEL_ID": "1234567890", "META_ACCESS_TOKEN": "EAABtoken0000",
    "GA4_MEASUREMENT_ID": "G-ABC123XYZ", "GA4_API_SECRET": "secret0000",
    "TIKTOK_PIXEL_CODE": "C4ABCDEFGHIJKLMNOPQR", "TIKTOK_ACCESS_TOKEN": "tt-token-0000",
    "SNAP_PIXEL_ID": "0d0a2b4f-6d1e-4a5b-9c3d-2e1f0a9b8c7d", "SNAP_ACCESS_TOKEN": "snap-token-0000",
    "PINTEREST_AD_ACCOUNT_ID": "549755885175", "PINTEREST_ACCESS_TOKEN": "pina-token-0000",
    "REDDIT_PIXEL_ID": "t2_abc123", "REDDIT_ACCESS_TOKEN": "reddit-token-0000",
    "LINKEDIN_ACCESS_TOKEN": "li-token-0000", "LINKEDIN_CONVERSION_RULE_ID": "104012",
}


def test_example_rules_enable_every_vendor_when_the_environment_is_set():
    """With each vendor's variables set, every example destination loads with no disabled one left."""
    rules = load_rules(Path(__file__).parent.parent / "rules", env=EVERY_VENDOR_ENV)
    assert set(rules.destinations) == {
        "local_log", "meta", "ga4", "tiktok", "snapchat", "pinterest", "reddit", "linkedin"
    } and rules.disabled == {}
    assert not [w for w in rules.warnings if "never sends" in w]


def test_a_webhook_body_template_that_fails_is_reported_as_the_destinations(tmp_path):
    """A failing body template names the destination and 'body.KEY', not the route and 'set.KEY'."""
    from proxy.pipeline import route

    write(tmp_path, '[destinations.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
          'body = { t = "{{ params.a * params.b }}" }\n[[routes]]\nname = "all"\nto = ["hook"]\n')
    (planned,), _ = route(load_rules(tmp_path, env={}), event(params={"a": "xx", "b": 10**9}))
    assert planned.payload is None and planned.error.startswith("destination 'hook': body.t: ")


TWO_FILES = FILE_DEST + '[destinations.ads]\ntype = "file"\npath = "{tmp}/ads.jsonl"\n'


def test_a_destination_no_matching_route_sends_to_is_skipped_with_the_reason(tmp_path):
    """A page_view matches the route to the log, not the purchases' route to ads: ads is skipped, and why."""
    write(tmp_path, TWO_FILES + '[[routes]]\nto = ["log"]\n[[routes]]\nto = ["ads"]\nmatch = { event = "purchase" }\n')
    sends, skips = load_rules(tmp_path, env={}).plan(event("page_view"))
    assert [d.name for d, _ in sends] == ["log"]
    assert [(s.destination, s.reason) for s in skips] == [("ads", "no route to it matches this event")]


@pytest.mark.parametrize("name", ["page_view", "purchase"])
def test_a_disabled_destination_is_skipped_as_disabled_whether_or_not_its_route_matches(tmp_path, name):
    """Matching the purchases' route to a disabled destination or not: 'disabled', the reason that matters."""
    write(tmp_path, FILE_DEST + '[destinations.m]\ntype = "meta_capi"\noptional = true\npixel_id = "${P}"\naccess_token = "${T}"\n'
          '[[routes]]\nto = ["log"]\n[[routes]]\nto = ["m"]\nmatch = { event = "purchase" }\n')
    _, skips = load_rules(tmp_path, env={}).plan(event(name))
    assert [(s.destination, s.reason) for s in skips] == [("m", "disabled")]


def test_an_event_no_route_matches_has_no_skips(tmp_path):
    """Nothing matched at all: no skip per destination (the ledger says 'unrouted' once)."""
    write(tmp_path, TWO_FILES + '[[routes]]\nto = ["log", "ads"]\nmatch = { event = "signup" }\n')
    assert load_rules(tmp_path, env={}).plan(event("purchase")) == ([], [])


def test_destinations_skipped_for_the_same_reason_share_one_ledger_entry(tmp_path):
    """Two destinations no route matches: one 'skipped' entry naming both (trace shows one line each)."""
    from proxy.pipeline import plan_rows

    write(tmp_path, TWO_FILES + '[destinations.more]\ntype = "file"\npath = "{tmp}/more.jsonl"\n'
          '[[routes]]\nto = ["log"]\n[[routes]]\nto = ["ads", "more"]\nmatch = { event = "purchase" }\n')
    _, ledger = plan_rows(load_rules(tmp_path, env={}), [event("page_view")], 0.0)
    assert [(r.destination, r.detail) for r in ledger if r.what == "skipped"] == [("ads,more", "no route to it matches this event")]


def test_a_routes_set_on_a_file_destination_changes_only_that_payload(tmp_path):
    """`set` writes into one destination's payload, never into the event other routes and events see."""
    from proxy.pipeline import route

    write(tmp_path, f'''
[destinations.a]
type = "file"
path = "{tmp_path}/a.jsonl"
[destinations.b]
type = "file"
path = "{tmp_path}/b.jsonl"
[[routes]]
to = ["a"]
set = {{"params.only_for_a" = "yes", "context.ids.visitor_id" = "overwritten"}}
[[routes]]
to = ["b"]
''')
    rules = load_rules(tmp_path, env={})
    ev = event(params={"value": 1})
    ev.context.ids["visitor_id"] = "v-1"
    planned = {p.destination.name: p.payload for p in route(rules, ev)[0]}
    assert planned["a"]["params"]["only_for_a"] == "yes"
    assert "only_for_a" not in planned["b"]["params"] and planned["b"]["context"]["ids"]["visitor_id"] == "v-1"
    assert ev.params == {"value": 1} and ev.context.ids == {"visitor_id": "v-1"}


def test_check_reports_general_and_vendor_problems_of_a_destination_together(tmp_path):
    """A wrong general key (consent) does not hide the vendor's own problems (a bad pixel ID): one round trip."""
    write(tmp_path, '[destinations.m]\ntype = "meta_capi"\npixel_id = "abc"\naccess_token = "${T}"\nconsent = ["nope"]\n'
                    '[[routes]]\nto = ["m"]\n')  # fmt: skip
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, env={"T": "token-value"})
    found = "\n".join(info.value.problems)
    assert "destinations.m.consent" in found and "destinations.m.pixel_id" in found


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ('"params.value" = {gte = "100"}', 'gte: \'100\' is not a number; write it unquoted: gte = 100'),
        ('"params.value" = {gt = true}', "gt: true is not a number"),
    ],
)
def test_a_comparison_with_a_non_number_says_how_to_write_it(tmp_path, condition, message):
    write(tmp_path, f'[destinations.a]\ntype = "file"\npath = "{{tmp}}/a.jsonl"\n[[routes]]\nto = ["a"]\nmatch = {{{condition}}}\n')
    assert any(message in p for p in problems(tmp_path)), problems(tmp_path)


def test_a_misspelt_nested_field_is_suggested_whole(tmp_path):
    write(tmp_path, '[destinations.a]\ntype = "file"\npath = "{tmp}/a.jsonl"\n[[routes]]\nto = ["a"]\nmatch = {"page.hots" = "x"}\n')
    assert any("did you mean 'page.host'?" in p for p in problems(tmp_path)), problems(tmp_path)
