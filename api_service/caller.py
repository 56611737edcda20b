"""The outbound call engine: resolve the target, build the request, send it, record it.

Every call that reaches the upstream (or fails trying) leaves one ``ApiCallRecord`` in the call
log; a request refused as bad input never reaches the upstream and is not recorded.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from google.protobuf import duration_pb2, timestamp_pb2
from opentelemetry import trace
from paca.api.v1 import api_service_pb2, api_types_pb2
from paca.db.v1 import db_types_pb2

from api_service.calllog import CallRecorder
from api_service.errors import InvalidCall, UpstreamError, UpstreamTimeout
from api_service.registry import (
    MAX_PROVIDER_CHARS,
    APIRegistry,
    check_header,
    check_http_url,
    path_placeholders,
)
from api_service.transport import HttpRequest, HttpResponse, HttpTransport
from paca_runtime.redact import redact_url

tracer = trace.get_tracer(__name__)

_METHODS = {
    value: name.removeprefix("HTTP_METHOD_")
    for name, value in api_types_pb2.HttpMethod.items()
    if value != api_types_pb2.HTTP_METHOD_UNSPECIFIED
}


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    method: str
    provider: str
    endpoint: str
    headers: list[tuple[str, str]]
    timeout_s: float | None


class OutboundCaller:
    """Makes ``CallRequest``s against registered endpoints or absolute URLs.

    Args:
        registry: Registered endpoints.
        transport: The shared HTTP transport (opened by the owner).
        recorder: Where call records go.
        default_timeout_s: Per-attempt limit when neither call nor endpoint sets one.
        max_data_bytes: Larger JSON responses are not copied into the record.
    """

    def __init__(
        self,
        registry: APIRegistry,
        transport: HttpTransport,
        recorder: CallRecorder,
        *,
        default_timeout_s: float,
        max_data_bytes: int,
    ) -> None:
        self.registry = registry
        self.transport = transport
        self.recorder = recorder
        self.default_timeout_s = default_timeout_s
        self.max_data_bytes = max_data_bytes
        self.calls = 0
        self.failures = 0

    async def call(
        self, request: api_service_pb2.CallRequest, *, time_remaining_s: float | None = None
    ) -> api_service_pb2.CallResponse:
        """Make one call; ``time_remaining_s`` is what is left of the caller's deadline.

        Raises:
            InvalidCall / UnknownEndpoint: Bad input; nothing was sent or recorded.
            UpstreamError: No usable response (recorded as a failure).
        """
        target = self._resolve(request)
        http_request = self._build(request, target, time_remaining_s)
        with tracer.start_as_current_span(
            "api.call",
            attributes={
                "paca.provider": target.provider,
                "paca.endpoint": target.endpoint,
                "http.request.method": target.method,
            },
        ):
            started_wall = timestamp_pb2.Timestamp()
            started_wall.GetCurrentTime()
            started = time.perf_counter()
            self.calls += 1
            try:
                response = await self.transport.send(http_request)
            except UpstreamError as exc:
                self.failures += 1
                elapsed_ms = (time.perf_counter() - started) * 1000
                self._record(target, http_request, started_wall, elapsed_ms, None, str(exc))
                raise
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._record(target, http_request, started_wall, elapsed_ms, response, None)
        latency = duration_pb2.Duration()
        latency.FromMicroseconds(int(elapsed_ms * 1000))
        return api_service_pb2.CallResponse(
            status_code=response.status,
            headers=[api_types_pb2.Header(name=k, value=v) for k, v in response.headers],
            body=response.body,
            latency=latency,
            attempts=1,
            from_cache=False,
            url=redact_url(response.url),
        )

    def _resolve(self, request: api_service_pb2.CallRequest) -> _Target:
        kind = request.WhichOneof("target")
        if kind is None:
            raise InvalidCall("target", "set endpoint or url")
        method = _METHODS.get(request.method) if request.method else None
        if request.method and method is None:
            raise InvalidCall("method", f"unknown method {request.method}")
        if kind == "url":
            check_http_url(request.url, "url")
            provider = request.provider or urlsplit(request.url).hostname or "unknown"
            if len(provider) > MAX_PROVIDER_CHARS:
                raise InvalidCall("provider", f"at most {MAX_PROVIDER_CHARS} characters")
            return _Target(request.url, method or "GET", provider, "", [], None)
        endpoint = self.registry.get(request.endpoint, field="endpoint")
        path = endpoint.path
        for name in path_placeholders(path):
            if name not in request.path_params:
                raise InvalidCall(f"path_params.{name}", "required by the endpoint's path")
            path = path.replace("{" + name + "}", quote(request.path_params[name], safe=""))
        return _Target(
            url=endpoint.base_url.rstrip("/") + path,
            method=method or _METHODS.get(endpoint.method, "GET"),
            provider=endpoint.provider,
            endpoint=endpoint.name,
            headers=[(h.name, h.value) for h in endpoint.default_headers],
            timeout_s=(
                endpoint.timeout.ToTimedelta().total_seconds()
                if endpoint.HasField("timeout")
                else None
            ),
        )

    def _build(
        self,
        request: api_service_pb2.CallRequest,
        target: _Target,
        time_remaining_s: float | None,
    ) -> HttpRequest:
        for i, header in enumerate(request.headers):
            check_header(header, f"headers[{i}]")
        overridden = {h.name.lower() for h in request.headers}
        headers = [(k, v) for k, v in target.headers if k.lower() not in overridden]
        headers += [(h.name, h.value) for h in request.headers]
        body: bytes | None = None
        if request.WhichOneof("body") == "json_body":
            try:
                json.loads(request.json_body)
            except ValueError as exc:
                raise InvalidCall("json_body", f"not valid JSON: {exc}") from None
            body = request.json_body.encode()
            if "content-type" not in overridden:
                headers.append(("Content-Type", "application/json"))
        elif request.WhichOneof("body") == "raw_body":
            body = request.raw_body
        if request.idempotency_key:
            headers.append(("Idempotency-Key", request.idempotency_key))
        url = target.url
        if request.query:
            separator = "&" if urlsplit(url).query else "?"
            url += separator + urlencode([(q.name, q.value) for q in request.query])
        timeout_s = target.timeout_s or self.default_timeout_s
        if request.HasField("timeout"):
            timeout_s = request.timeout.ToTimedelta().total_seconds()
            if timeout_s <= 0:
                raise InvalidCall("timeout", "must be > 0")
        if time_remaining_s is not None:
            if time_remaining_s <= 0:
                raise UpstreamTimeout("the caller's deadline had passed before the call")
            timeout_s = min(timeout_s, time_remaining_s)
        return HttpRequest(target.method, url, headers, body, timeout_s)

    def _record(
        self,
        target: _Target,
        request: HttpRequest,
        started: timestamp_pb2.Timestamp,
        elapsed_ms: float,
        response: HttpResponse | None,
        error: str | None,
    ) -> None:
        status = response.status if response is not None else 0
        success = response is not None and 200 <= status < 400
        record = db_types_pb2.ApiCallRecord(
            record_id=str(uuid.uuid4()),
            provider=target.provider,
            success=success,
            is_validation_error=False,
            response_time_ms=elapsed_ms,
            create_time=started,
            endpoint=target.endpoint,
            status_code=status,
            method=request.method,
            url=redact_url(request.url),
            trace_id=format(trace.get_current_span().get_span_context().trace_id, "032x"),
            attempts=1,
        )
        if response is not None and success:
            data = _json_data(response, self.max_data_bytes)
            if data is not None:
                record.data_json = data
        if error is not None:
            record.error_message = error
        elif not success:
            record.error_message = f"HTTP {status}"
        self.recorder.record(record)


def _json_data(response: HttpResponse, max_bytes: int) -> str | None:
    """The response body as JSON text when it is JSON and small enough to keep."""
    content_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
    if "json" not in content_type.lower() or len(response.body) > max_bytes:
        return None
    try:
        text = response.body.decode()
        json.loads(text)
    except ValueError:
        return None
    return text
