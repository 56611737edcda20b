"""The db_service process: databases, the gRPC server and reporting to the monitor."""

from __future__ import annotations

from collections.abc import Iterator

from paca.db.v1 import db_service_pb2, db_service_pb2_grpc
from paca.monitor.v1 import monitor_types_pb2

from db_service.databases import Databases
from db_service.document import DocumentDatabases
from db_service.document.servicer import SERVICE_NAME as DOCUMENT_SERVICE_NAME
from db_service.document.servicer import DocumentServicer
from db_service.events import SERVICE_NAME as EVENTS_SERVICE_NAME
from db_service.events import EventStoreServicer
from db_service.figures import database_figures
from db_service.keyvalue import KeyValueDatabases
from db_service.keyvalue.servicer import SERVICE_NAME as KEY_VALUE_SERVICE_NAME
from db_service.keyvalue.servicer import KeyValueServicer
from db_service.routing.status import EngineHealth, host_metrics, publish_health
from db_service.servicer import DbServicer
from db_service.settings import DbSettings
from paca_runtime import GrpcServer, MonitorReporter, RuntimeSettings, SettingsSource
from paca_runtime.reporting import counter, gauge

SERVICE_NAME = db_service_pb2.DESCRIPTOR.services_by_name["DbService"].full_name


class DbApp:
    """db_service as one process (see paca_runtime.process.run)."""

    name = "db_service"

    def __init__(self, settings: DbSettings, runtime: RuntimeSettings) -> None:
        self.settings = settings
        self.runtime = runtime
        self.databases = Databases(settings)
        self.servicer = DbServicer(self.databases, runtime.security.tokens)
        self.server = GrpcServer(
            self.name,
            settings.listen,
            reuse_port=settings.reuse_port,
            security=runtime.security,
        )
        self.server.add_service(
            SERVICE_NAME,
            lambda s: db_service_pb2_grpc.add_DbServiceServicer_to_server(self.servicer, s),
        )
        self.events = EventStoreServicer(self.databases)
        self.server.add_service(EVENTS_SERVICE_NAME, self.events.register)
        # KeyValueService only when Redis databases are configured (PACA_REDIS_DATABASES).
        self.key_value = KeyValueDatabases(settings.key_value)
        self.key_value_servicer: KeyValueServicer | None = None
        if len(self.key_value):
            self.key_value_servicer = KeyValueServicer(
                self.key_value,
                max_bytes=settings.max_bytes,
                permissions=self.servicer.permissions,
            )
            self.server.add_service(KEY_VALUE_SERVICE_NAME, self.key_value_servicer.register)
        # DocumentService only when MongoDB databases are configured (PACA_MONGO_DATABASES).
        self.documents = DocumentDatabases(settings.mongo)
        self.document_servicer: DocumentServicer | None = None
        if len(self.documents):
            self.document_servicer = DocumentServicer(
                self.documents, settings, permissions=self.servicer.permissions
            )
            self.server.add_service(DOCUMENT_SERVICE_NAME, self.document_servicer.register)
        # Redis and MongoDB databases are health service names too, kept current by probes.
        self.engine_health = EngineHealth(self.server.health, settings.routing_options())
        self.reporter: MonitorReporter | None = None

    def __repr__(self) -> str:
        return f"<DbApp {self.server.bound_address} {self.databases!r}>"

    @classmethod
    def from_settings(cls, source: SettingsSource, runtime: RuntimeSettings) -> DbApp:
        return cls(DbSettings.from_source(source, runtime), runtime)

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        yield counter("api_calls_stored_total", self.servicer.api_calls_inserted)
        yield counter("api_calls_duplicate_total", self.servicer.api_calls_duplicates)
        yield counter("webhook_events_stored_total", self.events.stored)
        yield counter("webhook_events_duplicate_total", self.events.duplicates)
        for pool in (b.pool_stats() for b in self.databases):
            yield counter("db_queries_total", pool.queries, database=pool.database)
            yield counter("db_errors_total", pool.errors, database=pool.database)
            yield gauge("db_pool_in_use", pool.in_use, database=pool.database)
            yield gauge("db_pool_waiting", pool.waiting, database=pool.database)
        for backend in self.databases:
            yield from database_figures(backend.figures.to_proto(backend.limits.max_size))
        if self.key_value_servicer is not None:
            yield from self.key_value_servicer.figures()
        if self.document_servicer is not None:
            yield from self.document_servicer.figures()
        yield from host_metrics(self.databases)

    async def start(self) -> dict[str, str]:
        await self.databases.open()
        await self.key_value.open()
        await self.documents.open()
        await self.server.start()
        # Each database is a grpc.health.v1 service name too (see db_service.routing.status).
        await publish_health(self.server.health, self.databases)
        await self.engine_health.start(
            {KEY_VALUE_SERVICE_NAME: self.key_value, DOCUMENT_SERVICE_NAME: self.documents}
        )
        self.reporter = MonitorReporter.for_service(
            self.name, self.server.bound_address, self.runtime, self.figures
        )
        self.reporter.start()
        return {"grpc": self.server.bound_address}

    async def stop(self) -> None:
        await self.engine_health.aclose()
        await self.server.stop(self.runtime.shutdown_grace_s, self.runtime.shutdown_drain_s)
        if self.reporter is not None:
            await self.reporter.aclose()
        await self.databases.aclose()
        await self.key_value.aclose()
        await self.documents.aclose()
