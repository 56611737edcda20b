"""db_service settings (environment or PACA_CONFIG_FILE; see README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from db_service.backends.base import PoolLimits
from db_service.document.config import MongoDatabaseSettings, mongo_databases_from_source
from db_service.keyvalue.settings import KeyValueSettings
from db_service.routing.replicaset import RoutingOptions
from paca_runtime.redact import redact_url
from paca_runtime.settings import RuntimeSettings, SettingsError, SettingsSource

LISTEN: Final = "PACA_DB_LISTEN"
DB_URL: Final = "PACA_DB_URL"
DATABASES: Final = "PACA_DATABASES"
POOL_SIZE: Final = "DB_POOL_SIZE"
ACQUIRE_TIMEOUT: Final = "PACA_DB_ACQUIRE_TIMEOUT_S"
MAX_ROWS: Final = "PACA_DB_MAX_ROWS"
MAX_BYTES: Final = "PACA_DB_MAX_BYTES"
STREAM_CHUNK_ROWS: Final = "PACA_DB_STREAM_CHUNK_ROWS"
STREAM_CHUNK_BYTES: Final = "PACA_DB_STREAM_CHUNK_BYTES"
CALLLOG_DATABASE: Final = "PACA_CALLLOG_DATABASE"
REUSE_PORT: Final = "PACA_DB_REUSE_PORT"
MIGRATIONS: Final = "PACA_MIGRATIONS"
TX_IDLE_TIMEOUT: Final = "PACA_DB_TX_IDLE_TIMEOUT_S"
CLIENTS: Final = "PACA_DB_CLIENTS"
# Read replicas: database=url entries, a database once per replica.
REPLICAS: Final = "PACA_DB_REPLICAS"
READ_POLICY: Final = "PACA_DB_READ_POLICY"
REPLICA_MAX_LAG: Final = "PACA_DB_REPLICA_MAX_LAG_S"
HEALTH_INTERVAL: Final = "PACA_DB_HEALTH_INTERVAL_S"
HEALTH_TIMEOUT: Final = "PACA_DB_HEALTH_TIMEOUT_S"
HEALTH_FALL: Final = "PACA_DB_HEALTH_FALL"
HEALTH_RISE: Final = "PACA_DB_HEALTH_RISE"
READ_POLICIES: Final = ("round_robin", "least_outstanding", "latency")

# Query parameters of a database URL that configure its pool (taken off before the URL reaches
# the driver): pool_min, pool_max, acquire_timeout_s, max_lifetime_s, idle_recycle_s, and
# read_only=true for a database db_service never writes to.
POOL_PARAMS: Final = frozenset(
    {"pool_min", "pool_max", "acquire_timeout_s", "max_lifetime_s", "idle_recycle_s", "read_only"}
)
# Client flags of PACA_DB_CLIENTS.
CLIENT_FLAGS: Final = frozenset({"read_only", "no_raw_sql"})

SCHEMES: Final = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool limits of one database; None takes the process-wide value (DB_POOL_SIZE,
    PACA_DB_ACQUIRE_TIMEOUT_S)."""

    min_size: int = 1
    max_size: int | None = None
    acquire_timeout_s: float | None = None
    # A connection older than this is closed when it comes back (server-side memory, DNS moves).
    max_lifetime_s: float = 3600.0
    # A connection idle for longer than this is closed instead of handed out.
    idle_recycle_s: float = 300.0

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise SettingsError(f'"pool_min" must be >= 0, got {self.min_size}')
        if self.max_size is not None and self.max_size < max(1, self.min_size):
            raise SettingsError(f'"pool_max" must be >= max(1, pool_min), got {self.max_size}')
        for name, value in (
            ("acquire_timeout_s", self.acquire_timeout_s),
            ("max_lifetime_s", self.max_lifetime_s),
            ("idle_recycle_s", self.idle_recycle_s),
        ):
            if value is not None and value <= 0:
                raise SettingsError(f'"{name}" must be > 0, got {value}')


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What one client (a token's name in PACA_AUTH_TOKENS_FILE) may do beyond its scopes.

    ``read_only``: writes are refused (PERMISSION_DENIED). ``raw_sql=False``: only the builder
    RPCs (Select, Insert, Update, Delete); Query, Execute, ExecuteBatch, StreamQuery and
    Transaction statements are refused (PERMISSION_DENIED).
    """

    name: str
    read_only: bool = False
    raw_sql: bool = True


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """One named database."""

    name: str
    url: str
    pool: PoolSettings = PoolSettings()
    # db_service refuses every write to it (FAILED_PRECONDITION); reads run read-only.
    read_only: bool = False

    @property
    def dialect(self) -> str:
        return SCHEMES[urlsplit(self.url).scheme]


@dataclass(frozen=True, slots=True)
class DbSettings:
    listen: str = "127.0.0.1:50052"
    databases: tuple[DatabaseSettings, ...] = field(default_factory=tuple)
    pool_size: int = 10
    acquire_timeout_s: float = 5.0
    max_rows: int = 10_000
    # Below gRPC's default 4 MiB message limit, so a full reply always reaches the client.
    max_bytes: int = 3 * 1024 * 1024
    stream_chunk_rows: int = 1000
    stream_chunk_bytes: int = 1024 * 1024
    calllog_database: str = "main"
    reuse_port: bool = False
    # (database name, directory of its migration set) pairs; see MigrationManager.
    migrations: tuple[tuple[str, Path], ...] = ()
    # An open Transaction with no request for this long is rolled back.
    transaction_idle_timeout_s: float = 30.0
    # Per-client limits; the name "*" applies to callers without an entry of their own.
    clients: tuple[ClientPolicy, ...] = ()
    # Redis databases (PACA_REDIS_*), served by KeyValueService.
    key_value: KeyValueSettings = field(default_factory=KeyValueSettings)
    # MongoDB databases (PACA_MONGO_*), served by DocumentService.
    mongo: tuple[MongoDatabaseSettings, ...] = ()
    # (database name, replica URL) pairs; a database with replicas is routed (db_service.routing).
    replicas: tuple[tuple[str, str], ...] = ()
    read_policy: str = "round_robin"
    # A replica further behind the primary than this serves no reads.
    replica_max_lag_s: float = 10.0
    # Every host of a database with replicas is probed this often, each probe within the timeout;
    # `fall` failures in a row take a host out of rotation, `rise` good probes bring it back.
    health_interval_s: float = 1.0
    health_timeout_s: float = 1.0
    health_fall: int = 3
    health_rise: int = 2

    def __post_init__(self) -> None:
        names = [db.name for db in self.databases]
        if len(set(names)) != len(names):
            raise SettingsError(f'"{DATABASES}": a database name appears twice: {names}')
        seen: set[str] = set()
        for name, directory in self.migrations:
            if name not in names:
                raise SettingsError(f'"{MIGRATIONS}" names database {name!r}, not one of {names}')
            if name in seen:
                raise SettingsError(f'"{MIGRATIONS}": database {name!r} appears twice')
            seen.add(name)
            if not directory.is_dir():
                raise SettingsError(f'"{MIGRATIONS}": {directory} is not a directory')
        if self.calllog_database not in names:
            raise SettingsError(
                f'"{CALLLOG_DATABASE}" names {self.calllog_database!r}, not one of {names}'
            )
        self._check_replicas()
        if self.transaction_idle_timeout_s <= 0:
            raise SettingsError(
                f'"{TX_IDLE_TIMEOUT}" must be > 0, got {self.transaction_idle_timeout_s}'
            )
        if self.pool_size < 1:
            raise SettingsError(f'"{POOL_SIZE}" must be >= 1, got {self.pool_size}')
        if self.max_rows < 1:
            raise SettingsError(f'"{MAX_ROWS}" must be >= 1, got {self.max_rows}')
        for name, value in (
            (MAX_BYTES, self.max_bytes),
            (STREAM_CHUNK_ROWS, self.stream_chunk_rows),
            (STREAM_CHUNK_BYTES, self.stream_chunk_bytes),
        ):
            if value < 1:
                raise SettingsError(f'"{name}" must be >= 1, got {value}')

    @classmethod
    def from_source(cls, source: SettingsSource, runtime: RuntimeSettings) -> DbSettings:
        default_url = f"sqlite:///{Path(runtime.state_dir) / 'db' / 'main.db'}"
        databases = [_database("main", DB_URL, source.text(DB_URL, default_url))]
        for item in filter(None, (p.strip() for p in source.text(DATABASES, "").split(","))):
            name, sep, url = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise SettingsError(f'"{DATABASES}" entries are name=url, got {item!r}')
            databases.append(_database(name.strip(), DATABASES, url.strip()))
        return cls(
            listen=source.address(LISTEN, "127.0.0.1:50052"),
            databases=tuple(databases),
            pool_size=source.integer(POOL_SIZE, 10, minimum=1),
            acquire_timeout_s=source.number(ACQUIRE_TIMEOUT, 5.0),
            max_rows=source.integer(MAX_ROWS, 10_000, minimum=1),
            max_bytes=source.integer(MAX_BYTES, 3 * 1024 * 1024, minimum=1),
            stream_chunk_rows=source.integer(STREAM_CHUNK_ROWS, 1000, minimum=1),
            stream_chunk_bytes=source.integer(STREAM_CHUNK_BYTES, 1024 * 1024, minimum=1),
            calllog_database=source.text(CALLLOG_DATABASE, "main"),
            reuse_port=source.flag(REUSE_PORT, False),
            migrations=_migration_sets(source.text(MIGRATIONS, "")),
            transaction_idle_timeout_s=source.number(TX_IDLE_TIMEOUT, 30.0),
            clients=_clients(source.text(CLIENTS, "")),
            key_value=KeyValueSettings.from_source(source),
            mongo=mongo_databases_from_source(
                source, pool_size=source.integer(POOL_SIZE, 10, minimum=1)
            ),
            replicas=_replicas(source.text(REPLICAS, "")),
            read_policy=source.text(READ_POLICY, "round_robin"),
            replica_max_lag_s=source.number(REPLICA_MAX_LAG, 10.0),
            health_interval_s=source.number(HEALTH_INTERVAL, 1.0),
            health_timeout_s=source.number(HEALTH_TIMEOUT, 1.0),
            health_fall=source.integer(HEALTH_FALL, 3, minimum=1),
            health_rise=source.integer(HEALTH_RISE, 2, minimum=1),
        )

    def _check_replicas(self) -> None:
        dialects = {db.name: db.dialect for db in self.databases}
        for name, url in self.replicas:
            if name not in dialects:
                raise SettingsError(
                    f'"{REPLICAS}" names database {name!r}, not one of {list(dialects)}'
                )
            if dialects[name] not in {"postgresql", "mysql"}:
                raise SettingsError(
                    f'"{REPLICAS}": {dialects[name]} database {name!r} takes no replicas'
                )
            if SCHEMES[urlsplit(url).scheme] != dialects[name]:
                raise SettingsError(
                    f'"{REPLICAS}": replica {redact_url(url)!r} of {name!r} is not {dialects[name]}'
                )
        if self.read_policy not in READ_POLICIES:
            raise SettingsError(
                f'"{READ_POLICY}" must be one of {READ_POLICIES}, got {self.read_policy!r}'
            )
        for setting, value in (
            (REPLICA_MAX_LAG, self.replica_max_lag_s),
            (HEALTH_INTERVAL, self.health_interval_s),
            (HEALTH_TIMEOUT, self.health_timeout_s),
        ):
            if value <= 0:
                raise SettingsError(f'"{setting}" must be > 0, got {value}')
        if self.health_fall < 1 or self.health_rise < 1:
            raise SettingsError(f'"{HEALTH_FALL}" and "{HEALTH_RISE}" must be >= 1')

    def routing_options(self) -> RoutingOptions:
        """How databases with replicas balance reads and check their hosts."""
        return RoutingOptions(
            policy=self.read_policy,
            max_lag_s=self.replica_max_lag_s,
            interval_s=self.health_interval_s,
            timeout_s=self.health_timeout_s,
            fall=self.health_fall,
            rise=self.health_rise,
        )

    def replica_urls(self, database: str) -> tuple[str, ...]:
        """The replica URLs of ``database`` (empty: it has none and is not routed)."""
        return tuple(url for name, url in self.replicas if name == database)

    def pool_limits(self, db: DatabaseSettings) -> PoolLimits:
        """The pool of database ``db``: its own settings, else the process-wide ones."""
        pool = db.pool
        return PoolLimits(
            min_size=pool.min_size,
            max_size=pool.max_size or self.pool_size,
            acquire_timeout_s=pool.acquire_timeout_s or self.acquire_timeout_s,
            max_lifetime_s=pool.max_lifetime_s,
            idle_recycle_s=pool.idle_recycle_s,
        )

    def client(self, name: str | None) -> ClientPolicy | None:
        """The policy of client ``name`` (or of "*"), None when nothing limits it."""
        policies = {c.name: c for c in self.clients}
        return policies.get(name or "*") or policies.get("*")

    def migration_directory(self, database: str) -> Path | None:
        """The directory of ``database``'s migration set, or None when it has none."""
        return dict(self.migrations).get(database)


def _replicas(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for i, item in enumerate(filter(None, (p.strip() for p in text.split(",")))):
        name, sep, url = item.partition("=")
        if not sep or not name.strip().isidentifier():
            # The entry is not echoed: it may hold a password.
            raise SettingsError(f'"{REPLICAS}" entries are database=url; entry {i + 1} is not')
        pairs.append((name.strip(), _url(REPLICAS, url.strip())))
    return tuple(pairs)


def _migration_sets(text: str) -> tuple[tuple[str, Path], ...]:
    sets = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, directory = item.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise SettingsError(f'"{MIGRATIONS}" entries are database=directory, got {item!r}')
        sets.append((name.strip(), Path(directory.strip())))
    return tuple(sets)


def _clients(text: str) -> tuple[ClientPolicy, ...]:
    """``name=flag+flag,...`` (flags: read_only, no_raw_sql) into policies."""
    policies = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, flags = item.partition("=")
        chosen = {f.strip() for f in flags.split("+") if f.strip()}
        if not sep or not name.strip() or not chosen or chosen - CLIENT_FLAGS:
            raise SettingsError(
                f'"{CLIENTS}" entries are name=flag+flag with flags {sorted(CLIENT_FLAGS)},'
                f" got {item!r}"
            )
        policies.append(
            ClientPolicy(
                name.strip(), read_only="read_only" in chosen, raw_sql="no_raw_sql" not in chosen
            )
        )
    return tuple(policies)


def _database(name: str, setting: str, url: str) -> DatabaseSettings:
    """A database from its URL; pool parameters (POOL_PARAMS) are taken off the query."""
    url = _url(setting, url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in POOL_PARAMS}
    if not options:
        return DatabaseSettings(name, url)
    rest = urlencode([(k, v) for k, v in query if k not in POOL_PARAMS])
    where = f'"{setting}" database {name!r}'

    def number(key: str) -> float | None:
        if key not in options:
            return None
        try:
            return float(options[key])
        except ValueError:
            raise SettingsError(f"{where}: {key} must be a number, got {options[key]!r}") from None

    read_only = options.get("read_only", "false").lower()
    if read_only not in {"true", "false", "1", "0"}:
        raise SettingsError(f"{where}: read_only must be true or false, got {read_only!r}")
    minimum, maximum = number("pool_min"), number("pool_max")
    defaults = PoolSettings()
    try:
        pool = PoolSettings(
            min_size=int(minimum) if minimum is not None else 1,
            max_size=int(maximum) if maximum is not None else None,
            acquire_timeout_s=number("acquire_timeout_s"),
            max_lifetime_s=number("max_lifetime_s") or defaults.max_lifetime_s,
            idle_recycle_s=number("idle_recycle_s") or defaults.idle_recycle_s,
        )
    except SettingsError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return DatabaseSettings(
        name, urlunsplit(parts._replace(query=rest)), pool, read_only in {"true", "1"}
    )


def _url(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise SettingsError(
            f'"{name}": unsupported database URL scheme {scheme!r} in {redact_url(url)!r}'
        )
    return url
