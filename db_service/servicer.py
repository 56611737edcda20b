"""DbService over gRPC: maps messages to the engine and engine errors to statuses."""

from __future__ import annotations

import grpc
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from db_service import values
from db_service.calllog import store_api_calls
from db_service.databases import Databases
from paca_runtime.errors import InvalidArgument, translate_errors


class DbServicer(db_service_pb2_grpc.DbServiceServicer):
    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.max_rows = databases.settings.max_rows
        self.api_calls_inserted = 0
        self.api_calls_duplicates = 0

    @translate_errors
    async def Query(
        self, request: db_service_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> db_service_pb2.QueryResponse:
        if not request.sql.strip():
            raise InvalidArgument("sql", "required")
        if request.max_rows < 0:
            raise InvalidArgument("max_rows", "must be >= 0")
        backend = self.databases.get(request.database)
        params = values.decode_all(request.params, "params")
        max_rows = min(request.max_rows or self.max_rows, self.max_rows)
        result = await backend.execute(
            request.sql, params, read_only=request.read_only, max_rows=max_rows
        )
        return db_service_pb2.QueryResponse(
            columns=result.columns,
            rows=result.rows,
            rows_affected=result.rows_affected,
            truncated=result.truncated,
        )

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
