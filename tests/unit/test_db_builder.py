"""The query builder's SQL per dialect and its schema cache, without an engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from paca.db.v1 import db_types_pb2, values_pb2

from db_service.backends.base import ResultSet
from db_service.backends.mysql import _returning
from db_service.builder import QueryBuilder
from paca_runtime.errors import InvalidArgument

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

Op = db_types_pb2.FilterOperator
Filter = db_types_pb2.Filter


class CatalogOnly:
    """A backend that only answers the catalog query; counts how often it was read."""

    def __init__(self, dialect: str, tables: dict[str, list[str]]) -> None:
        self.dialect = dialect
        self.name = "main"
        self.mariadb = True
        self.returning = frozenset({"insert", "update", "delete"})
        self.tables = tables
        self.reads = 0

    async def execute(self, sql: str, params: Sequence[Any], **kwargs: Any) -> ResultSet:
        self.reads += 1
        rows = [
            values_pb2.Row(
                values=[values_pb2.Value(string_value=t), values_pb2.Value(string_value=c)]
            )
            for t, columns in self.tables.items()
            for c in columns
        ]
        return ResultSet(rows=rows)


def builder(dialect: str, tables: dict[str, list[str]] | None = None) -> QueryBuilder:
    backend = CatalogOnly(dialect, tables or {"t": ["a", "order", 'we"ird%']})
    return QueryBuilder(backend)  # type: ignore[arg-type]


def comparison(column: str, op: db_types_pb2.FilterOperator.ValueType, *args: int) -> Filter:
    values = [values_pb2.Value(int64_value=v) for v in args]
    return Filter(comparison=Filter.Comparison(column=column, operator=op, values=values))


@pytest.mark.parametrize(
    ("dialect", "sql", "params"),
    [
        (
            "postgresql",
            'SELECT t."order", t."we""ird%" FROM t WHERE t.a IN ($1, $2) AND t."order" > $3'
            " LIMIT $4",
            [1, 2, 3, 9],
        ),
        (
            "mysql",
            'SELECT t.`order`, t.`we"ird%%` FROM t WHERE t.a IN (%s, %s) AND t.`order` > %s'
            " LIMIT %s",
            [1, 2, 3, 9],
        ),
        (
            "sqlite",
            'SELECT t."order", t."we""ird%" FROM t WHERE t.a IN (?, ?) AND t."order" > ?'
            " LIMIT ? OFFSET ?",
            [1, 2, 3, 9, 0],
        ),
    ],
)
async def test_select_quotes_names_and_binds_values_in_each_dialects_style(
    dialect: str, sql: str, params: list[int]
) -> None:
    where = Filter(
        all=Filter.Group(
            filters=[
                comparison("a", Op.FILTER_OPERATOR_IN, 1, 2),
                comparison("order", Op.FILTER_OPERATOR_GT, 3),
            ]
        )
    )
    select = db_types_pb2.Select(table="t", columns=["order", 'we"ird%'], where=where, limit=9)
    statement = await builder(dialect).select(select)
    assert " ".join(statement.sql.split()) == sql
    assert statement.params == params


async def test_mysql_statement_without_parameters_keeps_a_single_percent() -> None:
    statement = await builder("mysql").select(db_types_pb2.Select(table="t", columns=['we"ird%']))
    assert statement.params == []
    assert '`we"ird%`' in statement.sql
    assert "%%" not in statement.sql


async def test_schema_is_read_once_and_again_only_on_a_miss() -> None:
    qb = builder("sqlite")
    backend: CatalogOnly = qb.backend  # type: ignore[assignment]
    await qb.select(db_types_pb2.Select(table="t"))
    await qb.select(db_types_pb2.Select(table="t", columns=["a"]))
    assert backend.reads == 1
    backend.tables["later"] = ["k"]
    await qb.select(db_types_pb2.Select(table="later"))
    assert backend.reads == 2
    with pytest.raises(InvalidArgument) as caught:
        await qb.select(db_types_pb2.Select(table="t", columns=["missing"]))
    assert caught.value.field == "select.columns[0]"
    assert backend.reads == 3


async def test_filters_nested_too_deep_are_refused_before_compiling() -> None:
    node = comparison("a", Op.FILTER_OPERATOR_EQ, 1)
    for _ in range(40):
        node = Filter(negate=node)
    with pytest.raises(InvalidArgument) as caught:
        await builder("postgresql").delete(db_types_pb2.Delete(table="t", where=node))
    assert caught.value.field.startswith("delete.where.negate")
    assert "nest" in caught.value.description


@pytest.mark.parametrize(
    ("version", "kinds"),
    [
        ("10.11.19-MariaDB-0+deb12u1", {"insert", "delete"}),
        ("5.5.5-10.4.31-MariaDB", {"delete"}),
        ("8.0.36", set()),
    ],
)
def test_mysql_returning_follows_the_server_version(version: str, kinds: set[str]) -> None:
    assert _returning(version) == kinds
