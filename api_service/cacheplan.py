"""What a call to a cached endpoint resolves to, remembered by the request's bytes.

Before the cache is asked, a call is resolved, built, checked against the network policy and
keyed; on a cache hit that work was most of the call's cost. For one request (its serialized
bytes: equal bytes are an equal message), one registered endpoint (by identity: the registry
replaces a stored endpoint on every change and never edits one in place) and one network
policy, all of it comes out the same every time: the one varying input, the caller's time
left, is checked on every call (``usable``). So the first such call leaves a ``CachePlan``,
and later calls look their entry up with it; a call the cache does not answer fresh still
prepares its whole exchange, as every call did before.

A plan also keeps the verdict on, and the reply to, the last response the cache answered it
with: a response is immutable and its judge a pure function of it, so a hit copies a prebuilt
reply (see ``api_service.replies``) instead of judging the body and building the reply again.
"""

from __future__ import annotations

from dataclasses import dataclass

from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.callrecord import Judge, Verdict
from api_service.registry import APIRegistry
from api_service.replies import MAX_REPLY_BODY_BYTES, Answer, call_response, set_latency
from api_service.request import Target
from api_service.safety import NetworkPolicy
from api_service.transport import HttpRequest, HttpResponse

# Plans kept at most (emptied when full); requests larger than this many bytes get none, so
# the remembered request bytes and replies stay within a few MiB.
MAX_PLANS = 256
MAX_PLAN_REQUEST_BYTES = 4096


@dataclass(slots=True, eq=False)
class CachePlan:
    """A checked request of a cached endpoint, with its cache key and judge."""

    spec: api_types_pb2.Endpoint
    network_policy: NetworkPolicy
    target: Target
    # As built with no deadline: its method, URL and headers are what the cache reads.
    request: HttpRequest
    host: str
    key: str
    policy: api_types_pb2.CachePolicy
    judge: Judge
    # The last response answered from the cache, its verdict and its reply without latency.
    response: HttpResponse | None = None
    verdict: Verdict | None = None
    template: api_service_pb2.CallResponse | None = None

    def usable(
        self, registry: APIRegistry, network_policy: NetworkPolicy, time_remaining_s: float | None
    ) -> bool:
        """Whether the plan's checks still hold: the same endpoint in the registry's memory,
        the same policy, time left (a call without time left takes the long way, which
        refuses it; so does one whose endpoint memory lacks, which reads it through)."""
        name = self.target.endpoint
        return (
            (time_remaining_s is None or time_remaining_s > 0)
            and network_policy is self.network_policy
            and name in registry
            and registry.get(name) is self.spec
        )

    def answer(self, response: HttpResponse) -> Answer:
        """The answer of a fresh hit on ``response``."""
        if response is not self.response:
            self._judged(response)
        assert self.verdict is not None
        return Answer(response, 0, True, self.verdict)

    def reply(self, response: HttpResponse, elapsed_s: float) -> api_service_pb2.CallResponse:
        """``call_response(self.answer(response), elapsed_s)``, from a copy when the body is
        small."""
        if response is not self.response:
            self._judged(response)
        template = self.template
        if template is None:
            assert self.verdict is not None
            return call_response(Answer(response, 0, True, self.verdict), elapsed_s)
        reply = api_service_pb2.CallResponse()
        reply.CopyFrom(template)
        set_latency(reply, elapsed_s)
        return reply

    def _judged(self, response: HttpResponse) -> None:
        self.verdict = verdict = self.judge(response)
        if len(response.body) > MAX_REPLY_BODY_BYTES:
            # Neither the response nor its reply is held: the cache bounds the bytes it keeps.
            self.response = self.template = None
            return
        self.response = response
        template = call_response(Answer(response, 0, True, verdict), 0.0)
        template.ClearField("latency")
        self.template = template


class CachePlans:
    """Plans by the bytes of their request."""

    def __init__(self) -> None:
        self._plans: dict[bytes, CachePlan] = {}

    def __repr__(self) -> str:
        return f"<CachePlans {len(self._plans)}>"

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, request: api_service_pb2.CallRequest) -> CachePlan | None:
        return self._plans.get(request.SerializeToString()) if self._plans else None

    def remember(self, request: api_service_pb2.CallRequest, plan: CachePlan) -> None:
        blob = request.SerializeToString()
        if len(blob) > MAX_PLAN_REQUEST_BYTES:
            return
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        self._plans[blob] = plan
