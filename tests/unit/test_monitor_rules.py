"""Alert rules from TOML: validation that names the rule and field, and the shipped defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from paca.monitor.v1 import monitor_types_pb2

from monitor.default_rules import DEFAULT_RULES
from monitor.rules import AlertRule, RuleError, load_rules, parse_rules
from monitor.settings import ALERT_WEBHOOK_URL, API_ADDRESS, RULES, MonitorSettings
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRET_URL = "https://hooks.example.com/services/T000/B000/s3cr3tT0ken"


def test_shipped_alerts_toml_holds_exactly_the_default_rules() -> None:
    assert load_rules(DEPLOY / "alerts.toml") == DEFAULT_RULES


def test_default_rules_cover_cpu_memory_down_breaker_pool_spool() -> None:
    metrics = {rule.metric for rule in DEFAULT_RULES}

    assert {
        "paca_host_cpu_usage_percent",
        "paca_host_memory_used_percent",
        "paca_service_state",
        "api_breaker_open",
        "db_pool_waiting",
        "calllog_spool_batches",
    } <= metrics


def test_rule_table_parses_with_defaults_filled_in() -> None:
    [rule] = parse_rules(
        tomllib.loads(
            """
            [[rule]]
            name = "Latency"
            metric = "latency_seconds"
            function = "quantile"
            quantile = 0.95
            window_s = 60
            threshold = 0.5
            match = { endpoint = "geo" }
            severity = "critical"
            """
        )
    )

    assert rule == AlertRule(
        name="Latency",
        metric="latency_seconds",
        function="quantile",
        quantile=0.95,
        window_s=60.0,
        threshold=0.5,
        match={"endpoint": "geo"},
        severity=monitor_types_pb2.SEVERITY_CRITICAL,
    )
    assert rule.op == ">"
    assert rule.for_s == 0.0
    assert rule.severity_name == "critical"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('metric = "x"\nthreshold = 1', r'rule 1 \(\?\): "name" is required'),
        ('name = "A"\nmetric = "x"\nthreshold = "high"', r'rule 1 \(A\): "threshold" must be a'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nop = "=>"', r'rule 1 \(A\): "op" must be'),
        ('name = "A"\nmetric = "1x"\nthreshold = 1', r'"metric" must be a metric name'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nfunction = "rate"', r'"window_s" must be > 0'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nfunction = "ratio"', r'"denominator" is req'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nfunction = "quantile"', r'"quantile" must be'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nseverity = "page"', r'"severity" must be'),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nfor = 5', r"unknown keys \['for'\]"),
        ('name = "A"\nmetric = "x"\nthreshold = 1\nfor_s = -1', r'"for_s" must be >= 0'),
    ],
)
def test_bad_rule_is_refused_naming_rule_and_field(table: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(tomllib.loads(f"[[rule]]\n{table}\n"))


def test_duplicate_rule_names_are_refused() -> None:
    rule = '[[rule]]\nname = "A"\nmetric = "x"\nthreshold = 1\n'

    with pytest.raises(RuleError, match=r"repeated: \['A'\]"):
        parse_rules(tomllib.loads(rule * 2))


def test_rules_setting_reads_the_file_and_names_the_variable_on_error(tmp_path: Path) -> None:
    good = tmp_path / "alerts.toml"
    good.write_text('[[rule]]\nname = "A"\nmetric = "x"\nthreshold = 1\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "A"\n')

    settings = MonitorSettings.from_source(SettingsSource({RULES: str(good)}))

    assert [rule.name for rule in settings.rules] == ["A"]
    assert MonitorSettings.from_source(SettingsSource({})).rules == DEFAULT_RULES
    with pytest.raises(SettingsError, match=r'"PACA_MONITOR_RULES": rule 1 \(A\): "metric"'):
        MonitorSettings.from_source(SettingsSource({RULES: str(bad)}))
    with pytest.raises(SettingsError, match=r'"PACA_MONITOR_RULES": cannot read'):
        MonitorSettings.from_source(SettingsSource({RULES: str(tmp_path / "missing.toml")}))


def test_webhook_url_is_validated_without_echoing_it_and_kept_out_of_repr() -> None:
    settings = MonitorSettings.from_source(
        SettingsSource({ALERT_WEBHOOK_URL: SECRET_URL, API_ADDRESS: "127.0.0.1:6000"})
    )

    assert settings.alert_webhook_url == SECRET_URL
    assert settings.api_address == "127.0.0.1:6000"
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(SettingsError, match=ALERT_WEBHOOK_URL) as caught:
        MonitorSettings.from_source(SettingsSource({ALERT_WEBHOOK_URL: "ftp://s3cr3t@host/x"}))
    assert "s3cr3t" not in str(caught.value)
