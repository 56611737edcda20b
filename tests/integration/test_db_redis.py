"""KeyValueService on the real test Redis through a real grpc.aio server: every data type,
expiry, counters, pipelines and MULTI/EXEC, limits and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as redis
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paca.db.v1 import key_value_service_pb2 as pb
from paca.db.v1 import key_value_service_pb2_grpc as pb_grpc

from tests.conftest import eventually
from tests.integration.redis_helpers import (
    flushed_redis,
    key_value_app,
    key_value_stub,
    kind,
    redis_test_url,
    run,
)
from tests.integration.test_api_call import field_violations

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def ms(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


@pytest.fixture
async def direct() -> AsyncIterator[redis.Redis]:
    async with flushed_redis(redis_test_url()) as client:
        yield client


@pytest.fixture
async def stub(direct: redis.Redis, tmp_path: Path) -> AsyncIterator[pb_grpc.KeyValueServiceStub]:
    async with key_value_app(tmp_path, redis_test_url()) as app, key_value_stub(app) as stub:
        yield stub


async def test_strings_set_get_mget_delete_with_conditions(
    stub: pb_grpc.KeyValueServiceStub, direct: redis.Redis
) -> None:
    assert (await run(stub, set=pb.SetCommand(key="a", value=b"\x00one"))).ok
    absent = pb.SET_CONDITION_IF_ABSENT
    present = pb.SET_CONDITION_IF_PRESENT
    assert not (await run(stub, set=pb.SetCommand(key="a", value=b"x", condition=absent))).ok
    assert not (await run(stub, set=pb.SetCommand(key="b", value=b"x", condition=present))).ok
    assert (await run(stub, set=pb.SetCommand(key="b", value=b"two", condition=absent))).ok
    assert (await run(stub, get=pb.GetCommand(key="a"))).value == b"\x00one"
    assert kind(await run(stub, get=pb.GetCommand(key="nope"))) == "missing"
    got = await run(stub, mget=pb.MGetCommand(keys=["a", "nope", "b"]))
    assert [v.value if v.HasField("value") else None for v in got.optional_values.values] == [
        b"\x00one",
        None,
        b"two",
    ]
    assert (await run(stub, delete=pb.DeleteKeysCommand(keys=["a", "b", "nope"]))).integer == 2
    assert await direct.exists("a", "b") == 0


async def test_hashes(stub: pb_grpc.KeyValueServiceStub) -> None:
    fields = {"name": b"ada", "year": b"1815"}
    assert (await run(stub, hset=pb.HSetCommand(key="h", fields=fields))).integer == 2
    assert (await run(stub, hset=pb.HSetCommand(key="h", fields={"name": b"A"}))).integer == 0
    assert (await run(stub, hget=pb.HGetCommand(key="h", field="name"))).value == b"A"
    assert kind(await run(stub, hget=pb.HGetCommand(key="h", field="x"))) == "missing"
    got = await run(stub, hget_all=pb.HGetAllCommand(key="h"))
    assert dict(got.fields.fields) == {"name": b"A", "year": b"1815"}
    assert (await run(stub, hdel=pb.HDelCommand(key="h", fields=["year", "x"]))).integer == 1
    assert dict((await run(stub, hget_all=pb.HGetAllCommand(key="none"))).fields.fields) == {}


async def test_lists_push_pop_range(stub: pb_grpc.KeyValueServiceStub) -> None:
    assert (await run(stub, rpush=pb.ListPushCommand(key="l", values=[b"a", b"b"]))).integer == 2
    assert (await run(stub, lpush=pb.ListPushCommand(key="l", values=[b"z"]))).integer == 3
    whole = await run(stub, lrange=pb.LRangeCommand(key="l", start=0, stop=-1))
    assert list(whole.values.values) == [b"z", b"a", b"b"]
    assert (await run(stub, lpop=pb.ListPopCommand(key="l"))).value == b"z"
    assert (await run(stub, rpop=pb.ListPopCommand(key="l"))).value == b"b"
    assert (await run(stub, rpop=pb.ListPopCommand(key="l"))).value == b"a"
    assert kind(await run(stub, lpop=pb.ListPopCommand(key="l"))) == "missing"


async def test_sets(stub: pb_grpc.KeyValueServiceStub) -> None:
    added = await run(stub, sadd=pb.SetMembersCommand(key="s", members=[b"b", b"a", b"b"]))
    assert added.integer == 2
    assert list((await run(stub, smembers=pb.SMembersCommand(key="s"))).values.values) == [
        b"a",
        b"b",
    ]
    assert (await run(stub, sismember=pb.SIsMemberCommand(key="s", member=b"a"))).ok
    assert not (await run(stub, sismember=pb.SIsMemberCommand(key="s", member=b"c"))).ok
    assert (await run(stub, srem=pb.SetMembersCommand(key="s", members=[b"a", b"c"]))).integer == 1


async def test_sorted_sets_by_score_with_open_bounds_and_paging(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    members = [pb.ScoredMember(member=m, score=s) for m, s in ((b"c", 3), (b"a", 1), (b"b", 2.5))]
    assert (await run(stub, zadd=pb.ZAddCommand(key="z", members=members))).integer == 3

    async def by_score(**bounds: Any) -> list[tuple[bytes, float]]:
        got = await run(stub, zrange_by_score=pb.ZRangeByScoreCommand(key="z", **bounds))
        return [(m.member, m.score) for m in got.scored_members.members]

    assert await by_score() == [(b"a", 1.0), (b"b", 2.5), (b"c", 3.0)]
    assert await by_score(min=2, max=3) == [(b"b", 2.5), (b"c", 3.0)]
    assert await by_score(max=2.5) == [(b"a", 1.0), (b"b", 2.5)]
    assert await by_score(offset=1, count=1) == [(b"b", 2.5)]
    assert await by_score(offset=2) == [(b"c", 3.0)]
    assert (await run(stub, zscore=pb.ZScoreCommand(key="z", member=b"b"))).score == 2.5
    assert kind(await run(stub, zscore=pb.ZScoreCommand(key="z", member=b"x"))) == "missing"
    assert (await run(stub, zrem=pb.ZRemCommand(key="z", members=[b"a", b"x"]))).integer == 1


async def test_expiry_by_set_ttl_and_pexpire_removes_keys(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    await run(stub, set=pb.SetCommand(key="short", value=b"v", ttl=ms(150)))
    await run(stub, set=pb.SetCommand(key="kept", value=b"v"))
    await run(stub, set=pb.SetCommand(key="later", value=b"v"))
    left = (await run(stub, ttl=pb.TtlCommand(key="short"))).integer
    assert 0 < left <= 150
    assert (await run(stub, ttl=pb.TtlCommand(key="kept"))).integer == -1
    assert (await run(stub, ttl=pb.TtlCommand(key="none"))).integer == -2
    assert (await run(stub, expire=pb.ExpireCommand(key="later", ttl=ms(50)))).ok
    assert not (await run(stub, expire=pb.ExpireCommand(key="none", ttl=ms(50)))).ok

    async def both_gone() -> bool:
        got = await run(stub, mget=pb.MGetCommand(keys=["short", "later"]))
        return not any(v.HasField("value") for v in got.optional_values.values)

    await eventually(both_gone, timeout_s=5)
    assert (await run(stub, get=pb.GetCommand(key="kept"))).value == b"v"


async def test_counter_under_50_concurrent_increments(stub: pb_grpc.KeyValueServiceStub) -> None:
    results = await asyncio.gather(*(run(stub, incr=pb.IncrCommand(key="n")) for _ in range(50)))
    assert sorted(r.integer for r in results) == list(range(1, 51))
    assert (await run(stub, incr_by=pb.IncrByCommand(key="n", increment=-10))).integer == 40


@pytest.mark.parametrize("transaction", [False, True])
async def test_pipeline_typed_results_in_order_and_a_failing_command_does_not_stop_others(
    stub: pb_grpc.KeyValueServiceStub, transaction: bool
) -> None:
    commands = [
        pb.KeyValueCommand(set=pb.SetCommand(key="p", value=b"1")),
        pb.KeyValueCommand(lpush=pb.ListPushCommand(key="p", values=[b"x"])),  # WRONGTYPE
        pb.KeyValueCommand(incr=pb.IncrCommand(key="p")),
        pb.KeyValueCommand(get=pb.GetCommand(key="p")),
        pb.KeyValueCommand(get=pb.GetCommand(key="none")),
    ]
    request = pb.PipelineRequest(database="cache", commands=commands, transaction=transaction)
    reply = await stub.Pipeline(request, timeout=5)
    assert [kind(r) for r in reply.results] == ["ok", "error", "integer", "value", "missing"]
    assert reply.results[1].error.code == "WRONGTYPE"
    assert reply.results[2].integer == 2
    assert reply.results[3].value == b"2"


async def test_transaction_is_atomic_against_concurrent_transactions(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    """Writers bump two counters together in MULTI/EXEC; a reader's MULTI never sees them apart."""
    both = [
        pb.KeyValueCommand(incr=pb.IncrCommand(key="left")),
        pb.KeyValueCommand(incr=pb.IncrCommand(key="right")),
    ]
    read = [
        pb.KeyValueCommand(get=pb.GetCommand(key="left")),
        pb.KeyValueCommand(get=pb.GetCommand(key="right")),
    ]
    seen: list[tuple[bytes, bytes]] = []

    async def writer() -> None:
        for _ in range(20):
            request = pb.PipelineRequest(database="cache", commands=both, transaction=True)
            await stub.Pipeline(request, timeout=5)

    async def reader() -> None:
        for _ in range(40):
            request = pb.PipelineRequest(database="cache", commands=read, transaction=True)
            reply = await stub.Pipeline(request, timeout=5)
            seen.append((reply.results[0].value, reply.results[1].value))

    await asyncio.gather(*(writer() for _ in range(5)), reader())
    assert all(left == right for left, right in seen)
    final = await run(stub, mget=pb.MGetCommand(keys=["left", "right"]))
    assert [v.value for v in final.optional_values.values] == [b"100", b"100"]


