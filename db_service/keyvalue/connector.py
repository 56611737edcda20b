"""In-process use of a Redis database, without a server: the seed's NoSQL API for Redis.

    config = create_redis_config("redis://127.0.0.1:6379/0")
    async with RedisConnector(config) as kv:
        await kv.set("greeting", b"hello", ttl_s=60)
        print(await kv.get("greeting"))          # b'hello'

A thin layer over the engine the gRPC servicer uses (:class:`KeyValueStore` and the same typed
commands), so a command behaves the same in-process and over the wire: same validation
(InvalidArgument naming the field), same errors (WRONGTYPE is DataConflict, a Redis that is down
is DbUnavailable), same time limits and figures. Values are bytes; keys and fields are strings.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from google.protobuf.duration_pb2 import Duration
from paca.db.v1 import key_value_service_pb2 as pb

from db_service.keyvalue.commands import build
from db_service.keyvalue.settings import KeyValueSettings, RedisDatabaseSettings, RedisTarget
from db_service.keyvalue.store import KeyValueStore

# The default reply limit, as db_service's (below gRPC's 4 MiB message limit).
DEFAULT_MAX_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """How to reach one Redis database (standalone, Sentinel or Cluster URL) and size its pool.

    ``kind`` lets NoSQLConnector pick the engine.
    """

    url: str = field(repr=False)
    name: str = "cache"
    pool_size: int = 20
    connect_timeout_s: float = 1.0
    command_timeout_s: float = 5.0
    max_bytes: int = DEFAULT_MAX_BYTES
    kind: Literal["redis"] = "redis"

    def __post_init__(self) -> None:
        RedisTarget.parse(self.url, "url")  # fails early, naming the field
        KeyValueSettings(
            pool_size=self.pool_size,
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
        )

    def __repr__(self) -> str:
        return f"RedisConfig(name={self.name!r}, url={RedisTarget.parse(self.url).redacted()!r})"


def create_redis_config(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    name: str = "cache",
    pool_size: int = 20,
    command_timeout_s: float = 5.0,
    connect_timeout_s: float = 1.0,
) -> RedisConfig:
    """A Redis config; ``redis+sentinel://`` and ``redis+cluster://`` URLs work too."""
    return RedisConfig(
        url,
        name=name,
        pool_size=pool_size,
        command_timeout_s=command_timeout_s,
        connect_timeout_s=connect_timeout_s,
    )


def _ttl(seconds: float) -> Duration:
    ttl = Duration()
    ttl.FromMilliseconds(round(seconds * 1000))
    return ttl


