"""The query builder: structured Select / Insert / Update / Delete compiled to each engine's SQL.

Injection is impossible by construction, not by escaping: every table and column name is checked
against the live schema (:class:`~db_service.schema.Schema`) before it reaches SQL, and every value
becomes a bound parameter (``bindparam`` without a type, so the engine infers it from the column,
as it does for ``Query``). SQLAlchemy Core only compiles: it quotes identifiers and renders each
dialect's placeholders, LIMIT/OFFSET and RETURNING; the statement then runs through the backend's
own pool like any other, so limits, timeouts and error mapping are the same as for raw SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from paca.db.v1 import db_types_pb2
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine.interfaces import BindTyping, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from db_service import values
from db_service.backends.base import Backend
from db_service.schema import Schema
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)

Op = db_types_pb2.FilterOperator

# Nesting of all / any / negate groups; deeper trees are refused before compiling.
MAX_FILTER_DEPTH = 32
# Bound values per statement: SQLite's limit (32766) is the smallest of the three engines'.
MAX_PARAMS = 32_766
# Compiled statements kept per builder (emptied when full), and the most bound values one of
# them may have: a large multi-row INSERT is rarely repeated and would hold its values.
COMPILED_CACHE_SIZE = 512
COMPILED_CACHE_MAX_PARAMS = 64

_SINGLE_VALUE = {
    Op.FILTER_OPERATOR_EQ: "__eq__",
    Op.FILTER_OPERATOR_NE: "__ne__",
    Op.FILTER_OPERATOR_LT: "__lt__",
    Op.FILTER_OPERATOR_LE: "__le__",
    Op.FILTER_OPERATOR_GT: "__gt__",
    Op.FILTER_OPERATOR_GE: "__ge__",
    Op.FILTER_OPERATOR_LIKE: "like",
}


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL in the engine's placeholder style and its parameters in order."""

    sql: str
    params: list[Any]
    # The statement has a RETURNING clause: one result row per row it changed.
    returning: bool = False


def _dialect(backend: Backend) -> Dialect:
    dialect: Dialect
    if backend.dialect == "postgresql":
        dialect = PGDialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        # No "$1::INTEGER" casts: asyncpg's prepared statement infers types from the columns.
        dialect.bind_typing = BindTyping.NONE
    elif backend.dialect == "mysql":
        dialect = MySQLDialect(paramstyle="format", is_mariadb=getattr(backend, "mariadb", False))
    else:
        dialect = SQLiteDialect(paramstyle="qmark")
    return dialect


def _bind(value: Any) -> ColumnElement[Any]:
    return sa.bindparam(None, value, type_=NullType(), unique=True)


def _names(names: Sequence[str], field: str) -> list[tuple[str, str]]:
    return [(f"{field}[{i}]", name) for i, name in enumerate(names)]


