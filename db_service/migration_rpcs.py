"""DbService's migration RPCs (Migrate, GetMigrationStatus), mixed into DbServicer.

Kept apart from the statement RPCs: they run a database's own migration set, read from its
directory on each call, under the engine's migration lock (see db_service.migrations).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from google.protobuf import timestamp_pb2
from paca.db.v1 import db_service_pb2

from db_service.databases import Databases
from db_service.errors import MigrationError
from db_service.migrations import APP_TABLE, Direction, MigrationManager, load_migrations
from db_service.permissions import Permissions
from db_service.settings import DbSettings
from paca_runtime.errors import InvalidArgument, translate_errors

_DIRECTIONS = {
    Direction.UP: db_service_pb2.MIGRATION_DIRECTION_UP,
    Direction.DOWN: db_service_pb2.MIGRATION_DIRECTION_DOWN,
}


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class MigrationRpcs:
    """Migrate and GetMigrationStatus; the servicer provides the attributes below."""

    databases: Databases
    settings: DbSettings
    permissions: Permissions

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
        if not request.dry_run:
            self.permissions.check(context, "Migrate", manager.backend.name, writes=True)
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
