"""A repeated call to a cached endpoint takes its remembered plan (``api_service.cacheplan``):
its replies, counters and refusals are those of the long way, under every kind of parent span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service import UniversalAPIClient
from api_service.errors import ForbiddenTarget, UnknownEndpoint, UpstreamTimeout
from api_service.safety import NetworkPolicy
from tests.conftest import Upstream
from tests.integration.test_api_facade import settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NAME = "echo.cached"


@pytest.fixture
async def client(
    upstream: Upstream, tmp_path: Path, spans: InMemorySpanExporter
) -> AsyncIterator[UniversalAPIClient]:
    async with UniversalAPIClient(upstream.url, settings=settings(tmp_path)) as client:
        yield client


@pytest.fixture(params=["no parent", "unsampled parent", "sampled parent"])
def parent(request: pytest.FixtureRequest) -> Iterator[AbstractContextManager[object]]:
    if request.param == "no parent":
        yield nullcontext()
        return
    sampled = request.param == "sampled parent"
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
    yield trace.use_span(trace.NonRecordingSpan(context))


def cached(upstream: Upstream, *, enabled: bool = True, schema: str = "") -> api_types_pb2.Endpoint:
    endpoint = api_types_pb2.Endpoint(
        name=NAME,
        provider="local",
        base_url=upstream.url,
        path="/echo",
        cache=api_types_pb2.CachePolicy(enabled=enabled, override_upstream=True),
        response_schema_json=schema,
    )
    endpoint.cache.ttl.FromSeconds(60)
    return endpoint


async def call(client: UniversalAPIClient, **kwargs: float) -> api_service_pb2.CallResponse:
    # A new message each time, as a server gets it.
    return await client.caller.call(api_service_pb2.CallRequest(endpoint=NAME), **kwargs)


async def test_repeated_hits_reply_as_the_first_count_in_stats_and_leave_no_record(
    client: UniversalAPIClient, upstream: Upstream, parent: AbstractContextManager[object]
) -> None:
    client.registry.register(cached(upstream, schema='{"type": "object"}'))
    with parent:
        first = await call(client)
        hits = [await call(client, time_remaining_s=5.0) for _ in range(3)]
    assert (first.from_cache, first.attempts) == (False, 1)
    for hit in hits:
        assert (hit.from_cache, hit.attempts) == (True, 0)
        assert hit.latency.ToNanoseconds() > 0
        hit.ClearField("latency")
        hit.from_cache, hit.attempts = False, 1
        first.ClearField("latency")
        assert hit == first
    assert len(upstream.seen_headers) == 1
    stats = client.caller.stats.targets()[0]
    assert (stats.endpoint, stats.calls, stats.cache_misses, stats.cache_hits) == (NAME, 1, 1, 3)
    assert stats.host == upstream.url.removeprefix("http://")
    await client.caller.recorder.flushed()
    assert [r.endpoint for r in client.records] == [NAME]


async def test_a_changed_endpoint_or_policy_is_honoured_by_the_next_call(
    client: UniversalAPIClient, upstream: Upstream, parent: AbstractContextManager[object]
) -> None:
    client.registry.register(cached(upstream))
    with parent:
        await call(client)
        assert (await call(client)).from_cache
        client.registry.register(cached(upstream, enabled=False))
        assert not (await call(client)).from_cache
        client.registry.register(cached(upstream))
        await call(client)
        assert (await call(client)).from_cache
        with pytest.raises(UpstreamTimeout):
            await call(client, time_remaining_s=0.0)
        allowed = client.caller.transport.network_policy
        client.caller.transport.network_policy = NetworkPolicy()  # loopback not allowed
        with pytest.raises(ForbiddenTarget):
            await call(client)
        client.caller.transport.network_policy = allowed
        assert (await call(client)).from_cache
        client.registry.remove(NAME)
        with pytest.raises(UnknownEndpoint):
            await call(client)
    assert len(upstream.seen_headers) == 2  # the entry of the first call outlived the change
