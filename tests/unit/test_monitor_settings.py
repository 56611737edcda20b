"""Monitor settings from the environment, and the package's public names."""

from __future__ import annotations

import pytest

from monitor.settings import DOWN_AFTER, LISTEN, METRICS_LISTEN, MonitorSettings
from paca_runtime.settings import MONITOR_INTERVAL, SettingsError, SettingsSource

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]


def test_defaults_follow_the_architecture_addresses() -> None:
    settings = MonitorSettings.from_source(SettingsSource({}))

    assert settings.listen_address == "127.0.0.1:50053"
    assert settings.metrics_address == "127.0.0.1:9464"
    assert settings.sample_interval_s == 10.0
    assert settings.down_after_s == 30.0


def test_down_after_defaults_to_three_monitor_intervals() -> None:
    settings = MonitorSettings.from_source(SettingsSource({MONITOR_INTERVAL: "2"}))

    assert settings.sample_interval_s == 2.0
    assert settings.down_after_s == 6.0


def test_environment_overrides_addresses_and_grace() -> None:
    source = SettingsSource({LISTEN: "0.0.0.0:0", METRICS_LISTEN: "127.0.0.1:0", DOWN_AFTER: "45"})

    settings = MonitorSettings.from_source(source)

    assert (settings.listen_address, settings.metrics_address) == ("0.0.0.0:0", "127.0.0.1:0")
    assert settings.down_after_s == 45.0


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        pytest.param({LISTEN: "nowhere"}, LISTEN, id="listen-without-port"),
        pytest.param({METRICS_LISTEN: "127.0.0.1:http"}, METRICS_LISTEN, id="metrics-bad-port"),
        pytest.param({DOWN_AFTER: "soon"}, DOWN_AFTER, id="down-after-not-a-number"),
        pytest.param({DOWN_AFTER: "5"}, DOWN_AFTER, id="down-after-shorter-than-interval"),
    ],
)
def test_bad_setting_is_refused_naming_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=f'"{variable}"'):
        MonitorSettings.from_source(SettingsSource(environ))
