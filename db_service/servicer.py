"""DbService over gRPC: maps messages to the engine and engine errors to statuses.

Every statement's time limit comes from :func:`db_service.limits.statement_timeout` (the
request's timeout capped by the caller's deadline); what a client or database allows is checked
by :class:`db_service.permissions.Permissions` before SQL reaches an engine; Transaction lives
in :mod:`db_service.transaction`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import grpc
from grpc_status import rpc_status
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service import values
from db_service.backends.base import ResultSet
from db_service.builder import QueryBuilder, Statement
from db_service.calllog import store_api_calls
from db_service.databases import Databases
from db_service.errors import BadStatement
from db_service.limits import request_timeout, statement_timeout
from db_service.limits import required_sql as _required_sql
from db_service.migration_rpcs import MigrationRpcs
from db_service.permissions import Permissions
from db_service.routing import consistency_token, host_figures, read_options
from db_service.routing.readpref import PRIMARY as READ_PREFERENCE_PRIMARY
from db_service.transaction import TransactionHandler
from paca_runtime.auth import require_scope
from paca_runtime.errors import InvalidArgument, StatusError, status_of, translate_errors
from paca_runtime.security import TokenTable

logger = logging.getLogger(__name__)

__all__ = ["MAX_BATCH", "DbServicer", "statement_timeout"]

MAX_BATCH = 10_000


class DbServicer(MigrationRpcs, db_service_pb2_grpc.DbServiceServicer):
    def __init__(self, databases: Databases, tokens: TokenTable | None = None) -> None:
        self.databases = databases
        self.settings = databases.settings
        self.max_rows = databases.settings.max_rows
        self.max_bytes = databases.settings.max_bytes
        self.permissions = Permissions(databases.settings, tokens)
        self.transactions = TransactionHandler(
            databases,
            self.permissions,
            idle_timeout_s=self.settings.transaction_idle_timeout_s,
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
        )
        self.api_calls_inserted = 0
        self.api_calls_duplicates = 0
        self._builders: dict[str, QueryBuilder] = {}

    def builder(self, database: str) -> QueryBuilder:
        """The query builder of a database (one per database, so its schema cache is shared)."""
        backend = self.databases.get(database)
        found = self._builders.get(backend.name)
        if found is None or found.backend is not backend:
            found = self._builders[backend.name] = QueryBuilder(backend)
        return found

    async def _run_built(
        self,
        builder: QueryBuilder,
        statement: Statement,
        *,
        read_only: bool,
        max_rows: int,
        max_bytes: int,
        timeout_s: float | None,
    ) -> ResultSet:
        try:
            return await builder.backend.execute(
                statement.sql,
                statement.params,
                read_only=read_only,
                max_rows=max_rows,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
            )
        except BadStatement:
            # The schema may have changed under the cache (a dropped column): read it afresh.
            builder.schema.invalidate()
            raise

    @translate_errors
    async def Query(
        self, request: db_service_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.QueryResponse:
        # Every field is read once: each read of a message field costs a lookup in C.
        sql = _required_sql(request.sql)
        read_only = request.read_only
        if not read_only:
            # db.read admits Query; a statement that may write needs db.write.
            require_scope("db.write")
        max_rows = request.max_rows
        if max_rows < 0:
            raise InvalidArgument("max_rows", "must be >= 0")
        max_bytes = request.max_bytes
        if max_bytes < 0:
            raise InvalidArgument("max_bytes", "must be >= 0")
        backend = self.databases.get(request.database)
        # Not a write by itself: Query's SQL may only read; a limited client's runs read-only.
        if self.permissions.check(context, "Query", backend.name, writes=False):
            read_only = True
        params = values.decode_all(request.params, "params")
        with read_options(request.read_preference, request.consistency_token):
            result = await backend.execute(
                sql,
                params,
                read_only=read_only,
                max_rows=min(max_rows or self.max_rows, self.max_rows),
                max_bytes=min(max_bytes or self.max_bytes, self.max_bytes),
                timeout_s=request_timeout(request, context),
            )
        # Fields at their default are left out: each one given is a field set in C.
        response = db_service_pb2.QueryResponse(
            columns=result.columns, rows=result.rows, rows_affected=result.rows_affected
        )
        if result.truncated:
            response.truncated = True
        if not read_only:
            response.consistency_token = await consistency_token(backend)
        return response

    @translate_errors
    async def Execute(
        self, request: db_service_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.ExecuteResponse:
        sql = _required_sql(request.sql)
        backend = self.databases.get(request.database)
        self.permissions.check(context, "Execute", backend.name, writes=True)
        params = values.decode_all(request.params, "params")
        result = await backend.execute(
            sql,
            params,
            read_only=False,
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
            timeout_s=request_timeout(request, context),
        )
        return db_service_pb2.ExecuteResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            consistency_token=await consistency_token(backend),
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
        self.permissions.check(context, "ExecuteBatch", backend.name, writes=True)
        rows = [
            values.decode_all(item.values, f"param_sets[{i}]")
            for i, item in enumerate(request.param_sets)
        ]
        affected = await backend.executemany(
            sql,
            rows,
            timeout_s=request_timeout(request, context),
        )
        return db_service_pb2.ExecuteBatchResponse(
            rows_affected=affected, consistency_token=await consistency_token(backend)
        )

    async def StreamQuery(
        self, request: db_service_pb2.StreamQueryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[db_service_pb2.StreamQueryResponse]:
        try:
            sql = _required_sql(request.sql)
            for name in ("chunk_rows", "chunk_bytes", "max_rows"):
                if getattr(request, name) < 0:
                    raise InvalidArgument(name, "must be >= 0")
            backend = self.databases.get(request.database)
            self.permissions.check(context, "StreamQuery", backend.name, writes=False)
            chunks = backend.stream(
                sql,
                values.decode_all(request.params, "params"),
                chunk_rows=min(
                    request.chunk_rows or self.settings.stream_chunk_rows, self.max_rows
                ),
                chunk_bytes=min(
                    request.chunk_bytes or self.settings.stream_chunk_bytes,
                    self.max_bytes,
                ),
                max_rows=request.max_rows,
                timeout_s=request_timeout(request, context),
            )
            # aclosing: a caller that goes away gives the connection back at once.
            with read_options(request.read_preference, request.consistency_token):
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        yield db_service_pb2.StreamQueryResponse(
                            columns=chunk.columns, rows=chunk.rows
                        )
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in DbServicer.StreamQuery")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))

    @translate_errors
    async def Select(
        self, request: db_service_pb2.SelectRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.SelectResponse:
        if not request.HasField("select"):
            raise InvalidArgument("select", "required")
        if request.max_rows < 0:
            raise InvalidArgument("max_rows", "must be >= 0")
        if request.max_bytes < 0:
            raise InvalidArgument("max_bytes", "must be >= 0")
        builder = self.builder(request.database)
        self.permissions.check(context, "Select", builder.backend.name, writes=False)
        # The catalog read that checks the names is routed like the read itself.
        with read_options(request.read_preference, request.consistency_token):
            statement = await builder.select(request.select)
            result = await self._run_built(
                builder,
                statement,
                read_only=True,
                max_rows=min(request.max_rows or self.max_rows, self.max_rows),
                max_bytes=min(request.max_bytes or self.max_bytes, self.max_bytes),
                timeout_s=request_timeout(request, context),
            )
        return db_service_pb2.SelectResponse(
            columns=result.columns, rows=result.rows, truncated=result.truncated
        )

    async def _write(
        self,
        builder: QueryBuilder,
        statement: Statement,
        timeout_s: float | None,
    ) -> ResultSet:
        result = await self._run_built(
            builder,
            statement,
            read_only=False,
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
            timeout_s=timeout_s,
        )
        if statement.returning and result.rows_affected < 0 and not result.truncated:
            # SQLite does not count rows of a statement that returns rows; RETURNING gives
            # one row per row changed, so the count is known.
            result.rows_affected = len(result.rows)
        return result

    async def _change(
        self,
        # Insert-, Update- or DeleteRequest: the same database / timeout fields around `kind`.
        request: Any,
        kind: Literal["insert", "update", "delete"],
        context: grpc.aio.ServicerContext,
    ) -> ResultSet:
        """Compile the request's ``kind`` message (insert / update / delete) and run it."""
        if not request.HasField(kind):
            raise InvalidArgument(kind, "required")
        builder = self.builder(request.database)
        self.permissions.check(context, kind.capitalize(), builder.backend.name, writes=True)
        compile_statement = getattr(builder, kind)
        # A write checks names against the primary's catalog: a replica may not have the
        # table yet.
        with read_options(READ_PREFERENCE_PRIMARY):
            statement = await compile_statement(getattr(request, kind))
        timeout = request_timeout(request, context)
        return await self._write(builder, statement, timeout)

    @translate_errors
    async def Insert(
        self, request: db_service_pb2.InsertRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.InsertResponse:
        result = await self._change(request, "insert", context)
        return db_service_pb2.InsertResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            consistency_token=await consistency_token(self.databases.get(request.database)),
        )

    @translate_errors
    async def Update(
        self, request: db_service_pb2.UpdateRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.UpdateResponse:
        result = await self._change(request, "update", context)
        return db_service_pb2.UpdateResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            consistency_token=await consistency_token(self.databases.get(request.database)),
        )

    @translate_errors
    async def Delete(
        self, request: db_service_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.DeleteResponse:
        result = await self._change(request, "delete", context)
        return db_service_pb2.DeleteResponse(
            rows_affected=result.rows_affected,
            columns=result.columns,
            rows=result.rows,
            consistency_token=await consistency_token(self.databases.get(request.database)),
        )

    @translate_errors
    async def RecordApiCalls(
        self, request: db_service_pb2.RecordApiCallsRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.RecordApiCallsResponse:
        backend = self.databases.get(request.database or self.databases.settings.calllog_database)
        self.permissions.check(context, "RecordApiCalls", backend.name, writes=True)
        inserted, duplicates = await store_api_calls(backend, request.records)
        self.api_calls_inserted += inserted
        self.api_calls_duplicates += duplicates
        return db_service_pb2.RecordApiCallsResponse(inserted=inserted, duplicates=duplicates)

    @translate_errors
    async def GetStats(
        self, request: db_service_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.GetStatsResponse:
        return db_service_pb2.GetStatsResponse(
            pools=[b.pool_stats() for b in self.databases],
            figures=[b.figures.to_proto(b.limits.max_size) for b in self.databases],
            hosts=host_figures(self.databases),
        )

    async def Transaction(
        self,
        request_iterator: AsyncIterator[db_service_pb2.TransactionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[db_service_pb2.TransactionResponse]:
        # Requests are read with context.read() (so each read can time out); the iterator is
        # the same stream and stays unused.
        try:
            async for reply in self.transactions.serve(context):
                yield reply
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in DbServicer.Transaction")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))
