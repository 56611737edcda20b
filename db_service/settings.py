"""db_service settings (environment or PACA_CONFIG_FILE; see README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from paca_runtime.redact import redact_url
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

LISTEN: Final = "PACA_DB_LISTEN"
DB_URL: Final = "PACA_DB_URL"
DATABASES: Final = "PACA_DATABASES"
POOL_SIZE: Final = "DB_POOL_SIZE"
ACQUIRE_TIMEOUT: Final = "PACA_DB_ACQUIRE_TIMEOUT_S"
MAX_ROWS: Final = "PACA_DB_MAX_ROWS"
MAX_BYTES: Final = "PACA_DB_MAX_BYTES"
STREAM_CHUNK_ROWS: Final = "PACA_DB_STREAM_CHUNK_ROWS"
STREAM_CHUNK_BYTES: Final = "PACA_DB_STREAM_CHUNK_BYTES"
CALLLOG_DATABASE: Final = "PACA_CALLLOG_DATABASE"
REUSE_PORT: Final = "PACA_DB_REUSE_PORT"
MIGRATIONS: Final = "PACA_MIGRATIONS"

SCHEMES: Final = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """One named database."""

    name: str
    url: str

    @property
    def dialect(self) -> str:
        return SCHEMES[urlsplit(self.url).scheme]


@dataclass(frozen=True, slots=True)
class DbSettings:
    listen: str = "127.0.0.1:50052"
    databases: tuple[DatabaseSettings, ...] = field(default_factory=tuple)
    pool_size: int = 10
    acquire_timeout_s: float = 5.0
    max_rows: int = 10_000
    # Below gRPC's default 4 MiB message limit, so a full reply always reaches the client.
    max_bytes: int = 3 * 1024 * 1024
    stream_chunk_rows: int = 1000
    stream_chunk_bytes: int = 1024 * 1024
    calllog_database: str = "main"
    reuse_port: bool = False
    # (database name, directory of its migration set) pairs; see MigrationManager.
    migrations: tuple[tuple[str, Path], ...] = ()

    def __post_init__(self) -> None:
        names = [db.name for db in self.databases]
        if len(set(names)) != len(names):
            raise SettingsError(f'"{DATABASES}": a database name appears twice: {names}')
        seen: set[str] = set()
        for name, directory in self.migrations:
            if name not in names:
                raise SettingsError(f'"{MIGRATIONS}" names database {name!r}, not one of {names}')
            if name in seen:
                raise SettingsError(f'"{MIGRATIONS}": database {name!r} appears twice')
            seen.add(name)
            if not directory.is_dir():
                raise SettingsError(f'"{MIGRATIONS}": {directory} is not a directory')
        if self.calllog_database not in names:
            raise SettingsError(
                f'"{CALLLOG_DATABASE}" names {self.calllog_database!r}, not one of {names}'
            )
        if self.pool_size < 1:
            raise SettingsError(f'"{POOL_SIZE}" must be >= 1, got {self.pool_size}')
        if self.max_rows < 1:
            raise SettingsError(f'"{MAX_ROWS}" must be >= 1, got {self.max_rows}')
        for name, value in (
            (MAX_BYTES, self.max_bytes),
            (STREAM_CHUNK_ROWS, self.stream_chunk_rows),
            (STREAM_CHUNK_BYTES, self.stream_chunk_bytes),
        ):
            if value < 1:
                raise SettingsError(f'"{name}" must be >= 1, got {value}')

    @classmethod
    def from_source(cls, source: SettingsSource, runtime: RuntimeSettings) -> DbSettings:
        default_url = f"sqlite:///{Path(runtime.state_dir) / 'db' / 'main.db'}"
        databases = [DatabaseSettings("main", _url(DB_URL, source.text(DB_URL, default_url)))]
        for item in filter(None, (p.strip() for p in source.text(DATABASES, "").split(","))):
            name, sep, url = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise SettingsError(f'"{DATABASES}" entries are name=url, got {item!r}')
            databases.append(DatabaseSettings(name.strip(), _url(DATABASES, url.strip())))
        return cls(
            listen=source.address(LISTEN, "127.0.0.1:50052"),
            databases=tuple(databases),
            pool_size=source.integer(POOL_SIZE, 10, minimum=1),
            acquire_timeout_s=source.number(ACQUIRE_TIMEOUT, 5.0),
            max_rows=source.integer(MAX_ROWS, 10_000, minimum=1),
            max_bytes=source.integer(MAX_BYTES, 3 * 1024 * 1024, minimum=1),
            stream_chunk_rows=source.integer(STREAM_CHUNK_ROWS, 1000, minimum=1),
            stream_chunk_bytes=source.integer(STREAM_CHUNK_BYTES, 1024 * 1024, minimum=1),
            calllog_database=source.text(CALLLOG_DATABASE, "main"),
            reuse_port=source.flag(REUSE_PORT, False),
            migrations=_migration_sets(source.text(MIGRATIONS, "")),
        )

    def migration_directory(self, database: str) -> Path | None:
        """The directory of ``database``'s migration set, or None when it has none."""
        return dict(self.migrations).get(database)


def _migration_sets(text: str) -> tuple[tuple[str, Path], ...]:
    sets = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, directory = item.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise SettingsError(f'"{MIGRATIONS}" entries are database=directory, got {item!r}')
        sets.append((name.strip(), Path(directory.strip())))
    return tuple(sets)


def _url(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise SettingsError(
            f'"{name}": unsupported database URL scheme {scheme!r} in {redact_url(url)!r}'
        )
    return url
