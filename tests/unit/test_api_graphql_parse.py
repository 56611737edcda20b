"""GraphQL documents: normalisation for cache keys, the operation's type, bad input."""

from __future__ import annotations

import pytest

from api_service.callrecord import schema_misfit
from api_service.errors import InvalidCall
from api_service.graphql import parse_operation

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]


def test_whitespace_and_comments_do_not_change_the_normalised_document() -> None:
    compact, kind = parse_operation("query Q($a:Int){user(id:$a){name}}", "")
    spaced, _ = parse_operation("# who\nquery Q( $a : Int ) {\n  user(id: $a) { name }\n}\n", "")
    assert compact == spaced
    assert kind == "query"
    different, _ = parse_operation("query Q($a:Int){user(id:$a){email}}", "")
    assert different != compact


def test_the_named_operation_decides_query_or_mutation() -> None:
    document = "query Read { a } mutation Write { b }"
    assert parse_operation(document, "Read")[1] == "query"
    assert parse_operation(document, "Write")[1] == "mutation"
    assert parse_operation("{ a }", "")[1] == "query"  # the shorthand is a query


@pytest.mark.parametrize(
    ("document", "name", "field"),
    [
        ("", "", "query"),
        ("{ a", "", "query"),
        ("query A { a } query B { b }", "", "operation_name"),
        ("query A { a }", "B", "operation_name"),
        ("subscription S { a }", "", "query"),
    ],
)
def test_bad_documents_name_the_field(document: str, name: str, field: str) -> None:
    with pytest.raises(InvalidCall) as caught:
        parse_operation(document, name)
    assert caught.value.field == field


def test_schema_misfit_names_the_place_and_an_unusable_schema_says_so() -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}}'
    assert schema_misfit(schema, {"n": 1}) is None
    misfit = schema_misfit(schema, {"n": "x"})
    assert misfit is not None
    assert misfit.startswith("response does not fit the schema at n:")
    unusable = schema_misfit('{"type": 12}', {})
    assert unusable is not None
    assert "unusable" in unusable
