"""A gRPC service config: retries of UNAVAILABLE only where the contract says they are safe,
round-robin over replicas, and client-side health checking.

The .proto files mark RPCs ``idempotency_level = IDEMPOTENT`` or ``NO_SIDE_EFFECTS``; this reads
those options from the generated descriptors, so the retry policy follows the contract instead of
a hand-kept list. gRPC's own retry machinery (with backoff and retry throttling) does the work.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import descriptor, descriptor_pb2

from paca.api.v1 import api_service_pb2
from paca.db.v1 import db_service_pb2
from paca.monitor.v1 import monitor_service_pb2

SERVICES = (
    api_service_pb2.DESCRIPTOR.services_by_name["ApiService"],
    db_service_pb2.DESCRIPTOR.services_by_name["DbService"],
    monitor_service_pb2.DESCRIPTOR.services_by_name["MonitorService"],
)
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
