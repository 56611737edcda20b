"""Balancing policies, consistency tokens and replica lag: pure logic, no engine."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from db_service.errors import BadStatement
from db_service.routing.lag import PositionTrail
from db_service.routing.policies import LatencyAware, LeastOutstanding, RoundRobin, make_policy
from db_service.routing.positions import lsn, make_token, parse_token, reached

pytestmark = pytest.mark.unit


@dataclass
class FakeHost:
    outstanding: int = 0
    latency_ewma_s: float = 0.0


def test_round_robin_takes_each_host_in_turn_and_lists_the_rest_as_fallbacks() -> None:
    hosts = [FakeHost(), FakeHost(), FakeHost()]
    policy = RoundRobin()
    orders = [policy.order(hosts) for _ in range(4)]
    assert [o[0] for o in orders] == [0, 1, 2, 0]
    assert all(sorted(o) == [0, 1, 2] for o in orders)


def test_least_outstanding_prefers_the_idlest_host_and_spreads_ties() -> None:
    busy, idle = FakeHost(outstanding=5), FakeHost(outstanding=1)
    policy = LeastOutstanding()
    assert {policy.order([busy, idle])[0] for _ in range(4)} == {1}
    tied = [FakeHost(), FakeHost()]
    assert {policy.order(tied)[0] for _ in range(4)} == {0, 1}


def test_latency_aware_sends_most_reads_to_the_fast_host() -> None:
    hosts = [FakeHost(latency_ewma_s=0.010), FakeHost(latency_ewma_s=0.001), FakeHost(0, 0.012)]
    policy = LatencyAware(random.Random(7))
    firsts = Counter(policy.order(hosts)[0] for _ in range(300))
    # Two random choices: the fast host wins every pair it is in (2/3 of them).
    assert firsts[1] == pytest.approx(200, abs=30)
    assert firsts[2] < firsts[0]


def test_latency_aware_counts_queued_statements_against_a_fast_host() -> None:
    fast_but_busy = FakeHost(outstanding=20, latency_ewma_s=0.001)
    slower_idle = FakeHost(outstanding=0, latency_ewma_s=0.005)
    assert LatencyAware(random.Random(1)).order([fast_but_busy, slower_idle])[0] == 1


def test_unknown_policy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="fastest"):
        make_policy("fastest")


def test_postgres_token_round_trips_and_compares_as_a_wal_position() -> None:
    token = make_token("pg", "16/B374D848")
    assert parse_token(token) == ("pg", "16/B374D848")
    assert lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert reached("pg", "16/B374D848", "16/B374D848")
    assert reached("pg", "17/0", "16/FFFFFFFF")
    assert not reached("pg", "16/B374D847", "16/B374D848")
    assert not reached("pg", "", "0/1")


def test_mariadb_token_is_reached_per_replication_domain() -> None:
    assert reached("mariadb", "0-1-100,1-2-7", "0-1-100")
    assert not reached("mariadb", "0-1-99,1-2-7", "0-1-100,1-2-7")
    assert not reached("mariadb", "0-1-100", "1-2-1")


def test_mysql_token_is_reached_when_its_gtid_set_is_included() -> None:
    uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562"
    assert reached("mysql", f"{uuid}:1-100", f"{uuid.lower()}:1-77")
    assert not reached("mysql", f"{uuid}:1-50", f"{uuid}:1-77")
    assert not reached("mysql", f"{uuid}:1-100", "AAAAAAAA-71CA-11E1-9E33-C80AA9429562:1")


@pytest.mark.parametrize("token", ["", "pg", "pg:", "pg:zz", "oracle:1/2", "mariadb:a-b"])
def test_malformed_token_names_the_field(token: str) -> None:
    with pytest.raises(BadStatement) as caught:
        parse_token(token)
    assert caught.value.field == "consistency_token"


def test_replica_lag_is_zero_while_it_keeps_up_and_grows_once_it_falls_behind() -> None:
    trail = PositionTrail()
    trail.record(10.0, 100)
    trail.record(11.0, 100)  # an idle primary adds nothing
    assert trail.lag_s(100, now=50.0) == 0.0
    trail.record(12.0, 200)
    trail.record(13.0, 300)
    # At 150 the replica misses what the primary had at 12.0.
    assert trail.lag_s(150, now=14.5) == pytest.approx(2.5)
    assert trail.lag_s(300, now=14.5) == 0.0
    trail.clear()
    assert trail.lag_s(0, now=20.0) == 0.0
