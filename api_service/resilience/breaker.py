"""A circuit breaker: stop calling an upstream that keeps failing, and test it gently later.

State machine::

    CLOSED ──(N consecutive failures, or failure rate ≥ threshold over the window
              with at least minimum_calls)──▶ OPEN
    OPEN ──(open_duration elapsed, checked lazily on the next acquire)──▶ HALF_OPEN
    HALF_OPEN: admits at most ``half_open_probes`` calls; a failed probe ──▶ OPEN,
               all probes successful ──▶ CLOSED (window and counters reset)

Each admitted call holds a :class:`Ticket` naming the state generation it was admitted in; an
outcome reported against an older generation (a slow call that started before the breaker
opened) is ignored, so stale results never close or re-open the breaker.

Failure is decided by the caller (no response, or a 5xx status). The clock is injectable so
tests move time. Hand-written: the libraries at hand (pybreaker, aiobreaker) offer consecutive
counts only, without a rate over a sliding window, a probe limit or an injectable clock.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from api_service.errors import CircuitOpen

logger = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker trips and how it recovers.

    Args:
        consecutive_failures: Trip after this many failures in a row (0: not used).
        failure_rate: Trip when this share (0..1] of calls in the window failed (0: not used).
        window_s: Length of the sliding window for the failure rate.
        minimum_calls: Calls the window needs before the rate counts.
        open_s: Time spent open before probes are admitted.
        half_open_probes: Probes admitted in half-open; all must succeed to close.
    """

    consecutive_failures: int = 5
    failure_rate: float = 0.0
    window_s: float = 10.0
    minimum_calls: int = 20
    open_s: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures must be >= 0")
        if not 0 <= self.failure_rate <= 1:
            raise ValueError("failure_rate must be in [0, 1]")
        if self.window_s <= 0 or self.open_s <= 0:
            raise ValueError("window_s and open_s must be > 0")
        if self.minimum_calls < 1 or self.half_open_probes < 1:
            raise ValueError("minimum_calls and half_open_probes must be >= 1")


@dataclass(frozen=True, slots=True)
class Ticket:
    """Admission of one call; report its outcome with ``record`` or give it back with ``cancel``."""

    generation: int
    probe: bool


Listener = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    """One breaker (for an endpoint or an upstream host).

    Args:
        name: What it guards, e.g. ``endpoint:github.user`` or ``host:api.github.com``.
        config: Trip and recovery settings.
        clock: Monotonic seconds.
        on_transition: Called with (name, old, new) on every state change.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Listener | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self.state = BreakerState.CLOSED
        self.transitions = 0
        self.rejected = 0
        self._generation = 0
        # The ticket of every call admitted while closed in this generation (tickets are
        # immutable and say only generation and probe, so one serves them all).
        self._admission = Ticket(0, probe=False)
        self._opened_at = 0.0
        self._consecutive = 0
        # (time, failed) of finished calls inside the window, oldest first.
        self._window: deque[tuple[float, bool]] = deque()
        self._failures_in_window = 0
        self._probes_issued = 0
        self._probes_passed = 0

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.name} {self.state.value} consecutive={self._consecutive} "
            f"window={len(self._window)} failed={self._failures_in_window}>"
        )

    def retry_after_s(self) -> float:
        """Time until an open breaker admits probes (0 when it is not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.open_s - self._clock())

    def current_state(self) -> BreakerState:
        """The state as of now (an open breaker whose time is up reads as half-open)."""
        self._maybe_half_open()
        return self.state

    def acquire(self) -> Ticket:
        """Admit one call or raise :class:`CircuitOpen` with the time until probes."""
        self._maybe_half_open()
        if self.state is BreakerState.OPEN:
            self.rejected += 1
            raise CircuitOpen(self.name, self.retry_after_s())
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_issued >= self.config.half_open_probes:
                self.rejected += 1
                # Probes are out; their outcome decides. Ask again after a short while.
                raise CircuitOpen(self.name, min(1.0, self.config.open_s))
            self._probes_issued += 1
            return Ticket(self._generation, probe=True)
        ticket = self._admission
        if ticket.generation != self._generation:  # one ticket per closed spell, not per call
            ticket = self._admission = Ticket(self._generation, probe=False)
        return ticket

    def record(self, ticket: Ticket, *, failed: bool) -> None:
        """Report the outcome of an admitted call."""
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            if failed:
                self._transition(BreakerState.OPEN)
                return
            self._probes_passed += 1
            if self._probes_passed >= self.config.half_open_probes:
                self._transition(BreakerState.CLOSED)
            return
        now = self._clock()
        self._consecutive = self._consecutive + 1 if failed else 0
        self._window.append((now, failed))
        self._failures_in_window += failed
        self._expire(now)
        if self._should_trip():
            self._transition(BreakerState.OPEN)

    def cancel(self, ticket: Ticket) -> None:
        """Give back an admission that produced no outcome (the call was cancelled)."""
        if ticket.generation == self._generation and ticket.probe:
            self._probes_issued -= 1

    def _should_trip(self) -> bool:
        config = self.config
        if config.consecutive_failures and self._consecutive >= config.consecutive_failures:
            return True
        if config.failure_rate and len(self._window) >= config.minimum_calls:
            return self._failures_in_window / len(self._window) >= config.failure_rate
        return False

    def _expire(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._window and self._window[0][0] <= horizon:
            _, failed = self._window.popleft()
            self._failures_in_window -= failed

    def _maybe_half_open(self) -> None:
        if (
            self.state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.config.open_s
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _transition(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        self._generation += 1
        self.transitions += 1
        self._probes_issued = self._probes_passed = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
            logger.warning("circuit %s opened for %.3g s", self.name, self.config.open_s)
        elif new is BreakerState.CLOSED:
            self._consecutive = 0
            self._window.clear()
            self._failures_in_window = 0
            logger.info("circuit %s closed", self.name)
        if self._on_transition is not None:
            self._on_transition(self.name, old, new)
