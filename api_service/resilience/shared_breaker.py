"""Circuit breakers whose trips every replica sees, through Redis.

Each replica keeps its own :class:`~api_service.resilience.breaker.CircuitBreaker` (counting,
windows and probes stay local, so a call never waits on Redis); what is shared is the verdict::

    a breaker opens here  ──▶ SET <prefix><name> "open" PX open_ms; PUBLISH <prefix>events
    a breaker closes here ──▶ DEL <prefix><name>;                   PUBLISH <prefix>events
    Redis is back after a failed publish ──▶ what is still open here is published again
    an event from another replica ──▶ the local breaker of that name opens (until the same
        moment as the origin's) or closes; it is not published again
    (re)subscribing, or building a breaker ──▶ PTTL <prefix><name>: open for what remains

Half-open is not shared: when the open time is up each replica admits its own probes, and the
first replica whose probes pass closes the breaker everywhere.

Redis never hangs or fails a call: publishing runs in the background under a short timeout, the
subscription reconnects every ``retry_s`` while Redis is away, and meanwhile every replica's
breakers simply work on their own (``degraded`` says so, for stats). Hand-written: no Python
breaker library shares state through Redis (pybreaker's Redis storage shares only counters, with
a blocking client and a round trip per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from api_service.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker, Listener

logger = logging.getLogger(__name__)
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class SharedCircuitBreaker(CircuitBreaker):
    """A local breaker that tells its hub about its own trips and takes other replicas' ones."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        hub: SharedBreakers,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Listener | None = None,
    ) -> None:
        super().__init__(name, config, clock=clock, on_transition=on_transition)
        self._hub = hub
        self._remote = False

    def _transition(self, new: BreakerState) -> None:
        super()._transition(new)
        if not self._remote and new is not BreakerState.HALF_OPEN:
            self._hub.publish(self, new)

    def apply_remote(self, state: BreakerState, open_remaining_s: float = 0.0) -> None:
        """Take another replica's verdict: open for ``open_remaining_s`` more, or closed."""
        self._remote = True
        try:
            if state is BreakerState.OPEN and open_remaining_s > 0:
                if self.state is not BreakerState.OPEN:
                    self._transition(BreakerState.OPEN)
                # Half-open at the same moment as the replica that tripped.
                self._opened_at = self._clock() + open_remaining_s - self.config.open_s
            elif state is BreakerState.CLOSED and self.state is not BreakerState.CLOSED:
                self._transition(BreakerState.CLOSED)
        finally:
            self._remote = False


