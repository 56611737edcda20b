"""PACA_MIGRATIONS: migration sets per database, validated with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest

from db_service.settings import DbSettings
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def settings(tmp_path: Path, migrations: str) -> DbSettings:
    environ = {
        "PACA_DB_URL": f"sqlite:///{tmp_path / 'main.db'}",
        "PACA_DATABASES": f"reports=sqlite:///{tmp_path / 'r.db'}",
        "PACA_MIGRATIONS": migrations,
    }
    source = SettingsSource(environ)
    return DbSettings.from_source(source, RuntimeSettings(state_dir=tmp_path))


def test_migration_sets_map_databases_to_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    loaded = settings(tmp_path, f" main={tmp_path / 'a'} , reports={tmp_path / 'b'}")
    assert loaded.migration_directory("main") == tmp_path / "a"
    assert loaded.migration_directory("reports") == tmp_path / "b"
    assert settings(tmp_path, "").migration_directory("main") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("main", "entries are database=directory"),
        ("nope={dir}", "names database 'nope'"),
        ("main={dir},main={dir}", "appears twice"),
        ("main={dir}/missing", "is not a directory"),
    ],
)
def test_bad_migration_sets_name_the_variable(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        settings(tmp_path, value.format(dir=tmp_path))
    assert '"PACA_MIGRATIONS"' in str(caught.value)
