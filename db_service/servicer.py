"""DbService over gRPC: maps messages to the engine and engine errors to statuses.

Python gRPC does not pass the caller's deadline on by itself: each statement gets the smaller of
the request's ``timeout`` and the time the caller has left, as the engine's statement timeout, so
the engine stops work nobody waits for and the pooled connection survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_status import rpc_status
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service import values
from db_service.backends.base import ResultSet
from db_service.builder import QueryBuilder, Statement
from db_service.calllog import store_api_calls
from db_service.databases import Databases
from db_service.errors import BadStatement, MigrationError
from db_service.migrations import APP_TABLE, Direction, MigrationManager, load_migrations
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


_DIRECTIONS = {
    Direction.UP: db_service_pb2.MIGRATION_DIRECTION_UP,
    Direction.DOWN: db_service_pb2.MIGRATION_DIRECTION_DOWN,
}


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


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
        statement = await builder.select(request.select)
        result = await self._run_built(
            builder,
            statement,
            read_only=True,
            max_rows=min(request.max_rows or self.max_rows, self.max_rows),
            max_bytes=min(request.max_bytes or self.settings.max_bytes, self.settings.max_bytes),
            timeout_s=statement_timeout(request.timeout, request.HasField("timeout"), context),
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
            max_bytes=self.settings.max_bytes,
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
        compile_statement = getattr(builder, kind)
        statement = await compile_statement(getattr(request, kind))
        timeout = statement_timeout(request.timeout, request.HasField("timeout"), context)
        return await self._write(builder, statement, timeout)

    @translate_errors
    async def Insert(
        self, request: db_service_pb2.InsertRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.InsertResponse:
        result = await self._change(request, "insert", context)
        return db_service_pb2.InsertResponse(
            rows_affected=result.rows_affected, columns=result.columns, rows=result.rows
        )

    @translate_errors
    async def Update(
        self, request: db_service_pb2.UpdateRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.UpdateResponse:
        result = await self._change(request, "update", context)
        return db_service_pb2.UpdateResponse(
            rows_affected=result.rows_affected, columns=result.columns, rows=result.rows
        )

    @translate_errors
    async def Delete(
        self, request: db_service_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.DeleteResponse:
        result = await self._change(request, "delete", context)
        return db_service_pb2.DeleteResponse(
            rows_affected=result.rows_affected, columns=result.columns, rows=result.rows
        )

    async def migrations(self, database: str) -> MigrationManager:
        """The manager of a database's own migration set, read from its directory now (so new
        files count without a restart; off the event loop, as it is file I/O)."""
        backend = self.databases.get(database)
        directory = self.settings.migration_directory(backend.name)
        if directory is None:
            raise MigrationError(
                f"database {backend.name!r} has no migration set (PACA_MIGRATIONS)"
            )
        migrations = await asyncio.to_thread(load_migrations, directory)
        return MigrationManager(backend, migrations, table=APP_TABLE)

    @translate_errors
    async def Migrate(
        self, request: db_service_pb2.MigrateRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.MigrateResponse:
        target = request.target_version if request.HasField("target_version") else None
        if target is not None and target < 0:
            raise InvalidArgument("target_version", "must be >= 0")
        manager = await self.migrations(request.database)
        steps = await manager.apply(target, dry_run=request.dry_run)
        applied = [s.version for s in await manager.status() if s.applied]
        return db_service_pb2.MigrateResponse(
            steps=[
                db_service_pb2.MigrationStep(
                    version=step.version,
                    name=step.name,
                    direction=_DIRECTIONS[step.direction],
                    sql=step.sql,
                )
                for step in steps
            ],
            version=max(applied, default=0),
        )

    @translate_errors
    async def GetMigrationStatus(
        self, request: db_service_pb2.GetMigrationStatusRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.GetMigrationStatusResponse:
        states = await (await self.migrations(request.database)).status()
        reply = db_service_pb2.GetMigrationStatusResponse(
            current_version=max((s.version for s in states if s.applied), default=0)
        )
        for state in states:
            item = reply.migrations.add(
                version=state.version,
                name=state.name,
                applied=state.applied,
                reversible=state.reversible,
                drifted=state.drifted,
            )
            if state.applied_at is not None:
                item.apply_time.CopyFrom(_timestamp(state.applied_at))
        return reply

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
