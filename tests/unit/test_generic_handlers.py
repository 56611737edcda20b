"""A service added to ``GrpcServer`` reaches grpc.aio as a generic handler only: a registered
method costs every call a re-wait in the server's loop (see ``paca_runtime.server``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from paca.db.v1 import db_service_pb2_grpc

from paca_runtime.server import GenericOnly

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class RecordingServer:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.append(service)


class QueryCall(grpc.HandlerCallDetails):  # type: ignore[misc]
    method = "/paca.db.v1.DbService/Query"
    invocation_metadata = ()


def test_a_generated_registration_adds_the_generic_handler_and_no_registered_methods() -> None:
    server = RecordingServer()
    db_service_pb2_grpc.add_DbServiceServicer_to_server(
        db_service_pb2_grpc.DbServiceServicer(),  # type: ignore[abstract]
        GenericOnly(server),
    )
    assert server.registered == []
    (generic,) = server.generic
    assert generic.service(QueryCall()) is not None  # the generic handler serves the method
