"""What a call returns to its caller: the ``CallResponse`` of an answer, and cached replies.

A reply with the upstream's headers is a build of several messages; a cache hit's reply is the
same every time but for its latency, so it is built once per stored response and copied (a
copy costs a fifth of a build).
"""

from __future__ import annotations

from typing import NamedTuple

from google.protobuf import duration_pb2
from paca.api.v1 import api_service_pb2

from api_service.callrecord import Verdict, public_url
from api_service.transport import HttpResponse

# Prebuilt replies of cached responses kept at most (emptied when full), and the largest body
# one may have: they hold their responses beyond the cache's own bound, so at most ~8 MiB.
MAX_REPLIES = 256
MAX_REPLY_BODY_BYTES = 16 * 1024


class Answer(NamedTuple):
    """A call's reply, how it was obtained and what it is worth."""

    response: HttpResponse
    # HTTP attempts made for this caller (0 when the cache answered alone).
    attempts: int
    from_cache: bool
    verdict: Verdict


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromMicroseconds(int(seconds * 1_000_000))
    return message


def set_latency(reply: api_service_pb2.CallResponse, elapsed_s: float) -> None:
    """``reply.latency.FromMicroseconds(...)`` for a duration that is never negative, at half
    its cost (``FromMicroseconds`` normalises signs in Python): once per reply."""
    micros = max(int(elapsed_s * 1_000_000), 0)
    latency = reply.latency
    latency.seconds = micros // 1_000_000
    latency.nanos = micros % 1_000_000 * 1000


def call_response(answer: Answer, elapsed_s: float) -> api_service_pb2.CallResponse:
    """The ``CallResponse`` of an answer that took ``elapsed_s``."""
    response = answer.response
    # Field by field: keyword arguments are looked up by name, a third dearer.
    reply = api_service_pb2.CallResponse()
    reply.status_code = response.status
    reply.body = response.body
    reply.attempts = answer.attempts
    reply.from_cache = answer.from_cache
    reply.url = public_url(response.url)
    if answer.verdict.validation_error:
        reply.validation_error = answer.verdict.error_message or ""
    # In place: a Header built apart is copied in again.
    add = reply.headers.add
    for name, value in response.headers:
        header = add()
        header.name = name
        header.value = value
    set_latency(reply, elapsed_s)
    return reply


def validation_error(verdict: Verdict) -> str:
    """What a reply's ``validation_error`` field says: the misfit, or nothing."""
    return (verdict.error_message or "") if verdict.validation_error else ""


class CachedReplies:
    """Replies of answers from the cache, built once per stored response."""

    def __init__(self) -> None:
        # By (id(response), attempts, validation error): the response itself is held, so its
        # id names no other while the entry lives.
        self._replies: dict[
            tuple[int, int, str], tuple[HttpResponse, api_service_pb2.CallResponse]
        ] = {}

    def __repr__(self) -> str:
        return f"<CachedReplies {len(self._replies)}>"

    def reply(self, answer: Answer, elapsed_s: float) -> api_service_pb2.CallResponse:
        """``call_response(answer, elapsed_s)``, from a copy when the body is small."""
        if len(answer.response.body) > MAX_REPLY_BODY_BYTES:
            return call_response(answer, elapsed_s)
        error = validation_error(answer.verdict)
        key = (id(answer.response), answer.attempts, error)
        remembered = self._replies.get(key)
        if remembered is None or remembered[0] is not answer.response:
            if len(self._replies) >= MAX_REPLIES:
                self._replies.clear()
            template = call_response(answer, 0.0)
            template.ClearField("latency")
            remembered = self._replies[key] = (answer.response, template)
        reply = api_service_pb2.CallResponse()
        reply.CopyFrom(remembered[1])
        set_latency(reply, elapsed_s)
        return reply
