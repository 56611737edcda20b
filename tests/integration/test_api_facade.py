"""In-process use: the seed README's example and the facade clients, against a local upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from paca.db.v1 import db_service_pb2_grpc

from api_service import (
    APIEndpoint,
    GraphQLClient,
    HTTPMethod,
    RESTClient,
    UniversalAPIClient,
)
from api_service.settings import ApiSettings, CallLogSettings
from db_service import DbApp
from tests.conftest import Upstream
from tests.integration.test_api_call import count_logs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def settings(tmp_path: Path, **overrides: object) -> ApiSettings:
    fields: dict[str, object] = {
        "db_address": "",
        "calllog": CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
        **overrides,
    }
    return ApiSettings(**fields)  # type: ignore[arg-type]


async def test_seed_readme_example_runs_in_process_with_default_settings(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's "In-process use" example, with the local upstream for the public one.
    monkeypatch.chdir(tmp_path)
    client = UniversalAPIClient(upstream.url)
    await client.initialize()

    endpoint = APIEndpoint(name="get_posts", url="/echo/posts", method=HTTPMethod.GET)
    client.register_endpoint(endpoint)

    result = await client.get("get_posts")
    assert result.is_success
    assert result.status_code == 200
    assert result.data["path"] == "/echo/posts"
    await client.cleanup()
    # The call went through the engine: counted, and recorded (kept in memory, no db_service).
    assert client.records[-1].endpoint == "get_posts"
    assert client.records[-1].success
    await client.cleanup()  # idempotent


async def test_rest_client_sends_params_json_and_reports_failures_as_results(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with RESTClient(upstream.url, settings=settings(tmp_path)) as client:
        created = await client.post("/echo/items", json_body={"n": 1}, params={"tag": "x"})
        assert created.is_success
        assert created.data["method"] == "POST"
        assert created.data["body"] == '{"n": 1}'
        assert created.data["query"] == [["tag", "x"]]

        missing = await client.get("/status/404")
        assert not missing.is_success
        assert missing.status_code == 404
        assert missing.error == "HTTP 404"

        down = await client.delete("http://127.0.0.1:1/nothing", timeout_s=2)
        assert not down.is_success
        assert down.status_code == 0
        assert down.error_code == "UNAVAILABLE"

        # A name that is not registered is a path under the base URL.
        unregistered = await client.get("echo")
        assert unregistered.data["path"] == "/echo"
    assert [r.status_code for r in client.records] == [200, 404, 0, 200]


async def test_facade_honours_the_network_settings(upstream: Upstream, tmp_path: Path) -> None:
    async with UniversalAPIClient(
        upstream.url, settings=settings(tmp_path, allowed_networks="")
    ) as client:
        refused = await client.get("/echo")
    assert refused.error_code == "PERMISSION_DENIED"
    assert not upstream.seen_headers


async def test_endpoint_schema_misfit_is_a_validation_error(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with UniversalAPIClient(upstream.url, settings=settings(tmp_path)) as client:
        client.register_endpoint(
            APIEndpoint(
                "echo.typed",
                "/echo",
                response_schema={
                    "type": "object",
                    "required": ["method"],
                    "properties": {"method": {"enum": ["PUT"]}},
                },
            )
        )
        result = await client.get("echo.typed")
    assert result.status_code == 200
    assert result.is_validation_error
    assert not result.is_success
    assert result.error is not None
    assert "at method" in result.error
    assert client.records[-1].is_validation_error


async def test_graphql_client_returns_data_errors_and_caches_queries(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with GraphQLClient(
        f"{upstream.url}/graphql", settings=settings(tmp_path), cache_ttl_s=60
    ) as client:
        first = await client.query("query Q($id: Int) { hits }", {"id": 1})
        again = await client.query("query Q($id: Int) {\n  hits  # same query\n}", {"id": 1})
        partial = await client.query("{ boom }")
    assert first.is_success
    assert first.data == {"hits": 1, "variables": {"id": 1}, "operationName": None}
    assert again.from_cache
    assert again.data == first.data
    assert not partial.is_success
    assert partial.data == {"user": None, "ok": 1}
    assert partial.error == "user not found"
    assert partial.errors[0]["path"] == ["user", "0"]
    assert partial.errors[0]["extensions"] == {"code": "NOT_FOUND"}
    assert len(upstream.requests) == 2


async def test_records_go_to_db_service_when_it_is_configured(
    db_app: DbApp, db_stub: db_service_pb2_grpc.DbServiceStub, upstream: Upstream, tmp_path: Path
) -> None:
    configured = settings(tmp_path, db_address=db_app.server.bound_address)
    async with UniversalAPIClient(upstream.url, settings=configured, provider="local") as client:
        assert (await client.get("/echo")).is_success
    # cleanup() sent what was pending.
    assert await count_logs(db_stub, "provider = 'local' AND success") == 1
    assert not client.records
