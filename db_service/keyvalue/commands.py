"""Typed KeyValueCommand messages to redis-py calls, and Redis replies to KeyValueResult.

Each command becomes a :class:`Call`: validated up front (so bad input changes nothing, even in
the middle of a pipeline), then issued on a client (one round trip) or queued on a pipeline, with
the same converter for its reply either way. The allow-list is the message's ``oneof``: there is
no way to send Redis a command not listed in :data:`_BUILDERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.duration_pb2 import Duration
from paca.db.v1 import key_value_service_pb2 as pb
from redis.asyncio.cluster import RedisCluster

from db_service.keyvalue.errors import ReplyTooLarge
from paca_runtime.errors import InvalidArgument

MISSING = struct_pb2.NullValue.NULL_VALUE
# Bytes counted for each element beyond its own length (tags and lengths on the wire).
_OVERHEAD = 8


class Budget:
    """Reply bytes left for the results of one call (max_bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes if they fit."""
        if size > self.left:
            return False
        self.left -= size
        return True

    def value(self, data: bytes, max_bytes: int) -> bytes:
        """A single value: it fits whole or the reply is too large."""
        if not self.take(len(data) + _OVERHEAD):
            raise ReplyTooLarge(len(data), max_bytes)
        return data


Convert = Callable[[Any, Budget, int], pb.KeyValueResult]


@dataclass(frozen=True, slots=True)
class Call:
    """One validated command: its name for figures, whether it writes, and how to run it."""

    name: str
    writes: bool
    # Issues the command on a redis-py client (returns an awaitable) or pipeline (queues it).
    issue: Callable[[Any], Any]
    convert: Convert
    keys: tuple[str, ...]


def _key(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    return value


def _keys(values: Sequence[str], field: str) -> list[str]:
    if not values:
        raise InvalidArgument(field, "at least one key")
    for i, value in enumerate(values):
        _key(value, f"{field}[{i}]")
    return list(values)


def _some(values: Sequence[Any], field: str, what: str) -> list[Any]:
    if not values:
        raise InvalidArgument(field, f"at least one {what}")
    return list(values)


def _ttl_ms(ttl: Duration, field: str) -> int:
    ms = ttl.seconds * 1000 + ttl.nanos // 1_000_000
    if ms <= 0:
        raise InvalidArgument(field, "must be at least 1 ms")
    return ms


def _bound(has: bool, value: float, field: str, infinite: str) -> float | str:
    if not has:
        return infinite
    if math.isnan(value):
        raise InvalidArgument(field, "must be a number")
    return value


# Reply converters: (raw reply, budget, max_bytes) -> result.


def _optional_value(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    if raw is None:
        return pb.KeyValueResult(missing=MISSING)
    return pb.KeyValueResult(value=budget.value(raw, max_bytes))


def _integer(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    return pb.KeyValueResult(integer=int(raw))


def _ok(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    return pb.KeyValueResult(ok=bool(raw))


def _score(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    if raw is None:
        return pb.KeyValueResult(missing=MISSING)
    return pb.KeyValueResult(score=float(raw))


def _values(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    kept: list[bytes] = []
    for item in raw:
        if not budget.take(len(item) + _OVERHEAD):
            return pb.KeyValueResult(values=pb.BytesList(values=kept), truncated=True)
        kept.append(item)
    return pb.KeyValueResult(values=pb.BytesList(values=kept))


def _optional_values(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    kept: list[pb.OptionalBytes] = []
    for item in raw:
        if not budget.take((0 if item is None else len(item)) + _OVERHEAD):
            return pb.KeyValueResult(
                optional_values=pb.OptionalBytesList(values=kept), truncated=True
            )
        kept.append(pb.OptionalBytes() if item is None else pb.OptionalBytes(value=item))
    return pb.KeyValueResult(optional_values=pb.OptionalBytesList(values=kept))


def _fields(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    kept: dict[str, bytes] = {}
    for name, value in raw.items():
        if not budget.take(len(name) + len(value) + _OVERHEAD):
            return pb.KeyValueResult(fields=pb.FieldMap(fields=kept), truncated=True)
        kept[name.decode(errors="replace")] = value
    return pb.KeyValueResult(fields=pb.FieldMap(fields=kept))


def _scored(raw: Any, budget: Budget, max_bytes: int) -> pb.KeyValueResult:
    kept: list[pb.ScoredMember] = []
    for member, score in raw:
        if not budget.take(len(member) + _OVERHEAD + 8):
            return pb.KeyValueResult(
                scored_members=pb.ScoredMemberList(members=kept), truncated=True
            )
        kept.append(pb.ScoredMember(member=member, score=float(score)))
    return pb.KeyValueResult(scored_members=pb.ScoredMemberList(members=kept))


# Builders: (typed command, field path) -> Call.


def _get(c: pb.GetCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    return Call("GET", False, lambda r: r.get(key), _optional_value, (key,))


def _set(c: pb.SetCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    px = _ttl_ms(c.ttl, f"{f}.ttl") if c.HasField("ttl") else None
    if c.condition not in pb.SetCondition.values():
        raise InvalidArgument(f"{f}.condition", f"unknown condition {c.condition}")
    nx = c.condition == pb.SET_CONDITION_IF_ABSENT
    xx = c.condition == pb.SET_CONDITION_IF_PRESENT
    value = c.value
    return Call("SET", True, lambda r: r.set(key, value, px=px, nx=nx, xx=xx), _ok, (key,))


def _mget(c: pb.MGetCommand, f: str) -> Call:
    keys = _keys(c.keys, f"{f}.keys")

    def issue(r: Any) -> Any:
        # A Cluster client splits the keys by slot (one MGET per node) instead of failing with
        # CROSSSLOT; inside a pipeline the keys must share a slot, as Redis Cluster requires.
        if isinstance(r, RedisCluster):
            return r.mget_nonatomic(keys)
        return r.mget(keys)

    return Call("MGET", False, issue, _optional_values, tuple(keys))


def _delete(c: pb.DeleteKeysCommand, f: str) -> Call:
    keys = _keys(c.keys, f"{f}.keys")
    return Call("DEL", True, lambda r: r.delete(*keys), _integer, tuple(keys))


def _incr(c: pb.IncrCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    return Call("INCR", True, lambda r: r.incr(key), _integer, (key,))


def _incr_by(c: pb.IncrByCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    by = c.increment
    return Call("INCRBY", True, lambda r: r.incrby(key, by), _integer, (key,))


def _expire(c: pb.ExpireCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    if not c.HasField("ttl"):
        raise InvalidArgument(f"{f}.ttl", "required")
    ms = _ttl_ms(c.ttl, f"{f}.ttl")
    return Call("PEXPIRE", True, lambda r: r.pexpire(key, ms), _ok, (key,))


def _ttl(c: pb.TtlCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    return Call("PTTL", False, lambda r: r.pttl(key), _integer, (key,))


def _hget(c: pb.HGetCommand, f: str) -> Call:
    key, name = _key(c.key, f"{f}.key"), _key(c.field, f"{f}.field")
    return Call("HGET", False, lambda r: r.hget(key, name), _optional_value, (key,))


def _hset(c: pb.HSetCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    mapping = dict(_some(list(c.fields.items()), f"{f}.fields", "field"))
    return Call("HSET", True, lambda r: r.hset(key, mapping=mapping), _integer, (key,))


def _hget_all(c: pb.HGetAllCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    return Call("HGETALL", False, lambda r: r.hgetall(key), _fields, (key,))


def _hdel(c: pb.HDelCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    names = _some(c.fields, f"{f}.fields", "field")
    return Call("HDEL", True, lambda r: r.hdel(key, *names), _integer, (key,))


def _push(side: str) -> Callable[[pb.ListPushCommand, str], Call]:
    def build(c: pb.ListPushCommand, f: str) -> Call:
        key = _key(c.key, f"{f}.key")
        values = _some(c.values, f"{f}.values", "value")
        return Call(
            f"{side}PUSH",
            True,
            lambda r: getattr(r, f"{side.lower()}push")(key, *values),
            _integer,
            (key,),
        )

    return build


def _pop(side: str) -> Callable[[pb.ListPopCommand, str], Call]:
    def build(c: pb.ListPopCommand, f: str) -> Call:
        key = _key(c.key, f"{f}.key")
        return Call(
            f"{side}POP",
            True,
            lambda r: getattr(r, f"{side.lower()}pop")(key),
            _optional_value,
            (key,),
        )

    return build


def _lrange(c: pb.LRangeCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    start, stop = c.start, c.stop
    return Call("LRANGE", False, lambda r: r.lrange(key, start, stop), _values, (key,))


def _members(name: str) -> Callable[[pb.SetMembersCommand, str], Call]:
    def build(c: pb.SetMembersCommand, f: str) -> Call:
        key = _key(c.key, f"{f}.key")
        members = _some(c.members, f"{f}.members", "member")
        return Call(name, True, lambda r: getattr(r, name.lower())(key, *members), _integer, (key,))

    return build


def _smembers(c: pb.SMembersCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    # redis-py answers with a Python set; sort so replies are stable between calls.
    return Call(
        "SMEMBERS",
        False,
        lambda r: r.smembers(key),
        lambda raw, b, m: _values(sorted(raw), b, m),
        (key,),
    )


def _sismember(c: pb.SIsMemberCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    member = c.member
    return Call("SISMEMBER", False, lambda r: r.sismember(key, member), _ok, (key,))


def _zadd(c: pb.ZAddCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    members = _some(c.members, f"{f}.members", "member")
    mapping: dict[bytes, float] = {}
    for i, item in enumerate(members):
        if math.isnan(item.score):
            raise InvalidArgument(f"{f}.members[{i}].score", "must be a number")
        mapping[item.member] = item.score
    return Call("ZADD", True, lambda r: r.zadd(key, mapping), _integer, (key,))


def _zrange_by_score(c: pb.ZRangeByScoreCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    low = _bound(c.HasField("min"), c.min, f"{f}.min", "-inf")
    high = _bound(c.HasField("max"), c.max, f"{f}.max", "+inf")
    if c.offset < 0:
        raise InvalidArgument(f"{f}.offset", "must be >= 0")
    if c.count < 0:
        raise InvalidArgument(f"{f}.count", "must be >= 0")
    page = (c.offset, c.count) if c.count or c.offset else (None, None)
    if c.offset and not c.count:
        page = (c.offset, -1)
    return Call(
        "ZRANGEBYSCORE",
        False,
        lambda r: r.zrangebyscore(key, low, high, start=page[0], num=page[1], withscores=True),
        _scored,
        (key,),
    )


def _zrem(c: pb.ZRemCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    members = _some(c.members, f"{f}.members", "member")
    return Call("ZREM", True, lambda r: r.zrem(key, *members), _integer, (key,))


def _zscore(c: pb.ZScoreCommand, f: str) -> Call:
    key = _key(c.key, f"{f}.key")
    member = c.member
    return Call("ZSCORE", False, lambda r: r.zscore(key, member), _score, (key,))


_BUILDERS: dict[str, Callable[[Any, str], Call]] = {
    "get": _get,
    "set": _set,
    "mget": _mget,
    "delete": _delete,
    "incr": _incr,
    "incr_by": _incr_by,
    "expire": _expire,
    "ttl": _ttl,
    "hget": _hget,
    "hset": _hset,
    "hget_all": _hget_all,
    "hdel": _hdel,
    "lpush": _push("L"),
    "rpush": _push("R"),
    "lpop": _pop("L"),
    "rpop": _pop("R"),
    "lrange": _lrange,
    "sadd": _members("SADD"),
    "srem": _members("SREM"),
    "smembers": _smembers,
    "sismember": _sismember,
    "zadd": _zadd,
    "zrange_by_score": _zrange_by_score,
    "zrem": _zrem,
    "zscore": _zscore,
}


def build(command: pb.KeyValueCommand, field: str) -> Call:
    """The validated call for ``command``; InvalidArgument names ``field`` or a field in it."""
    kind = command.WhichOneof("command")
    if kind is None:
        raise InvalidArgument(field, "a command is required")
    return _BUILDERS[kind](getattr(command, kind), f"{field}.{kind}")
