"""db_service: pooled, typed access to named databases over gRPC, usable in-process too."""

from db_service.app import DbApp
from db_service.backends.base import Backend, ResultSet
from db_service.databases import Databases
from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    MigrationError,
    StatementTimeout,
    UnknownDatabase,
)
from db_service.migrations import Migration, MigrationManager
from db_service.settings import DatabaseSettings, DbSettings

__all__ = [
    "Backend",
    "BadStatement",
    "ConstraintViolation",
    "DatabaseSettings",
    "Databases",
    "DbApp",
    "DbError",
    "DbSettings",
    "DbUnavailable",
    "Migration",
    "MigrationError",
    "MigrationManager",
    "ResultSet",
    "StatementTimeout",
    "UnknownDatabase",
]
