"""PostgreSQL value typing: wire column types, parameters as asyncpg takes them, result shapes.

asyncpg decodes values to Python objects by the server's type; what is left here is naming each
column's portable type, the one parameter conversion asyncpg needs (naive UTC for ``timestamp``),
and a row encoder per result shape that marks JSON columns as JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from paca.db.v1 import values_pb2

from db_service import values
from db_service.backends.pg_pool import ResultShape

ColumnType = values_pb2.ColumnType

TYPES = {
    "bool": ColumnType.COLUMN_TYPE_BOOL,
    "int2": ColumnType.COLUMN_TYPE_INT64,
    "int4": ColumnType.COLUMN_TYPE_INT64,
    "int8": ColumnType.COLUMN_TYPE_INT64,
    "float4": ColumnType.COLUMN_TYPE_DOUBLE,
    "float8": ColumnType.COLUMN_TYPE_DOUBLE,
    "numeric": ColumnType.COLUMN_TYPE_DECIMAL,
    "text": ColumnType.COLUMN_TYPE_STRING,
    "varchar": ColumnType.COLUMN_TYPE_STRING,
    "bpchar": ColumnType.COLUMN_TYPE_STRING,
    "name": ColumnType.COLUMN_TYPE_STRING,
    "bytea": ColumnType.COLUMN_TYPE_BYTES,
    "timestamp": ColumnType.COLUMN_TYPE_TIMESTAMP,
    "timestamptz": ColumnType.COLUMN_TYPE_TIMESTAMP,
    "date": ColumnType.COLUMN_TYPE_DATE,
    "time": ColumnType.COLUMN_TYPE_TIME,
    "json": ColumnType.COLUMN_TYPE_JSON,
    "jsonb": ColumnType.COLUMN_TYPE_JSON,
    "uuid": ColumnType.COLUMN_TYPE_UUID,
}


def portable_type(kind: Any) -> values_pb2.ColumnType.ValueType:
    if kind.kind == "array":
        return ColumnType.COLUMN_TYPE_ARRAY
    return TYPES.get(kind.name, ColumnType.COLUMN_TYPE_UNSPECIFIED)


def bind(statement: Any, params: Sequence[Any]) -> list[Any]:
    """Parameters as asyncpg takes them for the statement's parameter types.

    The wire carries every timestamp in UTC; a ``timestamp`` (without time zone) parameter is
    that UTC time without its zone, which asyncpg wants naive.
    """
    bound = list(params)
    if not any(isinstance(value, dt.datetime) for value in bound):
        return bound  # nothing to convert: skip asking for the parameter types
    for i, kind in enumerate(statement.get_parameters()):
        value = bound[i] if i < len(bound) else None
        if kind.name == "timestamp" and isinstance(value, dt.datetime) and value.tzinfo:
            bound[i] = value.astimezone(dt.UTC).replace(tzinfo=None)
    return bound


def columns_of(attributes: Sequence[Any]) -> list[values_pb2.Column]:
    return [
        values_pb2.Column(name=a.name, type=portable_type(a.type), db_type=a.type.name)
        for a in attributes
    ]


# Column metadata and row encoder per result shape (asyncpg's attribute tuple: names and
# types), so a statement run again reuses them. Bounded: emptied when full.
_SHAPES: dict[tuple[Any, ...], tuple[list[values_pb2.Column], Callable[[Any], values_pb2.Row]]] = {}
_SHAPES_SIZE = 1024


def result_shape(statement: Any) -> ResultShape:
    """The columns and the row encoder of a statement's result (no encoder: it has no rows)."""
    attributes = statement.get_attributes()
    if not attributes:
        return [], None
    found = _SHAPES.get(attributes)
    if found is None:
        if len(_SHAPES) >= _SHAPES_SIZE:
            _SHAPES.clear()
        found = _SHAPES[attributes] = (columns_of(attributes), row_encoder(attributes))
    return found


def row_encoder(attributes: Sequence[Any]) -> Callable[[Any], values_pb2.Row]:
    json_columns = {i for i, a in enumerate(attributes) if a.type.name in {"json", "jsonb"}}
    if not json_columns:
        return values.encode_row

    def encode(record: Any) -> values_pb2.Row:
        return values_pb2.Row(
            values=[
                values.encode(values.JsonText(v) if i in json_columns and v is not None else v)
                for i, v in enumerate(record)
            ]
        )

    return encode


def rows_affected(status: str | None) -> int:
    # "INSERT 0 3", "UPDATE 2", "SELECT 5": the count is the last word.
    last = (status or "").rpartition(" ")[2]
    return int(last) if last.isdigit() else -1
