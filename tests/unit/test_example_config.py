"""The shipped example configs load, and every key in them is a setting the code knows."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from api_service import settings as api_settings
from db_service import settings as db_settings
from monitor import settings as monitor_settings
from paca_runtime import settings as runtime_settings
from paca_runtime.settings import RuntimeSettings, SettingsSource

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def known_names() -> set[str]:
    names = set()
    for module in (runtime_settings, api_settings, db_settings, monitor_settings):
        names |= {v for v in vars(module).values() if isinstance(v, str) and v.isupper()}
    return names


@pytest.mark.parametrize("name", ["paca.example.toml", "paca.minimal.toml"])
def test_example_config_keys_are_known_settings_and_load(name: str) -> None:
    path = DEPLOY / name
    keys = set(tomllib.loads(path.read_text()))
    assert keys <= known_names(), keys - known_names()
    source = SettingsSource({"PACA_CONFIG_FILE": str(path)})
    runtime = RuntimeSettings.from_source(source)
    api_settings.ApiSettings.from_source(source, runtime)
    db_settings.DbSettings.from_source(source, runtime)
