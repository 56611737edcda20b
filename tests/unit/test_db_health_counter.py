"""Fall/rise counting of host health and the routing settings that configure it."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_service.routing.health import HealthCounter, Transition
from db_service.settings import DatabaseSettings, DbSettings
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

pytestmark = pytest.mark.unit


def test_host_leaves_rotation_after_fall_failures_in_a_row() -> None:
    health = HealthCounter(fall=3, rise=2, healthy=True)
    assert health.failure() is Transition.NONE
    assert health.failure() is Transition.NONE
    assert health.success(probe=True) is Transition.NONE  # the run is broken
    assert [health.failure() for _ in range(3)][-1] is Transition.EJECTED
    assert not health.healthy
    assert health.ejections == 1


def test_host_returns_after_rise_good_probes_but_not_on_live_traffic() -> None:
    health = HealthCounter(fall=1, rise=2, healthy=False)
    assert health.success(probe=False) is Transition.NONE
    assert health.success(probe=True) is Transition.NONE
    assert health.failure() is Transition.NONE  # still out; the rise count starts over
    assert health.success(probe=True) is Transition.NONE
    assert health.success(probe=True) is Transition.RESTORED
    assert health.healthy


def test_thresholds_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="fall"):
        HealthCounter(fall=0, rise=1)


def _settings(env: dict[str, str], tmp_path: Path) -> DbSettings:
    source = SettingsSource(env)
    return DbSettings.from_source(source, RuntimeSettings(state_dir=tmp_path))


def test_replica_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = _settings(
        {
            "PACA_DB_URL": "postgresql://u:secret@db1/app",
            "PACA_DB_REPLICAS": "main=postgresql://u:secret@db2/app, main=postgres://db3/app",
            "PACA_DB_READ_POLICY": "latency",
            "PACA_DB_HEALTH_FALL": "4",
        },
        tmp_path,
    )
    assert settings.replica_urls("main") == ("postgresql://u:secret@db2/app", "postgres://db3/app")
    options = settings.routing_options()
    assert (options.policy, options.fall, options.rise) == ("latency", 4, 2)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PACA_DB_REPLICAS": "other=postgresql://db2/app"}, "PACA_DB_REPLICAS"),
        ({"PACA_DB_REPLICAS": "main=mysql://db2/app"}, "PACA_DB_REPLICAS"),
        ({"PACA_DB_REPLICAS": "postgresql://u:secret@db2/app"}, "PACA_DB_REPLICAS"),
        ({"PACA_DB_READ_POLICY": "fastest"}, "PACA_DB_READ_POLICY"),
        ({"PACA_DB_HEALTH_INTERVAL_S": "0"}, "PACA_DB_HEALTH_INTERVAL_S"),
    ],
)
def test_bad_replica_settings_name_the_setting_and_hide_passwords(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError) as caught:
        _settings({"PACA_DB_URL": "postgresql://u:secret@db1/app", **env}, tmp_path)
    assert named in str(caught.value)
    assert "secret" not in str(caught.value)


def test_sqlite_database_takes_no_replicas() -> None:
    with pytest.raises(SettingsError, match="takes no replicas"):
        DbSettings(
            databases=(DatabaseSettings("main", "sqlite:///x.db"),),
            replicas=(("main", "sqlite:///y.db"),),
        )
