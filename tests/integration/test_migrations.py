"""Migrations on real engines: applied once, drift refused, concurrent runners serialised."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from db_service.backends.base import Backend
from db_service.backends.postgres import PostgresBackend
from db_service.backends.sqlite import SqliteBackend
from db_service.errors import MigrationError
from db_service.migrations import Migration, MigrationManager, load_migrations
from tests.conftest import backing_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MIGRATIONS = [
    Migration(1, "widgets", "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT);"),
    Migration(2, "widgets_colour", "ALTER TABLE widgets ADD COLUMN colour TEXT;"),
]


BackendFactory = Callable[[], Awaitable[Backend]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    """Yields a factory: each call opens another backend (another pool) on the same database."""
    opened: list[Backend] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
        kind: type[Backend] = SqliteBackend
    else:
        admin_url = backing_url("PACA_TEST_POSTGRES_URL")
        name = f"paca_mig_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        kind = PostgresBackend

    async def factory() -> Backend:
        backend = kind("main", url, pool_size=2, acquire_timeout_s=10)
        await backend.open()
        opened.append(backend)
        return backend

    try:
        yield factory
    finally:
        for backend in opened:
            await backend.aclose()
        if request.param == "postgresql":
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def test_pending_migrations_apply_once_in_order(make_backend: BackendFactory) -> None:
    backend = await make_backend()
    assert await MigrationManager(backend, MIGRATIONS).migrate() == [1, 2]
    assert await MigrationManager(backend, MIGRATIONS).migrate() == []
    await backend.execute(
        "INSERT INTO widgets (id, name, colour) VALUES (1, 'a', 'red')",
        [],
        read_only=False,
        max_rows=1,
    )


async def test_changed_applied_migration_is_drift_and_changes_nothing(
    make_backend: BackendFactory,
) -> None:
    backend = await make_backend()
    await MigrationManager(backend, MIGRATIONS[:1]).migrate()
    edited = [Migration(1, "widgets", MIGRATIONS[0].sql + " -- edited"), MIGRATIONS[1]]
    with pytest.raises(MigrationError, match="drift"):
        await MigrationManager(backend, edited).migrate()
    with pytest.raises(Exception, match="colour"):
        await backend.execute("SELECT colour FROM widgets", [], read_only=True, max_rows=1)


async def test_failing_migration_rolls_back_and_keeps_earlier_ones(
    make_backend: BackendFactory,
) -> None:
    backend = await make_backend()
    broken = [*MIGRATIONS, Migration(3, "broken", "CREATE TABLE ok3 (id INTEGER); SELEC nope;")]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the engine's own syntax error
        await MigrationManager(backend, broken).migrate()
    fixed = [*MIGRATIONS, Migration(3, "broken", "CREATE TABLE ok3 (id INTEGER);")]
    applied = await MigrationManager(backend, fixed).migrate()
    # SQLite runs the whole set in one exclusive transaction; PostgreSQL one per migration.
    assert applied in ([1, 2, 3], [3])


async def test_concurrent_runners_apply_each_migration_once(make_backend: BackendFactory) -> None:
    runners = [await make_backend() for _ in range(4)]
    results = await asyncio.gather(
        *(MigrationManager(backend, MIGRATIONS).migrate() for backend in runners)
    )
    assert sorted(v for applied in results for v in applied) == [1, 2]


def test_migration_files_must_be_numbered_and_unique(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    assert [m.version for m in load_migrations(tmp_path)] == [1]
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="twice"):
        load_migrations(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)
