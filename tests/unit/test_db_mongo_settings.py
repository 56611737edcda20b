"""MongoDB settings, Extended JSON input checks and error translation (no server)."""

from __future__ import annotations

import grpc
import pytest
from pymongo import errors as mongo_errors

from db_service.document import codec
from db_service.document.config import MONGO_DATABASES, mongo_databases_from_source
from db_service.document.errors import scrub, translate
from paca_runtime.errors import InvalidArgument
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def source(**values: str) -> SettingsSource:
    return SettingsSource(values)


def test_mongo_databases_parse_names_urls_and_url_options() -> None:
    found = mongo_databases_from_source(
        source(
            PACA_MONGO_DATABASES=(
                "main=mongodb://u:pw@h1:27017,h2:27017/app?replicaSet=rs&maxPoolSize=7;"
                " logs=mongodb://h3/?serverSelectionTimeoutMS=250&read_only=true"
            ),
            PACA_MONGO_TIMEOUT_S="12",
        ),
        pool_size=3,
    )
    main, logs = found
    assert (main.name, main.database, main.pool_size, main.timeout_s) == ("main", "app", 7, 12.0)
    assert main.target == "mongodb://h1:27017,h2:27017/app"
    assert "replicaSet=rs" in main.url
    assert (logs.database, logs.pool_size, logs.read_only) == ("logs", 3, True)
    assert logs.server_selection_timeout_s == pytest.approx(0.25)
    assert "read_only" not in logs.url


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("main=postgresql://u:pw@h/db", "mongodb://"),
        ("main", "name=mongodb://"),
        ("a=mongodb://h/x;a=mongodb://h/y", "appears twice"),
        ("a=mongodb://h/x?maxPoolSize=lots", "maxPoolSize must be a number"),
        ("a=mongodb://h/x?read_only=maybe", "read_only must be true or false"),
        ("a=mongodb://h/x?connectTimeoutMS=0", "connect_timeout_s"),
    ],
)
def test_mongo_bad_settings_name_the_setting_and_hide_the_password(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        mongo_databases_from_source(source(PACA_MONGO_DATABASES=text), pool_size=2)
    assert "pw" not in str(caught.value)
    assert MONGO_DATABASES in str(caught.value)


def test_mongo_unset_means_no_databases() -> None:
    assert mongo_databases_from_source(source(), pool_size=2) == ()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: codec.document("{", "filter"), "filter"),
        (lambda: codec.document("", "documents[0]", required=True), "documents[0]"),
        (lambda: codec.sort('{"a": true}', "sort"), "sort.a"),
        (lambda: codec.update('{"$set": {"a": 1}, "b": 2}', "update"), "update"),
        (lambda: codec.pipeline('[{"$match": {}}, 3]', "pipeline"), "pipeline[1]"),
        (lambda: codec.index_keys('{"a": 1, "b": "sideways"}', "keys"), "keys.b"),
    ],
)
def test_mongo_bad_extended_json_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field


def test_mongo_errors_map_to_statuses_without_credentials() -> None:
    secret = "pa55word"
    cases = [
        (mongo_errors.DuplicateKeyError("E11000 dup", 11000), grpc.StatusCode.ALREADY_EXISTS),
        (
            mongo_errors.ServerSelectionTimeoutError(f"mongodb://u:{secret}@h: refused"),
            grpc.StatusCode.UNAVAILABLE,
        ),
        (mongo_errors.AutoReconnect("connection reset"), grpc.StatusCode.UNAVAILABLE),
        (
            mongo_errors.ExecutionTimeout("operation exceeded time limit", 50),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ),
        (
            mongo_errors.OperationFailure("unknown operator: $bogus", 2),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            mongo_errors.OperationFailure("index not found with name [x]", 27),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            mongo_errors.OperationFailure("Authentication failed.", 18),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ]
    for exc, code in cases:
        error = translate(exc, database="docs", field="filter", secrets=(secret,))
        assert error.code == code, exc
        assert secret not in str(error)
    assert scrub(f"mongodb://user:{secret}@host/x failed") == "mongodb://host/x failed"
