"""Which SQL texts run as PostgreSQL plain reads: only what can neither write nor change the
session goes through; anything the check cannot be sure of takes the transactional path."""

from __future__ import annotations

import pytest

from db_service.backends.pg_plain_reads import is_plain_read

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id, name FROM items WHERE id = $1",
        "select count(*) from items;",
        'SELECT "items"."id" FROM "items" WHERE "items"."name" LIKE $1 ORDER BY 1 LIMIT $2',
        "SELECT lower(name), coalesce(x, 0) FROM t WHERE y IN ($1, $2) AND NOT (z IS NULL)",
        "SELECT date '2024-01-01', x::numeric(10, 2) FROM t -- a comment",
        "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a) /* why */",
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        "SELECT 'it''s', $1::text || 'x' FROM t",
    ],
)
def test_a_select_of_columns_and_pure_built_ins_is_plain(sql: str) -> None:
    assert is_plain_read(sql)


@pytest.mark.parametrize(
    "sql",
    [
        # Session changes that outlive the statement.
        "SELECT set_config('search_path', 'elsewhere', false)",
        "SELECT pg_advisory_lock(7)",
        "SELECT nextval('ids')",
        "SELECT pg_sleep(1)",
        # Functions the check does not know, or names it cannot resolve.
        "SELECT my_function(id) FROM items",
        "SELECT public.lower(name) FROM items",
        'SELECT "lower"(name) FROM items',
        "SELECT a FROM t AS x(a)",
        "SELECT a OPERATOR(pg_catalog.+) b FROM t",
        "SELECT a === b FROM t",
        # More than a read, or not a SELECT.
        "SELECT * FROM items FOR UPDATE",
        "SELECT * INTO copy_of_items FROM items",
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
        "SELECT 1; DELETE FROM items",
        "DELETE FROM items",
        "SHOW search_path",
        "",
        # Text whose string or comment rules a guess could get wrong.
        "SELECT E'\\'', set_config('a', 'b', false)",
        "SELECT '\\', set_config('a', 'b', false) --'",
        "SELECT $$ x $$",
        "SELECT 1 /* outer /* inner */ set_config('a', 'b', false) */",
        "SELECT U&'\\0041'",
    ],
)
def test_anything_else_is_not(sql: str) -> None:
    assert not is_plain_read(sql)
