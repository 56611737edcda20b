"""The named databases of a db_service process: opening, migrating, looking up, closing."""

from __future__ import annotations

import logging

from db_service.backends.base import Backend
from db_service.backends.mysql import MysqlBackend
from db_service.backends.postgres import PostgresBackend
from db_service.backends.sqlite import SqliteBackend
from db_service.errors import UnknownDatabase
from db_service.migrations import MigrationManager, builtin_migrations
from db_service.routing.routed import RoutedBackend
from db_service.settings import DatabaseSettings, DbSettings
from paca_runtime.redact import redact_url

logger = logging.getLogger(__name__)

# The backend class of each dialect (DatabaseSettings.dialect).
BACKENDS: dict[str, type[Backend]] = {
    "sqlite": SqliteBackend,
    "postgresql": PostgresBackend,
    "mysql": MysqlBackend,
}


def make_backend(db: DatabaseSettings, settings: DbSettings) -> Backend:
    limits = settings.pool_limits(db)
    replicas = settings.replica_urls(db.name)
    if not replicas:
        return BACKENDS[db.dialect](db.name, db.url, limits=limits)
    # A database with replicas: one pool per host behind one routed backend.
    hosts = [BACKENDS[db.dialect](db.name, url, limits=limits) for url in (db.url, *replicas)]
    return RoutedBackend(db.name, hosts, settings.routing_options())


class Databases:
    """Every configured database, opened and migrated to db_service's built-in schema.

    Lifecycle: ``open()`` once (opens pools, applies built-in migrations), ``aclose()``.
    """

    def __init__(self, settings: DbSettings) -> None:
        self.settings = settings
        self._backends = {db.name: make_backend(db, settings) for db in settings.databases}

    def __repr__(self) -> str:
        return f"<Databases {sorted(self._backends)}>"

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._backends.values())

    async def open(self) -> None:
        try:
            read_only = {db.name for db in self.settings.databases if db.read_only}
            for backend in self._backends.values():
                await backend.open()
                if backend.name in read_only:
                    # db_service never writes to it, not even its own tables.
                    logger.info("database %s ready (read-only)", backend.name)
                    continue
                applied = await MigrationManager(
                    backend, builtin_migrations(backend.dialect)
                ).migrate()
                logger.info(
                    "database %s ready (%s), migrations applied now: %s",
                    backend.name,
                    redact_url(backend.url),
                    applied or "none",
                )
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()

    def get(self, name: str) -> Backend:
        """The database called ``name``; an empty name means "main"."""
        try:
            return self._backends[name or "main"]
        except KeyError:
            raise UnknownDatabase(name) from None
