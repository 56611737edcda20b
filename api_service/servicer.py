"""ApiService over gRPC: maps messages to the engine and engine errors to statuses."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

import grpc
from grpc_status import rpc_status
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service.cache_redis import cache_degraded
from api_service.caller import OutboundCaller
from api_service.errors import InvalidCall
from api_service.fanout import fan_out
from api_service.graphql import GraphQLCaller
from api_service.registry import APIRegistry
from api_service.resilience import BreakerState, CircuitBreaker
from api_service.stats import to_message
from api_service.streaming import stream_call
from paca_runtime.errors import StatusError, status_of, translate_errors

logger = logging.getLogger(__name__)

_CIRCUIT_STATES = {
    BreakerState.CLOSED: api_types_pb2.CIRCUIT_STATE_CLOSED,
    BreakerState.OPEN: api_types_pb2.CIRCUIT_STATE_OPEN,
    BreakerState.HALF_OPEN: api_types_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def circuit_state(breaker: CircuitBreaker | None) -> api_types_pb2.CircuitState.ValueType:
    if breaker is None:
        return api_types_pb2.CIRCUIT_STATE_UNSPECIFIED
    return _CIRCUIT_STATES[breaker.current_state()]


class ApiServicer(api_service_pb2_grpc.ApiServiceServicer):
    def __init__(self, caller: OutboundCaller, registry: APIRegistry) -> None:
        self.caller = caller
        self.registry = registry
        self.graphql = GraphQLCaller(caller)

    @translate_errors
    def Call(
        self, request: api_service_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> Awaitable[api_service_pb2.CallResponse]:
        # The call's coroutine itself, which translate_errors awaits: a frame less per call.
        return self.caller.call(request, time_remaining_s=context.time_remaining())

    async def CallStream(
        self, request: api_service_pb2.CallStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api_service_pb2.CallStreamResponse]:
        try:
            if not request.HasField("call"):
                raise InvalidCall("call", "required")
            messages = stream_call(
                self.caller, request.call, time_remaining_s=context.time_remaining()
            )
            # aclosing: a caller that goes away closes the upstream response at once.
            async with contextlib.aclosing(messages):
                async for message in messages:
                    yield message
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in ApiServicer.CallStream")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))

    @translate_errors
    async def GraphQL(
        self, request: api_service_pb2.GraphQLRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.GraphQLResponse:
        return await self.graphql.query(request, time_remaining_s=context.time_remaining())

    @translate_errors
    async def FanOut(
        self, request: api_service_pb2.FanOutRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.FanOutResponse:
        return await fan_out(self.caller, request, time_remaining_s=context.time_remaining())

    @translate_errors
    async def RegisterEndpoint(
        self, request: api_service_pb2.RegisterEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.RegisterEndpointResponse:
        if not request.HasField("endpoint"):
            raise InvalidCall("endpoint", "required")
        stored, created = await self.registry.save(request.endpoint)
        return api_service_pb2.RegisterEndpointResponse(endpoint=stored, created=created)

    @translate_errors
    async def GetEndpoint(
        self, request: api_service_pb2.GetEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.GetEndpointResponse:
        return api_service_pb2.GetEndpointResponse(endpoint=await self.registry.fetch(request.name))

    @translate_errors
    async def ListEndpoints(
        self, request: api_service_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.ListEndpointsResponse:
        return api_service_pb2.ListEndpointsResponse(endpoints=self.registry.list(request.provider))

    @translate_errors
    async def RemoveEndpoint(
        self, request: api_service_pb2.RemoveEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.RemoveEndpointResponse:
        await self.registry.delete(request.name)
        self.caller.guards.forget(request.name)
        return api_service_pb2.RemoveEndpointResponse()

    @translate_errors
    async def GetStats(
        self, request: api_service_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.GetStatsResponse:
        targets = self.caller.stats.targets()
        if request.endpoint:
            targets = [t for t in targets if t.endpoint == request.endpoint]
            if not targets:
                self.registry.get(request.endpoint, "endpoint")  # NOT_FOUND when unknown
        guards = self.caller.guards
        limiter = guards.global_limiter
        return api_service_pb2.GetStatsResponse(
            stats=[
                to_message(
                    t,
                    endpoint_circuit=circuit_state(guards.endpoint_breaker(t.endpoint)),
                    host_circuit=circuit_state(guards.host_breaker(t.host)),
                )
                for t in targets
            ],
            global_limits_degraded=limiter is not None and limiter.degraded,
            calllog_delayed_records=self.caller.recorder.spooled,
            calllog_replayed_records=self.caller.recorder.replayed,
            key_health=self.caller.auth.messages(),
            cache_degraded=cache_degraded(self.caller.cache),
            shared_breakers_degraded=(
                guards.shared_breakers is not None and guards.shared_breakers.degraded
            ),
        )
