"""The seed's in-process NoSQL API (NoSQLConnector, create_mongodb_config) on a real server."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace

import pytest
from bson import Decimal128, ObjectId

from db_service.nosql import NoSQLConnector, create_mongodb_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def nosql(mongodb_url: str) -> AsyncIterator[NoSQLConnector]:
    config = create_mongodb_config(f"paca_it_{uuid.uuid4().hex[:8]}", url=mongodb_url)
    async with NoSQLConnector(config) as connector:
        try:
            yield connector
        finally:
            await connector.documents.collection("people").drop()


async def test_mongo_connector_reads_and_writes_python_values(nosql: NoSQLConnector) -> None:
    when = dt.datetime(2025, 5, 17, 8, 0, tzinfo=dt.UTC)
    inserted = await nosql.insert(
        "people",
        [
            {"name": "ada", "born": when, "score": Decimal128("9.5")},
            {"name": "bob", "score": Decimal128("7.0")},
        ],
    )
    assert inserted.is_success
    assert inserted.rows_affected == 2
    assert isinstance(inserted.data[0]["_id"], ObjectId)

    found = await nosql.find("people", {"name": "ada"}, projection={"_id": 0})
    assert found.data == [{"name": "ada", "born": when, "score": Decimal128("9.5")}]
    updated = await nosql.update("people", {"name": "bob"}, {"$set": {"score": Decimal128("8")}})
    assert updated.rows_affected == 1
    assert (await nosql.count("people", {"score": {"$gt": Decimal128("7.5")}})).data == [
        {"count": 2}
    ]
    grouped = await nosql.aggregate("people", [{"$group": {"_id": None, "n": {"$sum": 1}}}])
    assert grouped.data == [{"_id": None, "n": 2}]
    assert (await nosql.delete("people", {"name": "bob"})).rows_affected == 1


async def test_mongo_connector_returns_errors_as_results(nosql: NoSQLConnector) -> None:
    first = await nosql.insert("people", [{"_id": 1}])
    assert first.is_success
    again = await nosql.insert("people", [{"_id": 1}])
    assert not again.is_success
    assert again.error_code == "ALREADY_EXISTS"
    assert "duplicate key" in (again.error or "")
    bad = await nosql.find("people", {"a": {"$bogus": 1}})
    assert bad.error_code == "INVALID_ARGUMENT"
    # A Python Decimal is not a BSON type (Decimal128 is): refused, nothing stored.
    unencodable = await nosql.insert("people", [{"_id": 2, "price": Decimal("1.5")}])
    assert unencodable.error_code == "INVALID_ARGUMENT"
    assert (await nosql.count("people")).data == [{"count": 1}]


async def test_mongo_connector_picks_the_engine_by_kind_and_refuses_misuse() -> None:
    with pytest.raises(ValueError, match=r"config\.kind"):
        NoSQLConnector(SimpleNamespace(kind="cassandra"))
    connector = NoSQLConnector(create_mongodb_config("x", host="127.0.0.1", port=1))
    with pytest.raises(RuntimeError, match="not connected"):
        await connector.find("c")
    await connector.disconnect()
