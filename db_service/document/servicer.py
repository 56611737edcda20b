"""DocumentService over gRPC: Extended JSON in, MongoBackend calls, canonical Extended JSON out.

Limits are the SQL engines': the caller's deadline (capped by the request's ``timeout``) becomes
the operation's time limit, and batches hold at most PACA_DB_MAX_ROWS documents and
PACA_DB_MAX_BYTES bytes. Writes need db.write (METHOD_SCOPES); an aggregation that writes ($out,
$merge) is checked here, as the scope table cannot see into a pipeline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from paca.db.v1 import document_service_pb2 as pb
from paca.db.v1 import document_service_pb2_grpc as pb_grpc
from paca.monitor.v1 import monitor_types_pb2

from db_service.document import codec
from db_service.document.batches import Batch, BatchLimits
from db_service.document.databases import DocumentDatabases
from db_service.document.errors import DocumentTooLarge
from db_service.permissions import ClientRefused, Permissions
from db_service.servicer import MAX_BATCH, statement_timeout
from db_service.settings import DbSettings
from paca_runtime.auth import require_scope
from paca_runtime.errors import InvalidArgument, StatusError, status_of, translate_errors
from paca_runtime.reporting import counter, gauge

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DocumentService"].full_name
WRITE_STAGES = ("$out", "$merge")

_Response = TypeVar("_Response", pb.FindDocumentsResponse, pb.AggregateDocumentsResponse)


def _not_negative(request: Any, *names: str) -> None:
    for name in names:
        if getattr(request, name) < 0:
            raise InvalidArgument(name, "must be >= 0")


def _timeout(request: Any, context: grpc.aio.ServicerContext) -> float | None:
    return statement_timeout(request.timeout, request.HasField("timeout"), context)


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.ToTimedelta().total_seconds()


class DocumentServicer(pb_grpc.DocumentServiceServicer):
    """Serves the MongoDB databases of a db_service process."""

    def __init__(
        self,
        databases: DocumentDatabases,
        settings: DbSettings,
        *,
        permissions: Permissions | None = None,
    ) -> None:
        self.databases = databases
        self.settings = settings
        self.permissions = permissions

    def _writing(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        """Refuse a write to a caller without db.write or whose client is read-only."""
        require_scope("db.write")
        policy = self.permissions.client(context) if self.permissions is not None else None
        if policy is not None and policy.read_only:
            raise ClientRefused(f"client {policy.name!r} is read-only: {rpc} refused")

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        """Per database and operation, for the monitor."""
        for backend in self.databases:
            name = backend.name
            pool = backend.figures.pool
            yield gauge("mongo_pool_in_use", pool.in_use, database=name)
            yield gauge("mongo_pool_idle", pool.idle, database=name)
            yield counter("mongo_connections_created_total", pool.created, database=name)
            for operation, series in backend.figures.operations.items():
                labels = {"database": name, "operation": operation}
                yield counter("mongo_operations_total", series.calls, **labels)
                yield counter("mongo_errors_total", series.errors, **labels)
                yield gauge(
                    "mongo_latency_p95_ms", series.latency_s.percentile(95) * 1000, **labels
                )

    def __repr__(self) -> str:
        return f"<DocumentServicer {self.databases!r}>"

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_DocumentServiceServicer_to_server(self, server)

    def _limits(self, batch_size: int, batch_bytes: int) -> BatchLimits:
        s = self.settings
        return BatchLimits(
            documents=min(batch_size or s.stream_chunk_rows, s.max_rows),
            bytes=min(batch_bytes or s.stream_chunk_bytes, s.max_bytes),
            max_bytes=s.max_bytes,
        )

    async def _stream(
        self,
        open_batches: Callable[[], AsyncGenerator[Batch, None]],
        response: type[_Response],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[_Response]:
        """Batches as responses; errors end the stream with their status."""
        try:
            batches = open_batches()
            # aclosing: a caller that goes away closes the server cursor at once.
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    yield response(documents=batch.documents, done=batch.done)
        except StatusError as exc:
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        except Exception:
            logger.exception("unhandled error in DocumentServicer stream")
            await context.abort_with_status(rpc_status.to_status(status_of(RuntimeError())))

    async def FindDocuments(
        self, request: pb.FindDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FindDocumentsResponse]:
        def open_batches() -> AsyncGenerator[Batch, None]:
            _not_negative(request, "limit", "skip", "batch_size", "batch_bytes")
            backend = self.databases.get(request.database)
            return backend.find(
                request.collection,
                filter=codec.document(request.filter, "filter"),
                projection=codec.document(request.projection, "projection"),
                sort=codec.sort(request.sort, "sort"),
                limit=request.limit,
                skip=request.skip,
                limits=self._limits(request.batch_size, request.batch_bytes),
                timeout_s=_timeout(request, context),
            )

        async for response in self._stream(open_batches, pb.FindDocumentsResponse, context):
            yield response

    @translate_errors
    async def FindOneDocument(
        self, request: pb.FindOneDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindOneDocumentResponse:
        _not_negative(request, "skip")
        backend = self.databases.get(request.database)
        found = await backend.find_one(
            request.collection,
            filter=codec.document(request.filter, "filter"),
            projection=codec.document(request.projection, "projection"),
            sort=codec.sort(request.sort, "sort"),
            skip=request.skip,
            timeout_s=_timeout(request, context),
        )
        if found is None:
            return pb.FindOneDocumentResponse(found=False)
        text = codec.dumps(found)
        if len(text) > self.settings.max_bytes:
            raise DocumentTooLarge(
                f"the document is {len(text)} bytes of Extended JSON, more than a reply may"
                f" hold ({self.settings.max_bytes})"
            )
        return pb.FindOneDocumentResponse(found=True, document=text)

    @translate_errors
    async def InsertDocuments(
        self, request: pb.InsertDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.InsertDocumentsResponse:
        if not request.documents:
            raise InvalidArgument("documents", "at least one document")
        if len(request.documents) > MAX_BATCH:
            raise InvalidArgument("documents", f"at most {MAX_BATCH} documents")
        self._writing(context, "InsertDocuments")
        backend = self.databases.get(request.database)
        documents = [
            codec.document(text, f"documents[{i}]", required=True)
            for i, text in enumerate(request.documents)
        ]
        ids = await backend.insert(
            request.collection,
            documents,
            ordered=not request.unordered,
            timeout_s=_timeout(request, context),
        )
        return pb.InsertDocumentsResponse(inserted_ids=[codec.dumps(i) for i in ids])

    @translate_errors
    async def UpdateDocuments(
        self, request: pb.UpdateDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateDocumentsResponse:
        which = request.WhichOneof("change")
        if which is None:
            raise InvalidArgument("update", "required (or replacement)")
        self._writing(context, "UpdateDocuments")
        backend = self.databases.get(request.database)
        filter = codec.document(request.filter, "filter")
        if request.multi and not filter and not request.all_documents:
            raise InvalidArgument("filter", "required with multi unless all_documents is set")
        if which == "replacement":
            if request.multi:
                raise InvalidArgument("multi", "a replacement changes one document")
            change: Any = codec.replacement(request.replacement, "replacement")
        else:
            change = codec.update(request.update, "update")
        result = await backend.update(
            request.collection,
            filter=filter,
            change=change,
            replace=which == "replacement",
            multi=request.multi,
            upsert=request.upsert,
            timeout_s=_timeout(request, context),
        )
        return pb.UpdateDocumentsResponse(
            matched_count=result.matched,
            modified_count=result.modified,
            upserted_id="" if result.upserted_id is None else codec.dumps(result.upserted_id),
        )

    @translate_errors
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        self._writing(context, "DeleteDocuments")
        backend = self.databases.get(request.database)
        filter = codec.document(request.filter, "filter")
        if request.multi and not filter and not request.all_documents:
            raise InvalidArgument("filter", "required with multi unless all_documents is set")
        deleted = await backend.delete(
            request.collection,
            filter=filter,
            multi=request.multi,
            timeout_s=_timeout(request, context),
        )
        return pb.DeleteDocumentsResponse(deleted_count=deleted)

    async def AggregateDocuments(
        self, request: pb.AggregateDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AggregateDocumentsResponse]:
        def open_batches() -> AsyncGenerator[Batch, None]:
            _not_negative(request, "batch_size", "batch_bytes")
            backend = self.databases.get(request.database)
            stages = codec.pipeline(request.pipeline, "pipeline")
            if any(next(iter(stage)) in WRITE_STAGES for stage in stages):
                self._writing(context, "AggregateDocuments")
            return backend.aggregate(
                request.collection,
                stages,
                allow_disk_use=request.allow_disk_use,
                limits=self._limits(request.batch_size, request.batch_bytes),
                timeout_s=_timeout(request, context),
            )

        async for response in self._stream(open_batches, pb.AggregateDocumentsResponse, context):
            yield response

    @translate_errors
    async def CountDocuments(
        self, request: pb.CountDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountDocumentsResponse:
        _not_negative(request, "limit", "skip")
        backend = self.databases.get(request.database)
        count = await backend.count(
            request.collection,
            filter=codec.document(request.filter, "filter"),
            limit=request.limit,
            skip=request.skip,
            timeout_s=_timeout(request, context),
        )
        return pb.CountDocumentsResponse(count=count)

    @translate_errors
    async def CreateIndex(
        self, request: pb.CreateIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateIndexResponse:
        self._writing(context, "CreateIndex")
        backend = self.databases.get(request.database)
        expire_after_s = None
        if request.HasField("expire_after"):
            expire_after_s = int(_seconds(request.expire_after))
            if expire_after_s < 0:
                raise InvalidArgument("expire_after", "must be >= 0")
        name = await backend.create_index(
            request.collection,
            codec.index_keys(request.keys, "keys"),
            name=request.name,
            unique=request.unique,
            sparse=request.sparse,
            expire_after_s=expire_after_s,
            partial_filter=codec.document(request.partial_filter, "partial_filter") or None,
            timeout_s=_timeout(request, context),
        )
        return pb.CreateIndexResponse(name=name)

    @translate_errors
    async def ListIndexes(
        self, request: pb.ListIndexesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIndexesResponse:
        backend = self.databases.get(request.database)
        reply = pb.ListIndexesResponse()
        for spec in await backend.list_indexes(
            request.collection, timeout_s=_timeout(request, context)
        ):
            info = reply.indexes.add(
                name=str(spec.get("name", "")),
                keys=codec.dumps(spec.get("key", {})),
                unique=bool(spec.get("unique", False)),
                sparse=bool(spec.get("sparse", False)),
                spec=codec.dumps(spec),
            )
            if "expireAfterSeconds" in spec:
                info.expire_after.FromSeconds(int(spec["expireAfterSeconds"]))
        return reply

    @translate_errors
    async def DropIndex(
        self, request: pb.DropIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropIndexResponse:
        self._writing(context, "DropIndex")
        backend = self.databases.get(request.database)
        await backend.drop_index(
            request.collection, request.name, timeout_s=_timeout(request, context)
        )
        return pb.DropIndexResponse()

    @translate_errors
    async def GetDocumentStats(
        self, request: pb.GetDocumentStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentStatsResponse:
        return pb.GetDocumentStatsResponse(
            databases=[
                b.figures.to_proto(target=b.settings.target, pool_size=b.settings.pool_size)
                for b in self.databases
            ]
        )
