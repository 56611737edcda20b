"""Pool, read-only and client settings of db_service, parsed from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_service.settings import ClientPolicy, DbSettings
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def settings(**env: str) -> DbSettings:
    return DbSettings.from_source(SettingsSource(env), RuntimeSettings(state_dir=Path("/tmp")))


def test_pool_parameters_come_off_the_url_and_default_from_db_pool_size() -> None:
    loaded = settings(
        PACA_DB_URL="postgresql://u:p@h/db?pool_min=2&pool_max=20&acquire_timeout_s=1.5"
        "&max_lifetime_s=600&idle_recycle_s=30&sslmode=disable",
        PACA_DATABASES="archive=mysql://u:p@h/a?read_only=true",
        DB_POOL_SIZE="7",
    )
    main, archive = loaded.databases
    assert main.url == "postgresql://u:p@h/db?sslmode=disable"  # the driver's own stay
    limits = loaded.pool_limits(main)
    assert (limits.min_size, limits.max_size, limits.acquire_timeout_s) == (2, 20, 1.5)
    assert (limits.max_lifetime_s, limits.idle_recycle_s) == (600, 30)
    assert archive.read_only
    assert archive.url == "mysql://u:p@h/a"
    assert loaded.pool_limits(archive).max_size == 7


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("sqlite:///x.db?pool_max=0", "pool_max"),
        ("sqlite:///x.db?pool_min=3&pool_max=2", "pool_max"),
        ("sqlite:///x.db?acquire_timeout_s=soon", "acquire_timeout_s"),
        ("sqlite:///x.db?max_lifetime_s=-1", "max_lifetime_s"),
        ("sqlite:///x.db?read_only=maybe", "read_only"),
    ],
)
def test_bad_pool_parameters_name_the_parameter(url: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        settings(PACA_DB_URL=url)


def test_client_policies_and_the_default_client() -> None:
    loaded = settings(PACA_DB_CLIENTS="reports=read_only, etl=no_raw_sql+read_only, *=no_raw_sql")
    assert loaded.client("reports") == ClientPolicy("reports", read_only=True)
    assert loaded.client("etl") == ClientPolicy("etl", read_only=True, raw_sql=False)
    assert loaded.client("someone") == ClientPolicy("*", raw_sql=False)
    assert loaded.client(None) == ClientPolicy("*", raw_sql=False)
    assert settings().client("anyone") is None


@pytest.mark.parametrize("text", ["reports", "reports=", "reports=write_only"])
def test_bad_client_entries_are_refused(text: str) -> None:
    with pytest.raises(SettingsError, match="PACA_DB_CLIENTS"):
        settings(PACA_DB_CLIENTS=text)
