"""Settings: environment over config file, validation naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_service.settings import ApiSettings
from db_service.settings import DbSettings
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

pytestmark = pytest.mark.unit


def test_defaults_match_the_documented_addresses() -> None:
    source = SettingsSource({})
    runtime = RuntimeSettings.from_source(source)
    assert ApiSettings.from_source(source, runtime).listen == "127.0.0.1:50051"
    assert ApiSettings.from_source(source, runtime).db_address == "127.0.0.1:50052"
    db = DbSettings.from_source(source, runtime)
    assert db.listen == "127.0.0.1:50052"
    assert [d.dialect for d in db.databases] == ["sqlite"]
    assert runtime.monitor_address == "127.0.0.1:50053"


def test_seed_variables_are_honoured() -> None:
    source = SettingsSource({"API_TIMEOUT": "7.5", "DB_POOL_SIZE": "3", "MONITOR_INTERVAL": "2"})
    runtime = RuntimeSettings.from_source(source)
    assert runtime.report_interval_s == 2.0
    assert ApiSettings.from_source(source, runtime).api_timeout_s == 7.5
    assert DbSettings.from_source(source, runtime).pool_size == 3


def test_environment_overrides_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "paca.toml"
    config.write_text('API_TIMEOUT = 12\nPACA_LOG_LEVEL = "debug"\n')
    source = SettingsSource({"PACA_CONFIG_FILE": str(config), "API_TIMEOUT": "3"})
    runtime = RuntimeSettings.from_source(source)
    assert runtime.log_level == "DEBUG"
    assert ApiSettings.from_source(source, runtime).api_timeout_s == 3.0


def load_all(environ: dict[str, str]) -> None:
    source = SettingsSource(environ)
    runtime = RuntimeSettings.from_source(source)
    ApiSettings.from_source(source, runtime)
    DbSettings.from_source(source, runtime)


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"API_TIMEOUT": "soon"}, "API_TIMEOUT"),
        ({"API_TIMEOUT": "0"}, "API_TIMEOUT"),
        ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE"),
        ({"MONITOR_INTERVAL": "-1"}, "MONITOR_INTERVAL"),
        ({"PACA_API_LISTEN": "nohost"}, "PACA_API_LISTEN"),
        ({"PACA_DB_URL": "oracle://x"}, "PACA_DB_URL"),
        ({"PACA_DATABASES": "bad entry"}, "PACA_DATABASES"),
        ({"PACA_CALLLOG_DATABASE": "other"}, "PACA_CALLLOG_DATABASE"),
        ({"PACA_LOG_FORMAT": "xml"}, "PACA_LOG_FORMAT"),
        ({"PACA_CONFIG_FILE": "/nonexistent/paca.toml"}, "PACA_CONFIG_FILE"),
    ],
)
def test_bad_setting_is_refused_naming_the_variable(environ: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_all(environ)


def test_database_url_password_never_appears_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        DbSettings.from_source(
            SettingsSource({"PACA_DATABASES": "x=mssql://user:hunter2@db/x"}),
            RuntimeSettings(),
        )
    assert "hunter2" not in str(caught.value)


def test_peer_address_may_be_a_grpc_target_of_several_replicas() -> None:
    target = "ipv4:127.0.0.1:50052,127.0.0.1:50062"
    source = SettingsSource({"PACA_DB_ADDRESS": target})
    assert ApiSettings.from_source(source, RuntimeSettings()).db_address == target
