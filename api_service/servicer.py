"""ApiService over gRPC: maps messages to the engine and engine errors to statuses."""

from __future__ import annotations

import grpc
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2

from api_service.caller import OutboundCaller
from api_service.errors import InvalidCall
from api_service.registry import APIRegistry
from api_service.resilience import BreakerState, CircuitBreaker
from api_service.stats import to_message
from paca_runtime.errors import translate_errors

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

    @translate_errors
    async def Call(
        self, request: api_service_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.CallResponse:
        return await self.caller.call(request, time_remaining_s=context.time_remaining())

    @translate_errors
    async def RegisterEndpoint(
        self, request: api_service_pb2.RegisterEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.RegisterEndpointResponse:
        if not request.HasField("endpoint"):
            raise InvalidCall("endpoint", "required")
        stored, created = self.registry.register(request.endpoint)
        return api_service_pb2.RegisterEndpointResponse(endpoint=stored, created=created)

    @translate_errors
    async def GetEndpoint(
        self, request: api_service_pb2.GetEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.GetEndpointResponse:
        return api_service_pb2.GetEndpointResponse(endpoint=self.registry.get(request.name))

    @translate_errors
    async def ListEndpoints(
        self, request: api_service_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.ListEndpointsResponse:
        return api_service_pb2.ListEndpointsResponse(endpoints=self.registry.list(request.provider))

    @translate_errors
    async def RemoveEndpoint(
        self, request: api_service_pb2.RemoveEndpointRequest, context: grpc.aio.ServicerContext
    ) -> api_service_pb2.RemoveEndpointResponse:
        self.registry.remove(request.name)
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
        )
