"""Key pool settings (environment or PACA_CONFIG_FILE, like every other setting).

``PACA_API_KEY_POOLS`` lists the pool names; each pool ``<NAME>`` (upper-cased, anything but
letters and digits turned into ``_``) then has either keys or an OAuth2 client:

| name | default | meaning |
| --- | --- | --- |
| PACA_API_KEY_POOLS | "" | pool names, comma-separated (auth.key_pool, else the provider) |
| PACA_API_KEY_POOL_<NAME>_KEYS | "" | env:VAR or file:/path sources (a key per line) |
| PACA_API_KEY_POOL_<NAME>_QUARANTINE_S | PACA_API_KEY_QUARANTINE_S | rest after 401/403 |
| PACA_API_KEY_POOL_<NAME>_TOKEN_URL | "" | OAuth2 token endpoint (client-credentials grant) |
| PACA_API_KEY_POOL_<NAME>_CLIENT_ID | "" | OAuth2 client id (not a secret: the value itself) |
| PACA_API_KEY_POOL_<NAME>_CLIENT_SECRET | "" | OAuth2 client secret source: env:VAR or file:/path |
| PACA_API_KEY_POOL_<NAME>_SCOPE | "" | OAuth2 scope, space-separated |
| PACA_API_KEY_QUARANTINE_S | 300 | default rest of a key that got 401/403 (0: until reload) |
| PACA_API_KEY_COOLDOWN_S | 1 | rest after a 429 that says neither Retry-After nor a reset |
| PACA_API_KEY_QUOTA_RESERVE | 1 | rest a key once at most this many requests remain in its quota |
| PACA_API_OAUTH_REFRESH_MARGIN_S | 60 | refresh a token this long before it expires |

Secrets themselves never are setting values: only their sources are (see ``sources``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from api_service.auth.sources import check_source
from paca_runtime.settings import SettingsError, SettingsSource

KEY_POOLS: Final = "PACA_API_KEY_POOLS"
KEY_QUARANTINE: Final = "PACA_API_KEY_QUARANTINE_S"
KEY_COOLDOWN: Final = "PACA_API_KEY_COOLDOWN_S"
KEY_QUOTA_RESERVE: Final = "PACA_API_KEY_QUOTA_RESERVE"
OAUTH_REFRESH_MARGIN: Final = "PACA_API_OAUTH_REFRESH_MARGIN_S"
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")


def pool_setting(pool: str, suffix: str) -> str:
    """The name of a per-pool setting, e.g. ``PACA_API_KEY_POOL_GITHUB_KEYS``."""
    return f"PACA_API_KEY_POOL_{re.sub(r'[^A-Za-z0-9]', '_', pool).upper()}_{suffix}"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """One pool: key sources, or an OAuth2 client (``token_url`` set)."""

    name: str
    key_sources: tuple[str, ...] = ()
    quarantine_s: float = 300.0
    token_url: str = ""
    client_id: str = ""
    client_secret_source: str = ""
    scope: str = ""

    def __post_init__(self) -> None:
        if not _POOL_NAME.match(self.name):
            raise SettingsError(
                f'"{KEY_POOLS}": pool name {self.name!r} must be 1-50 letters, digits, '
                '".", "_" or "-"'
            )
        keys = pool_setting(self.name, "KEYS")
        for source in self.key_sources:
            check_source(source, keys)
        if self.token_url:
            if not self.token_url.startswith(("http://", "https://")):
                raise SettingsError(f'"{pool_setting(self.name, "TOKEN_URL")}" must be http(s)')
            if not self.client_id:
                raise SettingsError(f'"{pool_setting(self.name, "CLIENT_ID")}" is required')
            check_source(self.client_secret_source, pool_setting(self.name, "CLIENT_SECRET"))
            if self.key_sources:
                raise SettingsError(f'"{keys}": a pool has keys or an OAuth2 client, not both')
        elif not self.key_sources:
            raise SettingsError(f'"{keys}": pool {self.name} needs keys (or a TOKEN_URL)')
        if self.quarantine_s < 0:
            raise SettingsError(f'"{pool_setting(self.name, "QUARANTINE_S")}" must be >= 0')

    @property
    def is_oauth(self) -> bool:
        return bool(self.token_url)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Every key pool of the process and the defaults they share."""

    pools: tuple[PoolSettings, ...] = ()
    cooldown_s: float = 1.0
    quota_reserve: int = 1
    refresh_margin_s: float = 60.0

    def __post_init__(self) -> None:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise SettingsError(f'"{KEY_POOLS}": a pool name appears twice: {names}')
        if self.cooldown_s <= 0:
            raise SettingsError(f'"{KEY_COOLDOWN}" must be > 0, got {self.cooldown_s}')

    @classmethod
    def from_source(cls, source: SettingsSource) -> AuthSettings:
        quarantine_s = source.number(KEY_QUARANTINE, 300.0)
        pools = []
        for name in (n.strip() for n in source.text(KEY_POOLS, "").split(",")):
            if not name:
                continue
            keys = source.text(pool_setting(name, "KEYS"), "")
            pools.append(
                PoolSettings(
                    name=name,
                    key_sources=tuple(s.strip() for s in keys.split(",") if s.strip()),
                    quarantine_s=source.number(pool_setting(name, "QUARANTINE_S"), quarantine_s),
                    token_url=source.text(pool_setting(name, "TOKEN_URL"), ""),
                    client_id=source.text(pool_setting(name, "CLIENT_ID"), ""),
                    client_secret_source=source.text(pool_setting(name, "CLIENT_SECRET"), ""),
                    scope=source.text(pool_setting(name, "SCOPE"), ""),
                )
            )
        return cls(
            pools=tuple(pools),
            cooldown_s=source.number(KEY_COOLDOWN, 1.0),
            quota_reserve=source.integer(KEY_QUOTA_RESERVE, 1),
            refresh_margin_s=source.number(OAUTH_REFRESH_MARGIN, 60.0),
        )