class QueryBuilder:
    """Compiles builder messages for one database; the schema is cached per builder.

    Args:
        backend: The database, opened.
        schema: Its schema cache (one per database; a new one by default).
    """

    def __init__(self, backend: Backend, schema: Schema | None = None) -> None:
        self.backend = backend
        self.schema = schema or Schema(backend)
        self._dialect = _dialect(backend)
        self._compiled: dict[Any, SQLCompiler] = {}

    def __repr__(self) -> str:
        return f"<QueryBuilder db={self.backend.name} dialect={self.backend.dialect}>"

    async def select(self, message: db_types_pb2.Select, field: str = "select") -> Statement:
        """SELECT columns FROM table [WHERE] [ORDER BY] [LIMIT/OFFSET]."""
        if message.limit < 0:
            raise InvalidArgument(f"{field}.limit", "must be >= 0")
        if message.offset < 0:
            raise InvalidArgument(f"{field}.offset", "must be >= 0")
        names = _names(message.columns, f"{field}.columns")
        names += [
            (f"{field}.order_by[{i}].column", o.column) for i, o in enumerate(message.order_by)
        ]
        where = self._filter_names(message, "where", f"{field}.where")
        table = await self._table(message.table, f"{field}.table", names + where)
        columns: list[Any] = [table.c[name] for name in message.columns] or [sa.text("*")]
        stmt = sa.select(*columns).select_from(table)
        if message.HasField("where"):
            stmt = stmt.where(self._predicate(table, message.where, f"{field}.where", 0))
        for order in message.order_by:
            stmt = stmt.order_by(
                table.c[order.column].desc() if order.descending else table.c[order.column]
            )
        if message.limit:
            stmt = stmt.limit(message.limit)
        if message.offset:
            stmt = stmt.offset(message.offset)
        return self._compile(stmt)

    async def insert(self, message: db_types_pb2.Insert, field: str = "insert") -> Statement:
        """INSERT INTO table (columns) VALUES (...), (...) [RETURNING]."""
        if not message.columns:
            raise InvalidArgument(f"{field}.columns", "at least one column")
        _no_duplicates(message.columns, f"{field}.columns")
        if not message.rows:
            raise InvalidArgument(f"{field}.rows", "at least one row")
        if len(message.rows) * len(message.columns) > MAX_PARAMS:
            raise InvalidArgument(f"{field}.rows", f"at most {MAX_PARAMS} values in all rows")
        rows: list[dict[str, Any]] = []
        for i, row in enumerate(message.rows):
            if len(row.values) != len(message.columns):
                raise InvalidArgument(
                    f"{field}.rows[{i}].values",
                    f"has {len(row.values)} values for {len(message.columns)} columns",
                )
            rows.append(
                {
                    name: _bind(values.decode(value, f"{field}.rows[{i}].values[{j}]"))
                    for j, (name, value) in enumerate(zip(message.columns, row.values, strict=True))
                }
            )
        names = _names(message.columns, f"{field}.columns")
        returning = self._returning(message.returning, "insert", f"{field}.returning")
        table = await self._table(message.table, f"{field}.table", names + returning)
        stmt = sa.insert(table).values(rows)
        if message.returning:
            stmt = stmt.returning(*(table.c[name] for name in message.returning))
        return self._compile(stmt, returning=bool(message.returning))

    async def update(self, message: db_types_pb2.Update, field: str = "update") -> Statement:
        """UPDATE table SET ... WHERE ... [RETURNING]; no WHERE only with ``all_rows``."""
        if not message.set:
            raise InvalidArgument(f"{field}.set", "at least one assignment")
        _no_duplicates([a.column for a in message.set], f"{field}.set")
        _where_or_all_rows(message, field)
        assigned = {
            a.column: _bind(values.decode(a.value, f"{field}.set[{i}].value"))
            for i, a in enumerate(message.set)
        }
        names = [(f"{field}.set[{i}].column", a.column) for i, a in enumerate(message.set)]
        names += self._filter_names(message, "where", f"{field}.where")
        names += self._returning(message.returning, "update", f"{field}.returning")
        table = await self._table(message.table, f"{field}.table", names)
        stmt = sa.update(table).values(assigned)
        if message.HasField("where"):
            stmt = stmt.where(self._predicate(table, message.where, f"{field}.where", 0))
        if message.returning:
            stmt = stmt.returning(*(table.c[name] for name in message.returning))
        return self._compile(stmt, returning=bool(message.returning))

    async def delete(self, message: db_types_pb2.Delete, field: str = "delete") -> Statement:
        """DELETE FROM table WHERE ... [RETURNING]; no WHERE only with ``all_rows``."""
        _where_or_all_rows(message, field)
        names = self._filter_names(message, "where", f"{field}.where")
        names += self._returning(message.returning, "delete", f"{field}.returning")
        table = await self._table(message.table, f"{field}.table", names)
        stmt = sa.delete(table)
        if message.HasField("where"):
            stmt = stmt.where(self._predicate(table, message.where, f"{field}.where", 0))
        if message.returning:
            returning = stmt.returning(*(table.c[name] for name in message.returning))
            return self._compile(returning, returning=True)
        return self._compile(stmt)

    async def _table(self, name: str, field: str, columns: list[tuple[str, str]]) -> sa.TableClause:
        """The table as SQLAlchemy sees it, after every name was found in the live schema."""
        if not name:
            raise InvalidArgument(field, "required")
        await self.schema.check((field, name), columns)
        known = (await self.schema.tables())[name]
        return sa.table(name, *(sa.column(c) for c in known))

    def _returning(self, names: Sequence[str], kind: str, field: str) -> list[tuple[str, str]]:
        if names and kind not in self.backend.returning:
            raise InvalidArgument(
                field, f"{self.backend.dialect} has no RETURNING for {kind.upper()} here"
            )
        _no_duplicates(names, field)
        return _names(names, field)

    def _filter_names(self, message: Any, name: str, field: str) -> list[tuple[str, str]]:
        """(field, column) of every comparison in a filter tree; checks its shape and depth."""
        found: list[tuple[str, str]] = []
        if message.HasField(name):
            _walk(getattr(message, name), field, 0, found)
        return found

    def _predicate(
        self, table: sa.TableClause, node: db_types_pb2.Filter, field: str, depth: int
    ) -> ColumnElement[bool]:
        kind = node.WhichOneof("kind")
        if kind == "comparison":
            return _comparison(table, node.comparison, f"{field}.comparison")
        if kind == "negate":
            return sa.not_(self._predicate(table, node.negate, f"{field}.negate", depth + 1))
        group = node.all if kind == "all" else node.any
        parts = [
            self._predicate(table, child, f"{field}.{kind}.filters[{i}]", depth + 1)
            for i, child in enumerate(group.filters)
        ]
        return sa.and_(*parts) if kind == "all" else sa.or_(*parts)

    def _compile(self, stmt: sa.ClauseElement, *, returning: bool = False) -> Statement:
        """The statement's SQL and parameters, compiled once per shape.

        SQLAlchemy's own statement cache, as its engines use it: the cache key names the
        statement's shape (tables, columns, operators, the number of bound values) apart from
        the values, and ``construct_params(extracted_parameters=...)`` puts this statement's
        values where the cached compilation had its first one's. Compiling is most of what a
        builder call costs.
        """
        key = stmt._generate_cache_key()
        if key is None or len(key.bindparams) > COMPILED_CACHE_MAX_PARAMS:
            compiled = stmt.compile(dialect=self._dialect)
            assert isinstance(compiled, SQLCompiler)
            bound = compiled.construct_params()
        else:
            found = self._compiled.get(key.key)
            if found is None:
                fresh = stmt.compile(dialect=self._dialect, cache_key=key)
                assert isinstance(fresh, SQLCompiler)
                found = fresh
                if len(self._compiled) >= COMPILED_CACHE_SIZE:
                    self._compiled.clear()
                self._compiled[key.key] = found
            compiled = found
            bound = compiled.construct_params(extracted_parameters=key.bindparams)
        params = [bound[name] for name in compiled.positiontup or ()]
        sql = compiled.string
        if self.backend.dialect == "mysql" and not params:
            # The "format" paramstyle doubles a literal "%" (in a quoted name); without
            # parameters the driver does no %-formatting, so the doubling must go.
            sql = sql.replace("%%", "%")
        return Statement(sql, params, returning)


