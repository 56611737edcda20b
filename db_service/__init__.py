"""db_service: pooled, typed access to named databases over gRPC, usable in-process too."""

from db_service.app import DbApp
from db_service.backends.base import Backend, PoolLimits, ResultSet, TransactionSession
from db_service.databases import Databases
from db_service.document import DocumentDatabases, MongoBackend, MongoDatabaseSettings
from db_service.errors import (
    BadStatement,
    ConstraintViolation,
    DbError,
    DbUnavailable,
    MigrationError,
    StatementTimeout,
    UnknownDatabase,
)
from db_service.facade import (
    ConnectionPool,
    DatabaseConfig,
    DatabaseMonitor,
    QueryBuilder,
    QueryResult,
    SQLConnector,
    create_mysql_config,
    create_postgres_config,
    create_sqlite_config,
)
from db_service.keyvalue import KeyValueDatabases, KeyValueSettings, KeyValueStore
from db_service.keyvalue.connector import RedisConfig, RedisConnector
from db_service.migrations import Migration, MigrationManager
from db_service.nosql import NoSQLConnector, create_mongodb_config, create_redis_config
from db_service.routing import ReplicaSet, RoutedBackend, RoutingOptions
from db_service.settings import ClientPolicy, DatabaseSettings, DbSettings, PoolSettings

__all__ = [
    "Backend",
    "BadStatement",
    "ClientPolicy",
    "ConnectionPool",
    "ConstraintViolation",
    "DatabaseConfig",
    "DatabaseMonitor",
    "DatabaseSettings",
    "Databases",
    "DbApp",
    "DbError",
    "DbSettings",
    "DbUnavailable",
    "DocumentDatabases",
    "KeyValueDatabases",
    "KeyValueSettings",
    "KeyValueStore",
    "Migration",
    "MigrationError",
    "MigrationManager",
    "MongoBackend",
    "MongoDatabaseSettings",
    "NoSQLConnector",
    "PoolLimits",
    "PoolSettings",
    "QueryBuilder",
    "QueryResult",
    "RedisConfig",
    "RedisConnector",
    "ReplicaSet",
    "ResultSet",
    "RoutedBackend",
    "RoutingOptions",
    "SQLConnector",
    "StatementTimeout",
    "TransactionSession",
    "UnknownDatabase",
    "create_mongodb_config",
    "create_mysql_config",
    "create_postgres_config",
    "create_redis_config",
    "create_sqlite_config",
]
