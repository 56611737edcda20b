"""Settings of the Redis databases (KeyValueService) and the URLs that name them.

Accepted URLs (credentials in the user-info part; never shown, see :meth:`RedisTarget.redacted`):

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path.sock?db=N``
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]``: the
  master that the Sentinels name; ``?sentinel_password=`` when the Sentinels have their own.
- ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]`` or any ``redis://`` URL with
  ``?cluster=true``: a Redis Cluster found from these start-up nodes.

Any of them takes ``?read_only=true``: db_service then refuses every write (FAILED_PRECONDITION).

redis-py parses single-host URLs itself; several hosts in one URL are a Sentinel / Cluster
convention (as in Spring Data Redis and redis-py-cluster) that redis-py does not parse, so the
host list is split here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from paca_runtime.redact import redact_url
from paca_runtime.settings import SettingsError, SettingsSource

DATABASES: Final = "PACA_REDIS_DATABASES"
POOL_SIZE: Final = "PACA_REDIS_POOL_SIZE"
MAX_SUBSCRIPTIONS: Final = "PACA_REDIS_MAX_SUBSCRIPTIONS"
CONNECT_TIMEOUT: Final = "PACA_REDIS_CONNECT_TIMEOUT_S"
COMMAND_TIMEOUT: Final = "PACA_REDIS_COMMAND_TIMEOUT_S"

Mode = Literal["standalone", "sentinel", "cluster"]
DEFAULT_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
_TRUE = {"1", "true", "yes", "on"}
# Entries of PACA_REDIS_DATABASES are split at commas followed by "name=", so the commas of a
# multi-host URL stay inside it.
_ENTRY_SPLIT = re.compile(r",\s*(?=[A-Za-z_]\w*\s*=)")
_Bad = Callable[[str], SettingsError]
# URL options this module reads; they never reach redis-py.
_OURS = frozenset({"cluster", "read_only", "sentinel_password"})


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where one Redis database lives, parsed from its URL."""

    url: str
    mode: Mode
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # ``?read_only=true``: db_service refuses every write to it (a replica, shared data).
    read_only: bool = False
    # Sentinel only: the monitored master's name and the Sentinels' own password.
    service_name: str = ""
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return f"<RedisTarget {self.mode} {self.redacted()}>"

    def redacted(self) -> str:
        """The URL without password (also the Sentinels' password)."""
        return redact_url(self.url, frozenset({"sentinel_password"}))

    @property
    def standalone_url(self) -> str:
        """The URL for redis-py's own parser (standalone only), without our options."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OURS]
        return urlunsplit(parts._replace(query=urlencode(query), fragment=""))

    @classmethod
    def parse(cls, url: str, setting: str = DATABASES) -> RedisTarget:
        """Parse a Redis URL; SettingsError names ``setting`` and shows the URL redacted."""
        shown = redact_url(url, frozenset({"sentinel_password"}))

        def bad(reason: str) -> SettingsError:
            return SettingsError(f'"{setting}": {reason} in {shown!r}')

        try:
            parts = urlsplit(url)
        except ValueError:
            raise bad("malformed URL") from None
        query = dict(parse_qsl(parts.query))
        scheme = parts.scheme.lower()
        if scheme == "unix":
            if not parts.path:
                raise bad("a socket path is required")
            return cls(url, "standalone", ((parts.path, 0),), db=_db(query.get("db", "0"), bad))
        if scheme not in {"redis", "rediss", "redis+sentinel", "redis+cluster"}:
            raise bad(f"unsupported scheme {scheme!r}")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        default_port = SENTINEL_PORT if scheme == "redis+sentinel" else DEFAULT_PORT
        hosts = tuple(_host(h, default_port, bad) for h in hostlist.split(","))
        path = [p for p in parts.path.split("/") if p]
        common = {
            "username": unquote(username) or None,
            "password": unquote(password) if password else None,
            "tls": query.get("ssl", "").lower() in _TRUE or scheme == "rediss",
            "read_only": query.get("read_only", "").lower() in _TRUE,
        }
        if scheme == "redis+sentinel":
            if not path:
                raise bad("the Sentinel service name is required (/service_name[/db])")
            if len(path) > 2:
                raise bad("the path is /service_name[/db]")
            return cls(
                url,
                "sentinel",
                hosts,
                db=_db(path[1] if len(path) == 2 else "0", bad),
                service_name=unquote(path[0]),
                sentinel_password=query.get("sentinel_password"),
                **common,  # type: ignore[arg-type]
            )
        cluster = scheme == "redis+cluster" or query.get("cluster", "").lower() in _TRUE
        if len(path) > 1:
            raise bad("the path is /db")
        db = _db(path[0] if path else "0", bad)
        if cluster:
            if db != 0:
                raise bad("Redis Cluster has database 0 only")
            return cls(url, "cluster", hosts, **common)  # type: ignore[arg-type]
        if len(hosts) > 1:
            raise bad("several hosts need redis+sentinel:// or redis+cluster://")
        return cls(url, "standalone", hosts, db=db, **common)  # type: ignore[arg-type]


def _host(text: str, default_port: int, bad: _Bad) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"bad host {text!r}")
    return host, int(port)


def _db(text: str, bad: _Bad) -> int:
    if not text.isdigit():
        raise bad(f"the database number must be an integer, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class RedisDatabaseSettings:
    """One named Redis database."""

    name: str
    target: RedisTarget

    @classmethod
    def of(cls, name: str, url: str) -> RedisDatabaseSettings:
        return cls(name, RedisTarget.parse(url))


@dataclass(frozen=True, slots=True)
class KeyValueSettings:
    """The Redis databases of a db_service process and their limits.

    Each database has a command pool of ``pool_size`` connections (a command waits for a free one
    within its time limit) and up to ``max_subscriptions`` connections for Subscribe streams, apart,
    so subscribers can never starve commands.
    """

    databases: tuple[RedisDatabaseSettings, ...] = field(default_factory=tuple)
    pool_size: int = 20
    max_subscriptions: int = 100
    # A host that does not answer is UNAVAILABLE after this long (refused connections at once).
    connect_timeout_s: float = 1.0
    # Time limit of a command when the caller gives none.
    command_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        names = [db.name for db in self.databases]
        if len(set(names)) != len(names):
            raise SettingsError(f'"{DATABASES}": a database name appears twice: {names}')
        for name, value in (
            (POOL_SIZE, self.pool_size),
            (MAX_SUBSCRIPTIONS, self.max_subscriptions),
        ):
            if value < 1:
                raise SettingsError(f'"{name}" must be >= 1, got {value}')
        for name, seconds in (
            (CONNECT_TIMEOUT, self.connect_timeout_s),
            (COMMAND_TIMEOUT, self.command_timeout_s),
        ):
            if seconds <= 0:
                raise SettingsError(f'"{name}" must be > 0, got {seconds}')

    @classmethod
    def from_source(cls, source: SettingsSource) -> KeyValueSettings:
        databases = []
        for item in filter(
            None, (p.strip() for p in _ENTRY_SPLIT.split(source.text(DATABASES, "")))
        ):
            name, sep, url = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise SettingsError(
                    f'"{DATABASES}" entries are name=url, got {redact_url(item.strip())!r}'
                )
            databases.append(RedisDatabaseSettings(name.strip(), RedisTarget.parse(url.strip())))
        return cls(
            databases=tuple(databases),
            pool_size=source.integer(POOL_SIZE, 20, minimum=1),
            max_subscriptions=source.integer(MAX_SUBSCRIPTIONS, 100, minimum=1),
            connect_timeout_s=source.number(CONNECT_TIMEOUT, 1.0),
            command_timeout_s=source.number(COMMAND_TIMEOUT, 5.0),
        )
