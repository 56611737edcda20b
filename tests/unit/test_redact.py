"""Secrets never leave in a URL."""

from __future__ import annotations

import pytest

from paca_runtime.redact import redact_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:REDACTED@db:5432/x"),
        ("https://api.x.com/v1?api_key=hunter2&q=a", "https://api.x.com/v1?api_key=REDACTED&q=a"),
        ("https://api.x.com/v1?Token=hunter2", "https://api.x.com/v1?Token=REDACTED"),
        ("https://api.x.com/v1?q=a", "https://api.x.com/v1?q=a"),
        ("sqlite:////var/lib/paca/main.db", "sqlite:////var/lib/paca/main.db"),
    ],
)
def test_passwords_and_secret_parameters_are_redacted(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_extra_secret_parameter_names_are_redacted() -> None:
    assert "hunter2" not in redact_url("https://x/?appid=hunter2", frozenset({"appid"}))
