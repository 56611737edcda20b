"""The typed Python client with ApiService's GraphQL, CallStream and FanOut, on real servers.

The client exposes the generated stubs on its channel; what it adds (typed errors, a default
deadline, retries only where the contract allows) must hold for these RPCs too, and for the
services added beside ApiService.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from paca.api.v1 import (
    api_service_pb2,
    api_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from paca.client import (
    ClientOptions,
    DeadlineExceeded,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    connect,
    retryable_methods,
)

from api_service import ApiApp
from paca_runtime.security import SecuritySettings, TokenEntry, TokenTable, token_digest
from paca_runtime.server import GrpcServer
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MIB = 1024 * 1024


async def test_graphql_returns_data_and_the_upstreams_errors_through_the_client(
    api_app: ApiApp, upstream: Upstream
) -> None:
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        reply = await api.GraphQL(
            api_service_pb2.GraphQLRequest(url=f"{upstream.url}/graphql", query="{ boom ok }")
        )
    assert json.loads(reply.data_json) == {"user": None, "ok": 1}
    assert [error.message for error in reply.errors] == ["user not found"]


async def test_graphql_bad_input_raises_invalid_argument_naming_the_field(
    api_app: ApiApp, upstream: Upstream
) -> None:
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(InvalidArgument) as caught:
            await api.GraphQL(
                api_service_pb2.GraphQLRequest(
                    url=f"{upstream.url}/graphql", query="{ hits }", variables_json="[1"
                )
            )
    assert caught.value.field_violations[0][0] == "variables_json"


async def test_call_stream_iterates_the_head_then_the_whole_body(
    api_app: ApiApp, upstream: Upstream
) -> None:
    request = api_service_pb2.CallStreamRequest(
        call=api_service_pb2.CallRequest(url=f"{upstream.url}/big?mb=1")
    )
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        messages = [message async for message in api.CallStream(request)]
    head, chunks = messages[0], messages[1:]
    assert head.WhichOneof("part") == "head"
    assert head.head.status_code == 200
    assert all(m.WhichOneof("part") == "chunk" for m in chunks)
    assert b"".join(m.chunk for m in chunks) == bytes(range(256)) * 256 * 16


async def test_call_stream_failure_raises_the_typed_error_when_iterated_or_read(
    api_app: ApiApp,
) -> None:
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(InvalidArgument) as caught:
            async for _ in api.CallStream(api_service_pb2.CallStreamRequest()):
                pass
        assert caught.value.field_violations[0][0] == "call"
        call = api.CallStream(api_service_pb2.CallStreamRequest())
        with pytest.raises(InvalidArgument):
            await call.read()
        # The call behind the iterator still tells its status.
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_default_deadline_and_typed_errors_apply_to_streams(
    api_app: ApiApp, upstream: Upstream
) -> None:
    request = api_service_pb2.CallStreamRequest(
        call=api_service_pb2.CallRequest(url=f"{upstream.url}/slow?s=5")
    )
    async with connect(api_app.server.bound_address, ClientOptions(timeout_s=0.3)) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        started = time.perf_counter()
        with pytest.raises(DeadlineExceeded):
            async for _ in api.CallStream(request):
                pass
    assert time.perf_counter() - started < 3


async def test_fan_out_returns_each_result_with_its_own_status(
    api_app: ApiApp, upstream: Upstream
) -> None:
    request = api_service_pb2.FanOutRequest(
        calls=[
            api_service_pb2.CallRequest(url=f"{upstream.url}/echo"),
            api_service_pb2.CallRequest(url="ftp://example.com/not-http"),
        ]
    )
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        reply = await api.FanOut(request)
    ok, bad = reply.results
    assert ok.response.status_code == 200
    assert bad.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (reply.succeeded, reply.failed) == (1, 1)


class FlakyApi(api_service_pb2_grpc.ApiServiceServicer):
    """Answers UNAVAILABLE to the first call of each RPC: a restart on demand."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def _fail_first(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.attempts[name] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def GraphQL(
        self, request: api_service_pb2.GraphQLRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.GraphQLResponse:
        await self._fail_first("GraphQL", context)
        return api_service_pb2.GraphQLResponse(status_code=200)

    async def FanOut(
        self, request: api_service_pb2.FanOutRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.FanOutResponse:
        await self._fail_first("FanOut", context)
        return api_service_pb2.FanOutResponse()

    async def CallStream(
        self, request: api_service_pb2.CallStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_service_pb2.CallStreamResponse]:
        await self._fail_first("CallStream", context)
        yield api_service_pb2.CallStreamResponse(chunk=b"x")


class FlakyWebhooks(webhook_service_pb2_grpc.WebhookServiceServicer):
    """ListDeadEvents (NO_SIDE_EFFECTS) answers UNAVAILABLE the first time."""

    def __init__(self) -> None:
        self.attempts = 0

    async def ListDeadEvents(
        self, request: webhook_service_pb2.ListDeadEventsRequest, context: grpc.aio.ServicerContext
    ) -> webhook_service_pb2.ListDeadEventsResponse:
        self.attempts += 1
        if self.attempts == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return webhook_service_pb2.ListDeadEventsResponse()


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyApi, FlakyWebhooks, str]]:
    api = FlakyApi()  # type: ignore[abstract]  # the other RPCs answer UNIMPLEMENTED
    webhooks = FlakyWebhooks()  # type: ignore[abstract]
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    api_service_pb2_grpc.add_ApiServiceServicer_to_server(api, server)
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(webhooks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port != 0
    await server.start()
    yield api, webhooks, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_graphql_call_stream_and_fan_out_are_never_retried(
    flaky: tuple[FlakyApi, FlakyWebhooks, str],
) -> None:
    api, _, address = flaky
    async with connect(address) as channel:
        stub = api_service_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(Unavailable):
            await stub.GraphQL(api_service_pb2.GraphQLRequest(url="http://x.example/", query="{a}"))
        with pytest.raises(Unavailable):
            await stub.FanOut(api_service_pb2.FanOutRequest())
        with pytest.raises(Unavailable):
            async for _ in stub.CallStream(api_service_pb2.CallStreamRequest()):
                pass
    assert api.attempts == {"GraphQL": 1, "FanOut": 1, "CallStream": 1}
    for rpc in ("GraphQL", "FanOut", "CallStream"):
        assert ("paca.api.v1.ApiService", rpc) not in retryable_methods()


async def test_safe_rpcs_of_services_beside_api_service_are_retried(
    flaky: tuple[FlakyApi, FlakyWebhooks, str],
) -> None:
    _, webhooks, address = flaky
    async with connect(address) as channel:
        stub = webhook_service_pb2_grpc.WebhookServiceStub(channel)
        await stub.ListDeadEvents(webhook_service_pb2.ListDeadEventsRequest(group="g"))
    assert webhooks.attempts == 2
    safe = set(retryable_methods())
    assert ("paca.api.v1.WebhookService", "AckEvent") in safe
    assert ("paca.db.v1.DocumentService", "FindOneDocument") in safe
    assert ("paca.db.v1.EventStoreService", "ClaimEvents") not in safe


class Streams(api_service_pb2_grpc.ApiServiceServicer):
    """CallStream answers one chunk."""

    async def CallStream(
        self, request: api_service_pb2.CallStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_service_pb2.CallStreamResponse]:
        yield api_service_pb2.CallStreamResponse(chunk=b"x")


async def test_the_token_reaches_streaming_rpcs_on_a_server_that_requires_one() -> None:
    token = "stream-token-0123456789"
    tokens = TokenTable((TokenEntry("caller", token_digest(token), frozenset({"api.call"})),))
    server = GrpcServer("api_service", "127.0.0.1:0", security=SecuritySettings(tokens=tokens))
    servicer = Streams()  # type: ignore[abstract]  # the other RPCs answer UNIMPLEMENTED
    server.add_service(
        "paca.api.v1.ApiService",
        lambda s: api_service_pb2_grpc.add_ApiServiceServicer_to_server(servicer, s),
    )
    await server.start()
    try:
        request = api_service_pb2.CallStreamRequest()
        async with connect(server.bound_address, ClientOptions(token=token)) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)
            assert [m.chunk async for m in stub.CallStream(request)] == [b"x"]
        async with connect(server.bound_address) as channel:
            stub = api_service_pb2_grpc.ApiServiceStub(channel)
            with pytest.raises(Unauthenticated):
                async for _ in stub.CallStream(request):
                    pass
    finally:
        await server.stop(0)
