"""api_service: outbound HTTP calls for internal services over gRPC, usable in-process too."""

from api_service.app import ApiApp
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
from api_service.registry import APIRegistry
from api_service.settings import ApiSettings, CallLogSettings
from api_service.spool import Spool
from api_service.transport import HttpRequest, HttpResponse, HttpTransport

__all__ = [
    "APIRegistry",
    "ApiApp",
    "ApiError",
    "ApiSettings",
    "CallLogSettings",
    "CallRecorder",
    "DbServiceSink",
    "HttpRequest",
    "HttpResponse",
    "HttpTransport",
    "InvalidCall",
    "OutboundCaller",
    "Spool",
    "UnknownEndpoint",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
