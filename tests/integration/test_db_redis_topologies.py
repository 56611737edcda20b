"""KeyValueService through a real Redis Sentinel and a real three-node Redis Cluster, each started
on free ports under the test's temporary directory and stopped at its end."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from paca.db.v1 import key_value_service_pb2 as pb

from tests.conftest import eventually
from tests.integration.redis_helpers import (
    REDIS_DB,
    flushed_redis,
    key_value_app,
    key_value_stub,
    redis_test_url,
    run,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(40),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def free_port(*, cluster: bool = False) -> int:
    """A free port; for a cluster node one at most 55535 whose bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock, socket.socket() as bus:
            if not cluster:
                sock.bind(("127.0.0.1", 0))
                return int(sock.getsockname()[1])
            port = random.randint(20000, 55535)
            try:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


@asynccontextmanager
async def redis_process(
    directory: Path, *args: str, config: Path | None = None
) -> AsyncIterator[int]:
    """A redis-server of our own on a free port, with ``args`` (``--sentinel``, cluster mode)."""
    await asyncio.to_thread(directory.mkdir, parents=True)
    port = free_port(cluster="--cluster-enabled" in args)
    process = await asyncio.create_subprocess_exec(
        *("redis-server", *([str(config)] if config else []), "--port", str(port)),
        *("--bind", "127.0.0.1", "--dir", str(directory), "--save", "", "--appendonly", "no"),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except redis.ConnectionError:
                return False

        await eventually(answers, timeout_s=10)
        await client.aclose()
        yield port
    finally:
        process.terminate()
        await process.wait()


async def test_commands_reach_the_master_named_by_a_sentinel(tmp_path: Path) -> None:
    target = urlsplit(redis_test_url())
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"sentinel monitor paca-test {target.hostname} {target.port or 6379} 1\n"
        "sentinel down-after-milliseconds paca-test 60000\n"
    )
    async with (
        flushed_redis(redis_test_url()) as direct,
        redis_process(tmp_path / "sentinel", "--sentinel", config=config) as port,
        key_value_app(tmp_path, f"redis+sentinel://127.0.0.1:{port}/paca-test/{REDIS_DB}") as app,
        key_value_stub(app) as stub,
    ):
        assert (await run(stub, set=pb.SetCommand(key="via-sentinel", value=b"v"))).ok
        assert await direct.get("via-sentinel") == b"v"
        reply = await stub.Pipeline(
            pb.PipelineRequest(
                database="cache",
                transaction=True,
                commands=[
                    pb.KeyValueCommand(incr=pb.IncrCommand(key="n")),
                    pb.KeyValueCommand(get=pb.GetCommand(key="via-sentinel")),
                ],
            ),
            timeout=5,
        )
        assert [r.integer or r.value for r in reply.results] == [1, b"v"]
        stats = (await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)).databases
        assert stats[0].mode == "sentinel"


@asynccontextmanager
async def redis_cluster(directory: Path, nodes: int = 3) -> AsyncIterator[list[int]]:
    async with AsyncExitStack() as stack:
        ports = [
            await stack.enter_async_context(
                redis_process(
                    directory / f"node{i}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / f"node{i}" / "nodes.conf"),
                )
            )
            for i in range(nodes)
        ]
        create = await asyncio.create_subprocess_exec(
            *("redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)),
            *("--cluster-replicas", "0", "--cluster-yes"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await create.wait() == 0
        clients = [redis.Redis(port=p) for p in ports]

        async def ready() -> bool:
            infos = [await c.cluster("INFO") for c in clients]
            return all(info["cluster_state"] == "ok" for info in infos)

        await eventually(ready, timeout_s=15)
        for client in clients:
            await client.aclose()
        yield ports


async def test_commands_spread_over_a_cluster(tmp_path: Path) -> None:
    async with (
        redis_cluster(tmp_path / "cluster") as ports,
        key_value_app(tmp_path, f"redis+cluster://127.0.0.1:{ports[0]}") as app,
        key_value_stub(app) as stub,
    ):
        keys = [f"key-{i}" for i in range(20)]  # hash to slots on every node
        for key in keys:
            assert (await run(stub, set=pb.SetCommand(key=key, value=key.encode()))).ok
        got = await run(stub, mget=pb.MGetCommand(keys=keys))
        assert [v.value for v in got.optional_values.values] == [k.encode() for k in keys]
        assert (await run(stub, delete=pb.DeleteKeysCommand(keys=keys))).integer == len(keys)
        reply = await stub.Pipeline(
            pb.PipelineRequest(
                database="cache",
                commands=[pb.KeyValueCommand(incr=pb.IncrCommand(key=key)) for key in keys[:5]],
            ),
            timeout=5,
        )
        assert [r.integer for r in reply.results] == [1] * 5
        stats = (await stub.GetKeyValueStats(pb.GetKeyValueStatsRequest(), timeout=5)).databases
        assert stats[0].mode == "cluster"