class SharedBreakers:
    """The Redis side of every shared breaker of a process: one client, one subscription.

    Lifecycle: build breakers with ``breaker()`` (the first one starts the subscription, or
    ``open()`` does; Redis is never raised), ``aclose()`` (idempotent).

    Args:
        url: Redis URL; never logged (it may hold a password).
        timeout_s: Longest a Redis command may take.
        retry_s: Pause before subscribing again after Redis failed.
        prefix: Key and channel prefix; replicas sharing breakers use the same one.
        clock: Monotonic seconds for the breakers.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.1,
        retry_s: float = 1.0,
        prefix: str = "paca:breaker:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.prefix = prefix
        self.channel = prefix + "events"
        self.instance = uuid.uuid4().hex
        self._clock = clock
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._breakers: dict[str, SharedCircuitBreaker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._publish_failing = False
        self.published = 0
        self.publish_failures = 0
        self.applied = 0

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "ok"
        return f"<SharedBreakers {state} breakers={len(self._breakers)} applied={self.applied}>"

    @property
    def degraded(self) -> bool:
        """True while trips of the shared breakers in use are not shared (not subscribed, or
        the last publish failed)."""
        in_use = bool(self._breakers) or self._listener is not None
        return in_use and (not self._subscribed.is_set() or self._publish_failing)

    def breaker(
        self, name: str, config: BreakerConfig, on_transition: Listener | None = None
    ) -> SharedCircuitBreaker:
        """A new shared breaker (replacing one of the same name), synced with Redis soon."""
        made = SharedCircuitBreaker(
            name, config, self, clock=self._clock, on_transition=on_transition
        )
        self._breakers[name] = made
        if self._subscribed.is_set():
            self._spawn(self._resync([made]))
        elif self._listener is None and not self._closing.is_set():
            with contextlib.suppress(RuntimeError):  # no running loop: stays local
                self._listener = asyncio.get_running_loop().create_task(
                    self._listen(), name="shared-breakers"
                )
        return made

    def forget(self, name: str) -> None:
        self._breakers.pop(name, None)

    async def open(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="shared-breakers")

    async def subscribed(self) -> None:
        """Wait until the subscription is up (for tests and warm-up)."""
        await self._subscribed.wait()

    async def aclose(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    def publish(self, breaker: SharedCircuitBreaker, state: BreakerState) -> None:
        """Tell the other replicas (in the background; never raises, never waits)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous test): nothing to share with
        self._spawn(self._publish(breaker.name, state, breaker.config.open_s))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, name: str, state: BreakerState, open_s: float) -> None:
        open_ms = max(1, round(open_s * 1000))
        event = json.dumps(
            {"name": name, "state": state.value, "open_ms": open_ms, "from": self.instance}
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    if state is BreakerState.OPEN:
                        pipe.set(self.prefix + name, "open", px=open_ms)
                    else:
                        pipe.delete(self.prefix + name)
                    pipe.publish(self.channel, event)
                    await pipe.execute()
        except _REDIS_ERRORS as exc:
            self.publish_failures += 1
            if not self._publish_failing:
                logger.warning("breaker %s not shared, Redis failed: %s", name, type(exc).__name__)
            self._publish_failing = True
            return
        self.published += 1
        self._publish_failing = False

    async def _listen(self) -> None:
        while not self._closing.is_set():
            pubsub = self._redis.pubsub()
            try:
                async with asyncio.timeout(max(1.0, self.timeout_s)):
                    await pubsub.subscribe(self.channel)
                    await self._resync(list(self._breakers.values()))
                self._subscribed.set()
                logger.info("shared breakers subscribed")
                await self._republish()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._apply(message["data"])
            except _REDIS_ERRORS as exc:
                if self._subscribed.is_set():
                    logger.warning("shared breakers degraded to local: %s", type(exc).__name__)
                self._subscribed.clear()
            finally:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await asyncio.wait_for(pubsub.aclose(), self.timeout_s)  # type: ignore[no-untyped-call]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.retry_s)

    async def _republish(self) -> None:
        """Share what tripped here while Redis was away (for the open time that remains)."""
        if not self._publish_failing:
            return
        self._publish_failing = False
        for breaker in list(self._breakers.values()):
            remaining_s = breaker.retry_after_s()
            if breaker.state is BreakerState.OPEN and remaining_s > 0:
                await self._publish(breaker.name, BreakerState.OPEN, remaining_s)

    async def _resync(self, breakers: list[SharedCircuitBreaker]) -> None:
        """Open each breaker whose key says another replica has it open."""
        if not breakers:
            return
        try:
            async with asyncio.timeout(max(1.0, self.timeout_s)):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for breaker in breakers:
                        pipe.pttl(self.prefix + breaker.name)
                    remaining = await pipe.execute()
        except _REDIS_ERRORS:
            return
        for breaker, ms in zip(breakers, remaining, strict=True):
            if isinstance(ms, int) and ms > 0:
                breaker.apply_remote(BreakerState.OPEN, ms / 1000)
                self.applied += 1

    def _apply(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
            name, state, open_ms = event["name"], BreakerState(event["state"]), event["open_ms"]
        except (ValueError, KeyError, TypeError):
            logger.warning("shared breakers: malformed event ignored")
            return
        breaker = self._breakers.get(name)
        if event.get("from") == self.instance or breaker is None:
            return
        breaker.apply_remote(state, open_ms / 1000)
        self.applied += 1
