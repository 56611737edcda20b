"""DbService over gRPC: maps messages to the engine and engine errors to statuses.

Python gRPC does not pass the caller's deadline on by itself: each statement gets the smaller of
the request's ``timeout`` and the time the caller has left, as the engine's statement timeout, so
the engine stops work nobody waits for and the pooled connection survives.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service import values
from db_service.calllog import store_api_calls
from db_service.databases import Databases
from paca_runtime.auth import require_scope
from paca_runtime.errors import InvalidArgument, StatusError, status_of, translate_errors

logger = logging.getLogger(__name__)

# The engine gets slightly less than the caller's remaining time, so its own timeout (with the
# engine's error code) wins the race against the client's deadline.
_DEADLINE_MARGIN_S = 0.02
MAX_BATCH = 10_000


def statement_timeout(
    timeout: duration_pb2.Duration, has_timeout: bool, context: grpc.aio.ServicerContext
) -> float | None:
    """The statement time limit in seconds: the request's, capped by the caller's deadline."""
    limits = []
    if has_timeout:
        requested = timeout.ToTimedelta().total_seconds()
        if requested <= 0:
            raise InvalidArgument("timeout", "must be > 0")
        limits.append(requested)
    remaining = context.time_remaining()
    if remaining is not None:
        limits.append(max(0.001, remaining - min(_DEADLINE_MARGIN_S, remaining / 10)))
    return min(limits) if limits else None


def _required_sql(sql: str) -> str:
    if not sql.strip():
        raise InvalidArgument("sql", "required")
    return sql


class DbServicer(db_service_pb2_grpc.DbServiceServicer):
    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.settings = databases.settings
        self.max_rows = databases.settings.max_rows
        self.api_calls_inserted = 0
        self.api_calls_duplicates = 0

    @translate_errors
    async def Query(
        self, request: db_service_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.QueryResponse:
        sql = _required_sql(request.sql)
        if not request.read_only:
            # db.read admits Query; a statement that may write needs db.write.
            require_scope("db.write")
        if request.max_rows < 0:
            raise InvalidArgument("max_rows", "must be >= 0")
        if request.max_bytes < 0:
            raise InvalidArgument("max_bytes", "must be >= 0")
        backend = self.databases.get(request.database)
        params = values.decode_all(request.params, "params")
        max_rows = min(request.max_rows or self.max_rows, self.max_rows)
        max_bytes = min(request.max_bytes or self.settings.max_bytes, self.settings.max_bytes)
        result = await backend.execute(
            sql,
            params,
            read_only=request.read_only,
            max_rows=max_rows,
            max_bytes=max_bytes,
            timeout_s=statement_timeout(request.timeout, request.HasField("timeout"), context),
        )
        return db_service_pb2.QueryResponse(
            columns=result.columns,
            rows=result.rows,
            rows_affected=result.rows_affected,
            truncated=result.truncated,
        )

    @translate_errors
    async def Execute(
        self, request: db_service_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.ExecuteResponse:
        sql = _required_sql(request.sql)
        backend = self.databases.get(request.database)
        params = values.decode_all(request.params, "params")
        result = await backend.execute(
            sql,
            params,
            read_only=False,
            max_rows=self.max_rows,
            max_bytes=self.settings.max_bytes,
            timeout_s=statement_timeout(request.timeout, request.HasField("timeout"), context),
        )
        return db_service_pb2.ExecuteResponse(
            rows_affected=result.rows_affected, columns=result.columns, rows=result.rows
        )

    @translate_errors
    async def ExecuteBatch(
        self, request: db_service_pb2.ExecuteBatchRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.ExecuteBatchResponse:
        sql = _required_sql(request.sql)
        if not request.param_sets:
            raise InvalidArgument("param_sets", "at least one parameter set")
        if len(request.param_sets) > MAX_BATCH:
            raise InvalidArgument("param_sets", f"at most {MAX_BATCH} parameter sets")
        backend = self.databases.get(request.database)
        rows = [
            values.decode_all(item.values, f"param_sets[{i}]")
            for i, item in enumerate(request.param_sets)
        ]
        affected = await backend.executemany(
            sql,
            rows,
            timeout_s=statement_timeout(request.timeout, request.HasField("timeout"), context),
        )
        return db_service_pb2.ExecuteBatchResponse(rows_affected=affected)

    async def StreamQuery(
        self, request: db_service_pb2.StreamQueryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[db_service_pb2.StreamQueryResponse]:
        try:
            sql = _required_sql(request.sql)
            for name in ("chunk_rows", "chunk_bytes", "max_rows"):
                if getattr(request, name) < 0:
                    raise InvalidArgument(name, "must be >= 0")
            backend = self.databases.get(request.database)
            chunks = backend.stream(
                sql,
                values.decode_all(request.params, "params"),
                chunk_rows=min(
                    request.chunk_rows or self.settings.stream_chunk_rows, self.max_rows
                ),
                chunk_bytes=min(
                    request.chunk_bytes or self.settings.stream_chunk_bytes,
                    self.settings.max_bytes,
                ),
                max_rows=request.max_rows,
                timeout_s=statement_timeout(request.timeout, request.HasField("timeout"), context),
            )
            # aclosing: a caller that goes away gives the connection back at once.
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield db_service_pb2.StreamQueryResponse(columns=chunk.columns, rows=chunk.rows)
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in DbServicer.StreamQuery")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))

    @translate_errors
    async def RecordApiCalls(
        self, request: db_service_pb2.RecordApiCallsRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.RecordApiCallsResponse:
        backend = self.databases.get(request.database or self.databases.settings.calllog_database)
        inserted, duplicates = await store_api_calls(backend, request.records)
        self.api_calls_inserted += inserted
        self.api_calls_duplicates += duplicates
        return db_service_pb2.RecordApiCallsResponse(inserted=inserted, duplicates=duplicates)

    @translate_errors
    async def GetStats(
        self, request: db_service_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.GetStatsResponse:
        return db_service_pb2.GetStatsResponse(pools=[b.pool_stats() for b in self.databases])
