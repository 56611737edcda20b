"""The in-process facade (the seed's database API) on every SQL engine, and the seed README's
database example run as written."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from db_service.facade import (
    DatabaseConfig,
    DatabaseMonitor,
    SQLConnector,
    create_postgres_config,
    create_sqlite_config,
)
from tests.conftest import eventually
from tests.integration.test_db_service import DIALECTS, PLACEHOLDERS, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]

# The database half of the seed README's "usage example", unchanged but for the import path.
SEED_EXAMPLE = textwrap.dedent(
    """
    import asyncio
    from db_service import SQLConnector, create_sqlite_config

    async def main():
        # 데이터베이스 사용
        config = create_sqlite_config("test.db")
        db = SQLConnector(config)
        await db.connect()

        # 쿼리 실행
        result = await db.execute_query("SELECT 1 as test")
        print(f"DB Result: {result.is_success}")
        print(result.data)

        await db.disconnect()

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


async def test_the_seed_readme_database_example_runs_in_process(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(SEED_EXAMPLE)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["DB Result: True", "[{'test': 1}]"]
    assert (tmp_path / "test.db").exists()


@pytest.fixture(params=DIALECTS)
async def connector(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLConnector]:
    async with (
        temporary_database(request.param, tmp_path) as url,
        SQLConnector(DatabaseConfig(url)) as db,
    ):
        yield db


async def test_execute_query_returns_rows_as_dicts_and_errors_as_results(
    connector: SQLConnector,
) -> None:
    a, b = PLACEHOLDERS[connector.config.dialect]
    created = await connector.execute_query("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    assert created.is_success, created.error
    inserted = await connector.execute_query(f"INSERT INTO t (k, v) VALUES ({a}, {b})", [1, "one"])
    assert inserted.is_success
    assert inserted.rows_affected == 1
    duplicate = await connector.execute_query(
        f"INSERT INTO t (k, v) VALUES ({a}, {b})", [1, "again"]
    )
    assert not duplicate.is_success
    assert duplicate.error_code == "ALREADY_EXISTS"
    assert duplicate.error
    rows = await connector.execute_query("SELECT k, v FROM t", read_only=True)
    assert rows.data == [{"k": 1, "v": "one"}]
    bad = await connector.execute_query("SELEC nonsense")
    assert not bad.is_success
    assert bad.error_code == "INVALID_ARGUMENT"


async def test_transaction_commits_on_success_and_rolls_back_on_error(
    connector: SQLConnector,
) -> None:
    a, _ = PLACEHOLDERS[connector.config.dialect]
    await connector.execute_query("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    async with connector.transaction() as tx:
        await tx.execute(
            f"INSERT INTO t (k) VALUES ({a})", [1], max_rows=1, max_bytes=0, timeout_s=None
        )

    async def change_of_mind() -> None:
        async with connector.transaction() as tx:
            await tx.execute(
                f"INSERT INTO t (k) VALUES ({a})", [2], max_rows=1, max_bytes=0, timeout_s=None
            )
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await change_of_mind()
    rows = await connector.execute_query("SELECT k FROM t ORDER BY k", read_only=True)
    assert rows.data == [{"k": 1}]
    # The rolled-back transaction's connection is reset in the background before it is idle.
    await eventually(lambda: connector.pool.in_use == 0)


async def test_database_monitor_groups_latency_by_statement_shape(tmp_path: Path) -> None:
    async with SQLConnector(create_sqlite_config(tmp_path / "m.db")) as db:
        monitor = DatabaseMonitor(db)
        for n in range(5):
            assert (await db.execute_query(f"SELECT {n} AS n", read_only=True)).is_success
        await db.execute_query("SELECT * FROM missing_table")
        figures = monitor.snapshot().figures[0]
        assert any(m.name == "db_query_latency_p95_ms" for m in monitor.metrics())
        shapes = {q.fingerprint: q for q in figures.queries}
    assert shapes["SELECT ? AS n"].calls == 5
    assert shapes["SELECT * FROM missing_table"].errors == 1
    assert figures.acquires == 6
    assert 0 < figures.pool_efficiency <= 1


def test_config_helpers_build_urls_without_leaking_the_password() -> None:
    config = create_postgres_config("db.internal", 6432, "orders", "app", "s3cr:t@")
    assert config.url == "postgresql://app:s3cr%3At%40@db.internal:6432/orders"
    assert "s3cr" not in repr(config)
    assert "s3cr" not in repr(SQLConnector(config))
