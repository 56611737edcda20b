"""``CallStream``: relay a large response body in chunks as it arrives, never whole.

The exchange opens the response and reads only its head; the attempt loop retries on the head
alone (a retried reply is closed unread), so retries happen before anything reaches the caller
and never after. The body is then read ``CHUNK_BYTES`` at a time and each chunk is handed on
before the next is read: gRPC's flow control holds the next read back while the caller is
behind, so memory stays at a few chunks whatever the body's size. ``max_response_bytes`` does
not apply here: this is the path for bodies larger than a reply may be.

Time limits: the per-attempt timeout bounds connecting, the head, and every wait for the next
piece of the body (not the whole body, which may take long); the caller's deadline bounds all.
The call is recorded once, when the relay ends, without its body; a body that breaks off, or a
caller that leaves, makes it a failure.

Error translation mirrors ``HttpTransport.send`` (which reads whole bodies and so cannot serve
here); both name the same exceptions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from opentelemetry import trace
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.attempts import Outcome
from api_service.caller import OutboundCaller
from api_service.callrecord import Verdict
from api_service.errors import (
    ForbiddenTarget,
    InvalidCall,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api_service.safety import BlockedAddress
from api_service.transport import HttpRequest, HttpTransport
from paca_runtime.redact import redact_url

CHUNK_BYTES = 64 * 1024


@dataclass(slots=True)
class StreamedResponse:
    """A response whose head has arrived and whose body is still on the wire.

    Lifecycle: ``chunks()`` at most once, then ``aclose()`` (idempotent; also alone).
    """

    status: int
    headers: list[tuple[str, str]]
    url: str
    raw: aiohttp.ClientResponse
    timeout_s: float
    relayed_bytes: int = field(default=0)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, ``CHUNK_BYTES`` at most at a time.

        Raises:
            UpstreamTimeout: No data for ``timeout_s``.
            UpstreamUnavailable: The connection broke before the end of the body.
        """
        try:
            async for chunk in self.raw.content.iter_chunked(CHUNK_BYTES):
                self.relayed_bytes += len(chunk)
                yield chunk
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream sent nothing for {self.timeout_s:.3g} s "
                f"after {self.relayed_bytes} body bytes"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(
                f"upstream body broke off after {self.relayed_bytes} bytes: {type(exc).__name__}"
            ) from exc

    async def aclose(self) -> None:
        self.raw.release()
        self.raw.close()


async def open_stream(transport: HttpTransport, request: HttpRequest) -> StreamedResponse:
    """Send ``request`` and wait for the response head only.

    Raises:
        UpstreamTimeout, UpstreamUnavailable, ForbiddenTarget, InvalidCall: As
            ``HttpTransport.send``.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=request.timeout_s, sock_read=request.timeout_s
    )
    try:
        raw = await transport.session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            timeout=timeout,
            allow_redirects=False,
        )
    except TimeoutError:
        raise UpstreamTimeout(f"upstream did not answer within {request.timeout_s:.3g} s") from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, BlockedAddress):
            raise ForbiddenTarget(exc.host) from None
        raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc
    except aiohttp.InvalidURL as exc:
        raise InvalidCall("url", f"malformed URL: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc
    return StreamedResponse(
        status=raw.status,
        headers=list(raw.headers.items()),
        url=str(raw.url),
        raw=raw,
        timeout_s=request.timeout_s,
    )


async def _discard(response: StreamedResponse) -> None:
    await response.aclose()


async def stream_call(
    caller: OutboundCaller,
    request: api_service_pb2.CallRequest,
    *,
    time_remaining_s: float | None = None,
) -> AsyncGenerator[api_service_pb2.CallStreamResponse, None]:
    """The messages of one ``CallStream``: the head, then the body in chunks.

    Raises:
        As ``OutboundCaller.call``, before the head; UpstreamError after it when the body
        breaks off.
    """
    await caller.known(request)
    call = caller.prepare(request, time_remaining_s)
    transport = caller.transport

    async def open_head(http_request: HttpRequest) -> StreamedResponse:
        return await open_stream(transport, http_request)

    send = caller.sender(call, open_head, _discard)

    # An async generator's frames may resume in other contexts (a cancelled stream is closed
    # from gRPC's), so the span is made current only around the awaits, never across a yield.
    span = caller.start_span(call, "api.call_stream")
    started_ns = time.time_ns()
    started = time.perf_counter()
    caller.calls += 1
    outcome: Outcome[StreamedResponse] = Outcome()
    verdict: Verdict | None = None
    try:
        with trace.use_span(span, end_on_exit=False):
            await caller.loop.run(call, send, span, discard=_discard, outcome=outcome)
        response = outcome.response
        if response is None:
            assert outcome.error is not None
            raise outcome.error
        ok = 200 <= response.status < 400
        verdict = Verdict(ok, None if ok else f"HTTP {response.status}")
        yield api_service_pb2.CallStreamResponse(
            head=api_service_pb2.CallStreamHead(
                status_code=response.status,
                headers=[api_types_pb2.Header(name=k, value=v) for k, v in response.headers],
                attempts=outcome.attempts,
                url=redact_url(response.url),
            )
        )
        async for chunk in response.chunks():
            yield api_service_pb2.CallStreamResponse(chunk=chunk)
        span.set_attribute("paca.relayed_bytes", response.relayed_bytes)
    except UpstreamError as exc:
        if outcome.response is not None:
            # The body broke off after the head: the call failed, whatever its status.
            verdict = Verdict(False, str(exc))
        span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
        raise
    except BaseException as exc:
        # The caller left mid-relay (cancelled, deadline, closed stream), or a guard refused.
        if outcome.response is not None:
            verdict = Verdict(False, "the caller left before the end of the body")
        elif outcome.error is None:
            outcome.error = UpstreamError("the caller cancelled the call")
        span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        if outcome.response is not None:
            await outcome.response.aclose()
        elapsed_ms = (time.perf_counter() - started) * 1000
        with trace.use_span(span, end_on_exit=True):
            caller.finish(call, span, started_ns, elapsed_ms, outcome, verdict)
