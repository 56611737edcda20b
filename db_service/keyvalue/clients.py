"""redis-py asyncio clients for a parsed :class:`RedisTarget`: standalone, Sentinel or Cluster.

Nothing here touches the network: redis-py connects on first use, so a Redis that is down at
start-up does not keep db_service from starting (its commands are UNAVAILABLE until it is back).

Retries: one immediate retry, so a pooled connection the server closed while idle is replaced
without the caller noticing; no backoff, so a Redis that is down answers UNAVAILABLE at once
instead of after redis-py's default exponential backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from db_service.keyvalue.settings import KeyValueSettings, RedisTarget


def _retry() -> Retry:
    return Retry(NoBackoff(), 1)


@dataclass(slots=True)
class Clients:
    """The command client (pooled) and the client that opens subscription connections."""

    commands: Any
    subscriptions: Any
    # The command pool when redis-py exposes one we can read (standalone, Sentinel).
    pool: Any = None
    # Clients these depend on that closing them leaves open (the Sentinels' own connections).
    helpers: tuple[Any, ...] = ()

    async def aclose(self) -> None:
        clients = [self.commands, self.subscriptions, *self.helpers]
        for client in {id(c): c for c in clients}.values():
            await client.aclose()


def _common(target: RedisTarget, settings: KeyValueSettings) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password,
        "socket_connect_timeout": settings.connect_timeout_s,
        "retry": _retry(),
    }


def standalone(target: RedisTarget, settings: KeyValueSettings) -> Clients:
    """A client on a blocking pool: a command waits for a free connection within its time
    limit instead of failing when all are busy. Subscriptions get their own pool."""
    # No socket timeout: every command runs under its own time limit (asyncio.timeout), and a
    # subscription waits for messages as long as its caller wants.
    options = {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": None,
        "retry": _retry(),
    }
    pool = BlockingConnectionPool.from_url(
        target.standalone_url,
        max_connections=settings.pool_size,
        timeout=settings.command_timeout_s,
        **options,
    )
    subscription_pool = ConnectionPool.from_url(
        target.standalone_url, max_connections=settings.max_subscriptions, **options
    )
    return Clients(Redis.from_pool(pool), Redis.from_pool(subscription_pool), pool=pool)


def sentinel(target: RedisTarget, settings: KeyValueSettings) -> Clients:
    """Clients of the master the Sentinels name; they follow a failover by themselves."""
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": settings.connect_timeout_s}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts),
        sentinel_kwargs=sentinel_kwargs,
        db=target.db,
        ssl=target.tls,
        **_common(target, settings),
    )
    commands = manager.master_for(target.service_name, max_connections=settings.pool_size)
    subscriptions = manager.master_for(
        target.service_name, max_connections=settings.max_subscriptions
    )
    return Clients(
        commands, subscriptions, pool=commands.connection_pool, helpers=tuple(manager.sentinels)
    )


def cluster(target: RedisTarget, settings: KeyValueSettings) -> Clients:
    """A cluster client found from the start-up nodes; it maps slots and follows MOVED."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        ssl=target.tls,
        max_connections=settings.pool_size,
        **_common(target, settings),
    )
    return Clients(client, client)


def make_clients(target: RedisTarget, settings: KeyValueSettings) -> Clients:
    builders = {"standalone": standalone, "sentinel": sentinel, "cluster": cluster}
    return builders[target.mode](target, settings)


def pool_figures(clients: Clients) -> tuple[int, int] | None:
    """(in use, idle) connections of the command pool; None when redis-py does not say
    (Cluster keeps a pool per node)."""
    pool = clients.pool
    in_use = getattr(pool, "_in_use_connections", None)
    idle = getattr(pool, "_available_connections", None)
    if in_use is None or idle is None:
        return None
    return len(in_use), len(idle)
