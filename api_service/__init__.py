"""api_service: outbound HTTP calls for internal services over gRPC, usable in-process too."""

from api_service.app import ApiApp
from api_service.auth import AuthManager, ClientCredentials, KeyPool
from api_service.caller import OutboundCaller
from api_service.calllog import CallRecorder, DbServiceSink
from api_service.errors import (
    ApiError,
    InvalidCall,
    UnknownEndpoint,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api_service.facade import GraphQLClient, RESTClient, UniversalAPIClient
from api_service.facade_types import APIEndpoint, APIResponse, HTTPMethod
from api_service.registry import APIRegistry
from api_service.registry_store import DurableRegistry
from api_service.resilience.breaker import CircuitBreaker
from api_service.resilience.ratelimit import TokenBucket
from api_service.resilience.shared_breaker import SharedCircuitBreaker
from api_service.settings import ApiSettings, CallLogSettings
from api_service.spool import Spool
from api_service.transport import HttpRequest, HttpResponse, HttpTransport
from api_service.webhooks.intake import WebhookIntake

__all__ = [
    "APIEndpoint",
    "APIRegistry",
    "APIResponse",
    "ApiApp",
    "ApiError",
    "ApiSettings",
    "AuthManager",
    "CallLogSettings",
    "CallRecorder",
    "CircuitBreaker",
    "ClientCredentials",
    "DbServiceSink",
    "DurableRegistry",
    "GraphQLClient",
    "HTTPMethod",
    "HttpRequest",
    "HttpResponse",
    "HttpTransport",
    "InvalidCall",
    "KeyPool",
    "OutboundCaller",
    "RESTClient",
    "RateLimiter",
    "SharedCircuitBreaker",
    "Spool",
    "TokenBucket",
    "UniversalAPIClient",
    "UnknownEndpoint",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WebhookHandler",
    "WebhookIntake",
]

# The names an in-process user knows from the original client library.
RateLimiter = TokenBucket
WebhookHandler = WebhookIntake
