"""Versioned SQL migrations with checksums, drift detection, rollback and an engine-level lock.

A migration set is a directory of ``NNNN_name.sql`` files, each with an optional
``NNNN_name.down.sql`` that undoes it. Applied versions are kept in a bookkeeping table with the
SHA-256 of the up file; a file that changed after it was applied is drift and stops the runner
before it touches anything. Each step runs in a transaction, under the backend's migration lock,
so runners on several replicas apply each version once. db_service's own tables come from the
built-in set (``paca_schema_migrations``); a database's own set, configured by PACA_MIGRATIONS,
is kept apart in ``paca_app_migrations`` so the two numberings never collide.

Hand-written rather than Alembic: migrations here are plain SQL per engine, run by a server that
also serves them over RPC, and Alembic's Python environment model brings nothing to that.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from db_service.backends.base import Backend, Session
from db_service.errors import MigrationError
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

BUILTIN_TABLE: Final = "paca_schema_migrations"
APP_TABLE: Final = "paca_app_migrations"

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(\.down)?\.sql$")

# Per dialect: create the bookkeeping table, record a version, forget a version, does it exist.
# {table} is one of the two constants above, never input.
_BOOKKEEPING = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS {table} ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))",
        "INSERT INTO {table} (version, name, checksum) VALUES (?, ?, ?)",
        "DELETE FROM {table} WHERE version = ?",
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS {table} ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        "INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)",
        "DELETE FROM {table} WHERE version = $1",
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = $1",
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS {table} ("
        " version INT PRIMARY KEY, name VARCHAR(200) NOT NULL, checksum CHAR(64) NOT NULL,"
        " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        "INSERT INTO {table} (version, name, checksum) VALUES (%s, %s, %s)",
        "DELETE FROM {table} WHERE version = %s",
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = %s",
    ),
}


class Direction(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Migration:
    """One version of a set: its up SQL and, when it can be rolled back, its down SQL."""

    version: int
    name: str
    sql: str
    down_sql: str | None = None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Step:
    """One planned or applied step."""

    version: int
    name: str
    direction: Direction
    sql: str


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One migration as the database has it (see :meth:`MigrationManager.status`)."""

    version: int
    name: str
    applied: bool
    applied_at: dt.datetime | None
    reversible: bool
    # Applied, but the file changed since or is gone.
    drifted: bool


@dataclass(frozen=True, slots=True)
class _Applied:
    name: str
    checksum: str
    applied_at: dt.datetime | None


def load_migrations(directory: Path) -> list[Migration]:
    """The migrations of a directory in version order.

    Raises:
        MigrationError: a badly named file, a version twice, or a down file without its up file.
    """
    ups: dict[int, tuple[str, str]] = {}
    downs: dict[int, tuple[str, str]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: migration files are named NNNN_name.sql or NNNN_name.down.sql"
            )
        version = int(match.group(1))
        found = downs if match.group(3) else ups
        if version in found:
            raise MigrationError(f"{path}: version {version} appears twice")
        found[version] = (match.group(2), path.read_text(encoding="utf-8"))
    for version, (name, _) in downs.items():
        if ups.get(version, ("",))[0] != name:
            raise MigrationError(f"{directory}: {version:04d}_{name}.down.sql has no up file")
    return [
        Migration(v, ups[v][0], ups[v][1], downs[v][1] if v in downs else None) for v in sorted(ups)
    ]


def builtin_migrations(dialect: str) -> list[Migration]:
    """db_service's own tables (external_api_logs, ...) for one dialect."""
    directory = resources.files("db_service") / "migrations" / dialect
    return load_migrations(Path(str(directory)))


