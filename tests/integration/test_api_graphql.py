"""ApiService.GraphQL: structured errors with partial data, schemas, caching, retries."""

from __future__ import annotations

import json

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2_grpc

from api_service import ApiApp
from tests.conftest import Upstream
from tests.integration.test_api_call import count_logs, field_violations

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def register(
    stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream, name: str, **fields: object
) -> None:
    endpoint = api_types_pb2.Endpoint(
        name=name,
        provider="gql",
        base_url=upstream.url,
        path="/graphql",
        kind=api_types_pb2.ENDPOINT_KIND_GRAPHQL,
        **fields,  # type: ignore[arg-type]
    )
    await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=endpoint))


async def test_query_with_variables_and_operation_name_returns_data_and_is_recorded(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    reply = await api_stub.GraphQL(
        api_service_pb2.GraphQLRequest(
            url=f"{upstream.url}/graphql",
            query="query A { hits }\nquery B($n: Int) { hits }",
            variables_json='{"n": 3}',
            operation_name="B",
        ),
        timeout=5,
    )
    assert reply.status_code == 200
    assert json.loads(reply.data_json) == {"hits": 1, "variables": {"n": 3}, "operationName": "B"}
    assert not reply.errors
    assert reply.attempts == 1
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "success AND method = 'POST' AND data IS NOT NULL") == 1


async def test_graphql_errors_are_structured_and_partial_data_is_kept(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    reply = await api_stub.GraphQL(
        api_service_pb2.GraphQLRequest(url=f"{upstream.url}/graphql", query="{ boom ok }"),
        timeout=5,
    )
    assert reply.status_code == 200
    assert json.loads(reply.data_json) == {"user": None, "ok": 1}
    [error] = reply.errors
    assert error.message == "user not found"
    assert list(error.path) == ["user", "0"]
    assert [(loc.line, loc.column) for loc in error.locations] == [(1, 3)]
    assert json.loads(error.extensions_json) == {"code": "NOT_FOUND"}
    await api_app.recorder.flushed()
    where = "NOT success AND error_message = 'GraphQL: user not found'"
    assert await count_logs(db_stub, where) == 1


async def test_data_that_misfits_the_endpoint_schema_is_a_validation_error(
    api_app: ApiApp,
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
) -> None:
    schema = {"type": "object", "properties": {"hits": {"type": "integer"}}, "required": ["hits"]}
    await register(api_stub, upstream, "gql.typed", response_schema_json=json.dumps(schema))
    fits = await api_stub.GraphQL(
        api_service_pb2.GraphQLRequest(endpoint="gql.typed", query="{ hits }"), timeout=5
    )
    assert fits.validation_error == ""
    misfit = await api_stub.GraphQL(
        api_service_pb2.GraphQLRequest(endpoint="gql.typed", query="{ shape }"), timeout=5
    )
    assert json.loads(misfit.data_json) == {"hits": "many"}  # the data still comes back
    assert "at hits" in misfit.validation_error
    await api_app.recorder.flushed()
    assert await count_logs(db_stub, "is_validation_error AND NOT success") == 1
    stats = await api_stub.GetStats(api_service_pb2.GetStatsRequest(endpoint="gql.typed"))
    assert stats.stats[0].validation_errors == 1


async def test_queries_are_cached_by_normalised_query_and_variables_mutations_never(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    cache = api_types_pb2.CachePolicy(enabled=True)
    cache.ttl.FromSeconds(60)
    await register(api_stub, upstream, "gql.cached", cache=cache)

    async def run(
        query: str, variables: str = "", name: str = ""
    ) -> api_service_pb2.GraphQLResponse:
        request = api_service_pb2.GraphQLRequest(
            endpoint="gql.cached", query=query, variables_json=variables
        )
        reply: api_service_pb2.GraphQLResponse = await api_stub.GraphQL(request, timeout=5)
        return reply

    first = await run("query Q($a: Int, $b: Int) { hits }", '{"a": 1, "b": 2}')
    same = await run("query Q($a:Int,$b:Int){\n  hits # comment\n}", '{"b": 2, "a": 1}')
    other_variables = await run("query Q($a: Int, $b: Int) { hits }", '{"a": 9, "b": 2}')
    mutation = await run("mutation M { hits }")
    mutation_again = await run("mutation M { hits }")
    assert not first.from_cache
    assert same.from_cache
    assert same.data_json == first.data_json
    assert same.attempts == 0
    assert not other_variables.from_cache
    assert not mutation.from_cache
    assert not mutation_again.from_cache
    assert len(upstream.requests) == 4
    stats = await api_stub.GetStats(api_service_pb2.GetStatsRequest(endpoint="gql.cached"))
    assert stats.stats[0].cache_hits == 1


async def test_a_query_is_retried_like_a_read_a_mutation_only_with_an_idempotency_key(
    api_stub: api_service_pb2_grpc.ApiServiceStub, upstream: Upstream
) -> None:
    def request(key: str, query: str, idempotency_key: str = "") -> api_service_pb2.GraphQLRequest:
        return api_service_pb2.GraphQLRequest(
            url=f"{upstream.url}/flaky/{key}?fail=1",
            query=query,
            idempotency_key=idempotency_key,
        )

    query = await api_stub.GraphQL(request("q", "{ hits }"), timeout=10)
    assert (query.status_code, query.attempts) == (200, 2)
    assert query.body == b'{"hit": 2}'  # not a GraphQL reply: the raw body comes back
    mutation = await api_stub.GraphQL(request("m", "mutation { hits }"), timeout=10)
    assert (mutation.status_code, mutation.attempts) == (503, 1)
    keyed = await api_stub.GraphQL(request("k", "mutation { hits }", "op-1"), timeout=10)
    assert (keyed.status_code, keyed.attempts) == (200, 2)
    assert upstream.seen_headers[-1]["Idempotency-Key"] == "op-1"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"query": "{ hits "}, "query"),
        ({"query": ""}, "query"),
        ({"query": "query A { a } query B { b }"}, "operation_name"),
        ({"query": "{ a }", "operation_name": "Nope"}, "operation_name"),
        ({"query": "subscription { a }"}, "query"),
        ({"query": "{ a }", "variables_json": "[1]"}, "variables_json"),
        ({"query": "{ a }", "endpoint": "rest.plain"}, "endpoint"),
    ],
)
async def test_bad_graphql_requests_are_invalid_argument_naming_the_field(
    api_stub: api_service_pb2_grpc.ApiServiceStub,
    upstream: Upstream,
    request_fields: dict[str, str],
    field: str,
) -> None:
    plain = api_types_pb2.Endpoint(name="rest.plain", provider="p", base_url=upstream.url)
    await api_stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=plain))
    fields = {"url": f"{upstream.url}/graphql", **request_fields}
    if "endpoint" in request_fields:
        del fields["url"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api_stub.GraphQL(api_service_pb2.GraphQLRequest(**fields), timeout=5)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == [field]
    assert not upstream.requests
