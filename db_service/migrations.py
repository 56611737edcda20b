"""Versioned SQL migrations with checksums, drift detection and an engine-level lock.

A migration set is a directory of ``NNNN_name.sql`` files per dialect. Applied versions are kept
in ``paca_schema_migrations`` with the SHA-256 of the file; a file that changed after it was applied
is drift and stops the runner before it touches anything. Each migration runs in a transaction,
under the backend's migration lock, so runners on several replicas apply each version once.
Hand-written rather than Alembic: migrations here are plain SQL per engine, run by a server that
also serves them over RPC, and Alembic's Python environment model brings nothing to that.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from db_service.backends.base import Backend, Session
from db_service.errors import MigrationError

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS paca_schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
        "INSERT INTO paca_schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS paca_schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "INSERT INTO paca_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS paca_schema_migrations ("
        " version INT PRIMARY KEY, name VARCHAR(200) NOT NULL, checksum CHAR(64) NOT NULL,"
        " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        "INSERT INTO paca_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
    ),
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """The migrations of a directory in version order; a duplicate version is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} appears twice")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def builtin_migrations(dialect: str) -> list[Migration]:
    """db_service's own tables (external_api_logs, ...) for one dialect."""
    directory = resources.files("db_service") / "migrations" / dialect
    return load_migrations(Path(str(directory)))


class MigrationManager:
    """Brings one database to the latest version of a migration set.

    Args:
        backend: The database, opened.
        migrations: The set, in version order.
    """

    def __init__(self, backend: Backend, migrations: list[Migration]) -> None:
        self.backend = backend
        self.migrations = migrations

    async def migrate(self) -> list[int]:
        """Apply every pending migration; returns the versions applied now. Idempotent."""
        create_table, record = _BOOKKEEPING[self.backend.dialect]
        applied_now: list[int] = []
        async with self.backend.migration_session() as session:
            await session.execute(create_table)
            applied = await self._applied(session)
            for migration in self.migrations:
                if migration.version in applied:
                    continue
                async with session.transaction():
                    await session.execute_script(migration.sql)
                    await session.execute(
                        record, (migration.version, migration.name, migration.checksum)
                    )
                applied_now.append(migration.version)
                logger.info(
                    "applied migration %04d_%s to %s",
                    migration.version,
                    migration.name,
                    self.backend.name,
                )
        return applied_now

    async def _applied(self, session: Session) -> set[int]:
        rows = await session.fetch("SELECT version, checksum FROM paca_schema_migrations")
        applied = {int(version): str(checksum) for version, checksum in rows}
        for migration in self.migrations:
            stored = applied.get(migration.version)
            if stored is not None and stored != migration.checksum:
                raise MigrationError(
                    f"{self.backend.name}: migration {migration.version:04d}_{migration.name} "
                    "changed after it was applied (checksum drift)"
                )
        return set(applied)
