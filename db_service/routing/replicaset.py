"""The hosts of one database and which of them may serve what, kept current by probes.

Every probe round asks each host whether it takes writes and how far it has replayed. A host
leaves rotation after ``fall`` failures in a row (probes or live statements that could not
reach it) and returns after ``rise`` good probes. The primary is the host in rotation that
takes writes; when it leaves and a promoted replica answers as primary, writes go there from
the next round on, with no restart and no configuration change: the configured URLs are just
"the hosts".

Lifecycle: ``open()`` once (probes every host, opens the pools of those that answer, needs one
that takes writes), then the checker runs in the background until ``aclose()`` (idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from db_service.backends.base import Backend
from db_service.errors import BadStatement, DbError, DbUnavailable
from db_service.routing import readpref
from db_service.routing.health import Transition
from db_service.routing.hosts import Host
from db_service.routing.lag import PositionTrail
from db_service.routing.policies import Policy, make_policy
from db_service.routing.positions import lsn, parse_token, reached
from db_service.routing.probes import Probe, ProbeFailed, make_probe

logger = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    """How a replica set balances and checks its hosts (see db_service.settings)."""

    policy: str = "round_robin"
    # A replica further behind than this serves no reads (while a primary is in rotation).
    max_lag_s: float = 10.0
    interval_s: float = 1.0
    # Time limit of one probe (connecting included).
    timeout_s: float = 1.0
    fall: int = 3
    rise: int = 2


class ReplicaSet:
    """The hosts of one database, their health, and the choice of host per statement.

    Args:
        name: The database name (for logs and figures).
        backends: One unopened backend per host, all of one engine.
        options: Policy, lag bound and health-check settings.
        probes: One probe per host (tests inject faults here); default: the engine's own.
        clock: Monotonic clock of the lag figures.
    """

    def __init__(
        self,
        name: str,
        backends: Sequence[Backend],
        options: RoutingOptions,
        *,
        probes: Sequence[Probe] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("a replica set needs at least one host")
        self.name = name
        self.dialect = backends[0].dialect
        self.options = options
        self.policy: Policy = make_policy(options.policy)
        probes = probes or [make_probe(b.dialect, b.url) for b in backends]
        self.hosts = [
            Host(b, p, fall=options.fall, rise=options.rise)
            for b, p in zip(backends, probes, strict=True)
        ]
        self.rounds = 0
        self._primary: Host | None = None
        self._trail = PositionTrail()
        self.clock = clock
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._status = (False, False)
        self._claiming = 0  # hosts that said they take writes, at the last election
        # Notified after every probe round (tests and tools await a state, not a sleep).
        self._round = asyncio.Condition()

    def __repr__(self) -> str:
        primary = self._primary.url if self._primary else None
        usable = sum(h.usable for h in self.hosts)
        return (
            f"<ReplicaSet db={self.name} primary={primary} in_rotation={usable}/{len(self.hosts)}>"
        )

    async def open(self) -> None:
        await asyncio.gather(*(self._probe(h, initial=True) for h in self.hosts))
        self._elect()
        if self._primary is None:
            await self.aclose()
            raise DbUnavailable(f"{self.name}: no host takes writes")
        self._status = self.serving()
        self._stop.clear()
        self._task = asyncio.create_task(self._check_loop(), name=f"health-{self.name}")

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task
        for host in self.hosts:
            await host.probe.aclose()
            if host.opened:
                host.opened = False
                await host.backend.aclose()

    # Health ------------------------------------------------------------------------------

    def watch(self, listener: Listener) -> None:
        """Await ``listener`` whenever :meth:`serving` changes."""
        self._listeners.append(listener)

    def serving(self) -> tuple[bool, bool]:
        """(writes, reads): a primary is in rotation; any host is in rotation."""
        return self._primary is not None, any(h.usable for h in self.hosts)

    @property
    def primary(self) -> Host | None:
        return self._primary

    async def check_now(self) -> None:
        """One probe round now (the background loop runs one every interval)."""
        await asyncio.gather(*(self._probe(h) for h in self.hosts))
        self._measure_lag()
        self._elect()
        self.rounds += 1
        status = self.serving()
        if status != self._status:
            self._status = status
            for listener in self._listeners:
                await listener()
        # Last, so whoever waits on a round also sees the statuses it published.
        async with self._round:
            self._round.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked now and after each probe round."""
        async with self._round:
            await self._round.wait_for(predicate)

    async def _check_loop(self) -> None:
        # open() has just probed every host: the first round is one interval later.
        while not self._stop.is_set():
            # Waits on the stop event (shutdown cuts it short) or an ejection (probe at once).
            waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._wake)]
            _, pending = await asyncio.wait(
                waits, timeout=self.options.interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                await self.check_now()
            except Exception:
                logger.exception("health round of %s failed", self.name)

    async def _probe(self, host: Host, *, initial: bool = False) -> None:
        try:
            result = await host.probe.check(self.options.timeout_s)
            if not host.opened:
                await host.backend.open()
                host.opened = True
        except (ProbeFailed, DbUnavailable) as exc:
            host.last_error = str(exc)
            self.record_failure(host)
            return
        host.primary = result.primary
        host.position = result.position
        if result.primary:
            host.lag_s, host.lagging = 0.0, False
            if host is self._primary and self.dialect == "postgresql" and result.position:
                self._trail.record(self.clock(), lsn(result.position))
        elif result.lag_s is not None:
            host.lag_s = result.lag_s
        if initial:
            # The first probe at open decides; a host need not wait `rise` rounds to start.
            host.health.healthy = True
        elif host.health.success(probe=True) is Transition.RESTORED:
            logger.info("%s: host %s (%s) back in rotation", self.name, host.url, host.role)

    def record_failure(self, host: Host) -> None:
        """A probe or a live statement could not reach ``host``."""
        if host.health.failure() is not Transition.EJECTED:
            return
        logger.warning(
            "%s: host %s (%s) leaves rotation: %s", self.name, host.url, host.role, host.last_error
        )
        if host is self._primary:
            self._primary = None
        self._wake.set()

    def _measure_lag(self) -> None:
        if self.dialect != "postgresql":
            for host in self.hosts:
                host.lagging = not host.primary and host.lag_s > self.options.max_lag_s
            return
        now = self.clock()
        for host in self.hosts:
            if host.primary or not host.position or self._primary is None:
                continue
            host.lag_s = self._trail.lag_s(lsn(host.position), now)
            host.lagging = host.lag_s > self.options.max_lag_s

    def _elect(self) -> None:
        """The host in rotation that takes writes; the current one keeps them while it can."""
        current = self._primary
        claiming = [h for h in self.hosts if h.usable and h.primary]
        if len(claiming) > 1 and len(claiming) != self._claiming:
            # Two writable hosts (an old primary back after a promotion): writes stay where
            # they go now; fencing the other one is the cluster manager's job.
            logger.warning(
                "%s: %d hosts take writes (%s); writes stay on %s",
                self.name,
                len(claiming),
                ", ".join(h.url for h in claiming),
                current.url if current else claiming[0].url,
            )
        self._claiming = len(claiming)
        if current is not None and current.usable and current.primary:
            return
        found = next((h for h in self.hosts if h.usable and h.primary), None)
        if found is not current:
            if found is not None:
                # At open it is news to nobody; later it is a failover.
                log = logger.warning if self.rounds else logger.info
                log("%s: writes go to %s from now on", self.name, found.url)
            self._trail.clear()
            self._primary = found

    # Choosing hosts ----------------------------------------------------------------------

    def writer(self) -> Host:
        """The primary, or UNAVAILABLE at once when none is in rotation (no waiting)."""
        if self._primary is None or not self._primary.usable:
            raise DbUnavailable(
                f"{self.name}: no primary in rotation", retry_after_s=self.options.interval_s
            )
        return self._primary

    async def readers(self) -> list[Host]:
        """Hosts for a read under the current read options, best first (a retry takes the
        second)."""
        options = readpref.current()
        primary = self._primary if self._primary is not None and self._primary.usable else None
        if options.preference == readpref.PRIMARY:
            return [primary] if primary else []
        replicas = [h for h in self.hosts if h.usable and h is not primary]
        if primary is not None:
            # Without a primary the lag is unknown and a stale read beats none.
            replicas = [h for h in replicas if not h.lagging]
        if options.token:
            replicas = await self._caught_up(replicas, options.token)
        if options.preference == readpref.ANY:
            pool = [*replicas, *([primary] if primary else [])]
            return [pool[i] for i in self.policy.order(pool)]
        ordered = [replicas[i] for i in self.policy.order(replicas)]
        return [*ordered, *([primary] if primary else [])]

    async def _caught_up(self, replicas: list[Host], token: str) -> list[Host]:
        """The replicas that have applied ``token``; when no cached position says so, one
        replica is asked now (the cache is up to one interval old)."""
        flavor, wanted = parse_token(token)
        ours = self.hosts[0].probe.flavor
        if flavor != ours and {flavor, ours} != {"mysql", "mariadb"}:
            raise BadStatement("consistency_token", f"not a token of a {self.dialect} database")
        fresh = [h for h in replicas if reached(flavor, h.position, wanted)]
        stale = [h for h in replicas if h not in fresh]
        if fresh or not stale:
            return fresh
        host = stale[self.policy.order(stale)[0]]
        try:
            result = await host.backend.execute(
                host.probe.position_sql(primary=False),
                (),
                read_only=True,
                max_rows=1,
                timeout_s=self.options.timeout_s,
            )
        except DbError:
            return []
        position = result.rows[0].values[0].string_value if result.rows else ""
        if position and reached(flavor, position, wanted):
            host.position = position
            return [host]
        return []
