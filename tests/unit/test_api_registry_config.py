"""Endpoints declared in a TOML file: shorthands, validation naming the entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from paca.api.v1 import api_types_pb2

from api_service.endpoints_config import load_endpoints
from api_service.registry import APIRegistry
from paca_runtime.settings import SettingsError

pytestmark = pytest.mark.unit

GOOD = """
[[endpoints]]
name = "github.user"
provider = "github"
base_url = "https://api.github.com"
path = "/users/{user}"
method = "GET"
timeout = "5s"
default_headers = { Accept = "application/vnd.github+json" }
auth = { placement = "KEY_PLACEMENT_QUERY", parameter_name = "key", key_pool = "gh" }
cache = { enabled = true, ttl = "60s" }
circuit_breaker = { enabled = true, shared = true, consecutive_failures = 3 }

[[endpoints]]
name = "github.create"
provider = "github"
base_url = "https://api.github.com"
method = "post"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "endpoints.toml"
    path.write_text(text)
    return path


def test_a_file_of_endpoints_becomes_validated_messages(tmp_path: Path) -> None:
    first, second = load_endpoints(write(tmp_path, GOOD))
    assert first.method == api_types_pb2.HTTP_METHOD_GET
    assert second.method == api_types_pb2.HTTP_METHOD_POST
    assert first.timeout.seconds == 5
    assert first.cache.ttl.seconds == 60
    assert [(h.name, h.value) for h in first.default_headers] == [
        ("Accept", "application/vnd.github+json")
    ]
    assert first.auth.placement == api_types_pb2.KEY_PLACEMENT_QUERY
    assert first.auth.key_pool == "gh"
    assert first.circuit_breaker.shared
    registry = APIRegistry()
    for endpoint in (first, second):
        registry.register(endpoint)
    assert len(registry) == 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (GOOD.replace("https://api.github.com", "ftp://x", 1), "endpoints[0].base_url"),
        (GOOD.replace('timeout = "5s"', "timeout = 5"), "endpoints[0]"),
        (GOOD.replace("github.create", "github.user"), "endpoints[1].name"),
        (GOOD.replace('method = "post"', 'method = "FETCH"'), "endpoints[1]"),
        (GOOD.replace('parameter_name = "key", ', ""), "endpoints[0].auth.parameter_name"),
        (GOOD.replace('key_pool = "gh"', 'key_pool = "g h"'), "endpoints[0].auth.key_pool"),
        ("endpoints = 3", '"endpoints"'),
        ("[[endpoints]\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_field(
    tmp_path: Path, text: str, names: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_endpoints(write(tmp_path, text))
    assert names in str(caught.value)
    assert "PACA_API_ENDPOINTS_FILE" in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_endpoints(tmp_path / "absent.toml")
