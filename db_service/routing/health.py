"""Whether one host is in rotation: fall/rise counting over probes and live traffic.

A host leaves rotation after ``fall`` failures in a row (probes or statements that could not
reach it) and comes back after ``rise`` successful probes in a row, so one lost packet neither
ejects a host nor does one lucky probe bring a flapping one back (HAProxy's fall/rise).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Transition(enum.Enum):
    """What a recorded outcome changed."""

    NONE = "none"
    EJECTED = "ejected"
    RESTORED = "restored"


@dataclass(slots=True)
class HealthCounter:
    """Fall/rise state of one host.

    Args:
        fall: Failures in a row that take the host out of rotation.
        rise: Successful probes in a row that bring it back.
        healthy: The state to start in (the first probe at open decides it).
    """

    fall: int
    rise: int
    healthy: bool = False
    failures: int = 0
    successes: int = 0
    ejections: int = 0

    def __post_init__(self) -> None:
        if self.fall < 1:
            raise ValueError(f"fall must be >= 1, got {self.fall}")
        if self.rise < 1:
            raise ValueError(f"rise must be >= 1, got {self.rise}")

    def failure(self) -> Transition:
        """Record a failed probe or a statement that could not reach the host."""
        self.successes = 0
        self.failures += 1
        if self.healthy and self.failures >= self.fall:
            self.healthy = False
            self.ejections += 1
            return Transition.EJECTED
        return Transition.NONE

    def success(self, *, probe: bool) -> Transition:
        """Record a success. Only probes count towards ``rise``: live traffic never reaches a
        host out of rotation, and a statement that did reach it only proves the host works
        for the statements still sent to it."""
        self.failures = 0
        if self.healthy or not probe:
            return Transition.NONE
        self.successes += 1
        if self.successes >= self.rise:
            self.healthy = True
            self.successes = 0
            return Transition.RESTORED
        return Transition.NONE