def _timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return None
    # MySQL's DATETIME has no zone: read as UTC (the server's time zone where it is UTC).
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class MigrationManager:
    """Brings one database to a version of a migration set, and reports where it is.

    Args:
        backend: The database, opened.
        migrations: The set, in version order.
        table: The bookkeeping table of the set (:data:`BUILTIN_TABLE` or :data:`APP_TABLE`).
    """

    def __init__(
        self, backend: Backend, migrations: list[Migration], table: str = BUILTIN_TABLE
    ) -> None:
        if table not in (BUILTIN_TABLE, APP_TABLE):
            raise ValueError(f"unknown bookkeeping table {table!r}")
        self.backend = backend
        self.migrations = migrations
        self.table = table
        create, record, forget, exists = _BOOKKEEPING[backend.dialect]
        self._sql_create = create.format(table=table)
        self._sql_record = record.format(table=table)
        self._sql_forget = forget.format(table=table)
        self._sql_exists = exists
        self._by_version = {m.version: m for m in migrations}

    def __repr__(self) -> str:
        return (
            f"<MigrationManager db={self.backend.name} table={self.table}"
            f" migrations={len(self.migrations)}>"
        )

    async def migrate(self) -> list[int]:
        """Apply every pending migration; returns the versions applied now. Idempotent."""
        return [step.version for step in await self.apply()]

    async def apply(self, target: int | None = None, *, dry_run: bool = False) -> list[Step]:
        """Bring the database to ``target`` (None: the newest version); returns the steps.

        Versions above ``target`` are rolled back newest first with their down SQL, then pending
        versions up to ``target`` are applied oldest first. With ``dry_run`` the plan is
        returned and nothing is changed (not even the bookkeeping table is created).

        Raises:
            InvalidArgument: ``target`` is neither 0 nor a version of the set.
            MigrationError: drift, or a rollback that has no down SQL.
        """
        if target is not None and target != 0 and target not in self._by_version:
            raise InvalidArgument("target_version", f"{target} is not a version of the set")
        async with self.backend.migration_session() as session:
            applied = await self._applied(session, create=not dry_run)
            steps = self._plan(applied, target)
            if dry_run:
                return steps
            for step in steps:
                try:
                    async with session.transaction():
                        await session.execute_script(step.sql)
                        if step.direction is Direction.UP:
                            checksum = self._by_version[step.version].checksum
                            record = (step.version, step.name, checksum)
                            await session.execute(self._sql_record, record)
                        else:
                            await session.execute(self._sql_forget, (step.version,))
                except Exception as exc:
                    # The session speaks the driver's own errors; the engine's message names
                    # what failed and never holds credentials.
                    raise MigrationError(
                        f"{self.backend.name}: {step.direction.value} {step.version:04d}_"
                        f"{step.name} failed and was rolled back where the engine allows: {exc}"
                    ) from exc
                logger.info(
                    "migration %04d_%s %s on %s",
                    step.version,
                    step.name,
                    "applied" if step.direction is Direction.UP else "rolled back",
                    self.backend.name,
                )
        return steps

    async def status(self) -> list[MigrationState]:
        """Every migration of the set and every applied one, in version order. Reads only."""
        async with self.backend.migration_session() as session:
            applied = await self._applied(session, create=False, check=False)
        states = []
        for version in sorted(set(applied) | set(self._by_version)):
            migration = self._by_version.get(version)
            record = applied.get(version)
            states.append(
                MigrationState(
                    version=version,
                    name=migration.name if migration else record.name if record else "",
                    applied=record is not None,
                    applied_at=record.applied_at if record else None,
                    reversible=bool(migration and migration.down_sql is not None),
                    drifted=record is not None
                    and (migration is None or migration.checksum != record.checksum),
                )
            )
        return states

    def _plan(self, applied: dict[int, _Applied], target: int | None) -> list[Step]:
        steps = []
        for version in sorted(applied, reverse=True):
            if target is None or version <= target:
                continue
            migration = self._by_version.get(version)
            if migration is None:
                raise MigrationError(
                    f"{self.backend.name}: applied version {version:04d}_{applied[version].name}"
                    " has no file in the set, so it cannot be rolled back"
                )
            if migration.down_sql is None:
                raise MigrationError(
                    f"{self.backend.name}: {version:04d}_{migration.name} has no"
                    f" {version:04d}_{migration.name}.down.sql, so it cannot be rolled back"
                )
            steps.append(Step(version, migration.name, Direction.DOWN, migration.down_sql))
        for migration in self.migrations:
            if migration.version in applied or (target is not None and migration.version > target):
                continue
            steps.append(Step(migration.version, migration.name, Direction.UP, migration.sql))
        return steps

    async def _applied(
        self, session: Session, *, create: bool, check: bool = True
    ) -> dict[int, _Applied]:
        if create:
            await session.execute(self._sql_create)
        else:
            ((count,),) = await session.fetch(self._sql_exists, (self.table,))
            if not count:
                return {}
        rows = await session.fetch(f"SELECT version, name, checksum, applied_at FROM {self.table}")
        applied = {
            int(version): _Applied(str(name), str(checksum), _timestamp(applied_at))
            for version, name, checksum, applied_at in rows
        }
        for version, record in applied.items() if check else ():
            migration = self._by_version.get(version)
            if migration is not None and migration.checksum != record.checksum:
                raise MigrationError(
                    f"{self.backend.name}: migration {version:04d}_{migration.name} "
                    "changed after it was applied (checksum drift)"
                )
        return applied