async def test_watched_transaction_runs_when_nothing_changed(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    request = pb.PipelineRequest(
        database="cache",
        commands=[pb.KeyValueCommand(set=pb.SetCommand(key="w", value=b"1"))],
        transaction=True,
        watch_keys=["w"],
    )
    assert (await stub.Pipeline(request, timeout=5)).results[0].ok
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Pipeline(
            pb.PipelineRequest(database="cache", commands=request.commands, watch_keys=["w"])
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["watch_keys"]


async def test_wrongtype_is_failed_precondition_with_the_engine_code(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    await run(stub, set=pb.SetCommand(key="str", value=b"v"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(stub, hget=pb.HGetCommand(key="str", field="f"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "WRONGTYPE" in (caught.value.details() or "")
    status = rpc_status.from_call(caught.value)
    assert status is not None
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append((info.domain, info.metadata["code"]))
    assert infos == [("redis", "WRONGTYPE")]


async def test_bad_input_names_the_field_and_runs_nothing(
    stub: pb_grpc.KeyValueServiceStub, direct: redis.Redis
) -> None:
    commands = [
        pb.KeyValueCommand(set=pb.SetCommand(key="first", value=b"v")),
        pb.KeyValueCommand(expire=pb.ExpireCommand(key="first", ttl=ms(0))),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Pipeline(pb.PipelineRequest(database="cache", commands=commands), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["commands[1].expire.ttl"]
    assert await direct.exists("first") == 0
    for command, field in (
        (pb.KeyValueCommand(), "command"),
        (pb.KeyValueCommand(mget=pb.MGetCommand(keys=["a", ""])), "command.mget.keys[1]"),
        (pb.KeyValueCommand(hset=pb.HSetCommand(key="h")), "command.hset.fields"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Command(pb.CommandRequest(database="cache", command=command), timeout=5)
        assert field_violations(caught.value) == [field]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Command(
            pb.CommandRequest(
                database="other", command=pb.KeyValueCommand(get=pb.GetCommand(key="k"))
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_max_bytes_truncates_collections_and_refuses_a_large_value(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    values = [bytes([i]) * 100 for i in range(50)]
    await run(stub, rpush=pb.ListPushCommand(key="big", values=values))
    request = pb.CommandRequest(
        database="cache",
        command=pb.KeyValueCommand(lrange=pb.LRangeCommand(key="big", start=0, stop=-1)),
        max_bytes=1000,
    )
    result = (await stub.Command(request, timeout=5)).result
    assert result.truncated
    assert 0 < len(result.values.values) < 10
    assert list(result.values.values) == values[: len(result.values.values)]
    await run(stub, set=pb.SetCommand(key="blob", value=b"x" * 5000))
    request = pb.CommandRequest(
        database="cache", command=pb.KeyValueCommand(get=pb.GetCommand(key="blob")), max_bytes=1000
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Command(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_stats_count_commands_with_latency_and_pool_use(
    stub: pb_grpc.KeyValueServiceStub,
) -> None:
    await run(stub, set=pb.SetCommand(key="k", value=b"v"))
    for _ in range(5):
        await run(stub, get=pb.GetCommand(key="k"))
    with pytest.raises(grpc.aio.AioRpcError):
        await run(stub, lpop=pb.ListPopCommand(key="k"))
    stats = (await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)).databases
    assert [s.database for s in stats] == ["cache"]
    figures = {c.command: c for c in stats[0].commands}
    assert figures["GET"].calls == 5
    assert figures["GET"].errors == 0
    assert 0 < figures["GET"].latency_p50_ms <= figures["GET"].latency_p99_ms
    assert (figures["LPOP"].calls, figures["LPOP"].errors) == (1, 1)
    assert stats[0].mode == "standalone"
    assert stats[0].pool_size == 8
    assert stats[0].pool_idle >= 1
    assert stats[0].pool_in_use == 0
