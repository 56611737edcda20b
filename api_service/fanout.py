"""``FanOut``: many calls in parallel, each with its own result, under two deadlines.

This is seed 000's ``ApiIntegrationManager.fetch_all`` made safe: one failing call is that
call's result, not the reply's; a database failure does not touch the reply at all (every call
goes through the call log, which spools to disk while db_service is down and replays later).

Deadlines: each call gets ``call_timeout`` (if set) capped by what is left of the overall
deadline (``timeout`` capped by the RPC deadline), and ends on its own with DEADLINE_EXCEEDED
when that passes, recorded like any call. A call still running a moment after the overall
deadline (a guard wait that would not yield) is cancelled; the engine records it as cancelled
and its result is DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio

import grpc
from paca.api.v1 import api_service_pb2

from api_service.caller import OutboundCaller
from api_service.errors import InvalidCall
from paca_runtime.errors import InvalidArgument, StatusError

MAX_CALLS = 100
# How long past the overall deadline a call may take to end on its own before it is cancelled.
GRACE_S = 0.05


async def _one(
    caller: OutboundCaller, index: int, request: api_service_pb2.CallRequest, time_s: float | None
) -> api_service_pb2.FanOutResult:
    try:
        response = await caller.call(request, time_remaining_s=time_s)
    except StatusError as exc:
        # Bad input names its field within the fan-out request.
        message = f"calls[{index}].{exc}" if isinstance(exc, InvalidArgument) else str(exc)
        return api_service_pb2.FanOutResult(
            index=index, error_code=exc.code.value[0], error_message=message
        )
    return api_service_pb2.FanOutResult(index=index, response=response)


def _seconds(message: api_service_pb2.FanOutRequest, field: str) -> float | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        return None
    seconds: float = getattr(message, field).ToTimedelta().total_seconds()
    if seconds <= 0:
        raise InvalidCall(field, "must be > 0")
    return seconds


async def fan_out(
    caller: OutboundCaller,
    request: api_service_pb2.FanOutRequest,
    *,
    time_remaining_s: float | None = None,
) -> api_service_pb2.FanOutResponse:
    """Make every call of ``request``; raises only on bad input of the fan-out itself."""
    if not request.calls:
        raise InvalidCall("calls", "at least one call is required")
    if len(request.calls) > MAX_CALLS:
        raise InvalidCall("calls", f"at most {MAX_CALLS} calls")
    call_s = _seconds(request, "call_timeout")
    overall = [s for s in (_seconds(request, "timeout"), time_remaining_s) if s is not None]
    overall_s = min(overall) if overall else None
    per_call = [s for s in (call_s, overall_s) if s is not None]
    time_s = min(per_call) if per_call else None
    tasks = [
        asyncio.ensure_future(_one(caller, i, call, time_s)) for i, call in enumerate(request.calls)
    ]
    try:
        await asyncio.wait(tasks, timeout=None if overall_s is None else overall_s + GRACE_S)
    finally:
        for task in tasks:
            task.cancel()
        # Let cancelled calls record themselves before the reply goes out.
        await asyncio.gather(*tasks, return_exceptions=True)
    reply = api_service_pb2.FanOutResponse()
    for index, task in enumerate(tasks):
        if task.cancelled() or task.exception() is not None:
            result = api_service_pb2.FanOutResult(
                index=index,
                error_code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
                error_message="the fan-out's deadline passed before the call ended",
            )
        else:
            result = task.result()
        reply.results.append(result)
        ok = result.HasField("response") and 200 <= result.response.status_code < 400
        if ok:
            reply.succeeded += 1
        else:
            reply.failed += 1
    return reply
