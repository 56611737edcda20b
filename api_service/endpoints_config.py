"""Endpoints declared in a TOML file (PACA_API_ENDPOINTS_FILE), registered at start.

Each ``[[endpoints]]`` table is an ``Endpoint`` message in protobuf's JSON mapping (snake_case
names, durations as ``"1.5s"``, enums by name), with two shorthands: ``method = "GET"`` for
``"HTTP_METHOD_GET"``, and ``default_headers`` as a table of name = value::

    [[endpoints]]
    name = "github.user"
    provider = "github"
    base_url = "https://api.github.com"
    path = "/users/{user}"
    method = "GET"
    timeout = "5s"
    default_headers = { Accept = "application/vnd.github+json" }
    auth = { placement = "KEY_PLACEMENT_BEARER", key_pool = "github" }
    cache = { enabled = true, ttl = "60s" }

A bad file stops the process at start with an error naming the entry and field; nothing of it is
registered.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from paca.api.v1 import api_types_pb2

from api_service.errors import InvalidCall
from api_service.registry import validate_endpoint
from api_service.settings import ENDPOINTS_FILE
from paca_runtime.settings import SettingsError


def _expand(entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    method = entry.get("method")
    if isinstance(method, str) and not method.startswith("HTTP_METHOD_"):
        entry["method"] = f"HTTP_METHOD_{method.upper()}"
    headers = entry.get("default_headers")
    if isinstance(headers, dict):
        entry["default_headers"] = [{"name": k, "value": str(v)} for k, v in headers.items()]
    return entry


def parse_endpoints(data: dict[str, Any], origin: str) -> list[api_types_pb2.Endpoint]:
    """The validated endpoints of a parsed file.

    Raises:
        SettingsError: Naming ``origin``, the entry (``endpoints[2]``) and the field.
    """
    entries = data.get("endpoints", [])
    if not isinstance(entries, list):
        raise SettingsError(f'"{ENDPOINTS_FILE}": {origin}: "endpoints" must be [[endpoints]]')
    found: list[api_types_pb2.Endpoint] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"endpoints[{i}]"
        if not isinstance(entry, dict):
            raise SettingsError(f'"{ENDPOINTS_FILE}": {origin}: {where} must be a table')
        endpoint = api_types_pb2.Endpoint()
        try:
            json_format.ParseDict(_expand(entry), endpoint)
        except json_format.ParseError as exc:
            raise SettingsError(f'"{ENDPOINTS_FILE}": {origin}: {where}: {exc}') from None
        try:
            validate_endpoint(endpoint, where)
        except InvalidCall as exc:
            raise SettingsError(f'"{ENDPOINTS_FILE}": {origin}: {exc}') from None
        if endpoint.name in names:
            raise SettingsError(
                f'"{ENDPOINTS_FILE}": {origin}: {where}.name {endpoint.name!r} appears twice'
            )
        names.add(endpoint.name)
        found.append(endpoint)
    return found


def load_endpoints(path: Path) -> list[api_types_pb2.Endpoint]:
    """The endpoints of the TOML file at ``path`` (see the module docstring)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f'"{ENDPOINTS_FILE}": cannot read {path}: {exc.strerror}') from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f'"{ENDPOINTS_FILE}": {path} is not valid TOML: {exc}') from None
    return parse_endpoints(data, str(path))
