"""Wire security settings: TLS / mTLS certificates and bearer tokens with scopes.

Everything is off by default (plain loopback, no tokens) so ``make run`` works with no setup.
Server side: ``PACA_TLS_CERT_FILE`` + ``PACA_TLS_KEY_FILE`` turn on TLS, and
``PACA_TLS_CLIENT_CA_FILE`` additionally requires client certificates signed by that CA (mTLS);
``PACA_AUTH_TOKENS_FILE`` turns on bearer-token auth. Client side (a service calling another):
``PACA_TLS_CA_FILE`` is the CA to trust, ``PACA_TLS_CLIENT_CERT_FILE`` / ``_KEY_FILE`` the
certificate to present, ``PACA_SERVICE_TOKEN`` the token to send.

The tokens file stores SHA-256 digests, never tokens::

    [[token]]
    name = "orders-service"          # shown in logs instead of the token
    sha256 = "9f86d081884c7d65..."   # python -m paca_runtime.auth hash <token>
    scopes = ["api.call", "db.read"]
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc

from paca_runtime.settings import SettingsError, SettingsSource

TLS_CERT_FILE: Final = "PACA_TLS_CERT_FILE"
TLS_KEY_FILE: Final = "PACA_TLS_KEY_FILE"
TLS_CLIENT_CA_FILE: Final = "PACA_TLS_CLIENT_CA_FILE"
TLS_CA_FILE: Final = "PACA_TLS_CA_FILE"
TLS_CLIENT_CERT_FILE: Final = "PACA_TLS_CLIENT_CERT_FILE"
TLS_CLIENT_KEY_FILE: Final = "PACA_TLS_CLIENT_KEY_FILE"
AUTH_TOKENS_FILE: Final = "PACA_AUTH_TOKENS_FILE"
SERVICE_TOKEN: Final = "PACA_SERVICE_TOKEN"

# Scopes per RPC family; a broader scope implies the narrower ones listed for it.
SCOPES: Final = frozenset(
    {
        "api.call",
        "api.admin",
        "db.read",
        "db.write",
        "db.admin",
        "monitor.read",
        "monitor.report",
        "monitor.admin",
    }
)
IMPLIED: Final = {
    "api.admin": frozenset({"api.call"}),
    "db.admin": frozenset({"db.write", "db.read"}),
    "db.write": frozenset({"db.read"}),
    "monitor.admin": frozenset({"monitor.read", "monitor.report"}),
}


def grants(held: frozenset[str], needed: str) -> bool:
    """Whether scopes ``held`` allow an RPC that needs scope ``needed``."""
    return needed in held or any(needed in IMPLIED.get(scope, ()) for scope in held)


def _read(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f'"{name}": cannot read {path}: {exc.strerror}') from exc


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise SettingsError(f'"{TLS_CERT_FILE}" and "{TLS_KEY_FILE}" go together')
        if self.client_ca_file is not None and self.cert_file is None:
            raise SettingsError(f'"{TLS_CLIENT_CA_FILE}" (mTLS) needs "{TLS_CERT_FILE}"')
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise SettingsError(f'"{TLS_CLIENT_CERT_FILE}" and "{TLS_CLIENT_KEY_FILE}" go together')

    @classmethod
    def from_source(cls, source: SettingsSource) -> TlsSettings:
        def path(name: str) -> Path | None:
            value = source.text(name, "")
            return Path(value) if value else None

        return cls(
            cert_file=path(TLS_CERT_FILE),
            key_file=path(TLS_KEY_FILE),
            client_ca_file=path(TLS_CLIENT_CA_FILE),
            ca_file=path(TLS_CA_FILE),
            client_cert_file=path(TLS_CLIENT_CERT_FILE),
            client_key_file=path(TLS_CLIENT_KEY_FILE),
        )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS (mTLS with a client CA) for a server; None serves plaintext."""
        if self.cert_file is None:
            return None
        key = _read(self.key_file, TLS_KEY_FILE)
        cert = _read(self.cert_file, TLS_CERT_FILE)
        client_ca = _read(self.client_ca_file, TLS_CLIENT_CA_FILE)
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS for a channel to another service; None dials plaintext."""
        if self.ca_file is None and self.client_cert_file is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, TLS_CA_FILE),
            private_key=_read(self.client_key_file, TLS_CLIENT_KEY_FILE),
            certificate_chain=_read(self.client_cert_file, TLS_CLIENT_CERT_FILE),
        )


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    digest: bytes = field(repr=False)
    scopes: frozenset[str]


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Known tokens by digest; lookups compare against every entry in constant time."""

    entries: tuple[TokenEntry, ...] = ()

    def lookup(self, token: str) -> TokenEntry | None:
        digest = token_digest(token)
        found = None
        for entry in self.entries:  # no early exit: timing does not depend on the position
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise SettingsError(
                f'"{AUTH_TOKENS_FILE}": cannot read {path}: {exc.strerror}'
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f'"{AUTH_TOKENS_FILE}": {path} is not valid TOML: {exc}') from exc
        entries = []
        for i, raw in enumerate(data.get("token", [])):
            where = f'"{AUTH_TOKENS_FILE}" token[{i}]'
            try:
                digest = bytes.fromhex(str(raw["sha256"]))
                scopes = frozenset(str(s) for s in raw["scopes"])
            except (KeyError, TypeError, ValueError):
                raise SettingsError(f"{where}: needs sha256 (hex) and scopes (a list)") from None
            if len(digest) != 32:
                raise SettingsError(f"{where}.sha256: must be 64 hex digits")
            if unknown := scopes - SCOPES:
                raise SettingsError(f"{where}.scopes: unknown {sorted(unknown)}")
            entries.append(TokenEntry(str(raw.get("name", f"token[{i}]")), digest, scopes))
        return cls(tuple(entries))


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    tls: TlsSettings = TlsSettings()
    tokens: TokenTable | None = None
    service_token: str = field(default="", repr=False)

    @classmethod
    def from_source(cls, source: SettingsSource) -> SecuritySettings:
        tokens_file = source.text(AUTH_TOKENS_FILE, "")
        return cls(
            tls=TlsSettings.from_source(source),
            tokens=TokenTable.load(Path(tokens_file)) if tokens_file else None,
            service_token=source.text(SERVICE_TOKEN, ""),
        )
