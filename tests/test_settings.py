"""Settings from TAGRELAY_* variables: values the service cannot run with are refused, naming the variable."""

from __future__ import annotations

import pytest

from proxy.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TAGRELAY_DELIVERY_TIMEOUT_SECS", "nan"),
        ("TAGRELAY_DELIVERY_TIMEOUT_SECS", "inf"),
        ("TAGRELAY_DELIVERY_TIMEOUT_SECS", "0"),
        ("TAGRELAY_RETRY_CAP_SECS", "-5"),
        ("TAGRELAY_LEDGER_RETENTION_SECS", "-1"),
        ("TAGRELAY_MAX_CLOCK_SKEW_SECS", "-1"),
        ("TAGRELAY_MAX_BODY_BYTES", "10"),
        ("TAGRELAY_VISITOR_COOKIE", "a b"),
        ("TAGRELAY_VISITOR_COOKIE", ""),
        ("TAGRELAY_PORT", "0"),
    ],
)
def test_a_value_the_service_cannot_run_with_is_refused_naming_its_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_two_endpoints_on_one_path_are_named_both():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"TAGRELAY_COLLECT_PATH": "/assets/c.js"})
    assert "TAGRELAY_COLLECT_PATH '/assets/c.js' is also TAGRELAY_SCRIPT_PATH" in str(info.value)


def test_the_defaults_pass():
    Settings.from_env({})
