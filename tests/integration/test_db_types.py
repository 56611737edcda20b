"""Every value kind survives a write and a read on every SQL engine, with its column type named."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc, values_pb2

from db_service import DatabaseSettings, DbApp, DbSettings
from tests.integration.conftest import runtime_settings
from tests.integration.test_db_service import DIALECTS, temporary_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ColumnType = values_pb2.ColumnType
Value = values_pb2.Value


def stamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(moment)
    return result


@dataclass(frozen=True)
class Kind:
    """One value kind: the column declared for it per engine, a value, the portable type."""

    name: str
    value: Value
    portable: values_pb2.ColumnType.ValueType
    declared: dict[str, str]


MOMENT = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
KINDS = [
    Kind(
        "flag",
        Value(bool_value=True),
        ColumnType.COLUMN_TYPE_BOOL,
        {"sqlite": "BOOLEAN", "postgresql": "boolean", "mysql": "BOOLEAN"},
    ),
    Kind(
        "big",
        Value(int64_value=-9_223_372_036_854_775_807),
        ColumnType.COLUMN_TYPE_INT64,
        {"sqlite": "INTEGER", "postgresql": "bigint", "mysql": "BIGINT"},
    ),
    Kind(
        "ratio",
        Value(double_value=0.1 + 0.2),
        ColumnType.COLUMN_TYPE_DOUBLE,
        {"sqlite": "REAL", "postgresql": "double precision", "mysql": "DOUBLE"},
    ),
    Kind(
        "money",
        Value(decimal_value="12345678901234567890.0123456789"),
        ColumnType.COLUMN_TYPE_DECIMAL,
        {"sqlite": "DECIMAL TEXT", "postgresql": "numeric(30,10)", "mysql": "DECIMAL(30,10)"},
    ),
    Kind(
        "words",
        Value(string_value="héllo ☃ 'quoted' \"double\" \\ %s ?"),
        ColumnType.COLUMN_TYPE_STRING,
        {"sqlite": "TEXT", "postgresql": "text", "mysql": "TEXT"},
    ),
    Kind(
        "payload",
        Value(bytes_value=bytes(range(256))),
        ColumnType.COLUMN_TYPE_BYTES,
        {"sqlite": "BLOB", "postgresql": "bytea", "mysql": "BLOB"},
    ),
    Kind(
        "day",
        Value(date_value="2024-02-29"),
        ColumnType.COLUMN_TYPE_DATE,
        {"sqlite": "DATE", "postgresql": "date", "mysql": "DATE"},
    ),
    Kind(
        "clock",
        Value(time_value="23:59:58.123456"),
        ColumnType.COLUMN_TYPE_TIME,
        {"sqlite": "TIME", "postgresql": "time", "mysql": "TIME(6)"},
    ),
    Kind(
        "local_moment",
        Value(timestamp_value=stamp(MOMENT)),
        ColumnType.COLUMN_TYPE_TIMESTAMP,
        {"sqlite": "DATETIME", "postgresql": "timestamp", "mysql": "DATETIME(6)"},
    ),
    Kind(
        "zoned_moment",
        Value(timestamp_value=stamp(MOMENT)),
        ColumnType.COLUMN_TYPE_TIMESTAMP,
        {"sqlite": "TIMESTAMPTZ", "postgresql": "timestamptz", "mysql": "TIMESTAMP(6) NULL"},
    ),
    Kind(
        "doc",
        Value(json_value='{"z": 1, "a": [9007199254740993, null, "x"]}'),
        ColumnType.COLUMN_TYPE_JSON,
        {"sqlite": "JSON", "postgresql": "json", "mysql": "JSON"},
    ),
    Kind(
        "ident",
        Value(uuid_value="6ccd780c-baba-1026-9564-5b8c656024db"),
        ColumnType.COLUMN_TYPE_UUID,
        {"sqlite": "UUID", "postgresql": "uuid", "mysql": "UUID"},
    ),
    Kind(
        "numbers",
        Value(
            array_value=values_pb2.ValueList(
                values=[Value(int64_value=1), Value(null_value=struct_pb2.NULL_VALUE)]
            )
        ),
        ColumnType.COLUMN_TYPE_ARRAY,
        {"postgresql": "bigint[]"},
    ),
    Kind(
        "tags",
        Value(
            array_value=values_pb2.ValueList(
                values=[Value(string_value="a,b"), Value(string_value="{c}")]
            )
        ),
        ColumnType.COLUMN_TYPE_ARRAY,
        {"postgresql": "text[]"},
    ),
]
PLACEHOLDER = {"sqlite": "?", "postgresql": "${}", "mysql": "%s"}
NULL = Value(null_value=struct_pb2.NULL_VALUE)


@pytest.fixture(params=DIALECTS)
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, db_service_pb2_grpc.DbServiceStub]]:
    async with temporary_database(request.param, tmp_path) as url:
        settings = DbSettings(listen="127.0.0.1:0", databases=(DatabaseSettings("main", url),))
        app = DbApp(settings, runtime_settings(tmp_path))
        await app.start()
        try:
            async with grpc.aio.insecure_channel(app.server.bound_address) as channel:
                yield request.param, db_service_pb2_grpc.DbServiceStub(channel)
        finally:
            await app.stop()


async def test_every_value_kind_round_trips_exactly_with_its_column_type(
    engine: tuple[str, db_service_pb2_grpc.DbServiceStub],
) -> None:
    dialect, stub = engine
    kinds = [k for k in KINDS if dialect in k.declared]
    columns = ", ".join(f"{k.name} {k.declared[dialect]}" for k in kinds)
    await stub.Query(db_service_pb2.QueryRequest(sql=f"CREATE TABLE kinds (id INTEGER, {columns})"))
    marks = [PLACEHOLDER[dialect].format(i + 1) for i in range(len(kinds) + 1)]
    insert = (
        f"INSERT INTO kinds (id, {', '.join(k.name for k in kinds)}) VALUES ({', '.join(marks)})"
    )
    for row_id, row in ((1, [k.value for k in kinds]), (2, [NULL] * len(kinds))):
        reply = await stub.Query(
            db_service_pb2.QueryRequest(sql=insert, params=[Value(int64_value=row_id), *row])
        )
        assert reply.rows_affected in (1, -1)

    reply = await stub.Query(
        db_service_pb2.QueryRequest(
            sql=f"SELECT {', '.join(k.name for k in kinds)} FROM kinds ORDER BY id", read_only=True
        )
    )

    assert [c.name for c in reply.columns] == [k.name for k in kinds]
    assert {c.name: c.type for c in reply.columns} == {k.name: k.portable for k in kinds}
    assert all(c.db_type for c in reply.columns), reply.columns
    written, nulls = reply.rows
    for kind, got in zip(kinds, written.values, strict=True):
        assert got == kind.value, kind.name
    assert list(nulls.values) == [NULL] * len(kinds)
