"""Webhook settings: sources and secrets from env or files, errors name the variable, no leaks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import api_service.webhooks
from api_service.webhooks import WebhookSettings
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = [pytest.mark.unit]

KEY = base64.b64encode(b"sixteen byte key").decode()


def settings(**env: str) -> WebhookSettings:
    return WebhookSettings.from_source(SettingsSource(env))


def test_defaults_listen_on_8080_with_no_sources() -> None:
    s = settings()
    assert (s.listen, s.sources, s.tolerance_s, s.max_attempts) == ("127.0.0.1:8080", (), 300, 5)


def test_sources_take_several_secrets_from_env_for_rotation() -> None:
    s = settings(
        PACA_WEBHOOK_SOURCES="acme:standard, gh-app:github",
        PACA_WEBHOOK_SECRET_ACME=f"whsec_{KEY} {KEY}",
        PACA_WEBHOOK_SECRET_GH_APP="one,two",
    )
    acme, gh = s.sources
    assert acme.keys == (b"sixteen byte key", b"sixteen byte key")
    assert gh.keys == (b"one", b"two")
    assert s.source("gh-app") is gh


def test_secrets_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("first\nsecond\n")
    s = settings(PACA_WEBHOOK_SOURCES="x:hmac", PACA_WEBHOOK_SECRET_X_FILE=str(path))
    assert s.sources[0].keys == (b"first", b"second")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PACA_WEBHOOK_SOURCES": "x:nope"}, "PACA_WEBHOOK_SOURCES"),
        ({"PACA_WEBHOOK_SOURCES": "x"}, "PACA_WEBHOOK_SOURCES"),
        ({"PACA_WEBHOOK_SOURCES": "x:hmac"}, "PACA_WEBHOOK_SECRET_X"),
        ({"PACA_WEBHOOK_SOURCES": "x:hmac,x:github", "PACA_WEBHOOK_SECRET_X": "s"}, "twice"),
        ({"PACA_WEBHOOK_SOURCES": "x:standard", "PACA_WEBHOOK_SECRET_X": "n0t*b64"}, "base64"),
        ({"PACA_WEBHOOK_TOLERANCE_S": "0"}, "PACA_WEBHOOK_TOLERANCE_S"),
        ({"PACA_WEBHOOK_MAX_ATTEMPTS": "0"}, "PACA_WEBHOOK_MAX_ATTEMPTS"),
        ({"PACA_WEBHOOK_LISTEN": "nowhere"}, "PACA_WEBHOOK_LISTEN"),
    ],
)
def test_bad_setting_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        settings(**env)


def test_secrets_never_appear_in_repr_or_errors() -> None:
    s = settings(PACA_WEBHOOK_SOURCES="x:hmac", PACA_WEBHOOK_SECRET_X="hunter2-secret")
    assert "hunter2" not in repr(s)
    with pytest.raises(SettingsError) as caught:
        settings(PACA_WEBHOOK_SOURCES="x:standard", PACA_WEBHOOK_SECRET_X="hunter2*secret")
    assert "hunter2" not in str(caught.value)


def test_package_exports_are_pinned() -> None:
    assert sorted(api_service.webhooks.__all__) == [
        "Rejected",
        "SERVICE_NAME",
        "Verified",
        "Wakeup",
        "WebhookIntake",
        "WebhookServicer",
        "WebhookSettings",
        "WebhookSource",
        "WebhookStats",
        "Webhooks",
        "sign_standard",
        "verify",
    ]