def _walk(node: db_types_pb2.Filter, field: str, depth: int, found: list[tuple[str, str]]) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidArgument(field, f"filters nest at most {MAX_FILTER_DEPTH} deep")
    kind = node.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(field, "one of comparison, all, any or negate is required")
    if kind == "comparison":
        found.append((f"{field}.comparison.column", node.comparison.column))
        _check_comparison(node.comparison, f"{field}.comparison")
    elif kind == "negate":
        _walk(node.negate, f"{field}.negate", depth + 1, found)
    else:
        group = node.all if kind == "all" else node.any
        if not group.filters:
            raise InvalidArgument(f"{field}.{kind}.filters", "at least one filter")
        for i, child in enumerate(group.filters):
            _walk(child, f"{field}.{kind}.filters[{i}]", depth + 1, found)


def _check_comparison(comparison: db_types_pb2.Filter.Comparison, field: str) -> None:
    op = comparison.operator
    count = len(comparison.values)
    if op == Op.FILTER_OPERATOR_UNSPECIFIED or op not in Op.values():
        raise InvalidArgument(f"{field}.operator", "required")
    if op in _SINGLE_VALUE:
        if count != 1:
            raise InvalidArgument(f"{field}.values", f"takes one value, got {count}")
        if comparison.values[0].WhichOneof("kind") in {None, "null_value"}:
            raise InvalidArgument(
                f"{field}.values[0]", "NULL compares to nothing; use IS_NULL / IS_NOT_NULL"
            )
        if op == Op.FILTER_OPERATOR_LIKE and comparison.values[0].WhichOneof("kind") != (
            "string_value"
        ):
            raise InvalidArgument(f"{field}.values[0]", "LIKE takes a string pattern")
    elif op in (Op.FILTER_OPERATOR_IS_NULL, Op.FILTER_OPERATOR_IS_NOT_NULL):
        if count:
            raise InvalidArgument(f"{field}.values", f"takes no values, got {count}")
    elif count > MAX_PARAMS:
        raise InvalidArgument(f"{field}.values", f"at most {MAX_PARAMS} values")


def _comparison(
    table: sa.TableClause, comparison: db_types_pb2.Filter.Comparison, field: str
) -> ColumnElement[bool]:
    column = table.c[comparison.column]
    op = comparison.operator
    if op == Op.FILTER_OPERATOR_IS_NULL:
        return column.is_(None)
    if op == Op.FILTER_OPERATOR_IS_NOT_NULL:
        return column.is_not(None)
    decoded = values.decode_all(comparison.values, f"{field}.values")
    if op in (Op.FILTER_OPERATOR_IN, Op.FILTER_OPERATOR_NOT_IN):
        if not decoded:
            # IN () matches nothing, NOT IN () everything; not every engine parses "()".
            return sa.false() if op == Op.FILTER_OPERATOR_IN else sa.true()
        bound = [_bind(v) for v in decoded]
        return column.in_(bound) if op == Op.FILTER_OPERATOR_IN else column.not_in(bound)
    result: ColumnElement[bool] = getattr(column, _SINGLE_VALUE[op])(_bind(decoded[0]))
    return result


def _no_duplicates(names: Sequence[str], field: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise InvalidArgument(f"{field}[{i}]", "names a column twice")
        seen.add(name)


def _where_or_all_rows(message: db_types_pb2.Update | db_types_pb2.Delete, field: str) -> None:
    if message.HasField("where") and message.all_rows:
        raise InvalidArgument(f"{field}.all_rows", "set either where or all_rows, not both")
    if not message.HasField("where") and not message.all_rows:
        raise InvalidArgument(
            f"{field}.where", "required; set all_rows to change every row of the table"
        )
