"""HTTP client spans for aiohttp: one CLIENT span per request sent, as the HTTP conventions say.

Each span is named after the method (``GET``; ``HTTP`` for a method outside RFC 9110 and
PATCH) and carries ``http.request.method``, ``server.address``, ``server.port``, ``url.full``
(through ``paca_runtime.semconv.url_full``: no credentials, no secret query values),
``http.response.status_code``, and on failure ``error.type`` (the status code, or the
exception's class) with status ERROR. The W3C trace context goes out in the request headers.

Written here rather than taken from opentelemetry-instrumentation-aiohttp-client, whose
trace config does the same with the stable conventions behind a private switch, because that
one does all its work before it knows whether the span is sampled: it redacts the URL twice,
parses it again and copies every request and response header on every request, sampled or
not, which costs api_service a few per cent of its CPU per call at the default sampler. It also
records the exception's message, and an aiohttp error message can quote the whole URL. Here the
URL is redacted once, only for a span that is recorded, and messages are never recorded; under
a parent that was not sampled no span is started at all, only the trace context is sent on.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

from paca_runtime.semconv import (
    ERROR_TYPE,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
    url_full,
)
from paca_runtime.telemetry import dropped_below

RequestHook = Callable[[trace.Span, aiohttp.TraceRequestStartParams], None]

# The methods the conventions name; any other is "_OTHER" with its original spelling beside.
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"

tracer = trace.get_tracer(__name__)


def http_client_trace_config(request_hook: RequestHook | None = None) -> aiohttp.TraceConfig:
    """A trace config for an ``aiohttp.ClientSession`` making the spans described above.

    Args:
        request_hook: Called with each recorded span and the request before it is sent, to
            add attributes (``http.request.resend_count``, ...).
    """

    async def on_request_start(
        session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        ctx.span = None
        if not is_http_instrumentation_enabled():
            return
        if dropped_below(trace.get_current_span()):
            # No span would be kept: send the caller's (unsampled) context on, as it is.
            propagate.inject(params.headers)
            return
        method = params.method.upper()
        known = method in KNOWN_METHODS
        url = params.url
        attributes: dict[str, Any] = {HTTP_REQUEST_METHOD: method if known else "_OTHER"}
        if url.host:
            attributes[SERVER_ADDRESS] = url.host
        if url.port is not None:
            attributes[SERVER_PORT] = url.port
        span = tracer.start_span(
            method if known else "HTTP", kind=SpanKind.CLIENT, attributes=attributes
        )
        if span.is_recording():
            span.set_attribute(URL_FULL, url_full(str(url)))
            if not known:
                span.set_attribute(HTTP_REQUEST_METHOD_ORIGINAL, params.method)
            if request_hook is not None:
                request_hook(span, params)
        ctx.span = span
        ctx.token = context.attach(trace.set_span_in_context(span))
        propagate.inject(params.headers)

    async def on_request_end(
        session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = ctx.span
        if span is None:
            return
        status = params.response.status
        if span.is_recording():
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 400:
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR, str(status)))
        _end(ctx)

    async def on_request_exception(
        session: aiohttp.ClientSession,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        span = ctx.span
        if span is None:
            return
        if span.is_recording():
            error_type = type(params.exception).__qualname__
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        _end(ctx)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    config.on_request_end.append(on_request_end)
    config.on_request_exception.append(on_request_exception)
    return config


def _end(ctx: types.SimpleNamespace) -> None:
    context.detach(ctx.token)
    ctx.span.end()
    ctx.span = None
