"""Webhook intake and delivery settings (environment or PACA_CONFIG_FILE; see README).

Sources are named in ``PACA_WEBHOOK_SOURCES`` as ``name:scheme`` pairs; each source's secrets come
from ``PACA_WEBHOOK_SECRET_<NAME>`` (several separated by spaces or commas, so a secret can be
rotated: every listed secret is accepted) or from the file named by
``PACA_WEBHOOK_SECRET_<NAME>_FILE`` (one secret per line). Secrets never appear in a repr, a log
line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from paca_runtime.settings import SettingsError, SettingsSource

LISTEN: Final = "PACA_WEBHOOK_LISTEN"
SOURCES: Final = "PACA_WEBHOOK_SOURCES"
SECRET_PREFIX: Final = "PACA_WEBHOOK_SECRET_"
MAX_BODY_BYTES: Final = "PACA_WEBHOOK_MAX_BODY_BYTES"
TOLERANCE: Final = "PACA_WEBHOOK_TOLERANCE_S"
HMAC_HEADER: Final = "PACA_WEBHOOK_HMAC_HEADER"
VISIBILITY_TIMEOUT: Final = "PACA_WEBHOOK_VISIBILITY_TIMEOUT_S"
MAX_ATTEMPTS: Final = "PACA_WEBHOOK_MAX_ATTEMPTS"
POLL_INTERVAL: Final = "PACA_WEBHOOK_POLL_INTERVAL_S"
STORE_TIMEOUT: Final = "PACA_WEBHOOK_STORE_TIMEOUT_S"
REUSE_PORT: Final = "PACA_API_REUSE_PORT"

SCHEMES: Final = ("standard", "github", "hmac")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def secret_variable(source: str) -> str:
    """The environment variable holding ``source``'s secrets."""
    return SECRET_PREFIX + re.sub(r"[^A-Z0-9]", "_", source.upper())


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One sender: its URL name, its verification scheme and its signing keys."""

    name: str
    scheme: str
    # Keys as bytes (Standard Webhooks: the base64-decoded whsec_ key); every one is accepted.
    keys: tuple[bytes, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"<WebhookSource {self.name} scheme={self.scheme} keys={len(self.keys)}>"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The intake server and how events are delivered to subscribers.

    With no sources the intake server is not started (nothing could be accepted); the
    WebhookService RPCs are served either way.
    """

    listen: str = "127.0.0.1:8080"
    sources: tuple[WebhookSource, ...] = ()
    max_body_bytes: int = 1024 * 1024
    # Standard Webhooks: a timestamp further than this from now (past or future) is refused.
    tolerance_s: float = 300.0
    # Header carrying the hex HMAC-SHA256 of the body for sources of scheme "hmac".
    hmac_header: str = "X-Signature"
    # An event not acked this long after delivery is delivered again.
    visibility_timeout_s: float = 30.0
    # Deliveries after which an unacked event is parked as dead.
    max_attempts: int = 5
    # Longest an idle subscriber waits before asking the store again (new events from this
    # replica's intake wake it at once).
    poll_interval_s: float = 0.5
    # Longest the intake waits for db_service before answering 503.
    store_timeout_s: float = 5.0
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise SettingsError(f'"{MAX_BODY_BYTES}" must be >= 1, got {self.max_body_bytes}')
        for name, value in (
            (TOLERANCE, self.tolerance_s),
            (VISIBILITY_TIMEOUT, self.visibility_timeout_s),
            (POLL_INTERVAL, self.poll_interval_s),
            (STORE_TIMEOUT, self.store_timeout_s),
        ):
            if value <= 0:
                raise SettingsError(f'"{name}" must be > 0, got {value}')
        if self.max_attempts < 1:
            raise SettingsError(f'"{MAX_ATTEMPTS}" must be >= 1, got {self.max_attempts}')
        if not self.hmac_header:
            raise SettingsError(f'"{HMAC_HEADER}" must not be empty')

    def source(self, name: str) -> WebhookSource | None:
        return next((s for s in self.sources if s.name == name), None)

    @classmethod
    def from_source(cls, source: SettingsSource) -> WebhookSettings:
        return cls(
            listen=source.address(LISTEN, "127.0.0.1:8080"),
            sources=tuple(_sources(source)),
            max_body_bytes=source.integer(MAX_BODY_BYTES, 1024 * 1024, minimum=1),
            tolerance_s=source.number(TOLERANCE, 300.0),
            hmac_header=source.text(HMAC_HEADER, "X-Signature"),
            visibility_timeout_s=source.number(VISIBILITY_TIMEOUT, 30.0),
            max_attempts=source.integer(MAX_ATTEMPTS, 5, minimum=1),
            poll_interval_s=source.number(POLL_INTERVAL, 0.5),
            store_timeout_s=source.number(STORE_TIMEOUT, 5.0),
            reuse_port=source.flag(REUSE_PORT, False),
        )


def _sources(source: SettingsSource) -> list[WebhookSource]:
    found: list[WebhookSource] = []
    for item in filter(None, (p.strip() for p in source.text(SOURCES, "").split(","))):
        name, sep, scheme = item.partition(":")
        name, scheme = name.strip(), scheme.strip()
        if not sep or not _NAME.match(name):
            raise SettingsError(
                f'"{SOURCES}" entries must be name:scheme with a lowercase name, got {item!r}'
            )
        if scheme not in SCHEMES:
            raise SettingsError(f'"{SOURCES}": scheme of {name} must be one of {SCHEMES}')
        if any(s.name == name for s in found):
            raise SettingsError(f'"{SOURCES}": source {name} is named twice')
        found.append(WebhookSource(name, scheme, _keys(source, name, scheme)))
    return found


def _keys(source: SettingsSource, name: str, scheme: str) -> tuple[bytes, ...]:
    variable = secret_variable(name)
    path = source.text(variable + "_FILE", "")
    if path:
        try:
            secrets = Path(path).read_text(encoding="utf-8").split()
        except OSError as exc:
            raise SettingsError(f'"{variable}_FILE": cannot read {path}: {exc.strerror}') from exc
        where = f"{variable}_FILE"
    else:
        secrets = source.text(variable, "").replace(",", " ").split()
        where = variable
    if not secrets:
        raise SettingsError(f'"{where}" must hold at least one secret for source {name}')
    return tuple(_key(secret, scheme, where) for secret in secrets)


def _key(secret: str, scheme: str, where: str) -> bytes:
    if scheme != "standard":
        return secret.encode()
    # Standard Webhooks secrets are base64 keys, conventionally prefixed "whsec_".
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        # The value is not echoed: it is a secret.
        raise SettingsError(f'"{where}": a Standard Webhooks secret must be base64') from None
    if not key:
        raise SettingsError(f'"{where}": a Standard Webhooks secret must not be empty')
    return key