class RedisConnector:
    """One Redis database in-process. Lifecycle: ``connect()`` (no network until the first
    command), commands, ``disconnect()`` (idempotent); or ``async with``. Also the "redis"
    engine of NoSQLConnector (``open`` / ``aclose``)."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.name = config.name
        settings = KeyValueSettings(
            pool_size=config.pool_size,
            connect_timeout_s=config.connect_timeout_s,
            command_timeout_s=config.command_timeout_s,
        )
        self._store = KeyValueStore(
            RedisDatabaseSettings(config.name, RedisTarget.parse(config.url)), settings
        )
        self._connected = False

    def __repr__(self) -> str:
        return f"<RedisConnector {self._store!r} connected={self._connected}>"

    async def __aenter__(self) -> RedisConnector:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def store(self) -> KeyValueStore:
        if not self._connected:
            raise RuntimeError("RedisConnector is not connected: await connect() first")
        return self._store

    async def connect(self) -> None:
        await self._store.open()
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False
        await self._store.aclose()

    # The engine lifecycle NoSQLConnector drives (db_service.nosql.NoSQLEngine).
    open = connect
    aclose = disconnect

    async def execute(
        self, command: pb.KeyValueCommand, *, timeout_s: float | None = None
    ) -> pb.KeyValueResult:
        """Run one typed command (the message KeyValueService.Command takes)."""
        call = build(command, "command")
        return await self.store.run(call, timeout_s=timeout_s, max_bytes=self.config.max_bytes)

    async def pipeline(
        self,
        commands: Sequence[pb.KeyValueCommand],
        *,
        transaction: bool = False,
        watch_keys: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> list[pb.KeyValueResult]:
        """Run commands in one round trip, as KeyValueService.Pipeline."""
        calls = [build(c, f"commands[{i}]") for i, c in enumerate(commands)]
        return await self.store.pipeline(
            calls,
            transaction=transaction,
            watch_keys=watch_keys,
            timeout_s=timeout_s,
            max_bytes=self.config.max_bytes,
        )

    async def _value(self, command: pb.KeyValueCommand) -> bytes | None:
        result = await self.execute(command)
        return result.value if result.HasField("value") else None

    # Strings and counters.

    async def get(self, key: str) -> bytes | None:
        return await self._value(pb.KeyValueCommand(get=pb.GetCommand(key=key)))

    async def set(
        self, key: str, value: bytes, *, ttl_s: float | None = None, only_if: str | None = None
    ) -> bool:
        """SET; ``only_if`` is "absent" (NX) or "present" (XX); False when it did not write."""
        conditions = {
            None: pb.SET_CONDITION_UNSPECIFIED,
            "absent": pb.SET_CONDITION_IF_ABSENT,
            "present": pb.SET_CONDITION_IF_PRESENT,
        }
        if only_if not in conditions:
            raise ValueError(f'only_if must be "absent" or "present", got {only_if!r}')
        command = pb.SetCommand(key=key, value=value, condition=conditions[only_if])
        if ttl_s is not None:
            command.ttl.CopyFrom(_ttl(ttl_s))
        return (await self.execute(pb.KeyValueCommand(set=command))).ok

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        result = await self.execute(pb.KeyValueCommand(mget=pb.MGetCommand(keys=keys)))
        return [v.value if v.HasField("value") else None for v in result.optional_values.values]

    async def delete(self, *keys: str) -> int:
        command = pb.KeyValueCommand(delete=pb.DeleteKeysCommand(keys=keys))
        return (await self.execute(command)).integer

    async def incr(self, key: str, by: int = 1) -> int:
        command = pb.KeyValueCommand(incr_by=pb.IncrByCommand(key=key, increment=by))
        return (await self.execute(command)).integer

    async def expire(self, key: str, ttl_s: float) -> bool:
        command = pb.ExpireCommand(key=key, ttl=_ttl(ttl_s))
        return (await self.execute(pb.KeyValueCommand(expire=command))).ok

    async def ttl_ms(self, key: str) -> int:
        """Milliseconds left; -1 without expiry, -2 when the key does not exist."""
        return (await self.execute(pb.KeyValueCommand(ttl=pb.TtlCommand(key=key)))).integer

    # Hashes, lists, sets, sorted sets.

    async def hset(self, key: str, fields: Mapping[str, bytes]) -> int:
        command = pb.KeyValueCommand(hset=pb.HSetCommand(key=key, fields=fields))
        return (await self.execute(command)).integer

    async def hget(self, key: str, name: str) -> bytes | None:
        return await self._value(pb.KeyValueCommand(hget=pb.HGetCommand(key=key, field=name)))

    async def hgetall(self, key: str) -> dict[str, bytes]:
        result = await self.execute(pb.KeyValueCommand(hget_all=pb.HGetAllCommand(key=key)))
        return dict(result.fields.fields)

    async def push(self, key: str, *values: bytes, left: bool = False) -> int:
        """RPUSH (LPUSH with ``left``); the list's length after."""
        push = pb.ListPushCommand(key=key, values=values)
        command = pb.KeyValueCommand(lpush=push) if left else pb.KeyValueCommand(rpush=push)
        return (await self.execute(command)).integer

    async def pop(self, key: str, *, left: bool = True) -> bytes | None:
        """LPOP (RPOP without ``left``); None when the list is empty."""
        pop = pb.ListPopCommand(key=key)
        return await self._value(
            pb.KeyValueCommand(lpop=pop) if left else pb.KeyValueCommand(rpop=pop)
        )

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        command = pb.LRangeCommand(key=key, start=start, stop=stop)
        return list((await self.execute(pb.KeyValueCommand(lrange=command))).values.values)

    async def sadd(self, key: str, *members: bytes) -> int:
        command = pb.KeyValueCommand(sadd=pb.SetMembersCommand(key=key, members=members))
        return (await self.execute(command)).integer

    async def smembers(self, key: str) -> builtins.set[bytes]:
        result = await self.execute(pb.KeyValueCommand(smembers=pb.SMembersCommand(key=key)))
        return set(result.values.values)

    async def zadd(self, key: str, members: Mapping[bytes, float]) -> int:
        scored = [pb.ScoredMember(member=m, score=s) for m, s in members.items()]
        command = pb.KeyValueCommand(zadd=pb.ZAddCommand(key=key, members=scored))
        return (await self.execute(command)).integer

    async def zrange_by_score(
        self, key: str, low: float | None = None, high: float | None = None
    ) -> list[tuple[bytes, float]]:
        command = pb.ZRangeByScoreCommand(key=key, min=low, max=high)
        result = await self.execute(pb.KeyValueCommand(zrange_by_score=command))
        return [(m.member, m.score) for m in result.scored_members.members]

    # Pub/sub.

    async def publish(self, channel: str, message: bytes) -> int:
        return await self.store.publish(channel, message, timeout_s=None)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str] = (), patterns: Sequence[str] = ()
    ) -> AsyncIterator[AsyncIterator[pb.PubSubMessage]]:
        """Subscribe; inside the block every subscription is active, and the iterator yields
        each message in delivery order. Leaving the block unsubscribes::

            async with kv.subscribe(["news"]) as messages:
                await kv.publish("news", b"hi")
                message = await anext(messages)
        """
        stream = self.store.subscribe(list(channels), list(patterns))
        async with contextlib.aclosing(stream):
            await anext(stream)  # `ready`: Redis confirmed every subscription

            async def messages() -> AsyncIterator[pb.PubSubMessage]:
                async for item in stream:
                    yield item.message

            yield messages()

    def stats(self) -> pb.KeyValueDatabaseStats:
        """Commands, latency quantiles, errors and pool use so far."""
        return self._store.figures()
