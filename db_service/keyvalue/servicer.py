"""KeyValueService over gRPC: a thin adapter from messages to :class:`KeyValueStore`.

Permissions follow the SQL side: the RPC table (paca_runtime.auth.METHOD_SCOPES) lets db.read
call Command and Pipeline, and a request holding a command that writes also needs db.write, as a
Query that is not read-only does; a client configured read-only (PACA_DB_CLIENTS) may not
write at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from paca.db.v1 import key_value_service_pb2 as pb
from paca.db.v1 import key_value_service_pb2_grpc as pb_grpc
from paca.monitor.v1 import monitor_types_pb2

from db_service.keyvalue import commands
from db_service.keyvalue.databases import KeyValueDatabases
from db_service.permissions import Permissions
from db_service.servicer import statement_timeout
from paca_runtime.auth import require_scope
from paca_runtime.errors import InvalidArgument, StatusError, status_of, translate_errors
from paca_runtime.reporting import counter, gauge

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KeyValueService"].full_name
MAX_PIPELINE = 10_000


class KeyValueServicer(pb_grpc.KeyValueServiceServicer):
    """Serves the Redis databases of a db_service process.

    Args:
        max_bytes: The server's reply limit; requests may ask for less, never more.
    """

    def __init__(
        self,
        databases: KeyValueDatabases,
        *,
        max_bytes: int,
        permissions: Permissions | None = None,
    ) -> None:
        self.databases = databases
        self.max_bytes = max_bytes
        self.permissions = permissions

    def _check(
        self, context: grpc.aio.ServicerContext, rpc: str, database: str, *, writes: bool
    ) -> None:
        if writes:
            require_scope("db.write")
        if self.permissions is not None:
            # A client configured read-only (PACA_DB_CLIENTS) may not write here either.
            self.permissions.check(context, rpc, database, writes=writes)

    def __repr__(self) -> str:
        return f"<KeyValueServicer {self.databases!r}>"

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_KeyValueServiceServicer_to_server(self, server)

    def _max_bytes(self, requested: int) -> int:
        if requested < 0:
            raise InvalidArgument("max_bytes", "must be >= 0")
        return min(requested or self.max_bytes, self.max_bytes)

    @translate_errors
    async def Command(
        self, request: pb.CommandRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandResponse:
        if not request.HasField("command"):
            raise InvalidArgument("command", "required")
        call = commands.build(request.command, "command")
        max_bytes = self._max_bytes(request.max_bytes)
        timeout_s = statement_timeout(request.timeout, request.HasField("timeout"), context)
        store = self.databases.get(request.database)
        self._check(context, "Command", store.name, writes=call.writes)
        result = await store.run(call, timeout_s=timeout_s, max_bytes=max_bytes)
        return pb.CommandResponse(result=result)

    @translate_errors
    async def Pipeline(
        self, request: pb.PipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.PipelineResponse:
        if not request.commands:
            raise InvalidArgument("commands", "at least one command")
        if len(request.commands) > MAX_PIPELINE:
            raise InvalidArgument("commands", f"at most {MAX_PIPELINE} commands")
        if request.watch_keys and not request.transaction:
            raise InvalidArgument("watch_keys", "only with transaction")
        for i, key in enumerate(request.watch_keys):
            if not key:
                raise InvalidArgument(f"watch_keys[{i}]", "required")
        # Every command is checked before any runs: bad input changes nothing.
        calls = [commands.build(c, f"commands[{i}]") for i, c in enumerate(request.commands)]
        max_bytes = self._max_bytes(request.max_bytes)
        timeout_s = statement_timeout(request.timeout, request.HasField("timeout"), context)
        store = self.databases.get(request.database)
        self._check(context, "Pipeline", store.name, writes=any(c.writes for c in calls))
        results = await store.pipeline(
            calls,
            transaction=request.transaction,
            watch_keys=list(request.watch_keys),
            timeout_s=timeout_s,
            max_bytes=max_bytes,
        )
        return pb.PipelineResponse(results=results)

    @translate_errors
    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        if not request.channel:
            raise InvalidArgument("channel", "required")
        store = self.databases.get(request.database)
        self._check(context, "Publish", store.name, writes=True)
        timeout_s = statement_timeout(duration_pb2.Duration(), False, context)
        receivers = await store.publish(request.channel, request.message, timeout_s=timeout_s)
        return pb.PublishResponse(receivers=receivers)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            if not request.channels and not request.patterns:
                raise InvalidArgument("channels", "at least one channel or pattern")
            for name in ("channels", "patterns"):
                for i, value in enumerate(getattr(request, name)):
                    if not value:
                        raise InvalidArgument(f"{name}[{i}]", "required")
            store = self.databases.get(request.database)
            async for response in store.subscribe(list(request.channels), list(request.patterns)):
                yield response
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in KeyValueServicer.Subscribe")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))

    @translate_errors
    async def GetKeyValueStats(
        self, request: pb.GetKeyValueStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetKeyValueStatsResponse:
        return pb.GetKeyValueStatsResponse(databases=[s.figures() for s in self.databases])

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        """Figures for the monitor, per Redis database and command."""
        for store in self.databases:
            stats = store.figures()
            database = stats.database
            yield gauge("redis_pool_in_use", stats.pool_in_use, database=database)
            yield gauge("redis_pool_idle", stats.pool_idle, database=database)
            yield gauge("redis_subscriptions", stats.subscriptions, database=database)
            yield counter(
                "redis_messages_delivered_total", stats.messages_delivered, database=database
            )
            for command in stats.commands:
                labels = {"database": database, "command": command.command}
                yield counter("redis_commands_total", command.calls, **labels)
                yield counter("redis_command_errors_total", command.errors, **labels)
                yield gauge("redis_command_p99_ms", command.latency_p99_ms, **labels)
