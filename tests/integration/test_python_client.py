"""The typed Python client on real servers: typed errors, deadlines, contract-driven retries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.client import (
    ClientOptions,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
    connect,
    retryable_methods,
    service_config,
)

from api_service import ApiApp
from tests.conftest import Upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_bad_input_raises_invalid_argument_with_the_field(api_app: ApiApp) -> None:
    async with connect(api_app.server.bound_address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(InvalidArgument) as caught:
            await api.Call(api_service_pb2.CallRequest(url="ftp://example.com/"))
        assert caught.value.field_violations[0][0] == "url"
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(NotFound):
            await api.Call(api_service_pb2.CallRequest(endpoint="nope"))


async def test_default_deadline_applies_to_calls_that_set_none(
    api_app: ApiApp, upstream: Upstream
) -> None:
    options = ClientOptions(timeout_s=0.3)
    async with connect(api_app.server.bound_address, options) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        with pytest.raises(DeadlineExceeded):
            await api.Call(api_service_pb2.CallRequest(url=f"{upstream.url}/slow?s=5"))


class Flaky(api_service_pb2_grpc.ApiServiceServicer):
    """Answers UNAVAILABLE to the first call of each RPC: a fault on demand."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def _fail_first(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.attempts[name] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def ListEndpoints(
        self, request: api_service_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.ListEndpointsResponse:
        await self._fail_first("ListEndpoints", context)
        return api_service_pb2.ListEndpointsResponse()

    async def Call(
        self, request: api_service_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.CallResponse:
        await self._fail_first("Call", context)
        return api_service_pb2.CallResponse(status_code=200)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    servicer = Flaky()  # type: ignore[abstract]  # the other RPCs answer UNIMPLEMENTED
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    api_service_pb2_grpc.add_ApiServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_unavailable_is_retried_only_for_rpcs_the_contract_marks_safe(
    flaky: tuple[Flaky, str],
) -> None:
    servicer, address = flaky
    async with connect(address) as channel:
        api = api_service_pb2_grpc.ApiServiceStub(channel)
        await api.ListEndpoints(api_service_pb2.ListEndpointsRequest())  # NO_SIDE_EFFECTS
        assert servicer.attempts["ListEndpoints"] == 2
        with pytest.raises(Unavailable):
            await api.Call(api_service_pb2.CallRequest(url="http://x.example/"))
        assert servicer.attempts["Call"] == 1


def test_service_config_lists_exactly_the_safe_rpcs() -> None:
    safe = set(retryable_methods())
    assert ("paca.api.v1.ApiService", "ListEndpoints") in safe
    assert ("paca.db.v1.DbService", "RecordApiCalls") in safe
    assert ("paca.monitor.v1.MonitorService", "Report") in safe
    assert ("paca.api.v1.ApiService", "Call") not in safe
    assert ("paca.db.v1.DbService", "Query") not in safe
    config = json.loads(service_config())
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_client_options_validate_themselves() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        ClientOptions(timeout_s=0)
    assert "hunter2" not in repr(ClientOptions(token="hunter2"))
