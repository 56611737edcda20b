"""api_service's resilience settings read their variables and name them when bad."""

from __future__ import annotations

import pytest

from api_service.settings import ApiSettings, ResilienceSettings
from paca_runtime import RuntimeSettings, SettingsError, SettingsSource

pytestmark = pytest.mark.unit


def test_resilience_settings_are_read_from_their_variables() -> None:
    source = SettingsSource(
        {
            "PACA_API_RETRY_MAX_ATTEMPTS": "5",
            "PACA_API_RETRY_BUDGET": "0.5",
            "PACA_API_HOST_BREAKER_FAILURE_RATE": "0",
        }
    )
    settings = ApiSettings.from_source(source, RuntimeSettings()).resilience
    assert settings.retry_max_attempts == 5
    assert settings.retry_budget == 0.5
    assert settings.host_breaker_failure_rate == 0.0
    assert settings.retry_initial_backoff_s == ResilienceSettings().retry_initial_backoff_s


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PACA_API_RETRY_MAX_ATTEMPTS", "0"),
        ("PACA_API_RETRY_BUDGET", "1.5"),
        ("PACA_API_RETRY_MAX_BACKOFF_S", "0.01"),
        ("PACA_API_HOST_BREAKER_FAILURE_RATE", "2"),
        ("PACA_API_HOST_BREAKER_OPEN_S", "0"),
    ],
)
def test_a_bad_resilience_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        ApiSettings.from_source(SettingsSource({variable: value}), RuntimeSettings())


def test_a_bad_redis_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="PACA_API_REDIS_URL") as caught:
        ApiSettings.from_source(
            SettingsSource({"PACA_API_REDIS_URL": "http://user:hunter2@redis:6379"}),
            RuntimeSettings(),
        )
    assert "hunter2" not in str(caught.value)


def test_the_redis_url_is_kept_out_of_the_settings_repr() -> None:
    settings = ResilienceSettings(redis_url="redis://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(settings)
