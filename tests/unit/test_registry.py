"""The endpoint registry validates whole endpoints and names the bad field."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from paca.api.v1 import api_types_pb2

from api_service.errors import InvalidCall, UnknownEndpoint
from api_service.registry import APIRegistry

pytestmark = pytest.mark.unit


def endpoint(**fields: object) -> api_types_pb2.Endpoint:
    base: dict[str, object] = {
        "name": "github.user",
        "provider": "github",
        "base_url": "https://api.github.com",
        "path": "/users/{login}",
    }
    base.update(fields)
    return api_types_pb2.Endpoint(**base)  # type: ignore[arg-type]


def fixed_clock(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def test_register_keeps_create_time_and_moves_update_time() -> None:
    ticks = iter([100, 200])
    registry = APIRegistry(clock=lambda: fixed_clock(next(ticks)))
    first, created = registry.register(endpoint())
    second, created_again = registry.register(endpoint(path="/u/{login}"))
    assert created
    assert not created_again
    assert first.create_time.seconds == second.create_time.seconds == 100
    assert second.update_time.seconds == 200
    assert registry.get("github.user").path == "/u/{login}"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "endpoint.name"),
        ({"name": "has space"}, "endpoint.name"),
        ({"provider": ""}, "endpoint.provider"),
        ({"provider": "p" * 51}, "endpoint.provider"),
        ({"base_url": "ftp://x.com"}, "endpoint.base_url"),
        ({"base_url": "https://"}, "endpoint.base_url"),
        ({"base_url": "http://x.com:99999"}, "endpoint.base_url"),
        ({"path": "users"}, "endpoint.path"),
        ({"method": 99}, "endpoint.method"),
        ({"response_schema_json": "{"}, "endpoint.response_schema_json"),
        (
            {"default_headers": [api_types_pb2.Header(name="Bad Name", value="v")]},
            "endpoint.default_headers[0].name",
        ),
    ],
)
def test_bad_endpoint_names_the_field_and_changes_nothing(
    fields: dict[str, object], field: str
) -> None:
    registry = APIRegistry()
    with pytest.raises(InvalidCall) as caught:
        registry.register(endpoint(**fields))
    assert caught.value.field == field
    assert len(registry) == 0


def test_list_filters_by_provider_and_sorts_by_name() -> None:
    registry = APIRegistry()
    registry.register(endpoint(name="b", provider="one"))
    registry.register(endpoint(name="a", provider="one"))
    registry.register(endpoint(name="c", provider="two"))
    assert [e.name for e in registry.list()] == ["a", "b", "c"]
    assert [e.name for e in registry.list("one")] == ["a", "b"]


def test_unknown_endpoint_is_not_found() -> None:
    registry = APIRegistry()
    with pytest.raises(UnknownEndpoint):
        registry.get("nope")
    with pytest.raises(UnknownEndpoint):
        registry.remove("nope")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"retry": api_types_pb2.RetryPolicy(max_attempts=-1)}, "endpoint.retry.max_attempts"),
        (
            {"retry": api_types_pb2.RetryPolicy(backoff_multiplier=0.5)},
            "endpoint.retry.backoff_multiplier",
        ),
        (
            {"retry": api_types_pb2.RetryPolicy(retryable_status_codes=[999])},
            "endpoint.retry.retryable_status_codes[0]",
        ),
        (
            {"circuit_breaker": api_types_pb2.CircuitBreakerPolicy(failure_rate_threshold=1.5)},
            "endpoint.circuit_breaker.failure_rate_threshold",
        ),
        (
            {"rate_limit": api_types_pb2.RateLimitPolicy(requests_per_second=-1)},
            "endpoint.rate_limit.requests_per_second",
        ),
        (
            {"rate_limit": api_types_pb2.RateLimitPolicy(max_concurrency=-2)},
            "endpoint.rate_limit.max_concurrency",
        ),
    ],
)
def test_bad_policy_values_are_refused_naming_the_field(
    policy: dict[str, object], field: str
) -> None:
    registry = APIRegistry()
    with pytest.raises(InvalidCall) as caught:
        registry.register(endpoint(**policy))
    assert caught.value.field == field
    assert len(registry) == 0
