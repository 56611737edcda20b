"""Which host takes writes and which serve reads, driven by scripted probe answers: the
replica set's state machine without an engine (the real thing: test_db_failover.py)."""

from __future__ import annotations

import pytest
from paca.db.v1 import db_types_pb2

from db_service.errors import DbUnavailable
from db_service.routing.probes import ProbeFailed, ProbeResult
from db_service.routing.readpref import read_options
from db_service.routing.replicaset import ReplicaSet, RoutingOptions
from tests.unit.idle_backend import IdleBackend

pytestmark = pytest.mark.unit


class ScriptedProbe:
    """Answers what the test says: a ProbeResult, or None for "the host is gone"."""

    flavor = "pg"

    def __init__(self, primary: bool) -> None:
        self.answer: ProbeResult | None = ProbeResult(primary=primary, position="0/10")

    async def check(self, timeout_s: float) -> ProbeResult:
        if self.answer is None:
            raise ProbeFailed("gone")
        return self.answer

    async def aclose(self) -> None:
        pass

    def position_sql(self, *, primary: bool) -> str:
        return "SELECT 1"


async def _replica_set(*primaries: bool) -> tuple[ReplicaSet, list[ScriptedProbe]]:
    probes = [ScriptedProbe(p) for p in primaries]
    backends = [IdleBackend("main", f"postgresql://h{i}/db") for i in range(len(probes))]
    options = RoutingOptions(interval_s=60, fall=2, rise=2)
    replicas = ReplicaSet("main", backends, options, probes=probes)
    await replicas.open()
    return replicas, probes


async def test_promoted_replica_takes_writes_once_the_primary_is_out() -> None:
    replicas, (old, new) = await _replica_set(True, False)
    try:
        first, second = replicas.hosts
        assert replicas.writer() is first
        old.answer = None
        await replicas.check_now()
        assert replicas.writer() is first  # one failure is not yet `fall`
        await replicas.check_now()
        with pytest.raises(DbUnavailable, match="no primary"):
            replicas.writer()
        assert replicas.serving() == (False, True)
        new.answer = ProbeResult(primary=True, position="0/20")
        await replicas.check_now()
        assert replicas.writer() is second
        assert replicas.serving() == (True, True)
    finally:
        await replicas.aclose()


async def test_returning_old_primary_does_not_take_the_writes_back() -> None:
    replicas, (old, new) = await _replica_set(True, False)
    try:
        first, second = replicas.hosts
        old.answer = None
        await replicas.check_now()
        await replicas.check_now()
        new.answer = ProbeResult(primary=True, position="0/20")
        await replicas.check_now()
        old.answer = ProbeResult(primary=True, position="0/10")
        for _ in range(3):  # `rise` good probes bring it back into rotation
            await replicas.check_now()
        assert first.usable
        assert replicas.writer() is second
    finally:
        await replicas.aclose()


async def test_reads_prefer_replicas_and_fall_back_to_the_primary() -> None:
    replicas, (_, replica_probe) = await _replica_set(True, False)
    try:
        primary, replica = replicas.hosts
        assert await replicas.readers() == [replica, primary]
        with read_options(db_types_pb2.READ_PREFERENCE_PRIMARY):
            assert await replicas.readers() == [primary]
        with read_options(db_types_pb2.READ_PREFERENCE_ANY):
            assert set(await replicas.readers()) == {primary, replica}
        replica_probe.answer = None
        await replicas.check_now()
        await replicas.check_now()
        assert await replicas.readers() == [primary]
    finally:
        await replicas.aclose()


async def test_open_fails_when_no_host_takes_writes() -> None:
    with pytest.raises(DbUnavailable, match="no host takes writes"):
        await _replica_set(False, False)


async def test_host_figures_never_show_a_password() -> None:
    backend = IdleBackend("main", "postgresql://app:s3cret@db1:5432/app")
    replicas = ReplicaSet("main", [backend], RoutingOptions(), probes=[ScriptedProbe(True)])
    await replicas.open()
    try:
        figures = replicas.hosts[0].figures("main")
        assert figures.role == "primary"
        assert figures.state == db_types_pb2.HOST_STATE_HEALTHY
        assert "s3cret" not in str(figures)
        assert "s3cret" not in repr(replicas)
    finally:
        await replicas.aclose()
