"""MySQL / MariaDB column typing: which wire kind each result column has.

MySQL's wire protocol does not say that a column is BOOLEAN, JSON (MariaDB) or UUID (MariaDB);
:class:`ColumnCatalog` answers that from ``information_schema`` once per table, and
:class:`RowDecoder` turns a result's driver values into wire values with the kind they were
written with. :func:`adapt_param` turns a parameter into what PyMySQL can quote.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from paca.db.v1 import values_pb2
from pymysql.constants import FIELD_TYPE

from db_service import values
from paca_runtime.errors import InvalidArgument

ColumnType = values_pb2.ColumnType

_FIELD_TYPE_NAMES = {
    value: name.lower() for name, value in vars(FIELD_TYPE).items() if name.isupper()
}
_PORTABLE = {
    FIELD_TYPE.TINY: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.SHORT: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.INT24: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.LONG: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.LONGLONG: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.YEAR: ColumnType.COLUMN_TYPE_INT64,
    FIELD_TYPE.FLOAT: ColumnType.COLUMN_TYPE_DOUBLE,
    FIELD_TYPE.DOUBLE: ColumnType.COLUMN_TYPE_DOUBLE,
    FIELD_TYPE.DECIMAL: ColumnType.COLUMN_TYPE_DECIMAL,
    FIELD_TYPE.NEWDECIMAL: ColumnType.COLUMN_TYPE_DECIMAL,
    FIELD_TYPE.DATE: ColumnType.COLUMN_TYPE_DATE,
    FIELD_TYPE.NEWDATE: ColumnType.COLUMN_TYPE_DATE,
    FIELD_TYPE.TIME: ColumnType.COLUMN_TYPE_TIME,
    FIELD_TYPE.DATETIME: ColumnType.COLUMN_TYPE_TIMESTAMP,
    FIELD_TYPE.TIMESTAMP: ColumnType.COLUMN_TYPE_TIMESTAMP,
    FIELD_TYPE.JSON: ColumnType.COLUMN_TYPE_JSON,
    FIELD_TYPE.BIT: ColumnType.COLUMN_TYPE_BYTES,
}
_STRINGS = {
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.STRING,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
}
_BINARY_CHARSET = 63


class ColumnCatalog:
    """What ``information_schema`` says of a table's columns, read once per table and cached.

    Keys are ``(schema, table)``; values map column name to ``(data_type, column_type, is_json)``.
    A column not in the cached entry (the table changed) triggers one refresh.
    """

    def __init__(self, mariadb: bool) -> None:
        self.mariadb = mariadb
        self._tables: dict[tuple[str, str], dict[str, tuple[str, str, bool]]] = {}

    def known(self, schema: str, table: str, column: str) -> tuple[str, str, bool] | None:
        return self._tables.get((schema, table), {}).get(column)

    def needs(self, fields: Sequence[Any]) -> set[tuple[str, str]]:
        """Tables of ``fields`` whose columns are not cached yet."""
        return {
            (_text(f.db), f.org_table)
            for f in fields
            if f.org_table
            and f.org_name
            and self.known(_text(f.db), f.org_table, f.org_name) is None
        }

    async def load(self, cursor: Any, schema: str, table: str) -> None:
        """Read one table's columns through ``cursor`` (buffered, on a pooled connection)."""
        json_check = (
            "EXISTS (SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k"
            " WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME"
            " AND k.CHECK_CLAUSE = CONCAT('json_valid(`', c.COLUMN_NAME, '`)'))"
            if self.mariadb
            else "c.DATA_TYPE = 'json'"
        )
        await cursor.execute(
            f"SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, {json_check}"
            " FROM information_schema.COLUMNS c"
            " WHERE c.TABLE_SCHEMA = %s AND c.TABLE_NAME = %s",
            (schema, table),
        )
        rows = await cursor.fetchall()
        self._tables[(schema, table)] = {
            str(name): (str(data_type).lower(), str(column_type).lower(), bool(is_json))
            for name, data_type, column_type, is_json in rows
        }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RowDecoder:
    """Turns one result's driver values into wire values, per column."""

    def __init__(self, fields: Sequence[Any], catalog: ColumnCatalog) -> None:
        self.columns: list[values_pb2.Column] = []
        self._kinds: list[str] = []
        for field in fields:
            origin = (
                catalog.known(_text(field.db), field.org_table, field.org_name)
                if field.org_table
                else None
            )
            kind, portable, db_type = _describe(field, origin)
            self._kinds.append(kind)
            self.columns.append(values_pb2.Column(name=field.name, type=portable, db_type=db_type))

    def row(self, record: Sequence[Any]) -> values_pb2.Row:
        encoded = [_encode(v, k) for v, k in zip(record, self._kinds, strict=True)]
        return values_pb2.Row(values=encoded)


def _describe(
    field: Any, origin: tuple[str, str, bool] | None
) -> tuple[str, values_pb2.ColumnType.ValueType, str]:
    """(decoding kind, portable type, engine type name) of one result field."""
    type_code = field.type_code
    db_type = origin[1] if origin else _FIELD_TYPE_NAMES.get(type_code, str(type_code))
    if origin and origin[2]:
        return "json", ColumnType.COLUMN_TYPE_JSON, "json"
    if origin and origin[0] == "uuid":
        return "uuid", ColumnType.COLUMN_TYPE_UUID, db_type
    if type_code == FIELD_TYPE.TINY and (
        (origin and origin[1].startswith("tinyint(1)")) or (not origin and field.length == 1)
    ):
        return "bool", ColumnType.COLUMN_TYPE_BOOL, db_type
    if type_code == FIELD_TYPE.JSON:
        return "json", ColumnType.COLUMN_TYPE_JSON, db_type
    if type_code in _STRINGS:
        binary = field.charsetnr == _BINARY_CHARSET
        portable = ColumnType.COLUMN_TYPE_BYTES if binary else ColumnType.COLUMN_TYPE_STRING
        return "", portable, db_type
    return "", _PORTABLE.get(type_code, ColumnType.COLUMN_TYPE_UNSPECIFIED), db_type


def _encode(value: Any, kind: str) -> values_pb2.Value:
    if value is None:
        return values.encode(None)
    if kind == "bool":
        return values.encode(bool(value))
    if kind == "json":
        return values.encode(values.JsonText(value if isinstance(value, str) else value.decode()))
    if kind == "uuid":
        return values.encode(uuid.UUID(str(value)))
    if isinstance(value, dt.timedelta):
        # TIME comes back as a duration; a time of day when it is one, else MySQL's own text.
        if dt.timedelta(0) <= value < dt.timedelta(days=1):
            return values.encode((dt.datetime.min + value).time())
        return values.encode(str(value))
    return values.encode(value)


def adapt_param(value: Any, field: str) -> Any:
    """What PyMySQL can quote: aware times as naive UTC, UUIDs as text, no arrays."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, uuid.UUID | values.JsonText):
        # PyMySQL picks its quoting by exact type: hand it plain text.
        return str.__str__(str(value))
    if isinstance(value, list):
        raise InvalidArgument(field, "MySQL has no array type")
    return value
