"""Select, Insert, Update and Delete through the query builder, on every SQL engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from paca.db.v1 import db_service_pb2, db_types_pb2, values_pb2

from tests.integration.test_api_call import field_violations
from tests.integration.test_db_service import DIALECTS
from tests.integration.test_db_statements import Served, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Value = values_pb2.Value
Filter = db_types_pb2.Filter
Op = db_types_pb2.FilterOperator

# "group" is a reserved word on every engine: the builder must quote it to use it.
TABLES = """
CREATE TABLE items (
  id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, qty INTEGER, price {decimal},
  note VARCHAR(200), {q}group{q} VARCHAR(20)
);
CREATE TABLE victims (id INTEGER PRIMARY KEY, secret VARCHAR(50));
INSERT INTO victims (id, secret) VALUES (1, 'keep me');
"""

# SQLite keeps a decimal exactly only in a column of TEXT affinity.
DECIMAL = {"sqlite": "DECIMAL TEXT"}

ROWS = [
    (1, "apple", 5, "1.50", None, "fruit"),
    (2, "banana", 12, "0.25", "ripe", "fruit"),
    (3, "carrot", 0, "0.10", None, "veg"),
    (4, "date", 7, "3.00", "dry", "fruit"),
]
COLUMNS = ["id", "name", "qty", "price", "note", "group"]

# Strings that would change the statement if they reached the SQL text, in the quoting and
# placeholder styles of all three engines.
CORPUS = [
    "items; DROP TABLE victims; --",
    "x' OR '1'='1",
    'x" OR "1"="1',
    "` OR 1=1 #",
    "name) VALUES (99); DROP TABLE victims; --",
    "1; DELETE FROM items",
    "' UNION SELECT secret FROM victims --",
    'items"; DROP TABLE victims; --',
    "name` = 1; DROP TABLE victims; #",
    "\\'; DELETE FROM items; --",
    "name/**/OR/**/1=1",
    "name --",
    "%s",
    "$1",
    "?",
    "*",
    "items.name",
    "NAME",
    "",
]


def text(value: str) -> Value:
    return Value(string_value=value)


def number(value: int) -> Value:
    return Value(int64_value=value)


def compare(column: str, operator: db_types_pb2.FilterOperator.ValueType, *args: Value) -> Filter:
    return Filter(comparison=Filter.Comparison(column=column, operator=operator, values=args))


def row(*items: Value) -> values_pb2.Row:
    return values_pb2.Row(values=items)


def wire(item: tuple[int, str, int, str, str | None, str]) -> values_pb2.Row:
    ident, name, qty, price, note, group = item
    return row(
        number(ident),
        text(name),
        number(qty),
        Value(decimal_value=price),
        Value(null_value=struct_pb2.NULL_VALUE) if note is None else text(note),
        text(group),
    )


@pytest.fixture(params=DIALECTS)
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(request.param, tmp_path) as result:
        quote = "`" if result.dialect == "mysql" else '"'
        for statement in TABLES.format(
            q=quote, decimal=DECIMAL.get(result.dialect, "DECIMAL(10, 2)")
        ).split(";"):
            if statement.strip():
                await result.stub.Execute(db_service_pb2.ExecuteRequest(sql=statement))
        await result.stub.Insert(
            db_service_pb2.InsertRequest(
                insert=db_types_pb2.Insert(
                    table="items", columns=COLUMNS, rows=[wire(r) for r in ROWS]
                )
            )
        )
        yield result


async def select_ids(served: Served, where: Filter | None = None, **kwargs: object) -> list[int]:
    select = db_types_pb2.Select(table="items", columns=["id"], where=where, **kwargs)  # type: ignore[arg-type]
    if "order_by" not in kwargs:
        select.order_by.add(column="id")
    reply = await served.stub.Select(db_service_pb2.SelectRequest(select=select))
    return [r.values[0].int64_value for r in reply.rows]


async def invalid_field(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return field_violations(caught.value)


async def test_select_combines_filters_orders_and_pages_on_every_engine(served: Served) -> None:
    assert await select_ids(served) == [1, 2, 3, 4]
    fruit_in_stock = Filter(
        all=Filter.Group(
            filters=[
                compare("group", Op.FILTER_OPERATOR_EQ, text("fruit")),
                compare("qty", Op.FILTER_OPERATOR_GT, number(5)),
            ]
        )
    )
    assert await select_ids(served, fruit_in_stock) == [2, 4]
    either = Filter(
        any=Filter.Group(
            filters=[
                compare("name", Op.FILTER_OPERATOR_LIKE, text("c%")),
                compare("id", Op.FILTER_OPERATOR_IN, number(1), number(4)),
            ]
        )
    )
    assert await select_ids(served, either) == [1, 3, 4]
    assert await select_ids(served, Filter(negate=either)) == [2]
    assert await select_ids(served, compare("note", Op.FILTER_OPERATOR_IS_NULL)) == [1, 3]
    assert await select_ids(served, compare("note", Op.FILTER_OPERATOR_IS_NOT_NULL)) == [2, 4]
    assert await select_ids(served, compare("id", Op.FILTER_OPERATOR_NOT_IN, number(2))) == [
        1,
        3,
        4,
    ]
    assert await select_ids(served, compare("id", Op.FILTER_OPERATOR_IN)) == []
    assert await select_ids(
        served, compare("price", Op.FILTER_OPERATOR_LE, Value(decimal_value="1.50"))
    ) == [1, 2, 3]
    by_qty = [db_types_pb2.OrderBy(column="qty", descending=True)]
    assert await select_ids(served, order_by=by_qty, limit=2, offset=1) == [4, 1]


async def test_select_returns_named_columns_with_exact_values(served: Served) -> None:
    reply = await served.stub.Select(
        db_service_pb2.SelectRequest(
            select=db_types_pb2.Select(
                table="items",
                columns=["price", "group", "note"],
                where=compare("id", Op.FILTER_OPERATOR_EQ, number(4)),
            )
        )
    )
    assert [c.name for c in reply.columns] == ["price", "group", "note"]
    price, group, note = reply.rows[0].values
    assert (price.decimal_value, group.string_value, note.string_value) == ("3.00", "fruit", "dry")
    everything = await served.stub.Select(
        db_service_pb2.SelectRequest(select=db_types_pb2.Select(table="items"), max_rows=3)
    )
    assert [c.name for c in everything.columns] == COLUMNS
    assert len(everything.rows) == 3
    assert everything.truncated


async def test_insert_update_delete_change_only_matching_rows_and_return_them(
    served: Served,
) -> None:
    stub = served.stub
    inserted = await stub.Insert(
        db_service_pb2.InsertRequest(
            insert=db_types_pb2.Insert(
                table="items",
                columns=["id", "name"],
                rows=[row(number(5), text("elder")), row(number(6), text("fig"))],
                returning=["id", "name"],
            )
        )
    )
    assert inserted.rows_affected == 2
    assert [(r.values[0].int64_value, r.values[1].string_value) for r in inserted.rows] == [
        (5, "elder"),
        (6, "fig"),
    ]
    update = db_types_pb2.Update(
        table="items",
        set=[db_types_pb2.Assignment(column="note", value=text("new"))],
        where=compare("id", Op.FILTER_OPERATOR_GE, number(5)),
    )
    updated = await stub.Update(db_service_pb2.UpdateRequest(update=update))
    assert updated.rows_affected == 2
    assert await select_ids(served, compare("note", Op.FILTER_OPERATOR_EQ, text("new"))) == [5, 6]
    deleted = await stub.Delete(
        db_service_pb2.DeleteRequest(
            delete=db_types_pb2.Delete(
                table="items",
                where=compare("name", Op.FILTER_OPERATOR_EQ, text("fig")),
                returning=["id"],
            )
        )
    )
    assert deleted.rows_affected == 1
    assert [r.values[0].int64_value for r in deleted.rows] == [6]
    assert await select_ids(served) == [1, 2, 3, 4, 5]


async def test_update_returning_is_refused_where_the_engine_has_none(served: Served) -> None:
    update = db_types_pb2.Update(
        table="items",
        set=[db_types_pb2.Assignment(column="qty", value=number(1))],
        where=compare("id", Op.FILTER_OPERATOR_EQ, number(1)),
        returning=["qty"],
    )
    call = served.stub.Update(db_service_pb2.UpdateRequest(update=update))
    if served.dialect == "mysql":  # MariaDB has INSERT/DELETE ... RETURNING, never UPDATE
        assert await invalid_field(call) == ["update.returning"]
        assert await select_ids(served, compare("qty", Op.FILTER_OPERATOR_EQ, number(1))) == []
    else:
        reply = await call
        assert [r.values[0].int64_value for r in reply.rows] == [1]


async def test_update_and_delete_without_where_are_refused_unless_all_rows(
    served: Served,
) -> None:
    stub = served.stub
    assignment = [db_types_pb2.Assignment(column="qty", value=number(100))]
    fields = await invalid_field(
        stub.Update(
            db_service_pb2.UpdateRequest(update=db_types_pb2.Update(table="items", set=assignment))
        )
    )
    assert fields == ["update.where"]
    fields = await invalid_field(
        stub.Delete(db_service_pb2.DeleteRequest(delete=db_types_pb2.Delete(table="items")))
    )
    assert fields == ["delete.where"]
    assert await select_ids(served) == [1, 2, 3, 4]
    everything = db_types_pb2.Update(table="items", set=assignment, all_rows=True)
    assert (await stub.Update(db_service_pb2.UpdateRequest(update=everything))).rows_affected in {
        4,
        3,
    }
    cleared = await stub.Delete(
        db_service_pb2.DeleteRequest(delete=db_types_pb2.Delete(table="items", all_rows=True))
    )
    assert cleared.rows_affected == 4
    assert await select_ids(served) == []


async def test_unknown_names_and_bad_filters_are_invalid_argument_naming_the_field(
    served: Served,
) -> None:
    stub = served.stub

    async def select_fields(**kwargs: object) -> list[str]:
        select = db_types_pb2.Select(**kwargs)  # type: ignore[arg-type]
        return await invalid_field(stub.Select(db_service_pb2.SelectRequest(select=select)))

    assert await select_fields(table="nope") == ["select.table"]
    assert await select_fields(table="items", columns=["id", "nope"]) == ["select.columns[1]"]
    nested = Filter(
        any=Filter.Group(
            filters=[
                compare("id", Op.FILTER_OPERATOR_EQ, number(1)),
                compare("nope", Op.FILTER_OPERATOR_IS_NULL),
            ]
        )
    )
    assert await select_fields(table="items", where=nested) == [
        "select.where.any.filters[1].comparison.column"
    ]
    assert await select_fields(
        table="items", where=compare("id", Op.FILTER_OPERATOR_EQ, number(1), number(2))
    ) == ["select.where.comparison.values"]
    assert await select_fields(
        table="items",
        where=compare("id", Op.FILTER_OPERATOR_EQ, Value(null_value=struct_pb2.NULL_VALUE)),
    ) == ["select.where.comparison.values[0]"]
    assert await select_fields(
        table="items", where=compare("id", Op.FILTER_OPERATOR_UNSPECIFIED)
    ) == ["select.where.comparison.operator"]
    assert await select_fields(table="items", where=Filter(all=Filter.Group())) == [
        "select.where.all.filters"
    ]
    assert await select_fields(table="items", limit=-1) == ["select.limit"]
    insert = db_types_pb2.Insert(table="items", columns=["id", "name"], rows=[row(number(9))])
    assert await invalid_field(stub.Insert(db_service_pb2.InsertRequest(insert=insert))) == [
        "insert.rows[0].values"
    ]
    assert await invalid_field(stub.Insert(db_service_pb2.InsertRequest())) == ["insert"]


async def test_a_table_created_after_the_schema_was_read_is_found(served: Served) -> None:
    assert await select_ids(served) == [1, 2, 3, 4]  # the schema is read and cached now
    await served.stub.Execute(db_service_pb2.ExecuteRequest(sql="CREATE TABLE later (k INTEGER)"))
    await served.stub.Insert(
        db_service_pb2.InsertRequest(
            insert=db_types_pb2.Insert(table="later", columns=["k"], rows=[row(number(1))])
        )
    )
    reply = await served.stub.Select(
        db_service_pb2.SelectRequest(select=db_types_pb2.Select(table="later"))
    )
    assert [r.values[0].int64_value for r in reply.rows] == [1]


def identifier_cases(bad: str) -> list[tuple[str, object]]:
    """(field named in the error, request) with ``bad`` as each identifier of each statement."""
    where_bad = compare(bad, Op.FILTER_OPERATOR_EQ, number(1))
    where_ok = compare("id", Op.FILTER_OPERATOR_EQ, number(1))
    one = [db_types_pb2.Assignment(column="qty", value=number(1))]
    S, Ins, U, D = (
        db_types_pb2.Select,
        db_types_pb2.Insert,
        db_types_pb2.Update,
        db_types_pb2.Delete,
    )
    Sr, Ir = db_service_pb2.SelectRequest, db_service_pb2.InsertRequest
    Ur, Dr = db_service_pb2.UpdateRequest, db_service_pb2.DeleteRequest
    one_row = [row(number(99))]
    return [
        ("select.table", Sr(select=S(table=bad))),
        ("select.columns[0]", Sr(select=S(table="items", columns=[bad]))),
        ("select.where.comparison.column", Sr(select=S(table="items", where=where_bad))),
        (
            "select.order_by[0].column",
            Sr(select=S(table="items", order_by=[db_types_pb2.OrderBy(column=bad)])),
        ),
        ("insert.table", Ir(insert=Ins(table=bad, columns=["id"], rows=one_row))),
        ("insert.columns[0]", Ir(insert=Ins(table="items", columns=[bad], rows=one_row))),
        ("update.table", Ur(update=U(table=bad, set=one, where=where_ok))),
        (
            "update.set[0].column",
            Ur(
                update=U(
                    table="items",
                    set=[db_types_pb2.Assignment(column=bad, value=number(1))],
                    where=where_ok,
                )
            ),
        ),
        ("update.where.comparison.column", Ur(update=U(table="items", set=one, where=where_bad))),
        ("delete.table", Dr(delete=D(table=bad, where=where_ok))),
        ("delete.where.comparison.column", Dr(delete=D(table="items", where=where_bad))),
        ("delete.returning[0]", Dr(delete=D(table="items", where=where_ok, returning=[bad]))),
    ]


async def snapshot(served: Served) -> list[list[str]]:
    reply = await served.stub.Query(
        db_service_pb2.QueryRequest(
            sql="SELECT id, name, qty, note FROM items ORDER BY id", read_only=True
        )
    )
    victims = await served.stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT id, secret FROM victims", read_only=True)
    )
    return [[str(v).strip() for v in r.values] for r in [*reply.rows, *victims.rows]]


async def test_injection_corpus_in_every_field_changes_nothing(served: Served) -> None:
    stub = served.stub
    before = await snapshot(served)
    methods = {
        db_service_pb2.SelectRequest: stub.Select,
        db_service_pb2.InsertRequest: stub.Insert,
        db_service_pb2.UpdateRequest: stub.Update,
        db_service_pb2.DeleteRequest: stub.Delete,
    }
    for bad in CORPUS:
        for field, request in identifier_cases(bad):
            fields = await invalid_field(methods[type(request)](request))
            assert fields == [field], (bad, field)
    # As values, the same strings are data: matched literally, stored and read back exactly.
    for bad in CORPUS:
        assert await select_ids(served, compare("name", Op.FILTER_OPERATOR_EQ, text(bad))) == []
        assert (
            await select_ids(served, compare("note", Op.FILTER_OPERATOR_IN, text(bad), text("x")))
            == []
        )
    assert await snapshot(served) == before
    await stub.Insert(
        db_service_pb2.InsertRequest(
            insert=db_types_pb2.Insert(
                table="items",
                columns=["id", "name", "note"],
                rows=[row(number(100 + i), text(bad), text(bad)) for i, bad in enumerate(CORPUS)],
            )
        )
    )
    for i, bad in enumerate(CORPUS):
        exact = compare("name", Op.FILTER_OPERATOR_EQ, text(bad))
        # MySQL compares VARCHAR ignoring case and trailing spaces: narrow by id too.
        both = Filter(
            all=Filter.Group(filters=[exact, compare("id", Op.FILTER_OPERATOR_EQ, number(100 + i))])
        )
        reply = await stub.Update(
            db_service_pb2.UpdateRequest(
                update=db_types_pb2.Update(
                    table="items",
                    set=[db_types_pb2.Assignment(column="note", value=text(bad + "!"))],
                    where=both,
                )
            )
        )
        assert reply.rows_affected == 1, bad
    reply = await stub.Select(
        db_service_pb2.SelectRequest(
            select=db_types_pb2.Select(
                table="items",
                columns=["name", "note"],
                where=compare("id", Op.FILTER_OPERATOR_GE, number(100)),
                order_by=[db_types_pb2.OrderBy(column="id")],
            )
        )
    )
    assert [(r.values[0].string_value, r.values[1].string_value) for r in reply.rows] == [
        (bad, bad + "!") for bad in CORPUS
    ]
    removed = await stub.Delete(
        db_service_pb2.DeleteRequest(
            delete=db_types_pb2.Delete(
                table="items", where=compare("id", Op.FILTER_OPERATOR_GE, number(100))
            )
        )
    )
    assert removed.rows_affected == len(CORPUS)
    assert await snapshot(served) == before
