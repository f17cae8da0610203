"""Route field mapping: sandboxed Jinja2 templates compiled once."""

from __future__ import annotations

import pytest

from proxy.mapping import MappingError, compile_mapping

VIEW = {"name": "purchase", "params": {"value": 12.5, "transaction_id": "T-1", "items": [{"item_id": "A"}]}}


def apply(table: dict, payload: dict | None = None) -> dict:
    mapping, problems = compile_mapping(table)
    assert problems == []
    return mapping.apply(payload if payload is not None else {}, VIEW)


def test_single_expression_keeps_its_native_type():
    """'{{ params.value }}' yields the float 12.5, not the string."""
    assert apply({"custom_data.value": "{{ params.value }}"}) == {"custom_data": {"value": 12.5}}


def test_text_with_expressions_is_a_string():
    """Mixed text renders as a string."""
    assert apply({"order": "order-{{ params.transaction_id }}"}) == {"order": "order-T-1"}


def test_dot_items_reads_the_key_not_the_dict_method():
    """params.items is the event's items list, as a marketer would expect."""
    assert apply({"ids": "{{ params.items | map(attribute='item_id') | list }}"}) == {"ids": ["A"]}


def test_literal_values_are_set_as_is():
    """Non-template values are literals."""
    assert apply({"a.b": 3, "c": "plain"}) == {"a": {"b": 3}, "c": "plain"}


def test_undefined_or_empty_removes_the_key():
    """A template that yields nothing removes the field from the payload."""
    assert apply({"custom_data.x": "{{ params.missing }}"}, {"custom_data": {"x": 1, "y": 2}}) == {
        "custom_data": {"y": 2}
    }


def test_syntax_error_is_reported_at_compile_time_with_the_key():
    """A broken template is a load-time problem naming its key."""
    _, problems = compile_mapping({"custom_data.value": "{{ params.value "})
    assert problems and problems[0][0] == "custom_data.value"


def test_sandbox_refuses_attribute_escapes():
    """Templates cannot reach Python internals."""
    mapping, _ = compile_mapping({"x": "{{ params.__class__.__mro__ }}"})
    assert mapping.apply({}, VIEW) == {}


def test_sandbox_refuses_mutation():
    """Templates cannot change the event they read."""
    mapping, _ = compile_mapping({"x": "{{ params.update({'value': 0}) }}"})
    with pytest.raises(MappingError, match="set.x"):
        mapping.apply({}, VIEW)
    assert VIEW["params"]["value"] == 12.5


def test_render_error_names_the_key():
    """A template failing at render time names the key."""
    mapping, _ = compile_mapping({"v": "{{ params.value / 0 }}"})
    with pytest.raises(MappingError, match="set.v"):
        mapping.apply({}, VIEW)


def test_path_through_a_list_is_an_error_not_a_wrecked_payload():
    """set.events.0.x cannot index into a list: a MappingError, the payload untouched."""
    mapping, _ = compile_mapping({"events.0.params.y": "EUR"})
    payload = {"events": [{"name": "purchase"}]}
    with pytest.raises(MappingError, match="paths cannot index into lists"):
        mapping.apply(payload, VIEW)
    assert payload == {"events": [{"name": "purchase"}]}


def test_a_table_cannot_be_replaced_by_a_plain_value():
    """Replacing a structured field with a string is refused."""
    mapping, _ = compile_mapping({"custom_data": "oops"})
    with pytest.raises(MappingError, match="is a table"):
        mapping.apply({"custom_data": {"value": 1}}, VIEW)


@pytest.mark.parametrize("raw", ["0x10", "1+2j", "99999999999999999999999", "1e999", "[1, 2]", "None", "True"])
def test_visitor_strings_are_never_parsed_as_python_literals(raw):
    """A string from a hit stays exactly that string in the payload."""
    mapping, _ = compile_mapping({"order_id": "{{ params.transaction_id }}"})
    out = mapping.apply({}, {"params": {"transaction_id": raw}})
    assert out == {"order_id": raw}


def test_a_value_json_cannot_hold_is_a_mapping_error():
    """Arithmetic that makes an integer too big for JSON is refused, naming the key."""
    mapping, _ = compile_mapping({"v": "{{ params.value * 10 ** 20 * 10 ** 20 | int }}"})
    with pytest.raises(MappingError, match="set.v: .*too large"):
        mapping.apply({}, {"params": {"value": 7}})


def test_a_macros_output_is_written_once():
    """A macro hands its output over as a list: '12.5 EUR', not '12.5 EUR12.5 EUR'."""
    table = {"label": "{% macro money(v) %}{{ v }} EUR{% endmacro %}{{ money(params.value) }}"}
    assert apply(table) == {"label": "12.5 EUR"}


