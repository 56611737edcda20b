"""Balancing policies: which of the hosts in rotation serves the next read.

- ``round_robin``: each host in turn; even load when hosts are alike.
- ``least_outstanding``: the host with the fewest statements running now; a slow host
  builds a queue and gets less.
- ``latency``: power of two random choices scored by ``EWMA latency * (outstanding + 1)``
  (Finagle's "peak EWMA"): two random picks avoid sending every read to the momentarily best
  host, and the outstanding factor reacts before the average catches up.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Protocol

POLICIES = ("round_robin", "least_outstanding", "latency")


class Candidate(Protocol):
    """What a policy knows about a host."""

    @property
    def outstanding(self) -> int: ...

    @property
    def latency_ewma_s(self) -> float: ...


class Policy(Protocol):
    name: str

    def order(self, hosts: Sequence[Candidate]) -> list[int]:
        """Indexes of ``hosts``, best first (the rest are fallbacks for a retry)."""
        ...


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def order(self, hosts: Sequence[Candidate]) -> list[int]:
        if not hosts:
            return []
        start = next(self._turn) % len(hosts)
        return [(start + i) % len(hosts) for i in range(len(hosts))]


class LeastOutstanding:
    name = "least_outstanding"

    def __init__(self) -> None:
        # Ties go round the hosts, so an idle set still spreads its reads.
        self._turn = itertools.count()

    def order(self, hosts: Sequence[Candidate]) -> list[int]:
        if not hosts:
            return []
        start = next(self._turn)
        return sorted(
            range(len(hosts)),
            key=lambda i: (hosts[i].outstanding, (i - start) % len(hosts)),
        )


class LatencyAware:
    name = "latency"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    @staticmethod
    def score(host: Candidate) -> float:
        return host.latency_ewma_s * (host.outstanding + 1)

    def order(self, hosts: Sequence[Candidate]) -> list[int]:
        if len(hosts) < 2:
            return list(range(len(hosts)))
        a, b = self._rng.sample(range(len(hosts)), 2)
        first = a if self.score(hosts[a]) <= self.score(hosts[b]) else b
        rest = sorted(
            (i for i in range(len(hosts)) if i != first), key=lambda i: self.score(hosts[i])
        )
        return [first, *rest]


def make_policy(name: str) -> Policy:
    """The policy called ``name`` (one of :data:`POLICIES`)."""
    policies: dict[str, type[RoundRobin] | type[LeastOutstanding] | type[LatencyAware]] = {
        "round_robin": RoundRobin,
        "least_outstanding": LeastOutstanding,
        "latency": LatencyAware,
    }
    try:
        return policies[name]()
    except KeyError:
        raise ValueError(f"unknown balancing policy {name!r}, expected one of {POLICIES}") from None
