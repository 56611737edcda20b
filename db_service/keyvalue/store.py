"""One named Redis database: commands, pipelines, pub/sub, and its figures (the engine).

Works in-process without gRPC: :class:`KeyValueStore` takes validated :class:`Call` objects and
returns KeyValueResult messages, raising db_service errors. Every operation runs under one time
limit (``asyncio.timeout``): redis-py has no per-command timeout, and a command cancelled there
has its connection dropped and replaced by the pool, so a late reply can never be read as the
answer to the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from paca.db.v1 import key_value_service_pb2 as pb
from redis import exceptions as redis_errors

from db_service.keyvalue.clients import Clients, make_clients, pool_figures
from db_service.keyvalue.commands import Budget, Call
from db_service.keyvalue.errors import (
    ReadOnlyKeyValue,
    ReplyTooLarge,
    TooManySubscriptions,
    error_code,
    translate,
)
from db_service.keyvalue.settings import KeyValueSettings, RedisDatabaseSettings
from db_service.keyvalue.stats import CommandStats
from paca_runtime.errors import InvalidArgument

logger = logging.getLogger(__name__)


class KeyValueStore:
    """A Redis database with a pooled command client and a separate subscription client.

    Lifecycle: ``open()`` once (builds clients, no network), then any calls, then ``aclose()``
    (idempotent; ends open subscriptions).
    """

    def __init__(self, database: RedisDatabaseSettings, settings: KeyValueSettings) -> None:
        self.name = database.name
        self.target = database.target
        self.settings = settings
        self.stats = CommandStats()
        self.subscriptions = 0
        self.messages_delivered = 0
        self.in_flight = 0
        self._clients: Clients | None = None
        self._secrets = (self.target.password, self.target.sentinel_password)

    def __repr__(self) -> str:
        return (
            f"<KeyValueStore {self.name} {self.target.mode} {self.target.redacted()}"
            f" in_flight={self.in_flight} subscriptions={self.subscriptions}>"
        )

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            raise RuntimeError(f"redis database {self.name!r} is not open")
        return self._clients

    async def open(self) -> None:
        if self._clients is None:
            self._clients = make_clients(self.target, self.settings)
            logger.info(
                "redis database %s (%s) at %s",
                self.name,
                self.target.mode,
                self.target.redacted(),
            )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.aclose()

    async def ping(self, timeout_s: float) -> None:
        """One PING within ``timeout_s`` (the health check); raises when Redis does not answer."""
        async with asyncio.timeout(timeout_s):
            await self.clients.commands.ping()

    def _error(self, exc: BaseException) -> BaseException:
        return translate(exc, self.name, self._secrets)

    def check_writable(self, what: str) -> None:
        """Refuse a write to a database configured read-only (``?read_only=true``)."""
        if self.target.read_only:
            raise ReadOnlyKeyValue(f"redis database {self.name!r} is read-only: {what} refused")

    def limit(self, timeout_s: float | None) -> float:
        """The time limit of an operation: the caller's, or the configured default."""
        return self.settings.command_timeout_s if timeout_s is None else timeout_s

    async def run(
        self, call: Call, *, timeout_s: float | None, max_bytes: int
    ) -> pb.KeyValueResult:
        """Run one command in one round trip."""
        if call.writes:
            self.check_writable(call.name)
        started = time.perf_counter()
        failed = True
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.limit(timeout_s)):
                raw = await call.issue(self.clients.commands)
            result = call.convert(raw, Budget(max_bytes), max_bytes)
            failed = False
            return result
        except ReplyTooLarge:
            failed = False
            raise
        except Exception as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.in_flight -= 1
            self.stats.record(call.name, time.perf_counter() - started, failed=failed)

    async def pipeline(
        self,
        calls: Sequence[Call],
        *,
        transaction: bool,
        watch_keys: Sequence[str] = (),
        timeout_s: float | None,
        max_bytes: int,
    ) -> list[pb.KeyValueResult]:
        """Run ``calls`` in one round trip (MULTI/EXEC when ``transaction``); one result each.

        A command that fails on the server gets an ``error`` result and the others still run
        (Redis does not roll back a transaction). With ``watch_keys`` the transaction runs only
        if none of them changed after the WATCH (else TransactionAborted).
        """
        if watch_keys and not transaction:
            raise InvalidArgument("watch_keys", "only with transaction")
        for call in calls:
            if call.writes:
                self.check_writable(call.name)
        label = "MULTI" if transaction else "PIPELINE"
        started = time.perf_counter()
        failed = True
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.limit(timeout_s)):
                raws = await self._execute(calls, transaction, watch_keys)
            failed = False
        except Exception as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.in_flight -= 1
            self.stats.record(label, time.perf_counter() - started, failed=failed)
        budget = Budget(max_bytes)
        results = []
        for call, raw in zip(calls, raws, strict=True):
            result = self._pipeline_result(call, raw, budget, max_bytes)
            self.stats.count(call.name, failed=result.HasField("error"))
            results.append(result)
        return results

    async def _execute(
        self, calls: Sequence[Call], transaction: bool, watch_keys: Sequence[str]
    ) -> list[Any]:
        async with self.clients.commands.pipeline(transaction=transaction) as pipe:
            if watch_keys:
                # WATCH puts the pipeline in immediate mode; MULTI starts buffering again.
                await pipe.watch(*watch_keys)
                pipe.multi()
            for call in calls:
                call.issue(pipe)
            return list(await pipe.execute(raise_on_error=False))

    def _pipeline_result(
        self, call: Call, raw: Any, budget: Budget, max_bytes: int
    ) -> pb.KeyValueResult:
        if isinstance(raw, redis_errors.ResponseError):
            message = translate(raw, self.name, self._secrets)
            return pb.KeyValueResult(
                error=pb.KeyValueError(code=error_code(raw), message=str(message))
            )
        if isinstance(raw, Exception):
            raise self._error(raw) from raw
        try:
            return call.convert(raw, budget, max_bytes)
        except ReplyTooLarge as exc:
            return pb.KeyValueResult(error=pb.KeyValueError(code=exc.engine_code, message=str(exc)))

    async def publish(self, channel: str, message: bytes, *, timeout_s: float | None) -> int:
        self.check_writable("PUBLISH")
        started = time.perf_counter()
        failed = True
        try:
            async with asyncio.timeout(self.limit(timeout_s)):
                receivers = int(await self.clients.commands.publish(channel, message))
            failed = False
            return receivers
        except Exception as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.stats.record("PUBLISH", time.perf_counter() - started, failed=failed)

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str]
    ) -> AsyncGenerator[pb.SubscribeResponse, None]:
        """Stream messages of ``channels`` and ``patterns``: first ``ready`` once Redis confirmed
        every subscription, then each message in delivery order, until the consumer stops.

        The subscription holds its own connection, closed (and so unsubscribed on the server)
        as soon as the iterator is closed or cancelled.
        """
        if self.subscriptions >= self.settings.max_subscriptions:
            raise TooManySubscriptions(
                f"redis database {self.name!r} has {self.subscriptions} open subscriptions,"
                f" the most allowed (PACA_REDIS_MAX_SUBSCRIPTIONS)"
            )
        self.subscriptions += 1
        pubsub = self.clients.subscriptions.pubsub()
        try:
            wanted = len(set(channels)) + len(set(patterns))
            try:
                async with asyncio.timeout(self.settings.command_timeout_s):
                    if channels:
                        await pubsub.subscribe(*channels)
                    if patterns:
                        await pubsub.psubscribe(*patterns)
                    confirmed = 0
                    while confirmed < wanted:
                        message = await pubsub.get_message(timeout=None)
                        if message and message["type"] in ("subscribe", "psubscribe"):
                            confirmed += 1
            except Exception as exc:
                raise self._error(exc) from exc
            yield pb.SubscribeResponse(ready=pb.SubscriptionReady(subscriptions=wanted))
            while True:
                try:
                    message = await pubsub.get_message(timeout=None)
                except Exception as exc:
                    raise self._error(exc) from exc
                if message is None or message["type"] not in ("message", "pmessage"):
                    continue
                pattern = message["pattern"]
                self.messages_delivered += 1
                yield pb.SubscribeResponse(
                    message=pb.PubSubMessage(
                        channel=message["channel"].decode(errors="replace"),
                        pattern="" if pattern is None else pattern.decode(errors="replace"),
                        data=message["data"],
                    )
                )
        finally:
            self.subscriptions -= 1
            # Shielded: a cancelled stream must still give its connection back.
            with contextlib.suppress(Exception):
                await asyncio.shield(pubsub.aclose())

    def figures(self) -> pb.KeyValueDatabaseStats:
        stats = pb.KeyValueDatabaseStats(
            database=self.name,
            target=self.target.redacted(),
            mode=self.target.mode,
            pool_size=self.settings.pool_size,
            pool_in_use=self.in_flight,
            subscriptions=self.subscriptions,
            messages_delivered=self.messages_delivered,
            commands=self.stats.to_proto(),
        )
        found = pool_figures(self._clients) if self._clients is not None else None
        if found is not None:
            stats.pool_in_use, stats.pool_idle = found
        return stats
