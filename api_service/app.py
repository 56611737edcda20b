"""The api_service process: the call engine, its gRPC server, the call log and reporting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc
from paca.monitor.v1 import monitor_types_pb2

from api_service.auth.keys import KeyState
from api_service.auth.manager import AuthManager
from api_service.cache_redis import cache_degraded, response_cache
from api_service.caller import OutboundCaller
from api_service.calllog import CallRecorder, DbServiceSink
from api_service.endpoints_config import load_endpoints
from api_service.registry import APIRegistry
from api_service.registry_store import DurableRegistry
from api_service.resilience import BreakerState, Guards
from api_service.safety import NetworkPolicy, parse_networks
from api_service.servicer import ApiServicer
from api_service.settings import ApiSettings
from api_service.transport import HttpTransport
from api_service.webhooks import Webhooks, WebhookSettings
from paca_runtime import GrpcServer, MonitorReporter, RuntimeSettings, SettingsSource
from paca_runtime.channels import open_channel
from paca_runtime.reporting import counter, gauge
from paca_runtime.settings import SettingsError
from paca_runtime.telemetry import grpc_client_interceptors

logger = logging.getLogger(__name__)

_CIRCUIT_LEVEL = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
SERVICE_NAME = api_service_pb2.DESCRIPTOR.services_by_name["ApiService"].full_name


class ApiApp:
    """api_service as one process (see paca_runtime.process.run)."""

    name = "api_service"

    def __init__(
        self,
        settings: ApiSettings,
        runtime: RuntimeSettings,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.db_channel: grpc.aio.Channel | None = None
        if settings.db_address:
            self.db_channel = open_channel(
                settings.db_address,
                runtime.security,
                interceptors=grpc_client_interceptors(settings.db_address),
            )
        sink = DbServiceSink(self.db_channel) if self.db_channel is not None else None
        self.recorder = CallRecorder(settings.calllog, sink)
        # Endpoints shared by every replica through db_service, else this process's memory.
        self.registry: APIRegistry = (
            DurableRegistry(self.db_channel, refresh_s=settings.registry_refresh_s)
            if self.db_channel is not None and settings.registry_durable
            else APIRegistry()
        )
        # Read (and checked) now: a bad endpoints file stops the process before it serves.
        self.config_endpoints = (
            load_endpoints(Path(settings.endpoints_file)) if settings.endpoints_file else []
        )
        self.transport = HttpTransport(
            network_policy=NetworkPolicy(parse_networks(settings.allowed_networks)),
            max_response_bytes=settings.max_response_bytes,
        )
        self.caller = OutboundCaller(
            self.registry,
            self.transport,
            self.recorder,
            default_timeout_s=settings.api_timeout_s,
            max_data_bytes=settings.calllog.max_data_bytes,
            guards=Guards(settings.resilience),
            cache=response_cache(
                settings.cache_max_bytes, settings.cache_redis_url, settings.cache_redis_timeout_s
            ),
            # Every secret source is read now: a missing key file stops the process, named.
            auth=AuthManager(settings.auth),
        )
        self.server = GrpcServer(
            self.name,
            settings.listen,
            reuse_port=settings.reuse_port,
            security=runtime.security,
        )
        servicer = ApiServicer(self.caller, self.registry)
        self.server.add_service(
            SERVICE_NAME,
            lambda s: api_service_pb2_grpc.add_ApiServiceServicer_to_server(servicer, s),
        )
        # Webhook events are stored through db_service: without it there are no webhooks.
        self.webhooks: Webhooks | None = None
        if self.db_channel is not None:
            self.webhooks = Webhooks(webhooks or WebhookSettings(), self.db_channel)
            self.webhooks.register(self.server)
        self.reporter: MonitorReporter | None = None

    def __repr__(self) -> str:
        return f"<ApiApp {self.server.bound_address} {self.recorder!r}>"

    @classmethod
    def from_settings(cls, source: SettingsSource, runtime: RuntimeSettings) -> ApiApp:
        return cls(
            ApiSettings.from_source(source, runtime), runtime, WebhookSettings.from_source(source)
        )

    def figures(self) -> Iterator[monitor_types_pb2.Metric]:
        yield counter("api_calls_total", self.caller.calls)
        yield counter("api_call_failures_total", self.caller.failures)
        yield counter("calllog_recorded_total", self.recorder.recorded)
        yield counter("calllog_stored_total", self.recorder.stored)
        yield counter("calllog_spooled_total", self.recorder.spooled)
        yield counter("calllog_rejected_total", self.recorder.rejected)
        yield gauge("calllog_pending", self.recorder.pending)
        yield gauge("calllog_spool_batches", self.recorder.spool_files)
        yield gauge("endpoints_registered", len(self.registry))
        for t in self.caller.stats.targets():
            labels = {"endpoint": t.endpoint} if t.endpoint else {"host": t.host}
            yield counter("api_target_calls_total", t.calls, **labels)
            yield counter("api_target_successes_total", t.successes, **labels)
            yield counter("api_target_attempts_total", t.attempts, **labels)
            yield counter("api_target_retries_denied_total", t.retries_denied, **labels)
            yield counter("api_target_circuit_rejections_total", t.breaker_rejections, **labels)
            yield counter("api_target_limiter_waits_total", t.limiter_waits, **labels)
            yield counter("api_target_limiter_rejections_total", t.limiter_rejections, **labels)
            yield counter("api_target_limiter_degraded_total", t.limiter_degraded, **labels)
            p50, p95, p99 = t.percentiles_ms(0.50, 0.95, 0.99)
            yield gauge("api_target_latency_p50_ms", p50, **labels)
            yield gauge("api_target_latency_p95_ms", p95, **labels)
            yield gauge("api_target_latency_p99_ms", p99, **labels)
        breakers = self.caller.guards.breakers_by_name()
        for name, breaker in breakers.items():
            # 0 closed, 1 half-open, 2 open: alert rules can compare against a threshold.
            state = breaker.current_state()
            yield gauge("api_circuit_state", _CIRCUIT_LEVEL[state], circuit=name)
            kind, _, target = name.partition(":")
            if kind == "endpoint":
                # The figure the default BreakerOpen alert rule watches.
                yield gauge("api_breaker_open", float(state is BreakerState.OPEN), endpoint=target)
        limiter = self.caller.guards.global_limiter
        if limiter is not None:
            yield gauge("api_global_limits_degraded", float(limiter.degraded))
        for key in self.caller.auth.health():
            # 1 while the key is usable; its label names it, never the key.
            usable = float(key.state is KeyState.ACTIVE)
            yield gauge("api_key_usable", usable, pool=key.pool, key=key.label)
        yield gauge("api_cache_degraded", float(cache_degraded(self.caller.cache)))
        shared = self.caller.guards.shared_breakers
        if shared is not None:
            yield gauge("api_shared_breakers_degraded", float(shared.degraded))
        if self.webhooks is not None:
            yield from self.webhooks.figures()

    async def start(self) -> dict[str, str]:
        await self.transport.open()
        await self.caller.guards.open()
        await self.registry.open()
        await self._register_config_endpoints()
        # SIGHUP re-reads every key source (a rotated key file) and lifts quarantines.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_keys)
        await self.recorder.start()
        await self.server.start()
        addresses = {"grpc": self.server.bound_address}
        if self.webhooks is not None and (intake := await self.webhooks.start()):
            addresses["webhook"] = intake
        self.reporter = MonitorReporter.for_service(
            self.name, self.server.bound_address, self.runtime, self.figures
        )
        self.reporter.start()
        return addresses

    def reload_keys(self) -> None:
        """Re-read every key source; a source that fails leaves the keys as they were."""
        try:
            self.caller.auth.reload()
        except SettingsError as exc:
            logger.error("key pools not reloaded: %s", exc)
            return
        logger.info("key pools reloaded")

    async def _register_config_endpoints(self) -> None:
        """Register the endpoints file's endpoints (they replace stored ones of their names)."""
        for endpoint in self.config_endpoints:
            # With db_service down it is served now and stored once db_service answers.
            await self.registry.save(endpoint)

    async def stop(self) -> None:
        # In-flight calls finish first; then their records are sent or spooled.
        await self.server.stop(self.runtime.shutdown_grace_s, self.runtime.shutdown_drain_s)
        if self.webhooks is not None:
            await self.webhooks.aclose()
        await self.recorder.aclose()
        await self.transport.aclose()
        await self.caller.guards.aclose()
        await self.registry.aclose()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self.caller.cache is not None:
            await self.caller.cache.aclose()
        if self.reporter is not None:
            await self.reporter.aclose()
        if self.db_channel is not None:
            await self.db_channel.close()