def test_a_set_block_is_written_once():
    """'{% set s %}...{% endset %}{{ s }}' yields the block's text once."""
    assert apply({"blk": "{% set s %}id={{ params.transaction_id }};{% endset %}{{ s }}"}) == {"blk": "id=T-1;"}


def test_get_reads_a_param_with_a_default():
    """'params.get("coupon", "none")' works as in plain Jinja: the default when the key is absent."""
    assert apply({"a": "{{ params.get('coupon', 'none') }}", "b": "{{ params.get('transaction_id') }}"}) == {
        "a": "none",
        "b": "T-1",
    }


def render(table: dict, params: dict) -> dict:
    mapping, problems = compile_mapping(table)
    assert problems == []
    return mapping.apply({}, {"params": params})


def test_a_visitor_cannot_make_a_template_build_a_huge_string():
    """'price * quantity' with a price of "xx" and a quantity of 10**12 is refused, not a terabyte allocated."""
    with pytest.raises(MappingError, match="at most 100,000"):
        render({"t": "{{ params.price * params.quantity }}"}, {"price": "xx", "quantity": 10**12})


def test_a_visitor_cannot_make_a_template_compute_a_huge_power():
    """'2 ** e' with e = 1,000,000 is refused rather than computed for seconds."""
    with pytest.raises(MappingError, match="4096 bits"):
        render({"t": "{{ 2 ** params.e }}"}, {"e": 10**6})


def test_multiplying_numbers_and_short_strings_still_works():
    """2.5 * 4 is 10.0; 'ab' * 3 is 'ababab'."""
    assert render({"a": "{{ params.p * params.q }}", "b": "{{ params.s * 3 }}"}, {"p": 2.5, "q": 4, "s": "ab"}) == {
        "a": 10.0,
        "b": "ababab",
    }


def test_get_is_the_method_even_when_a_param_is_named_get():
    """A visitor's param "get" must not break params.get(...); params['get'] still reads it."""
    table = {"c": "{{ params.get('coupon', 'none') }}", "g": "{{ params['get'] }}"}
    assert render(table, {"get": "x"}) == {"c": "none", "g": "x"}


def test_a_lone_constant_keeps_its_type():
    """'{{ none }}' removes the key (as any empty value does); '{{ false }}' and '{{ 1 }}' keep their types."""
    assert render({"n": "{{ none }}", "f": "{{ false }}", "i": "{{ 1 }}", "t": "x{{ 1 }}"}, {}) == {
        "f": False,
        "i": 1,
        "t": "x1",
    }


def test_include_and_import_are_refused_at_compile_time():
    """Templates are loaded one by one, with no loader: '{% include %}' would fail on every event."""
    _, problems = compile_mapping({"a": '{% include "other" %}', "b": '{% from "m" import f %}{{ f() }}'})
    assert [key for key, _ in problems] == ["a", "b"] and all("cannot include, import or extend" in p for _, p in problems)


def test_a_key_set_both_as_a_value_and_as_a_table_is_refused():
    """'a' = "x" with 'a.b' = 1 would fail on every event ('a' is a plain value): refused at compile time."""
    _, problems = compile_mapping({"a": "x", "a.b": 1})
    assert problems == [("a.b", "'a' is set too: a key cannot be both a value and a table of values; keep one")]


def test_a_list_repeat_is_capped_by_its_size_not_its_length():
    """30 strings of 2,000 characters times 3,333: under 100,000 items, but 200 MB of data: refused."""
    with pytest.raises(MappingError, match="at most 100,000"):
        render({"t": "{{ params.a * params.b }}"}, {"a": ["y" * 2000] * 30, "b": 3333})


def test_a_template_recursing_on_a_visitor_value_fails_that_event_only():
    """A macro recursing params.depth times raises RecursionError: a MappingError, not an error of the hit."""
    table = {"x": "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{% else %}done{% endif %}{% endmacro %}{{ m(params.depth) }}"}
    with pytest.raises(MappingError, match="RecursionError"):
        render(table, {"depth": 100_000})


def test_a_missing_key_read_by_subscript_is_nothing_not_a_dict_method():
    """params['items'] without items removes the key, as params.items does; it is never dict.items."""
    assert render({"it": "{{ params['items'] }}", "k": "{{ params['keys'] }}"}, {"value": 1}) == {}


def test_a_path_set_both_in_a_table_and_as_a_dotted_key_is_refused():
    """{a = {b = "x"}} and "a.b" = "y" name one field twice; one would silently win."""
    _, problems = compile_mapping({"a": {"b": "x"}, "a.b": "y"})
    assert problems == [("a.b", "set twice (as a dotted key and inside a table): keep one")]
