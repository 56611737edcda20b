"""Security settings validate themselves and name the variable; scopes follow one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from paca_runtime.auth import scope_for
from paca_runtime.security import (
    SecuritySettings,
    TlsSettings,
    TokenTable,
    grants,
    token_digest,
)
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = pytest.mark.unit


def test_plaintext_without_auth_is_the_default() -> None:
    security = SecuritySettings.from_source(SettingsSource({}))
    assert security.tls.server_credentials() is None
    assert security.tls.channel_credentials() is None
    assert security.tokens is None


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"PACA_TLS_CERT_FILE": "/x.crt"}, "PACA_TLS_KEY_FILE"),
        ({"PACA_TLS_CLIENT_CA_FILE": "/ca.crt"}, "PACA_TLS_CLIENT_CA_FILE"),
        ({"PACA_TLS_CLIENT_CERT_FILE": "/c.crt"}, "PACA_TLS_CLIENT_KEY_FILE"),
        ({"PACA_AUTH_TOKENS_FILE": "/nonexistent.toml"}, "PACA_AUTH_TOKENS_FILE"),
    ],
)
def test_incomplete_or_missing_security_settings_name_the_variable(
    environ: dict[str, str], name: str
) -> None:
    with pytest.raises(SettingsError, match=name):
        SecuritySettings.from_source(SettingsSource(environ))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('[[token]]\nscopes = ["api.call"]\n', "sha256"),
        ('[[token]]\nsha256 = "abcd"\nscopes = ["api.call"]\n', "64 hex digits"),
        (f'[[token]]\nsha256 = "{"0" * 64}"\nscopes = ["root"]\n', "unknown ['root']"),
    ],
)
def test_bad_tokens_file_names_the_entry(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(body)
    with pytest.raises(SettingsError, match="token\\[0\\]") as caught:
        TokenTable.load(path)
    assert fragment in str(caught.value)


def test_lookup_matches_the_digest_and_repr_hides_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[[token]]\nname = "ci"\nsha256 = "{token_digest("s3cret").hex()}"\nscopes = ["db.read"]\n'
    )
    table = TokenTable.load(path)
    entry = table.lookup("s3cret")
    assert entry is not None
    assert entry.name == "ci"
    assert table.lookup("s3cre") is None
    assert "s3cret" not in repr(SecuritySettings(service_token="s3cret", tokens=table))


def test_scopes_imply_narrower_ones_only() -> None:
    assert grants(frozenset({"db.admin"}), "db.read")
    assert grants(frozenset({"db.write"}), "db.read")
    assert not grants(frozenset({"db.read"}), "db.write")
    assert not grants(frozenset({"api.admin"}), "db.read")


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("/paca.api.v1.ApiService/Call", "api.call"),
        ("/paca.api.v1.ApiService/RegisterEndpoint", "api.admin"),
        ("/paca.api.v1.ApiService/SomethingNew", "api.admin"),
        ("/paca.db.v1.DbService/Query", "db.read"),
        ("/paca.db.v1.DbService/RecordApiCalls", "db.write"),
        ("/paca.db.v1.DbService/Migrate", "db.admin"),
        ("/paca.api.v1.WebhookService/Subscribe", "api.call"),
        ("/paca.api.v1.WebhookService/AckEvent", "api.call"),
        ("/paca.api.v1.WebhookService/ReplayEvents", "api.admin"),
        ("/paca.db.v1.EventStoreService/ClaimEvents", "db.write"),
        ("/paca.monitor.v1.MonitorService/Report", "monitor.report"),
        ("/grpc.health.v1.Health/Check", None),
    ],
)
def test_method_scope_table(method: str, scope: str | None) -> None:
    assert scope_for(method) == scope


def test_tls_settings_round_trip_from_source() -> None:
    tls = TlsSettings.from_source(
        SettingsSource({"PACA_TLS_CERT_FILE": "/a.crt", "PACA_TLS_KEY_FILE": "/a.key"})
    )
    assert tls.cert_file == Path("/a.crt")
