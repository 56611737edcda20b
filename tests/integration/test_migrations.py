"""Migrations on real engines: applied once, drift refused, concurrent runners serialised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from db_service.backends.base import Backend
from db_service.databases import BACKENDS
from db_service.errors import MigrationError
from db_service.migrations import Migration, MigrationManager, load_migrations
from tests.integration.test_db_service import DIALECTS, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MIGRATIONS = [
    Migration(1, "widgets", "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT);"),
    Migration(2, "widgets_colour", "ALTER TABLE widgets ADD COLUMN colour TEXT;"),
]


BackendFactory = Callable[[], Awaitable[Backend]]


@pytest.fixture(params=DIALECTS)
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    """Yields a factory: each call opens another backend (another pool) on the same database."""
    opened: list[Backend] = []
    async with temporary_database(request.param, tmp_path) as url:
        kind = BACKENDS[request.param]

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


async def test_failing_migration_is_not_recorded_and_keeps_earlier_ones(
    make_backend: BackendFactory,
) -> None:
    backend = await make_backend()
    broken = [*MIGRATIONS, Migration(3, "broken", "CREATE TABLE ok3 (id INTEGER); SELEC nope;")]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the engine's own syntax error
        await MigrationManager(backend, broken).migrate()
    if backend.dialect != "mysql":
        # Transactional DDL: the failed migration's CREATE TABLE was rolled back too. (MySQL
        # commits DDL implicitly, so there only the version record is guaranteed absent.)
        with pytest.raises(Exception, match="ok3"):
            await backend.execute("SELECT * FROM ok3", [], read_only=True, max_rows=1)
    fixed = [*MIGRATIONS, Migration(3, "broken", "CREATE TABLE IF NOT EXISTS ok3 (id INTEGER);")]
    applied = await MigrationManager(backend, fixed).migrate()
    # SQLite runs the whole set in one exclusive transaction; the others one per migration.
    assert applied in ([1, 2, 3], [3])
    await backend.execute("SELECT * FROM ok3", [], read_only=True, max_rows=1)


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
