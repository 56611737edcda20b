"""Per-command figures of a Redis database: calls, errors and recent latency quantiles.

Latencies are kept in a fixed ring of the most recent calls per command, so the quantiles follow
current behaviour and memory stays bounded whatever the traffic; the sort happens only when
someone reads the figures.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from paca.db.v1 import key_value_service_pb2 as pb

# Recent latencies kept per command for quantiles.
WINDOW = 1024


@dataclass(slots=True)
class CommandFigures:
    calls: int = 0
    errors: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def to_proto(self, command: str) -> pb.KeyValueCommandStats:
        figures = pb.KeyValueCommandStats(command=command, calls=self.calls, errors=self.errors)
        if len(self.latencies_s) >= 2:
            cuts = statistics.quantiles(self.latencies_s, n=100, method="inclusive")
            figures.latency_p50_ms = cuts[49] * 1000
            figures.latency_p95_ms = cuts[94] * 1000
            figures.latency_p99_ms = cuts[98] * 1000
        elif self.latencies_s:
            only = self.latencies_s[0] * 1000
            figures.latency_p50_ms = figures.latency_p95_ms = figures.latency_p99_ms = only
        return figures


class CommandStats:
    """Figures per command name; ``record`` is called once per command or pipeline."""

    def __init__(self) -> None:
        self._by_command: dict[str, CommandFigures] = {}

    def __repr__(self) -> str:
        return f"<CommandStats calls={self.calls} errors={self.errors}>"

    def record(self, command: str, seconds: float, *, failed: bool, count: int = 1) -> None:
        """Count ``count`` calls of ``command`` (e.g. the GETs of a pipeline); the latency is
        recorded once, as one round trip."""
        figures = self._by_command.get(command)
        if figures is None:
            figures = self._by_command[command] = CommandFigures()
        figures.calls += count
        figures.errors += count if failed else 0
        if seconds >= 0:
            figures.latencies_s.append(seconds)

    def count(self, command: str, *, failed: bool) -> None:
        """Count one command run inside a pipeline (its latency is the pipeline's)."""
        self.record(command, -1.0, failed=failed)

    @property
    def calls(self) -> int:
        return sum(f.calls for f in self._by_command.values())

    @property
    def errors(self) -> int:
        return sum(f.errors for f in self._by_command.values())

    def to_proto(self) -> list[pb.KeyValueCommandStats]:
        return [f.to_proto(name) for name, f in sorted(self._by_command.items())]
