"""Migrations on real engines: applied once, drift refused, concurrent runners serialised; a
database's own set through the Migrate / GetMigrationStatus RPCs and the command line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, db_types_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from db_service.backends.base import Backend
from db_service.databases import BACKENDS
from db_service.errors import MigrationError
from db_service.migrations import Migration, MigrationManager, load_migrations
from tests.integration.conftest import runtime_settings
from tests.integration.test_api_call import field_violations
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


# A user migration set that runs unchanged on all three engines.
SET = {
    "0001_widgets.sql": "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name VARCHAR(50));\n",
    "0001_widgets.down.sql": "DROP TABLE widgets;\n",
    "0002_widgets_colour.sql": "ALTER TABLE widgets ADD COLUMN colour VARCHAR(20);\n",
    "0002_widgets_colour.down.sql": "ALTER TABLE widgets DROP COLUMN colour;\n",
    "0003_gadgets.sql": (
        "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);\nINSERT INTO gadgets (id) VALUES (1);\n"
    ),
}


def write_set(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in SET.items():
        (directory / name).write_text(sql)
    return directory


@dataclass
class Migrating:
    dialect: str
    url: str
    directory: Path
    stub: db_service_pb2_grpc.DbServiceStub


@pytest.fixture(params=DIALECTS)
async def migrating(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Migrating]:
    """db_service with a migration set for "main" and a database "other" without one."""
    directory = write_set(tmp_path / "migrations")
    async with temporary_database(request.param, tmp_path) as url:
        settings = DbSettings(
            listen="127.0.0.1:0",
            databases=(
                DatabaseSettings("main", url),
                DatabaseSettings("other", f"sqlite:///{tmp_path / 'other.db'}"),
            ),
            pool_size=2,
            migrations=(("main", directory),),
        )
        app = DbApp(settings, runtime_settings(tmp_path))
        await app.start()
        try:
            async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
                stub = db_service_pb2_grpc.DbServiceStub(channel)
                yield Migrating(request.param, url, directory, stub)
        finally:
            await app.stop()


def steps(reply: db_service_pb2.MigrateResponse) -> list[tuple[int, str]]:
    names = {
        db_service_pb2.MIGRATION_DIRECTION_UP: "up",
        db_service_pb2.MIGRATION_DIRECTION_DOWN: "down",
    }
    return [(s.version, names[s.direction]) for s in reply.steps]


async def migrate(
    stub: db_service_pb2_grpc.DbServiceStub, **kwargs: object
) -> db_service_pb2.MigrateResponse:
    reply: db_service_pb2.MigrateResponse = await stub.Migrate(
        db_service_pb2.MigrateRequest(**kwargs)  # type: ignore[arg-type]
    )
    return reply


async def tables(migrating: Migrating) -> set[str]:
    reply = await migrating.stub.GetStats(db_service_pb2.GetStatsRequest())
    assert reply.pools
    found = set()
    for table in ("widgets", "gadgets"):
        probe = db_service_pb2.SelectRequest(select=db_types_pb2.Select(table=table, limit=1))
        try:
            await migrating.stub.Select(probe)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        else:
            code = grpc.StatusCode.OK
            found.add(table)
        assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    return found


async def test_migrate_rpc_plans_applies_to_a_target_and_rolls_back(migrating: Migrating) -> None:
    stub = migrating.stub
    status = await stub.GetMigrationStatus(db_service_pb2.GetMigrationStatusRequest())
    assert status.current_version == 0
    assert [(m.version, m.applied, m.reversible) for m in status.migrations] == [
        (1, False, True),
        (2, False, True),
        (3, False, False),
    ]
    plan = await migrate(stub, dry_run=True)
    assert steps(plan) == [(1, "up"), (2, "up"), (3, "up")]
    assert plan.steps[0].sql == SET["0001_widgets.sql"]
    assert plan.version == 0
    assert await tables(migrating) == set()

    assert steps(await migrate(stub, target_version=2)) == [(1, "up"), (2, "up")]
    assert await tables(migrating) == {"widgets"}
    latest = await migrate(stub)
    assert (steps(latest), latest.version) == ([(3, "up")], 3)
    assert steps(await migrate(stub)) == []

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await migrate(stub, target_version=1)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "0003_gadgets.down.sql" in (caught.value.details() or "")
    assert await tables(migrating) == {"widgets", "gadgets"}

    (migrating.directory / "0003_gadgets.down.sql").write_text("DROP TABLE gadgets;\n")
    back = await migrate(stub, target_version=1)
    assert (steps(back), back.version) == ([(3, "down"), (2, "down")], 1)
    assert await tables(migrating) == {"widgets"}
    status = await stub.GetMigrationStatus(db_service_pb2.GetMigrationStatusRequest())
    assert [(m.version, m.applied) for m in status.migrations] == [
        (1, True),
        (2, False),
        (3, False),
    ]
    assert status.migrations[0].apply_time.seconds > 0
    assert steps(await migrate(stub, target_version=0)) == [(1, "down")]
    assert await tables(migrating) == set()


async def test_migrate_refuses_drift_unknown_versions_and_databases_without_a_set(
    migrating: Migrating,
) -> None:
    stub = migrating.stub
    await migrate(stub, target_version=1)
    (migrating.directory / "0001_widgets.sql").write_text("CREATE TABLE widgets (id INTEGER);\n")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await migrate(stub)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "drift" in (caught.value.details() or "")
    status = await stub.GetMigrationStatus(db_service_pb2.GetMigrationStatusRequest())
    assert [m.drifted for m in status.migrations] == [True, False, False]
    assert status.current_version == 1

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await migrate(stub, target_version=7)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["target_version"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await migrate(stub, database="other")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def run_cli(migrating: Migrating, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "PACA_DB_URL": migrating.url,
        "PACA_MIGRATIONS": f"main={migrating.directory}",
        "PACA_CONFIG_FILE": "",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "db_service.migrate",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_command_line_prints_the_plan_applies_and_rolls_back(migrating: Migrating) -> None:
    code, out, _ = await run_cli(migrating, "apply", "--dry-run")
    assert code == 0
    assert "-- up 0001_widgets\nCREATE TABLE widgets" in out
    assert "at version 0 (dry run, nothing changed)" in out
    code, out, _ = await run_cli(migrating, "apply", "--to", "2")
    assert (code, out.splitlines()) == (
        0,
        ["up 0001_widgets", "up 0002_widgets_colour", "main: at version 2 (2 steps run)"],
    )
    code, out, _ = await run_cli(migrating, "apply", "--to", "0")
    assert code == 0
    assert out.splitlines()[:2] == ["down 0002_widgets_colour", "down 0001_widgets"]
    code, out, _ = await run_cli(migrating, "status")
    assert code == 0
    assert out.splitlines()[0] == "main: at version 0"
    assert "0001_widgets" in out
    assert "pending reversible" in out
    (migrating.directory / "0009_bad.sql").write_text("CREATE TABLE x (;\n")
    code, _, err = await run_cli(migrating, "apply")
    assert code == 1
    assert err.startswith("error:")
