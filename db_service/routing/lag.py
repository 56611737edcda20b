"""Replica lag in seconds from replication positions (PostgreSQL).

The primary's WAL position is sampled on every probe round. A replica at position ``p`` has
been missing data since the first sample that went past ``p``, so its lag is the time since
that sample: zero while it keeps up (also when nothing is written, unlike
``now() - pg_last_xact_replay_timestamp()``, which grows on an idle primary), and growing by
the clock while it falls behind or stops replaying. The resolution is one probe interval.
"""

from __future__ import annotations

import bisect
from collections import deque


class PositionTrail:
    """Recent (time, position) samples of the primary, oldest first.

    Args:
        max_samples: Samples kept; a replica further behind than the oldest one is reported
            as behind since that sample (the lag is a lower bound then, still above any
            sensible bound when the trail covers it).
    """

    def __init__(self, max_samples: int = 1024) -> None:
        self._times: deque[float] = deque(maxlen=max_samples)
        self._positions: deque[int] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self._times)

    def record(self, at: float, position: int) -> None:
        """Add a sample; a position that did not move adds nothing."""
        if self._positions and position <= self._positions[-1]:
            return
        self._times.append(at)
        self._positions.append(position)

    def clear(self) -> None:
        """Forget the samples (a new primary writes a new history)."""
        self._times.clear()
        self._positions.clear()

    def lag_s(self, position: int, now: float) -> float:
        """Seconds a replica at ``position`` has been behind the primary."""
        i = bisect.bisect_right(self._positions, position)
        if i >= len(self._positions):
            return 0.0
        return max(0.0, now - self._times[i])
