"""A gRPC service config: retries of UNAVAILABLE only where the contract says they are safe,
round-robin over replicas, and client-side health checking.

The .proto files mark RPCs ``idempotency_level = IDEMPOTENT`` or ``NO_SIDE_EFFECTS``; this reads
those options from the generated descriptors, so the retry policy follows the contract instead of
a hand-kept list. gRPC's own retry machinery (with backoff and retry throttling) does the work.

The services are found the same way: every ``*_service_pb2`` module generated into
``paca.{api,db,monitor}.v1`` contributes its services, so an RPC or a service added to the
contract is covered by the next ``make protos`` with no edit here. An RPC that declares no
idempotency (``Call``, ``GraphQL``, ``CallStream``, ``FanOut``: each may send a non-idempotent
request upstream) is never retried by the channel.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from types import ModuleType
from typing import Any

from google.protobuf import descriptor, descriptor_pb2

import paca.api.v1
import paca.db.v1
import paca.monitor.v1

PACKAGES: tuple[ModuleType, ...] = (paca.api.v1, paca.db.v1, paca.monitor.v1)


def _services() -> tuple[descriptor.ServiceDescriptor, ...]:
    """Every service of the generated ``*_service_pb2`` modules, by full name."""
    found: dict[str, descriptor.ServiceDescriptor] = {}
    for package in PACKAGES:
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.endswith("_service_pb2"):
                continue
            generated = importlib.import_module(f"{package.__name__}.{module.name}")
            for service in generated.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return tuple(found[name] for name in sorted(found))


SERVICES = _services()
_SAFE = {
    descriptor_pb2.MethodOptions.IDEMPOTENT,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
}


def safe_to_retry(method: descriptor.MethodDescriptor) -> bool:
    return method.GetOptions().idempotency_level in _SAFE


def retryable_methods() -> list[tuple[str, str]]:
    """(service, method) pairs whose RPCs may be retried on UNAVAILABLE."""
    return [
        (service.full_name, method.name)
        for service in SERVICES
        for method in service.methods
        if safe_to_retry(method)
    ]


def service_config(max_attempts: int = 4) -> str:
    """JSON service config for ``grpc.service_config``."""
    names = [{"service": s, "method": m} for s, m in retryable_methods()]
    config: dict[str, Any] = {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        # Stop retrying when most calls fail: retries must not multiply an outage.
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        # With several replicas behind one target, spread calls over them and skip any that
        # reports NOT_SERVING (a replica draining before it stops).
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
    return json.dumps(config)
