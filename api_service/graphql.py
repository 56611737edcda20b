"""``GraphQL``: one GraphQL operation over HTTP, through the same engine as ``Call``.

The operation is sent as ``POST`` with a JSON body (``query``, ``variables``,
``operationName``), the GraphQL-over-HTTP convention every server accepts, and goes through the
same cache, guards, retries and call log as any call. The document is parsed with
``graphql-core`` (the reference implementation's port) before anything is sent, so a syntax
error is INVALID_ARGUMENT naming ``query``, and the operation's type is known for certain:

- a **query** is retried as an idempotent request (it reads; the POST is only the transport),
  and is cached when the endpoint's ``CachePolicy`` is on, keyed by the normalised document
  (printed back from its syntax tree, so whitespace and comments do not matter), the variables
  as canonical JSON, the operation name, the URL and the Authorization digest;
- a **mutation** is retried only with an idempotency key and never cached;
- a subscription needs a streaming transport and is refused.

The reply's ``errors`` are returned as structured errors next to whatever (partial) ``data``
came back. A reply with errors, or without ``data``, is recorded as a failure with the first
error's message; one whose ``data`` does not fit the endpoint's JSON Schema is a validation
error. Neither is cached.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import graphql
from paca.api.v1 import api_service_pb2, api_types_pb2

from api_service.caller import OutboundCaller
from api_service.callrecord import MAX_ERROR_CHARS, Judge, Verdict, schema_misfit
from api_service.errors import InvalidCall
from api_service.replies import duration, validation_error
from api_service.request import Target
from api_service.transport import HttpResponse

ACCEPT = "application/graphql-response+json, application/json;q=0.9"


def parse_operation(query: str, operation_name: str) -> tuple[str, str]:
    """The normalised document and the type of the operation to run ("query", "mutation").

    Raises:
        InvalidCall: The document does not parse, or names no single operation to run.
    """
    if not query.strip():
        raise InvalidCall("query", "required")
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError as exc:
        raise InvalidCall("query", f"not valid GraphQL: {exc.message}") from None
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    if operation_name:
        chosen = [o for o in operations if o.name is not None and o.name.value == operation_name]
        if not chosen:
            raise InvalidCall("operation_name", f"no operation {operation_name!r} in the query")
    elif len(operations) != 1:
        raise InvalidCall("operation_name", "required when the query has several operations")
    else:
        chosen = operations
    kind = chosen[0].operation.value
    if kind == "subscription":
        raise InvalidCall("query", "subscriptions are not supported")
    return graphql.print_ast(document), kind


def _variables(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        variables = json.loads(text)
    except ValueError as exc:
        raise InvalidCall("variables_json", f"not valid JSON: {exc}") from None
    if not isinstance(variables, dict):
        raise InvalidCall("variables_json", "must be a JSON object")
    return variables


def _call_request(
    request: api_service_pb2.GraphQLRequest, variables: dict[str, Any] | None
) -> api_service_pb2.CallRequest:
    payload: dict[str, Any] = {"query": request.query}
    if variables is not None:
        payload["variables"] = variables
    if request.operation_name:
        payload["operationName"] = request.operation_name
    headers = list(request.headers)
    if not any(h.name.lower() == "accept" for h in headers):
        headers.append(api_types_pb2.Header(name="Accept", value=ACCEPT))
    call = api_service_pb2.CallRequest(
        method=api_types_pb2.HTTP_METHOD_POST,
        headers=headers,
        json_body=json.dumps(payload),
        idempotency_key=request.idempotency_key,
        provider=request.provider,
    )
    if request.WhichOneof("target") == "endpoint":
        call.endpoint = request.endpoint
    elif request.WhichOneof("target") == "url":
        call.url = request.url
    if request.HasField("timeout"):
        call.timeout.CopyFrom(request.timeout)
    return call


def _reply(response: HttpResponse) -> dict[str, Any] | None:
    """The reply as a GraphQL response object, or None when it is not one."""
    try:
        reply = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not ({"data", "errors"} & reply.keys()):
        return None
    return reply


def _judge(target: Target) -> Judge:
    schema = target.spec.response_schema_json if target.spec is not None else ""

    def judge(response: HttpResponse) -> Verdict:
        reply = _reply(response)
        if reply is None:
            return Verdict(False, f"HTTP {response.status}: not a GraphQL reply", cacheable=False)
        errors = reply.get("errors") or []
        if errors:
            first = errors[0].get("message", "") if isinstance(errors[0], dict) else ""
            message = f"GraphQL: {first}"[:MAX_ERROR_CHARS]
            return Verdict(False, message, cacheable=False)
        if not 200 <= response.status < 300 or reply.get("data") is None:
            return Verdict(False, f"HTTP {response.status}: no data", cacheable=False)
        misfit = schema_misfit(schema, reply["data"]) if schema else None
        return Verdict(misfit is None, misfit, misfit is not None, misfit is None)

    return judge


def _errors(reply: dict[str, Any]) -> list[api_service_pb2.GraphQLError]:
    errors = []
    for item in reply.get("errors") or []:
        if not isinstance(item, dict):
            item = {"message": str(item)}
        error = api_service_pb2.GraphQLError(
            message=str(item.get("message", "")),
            path=[str(p) for p in item.get("path") or []],
        )
        for location in item.get("locations") or []:
            if isinstance(location, dict):
                error.locations.add(
                    line=int(location.get("line", 0)), column=int(location.get("column", 0))
                )
        if "extensions" in item:
            error.extensions_json = json.dumps(item["extensions"])
        errors.append(error)
    return errors


class GraphQLCaller:
    """Runs ``GraphQLRequest``s on an ``OutboundCaller``."""

    def __init__(self, caller: OutboundCaller) -> None:
        self.caller = caller

    def __repr__(self) -> str:
        return f"<GraphQLCaller {self.caller!r}>"

    async def query(
        self, request: api_service_pb2.GraphQLRequest, *, time_remaining_s: float | None = None
    ) -> api_service_pb2.GraphQLResponse:
        """Run one operation; raises as ``OutboundCaller.call`` does."""
        normalised, kind = parse_operation(request.query, request.operation_name)
        variables = _variables(request.variables_json)
        if request.WhichOneof("target") is None:
            raise InvalidCall("target", "set endpoint or url")
        caller = self.caller
        if request.WhichOneof("target") == "endpoint":
            spec = await caller.registry.fetch(request.endpoint, field="endpoint")
            if spec.kind != api_types_pb2.ENDPOINT_KIND_GRAPHQL:
                raise InvalidCall("endpoint", f"{spec.name} is not a GRAPHQL endpoint")
        call = caller.prepare(
            _call_request(request, variables),
            time_remaining_s,
            safe=kind == "query" or bool(request.idempotency_key),
        )
        cache_key = None
        policy = call.target.spec.cache if call.target.spec is not None else None
        # A query is a read sent as POST: the cache's rules (bypass headers too) apply as to GET.
        as_read = call.request._replace(method="GET")
        if caller.cache is not None and kind == "query" and caller.cache.applies(as_read, policy):
            assert policy is not None
            canonical = json.dumps(variables, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256()
            for part in ("graphql", caller.cache.key(call.request, policy), normalised):
                digest.update(part.encode())
                digest.update(b"\0")
            digest.update(f"{canonical}\0{request.operation_name}".encode())
            cache_key = (digest.hexdigest(), policy)
        started = time.perf_counter()
        with caller.span(call, "api.graphql") as span:
            span.set_attribute("graphql.operation.type", kind)
            if request.operation_name:
                span.set_attribute("graphql.operation.name", request.operation_name)
            answer = await caller.execute(call, span, _judge(call.target), cache_key)
        response = answer.response
        reply = _reply(response)
        message = api_service_pb2.GraphQLResponse(
            status_code=response.status,
            headers=[api_types_pb2.Header(name=k, value=v) for k, v in response.headers],
            latency=duration(time.perf_counter() - started),
            attempts=answer.attempts,
            from_cache=answer.from_cache,
            validation_error=validation_error(answer.verdict),
        )
        if reply is None:
            message.body = response.body
            return message
        if reply.get("data") is not None:
            message.data_json = json.dumps(reply["data"])
        message.errors.extend(_errors(reply))
        if "extensions" in reply:
            message.extensions_json = json.dumps(reply["extensions"])
        return message
