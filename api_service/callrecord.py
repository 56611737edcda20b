"""From a finished call to its ``ApiCallRecord`` and the verdict on its response.

A verdict says whether a reply counts as a success: by default a 2xx or 3xx status whose body
fits the endpoint's JSON Schema, when it has one (``Endpoint.response_schema_json``). A body
that does not fit is a *validation error*: the reply still reaches the caller, and the record
says ``is_validation_error`` with the first misfit in ``error_message``. Schemas are checked
with ``jsonschema`` (the reference implementation; the draft comes from ``$schema``) and
compiled once per schema text.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from opentelemetry import trace
from paca.db.v1 import db_types_pb2

from api_service.attempts import Outcome, Reply
from api_service.request import Target
from api_service.transport import HttpRequest, HttpResponse
from paca_runtime.redact import redact_url

# Longest misfit description kept in a record or a reply.
MAX_ERROR_CHARS = 300
# The variant digit (RFC 9562: bits 10xx) of a random UUID, by the random hex digit in its place.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
# JSON's own whitespace (str.strip() would take more, which json.loads refuses).
_JSON_WHITESPACE = " \t\n\r"
# The C scanner json.loads ends in, without its two Python layers (one call per record).
# (typeshed types its argument as the scanner class itself.)
_scan_json: Callable[[str, int], tuple[Any, int]] = make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a reply counts as a success, and why not."""

    success: bool
    error_message: str | None = None
    # The reply arrived but its body does not fit the endpoint's schema.
    validation_error: bool = False
    # A cached endpoint may store the reply (HTTP's own rules still apply).
    cacheable: bool = True


Judge = Callable[[HttpResponse], Verdict]
# The verdict on most replies, made once.
_SUCCESS = Verdict(True)


@functools.lru_cache(maxsize=256)
def compiled_schema(schema_json: str) -> Validator | str:
    """The validator of a schema text, or why the schema itself is unusable."""
    try:
        schema = json.loads(schema_json)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except (ValueError, jsonschema.SchemaError) as exc:
        message = exc.message if isinstance(exc, jsonschema.SchemaError) else str(exc)
        return f"the endpoint's response schema is unusable: {message}"[:MAX_ERROR_CHARS]
    validator: Validator = cls(schema)
    return validator


def schema_misfit(schema_json: str, document: Any) -> str | None:
    """The first way ``document`` misfits the schema (None: it fits)."""
    validator = compiled_schema(schema_json)
    if isinstance(validator, str):
        return validator
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"response does not fit the schema at {where}: {error.message}"[:MAX_ERROR_CHARS]


def http_verdict(target: Target) -> Judge:
    """The default judge: 2xx/3xx, and a JSON body that fits the endpoint's schema if any."""
    schema = target.spec.response_schema_json if target.spec is not None else ""
    if not schema:
        return _judge_status  # most endpoints: one judge, not a new one per call

    def judge(response: HttpResponse) -> Verdict:
        if not 200 <= response.status < 300:
            return _judge_status(response)
        try:
            document = json.loads(response.body)
        except (ValueError, RecursionError):
            return Verdict(False, "response is not JSON; the endpoint has a schema", True, False)
        misfit = schema_misfit(schema, document)
        return Verdict(misfit is None, misfit, misfit is not None, misfit is None)

    return judge


def _judge_status(response: HttpResponse) -> Verdict:
    """The verdict of an endpoint without a schema: its status alone."""
    if not 200 <= response.status < 400:
        return Verdict(False, f"HTTP {response.status}")
    return _SUCCESS


def record_id() -> str:
    """A random (version 4) UUID in its text form, as ``str(uuid.uuid4())`` but a sixth of
    its cost (``uuid.UUID`` validates what it is given): every call's record needs one. The
    version and variant digits replace random ones, as ``uuid4`` sets those bits."""
    text = os.urandom(16).hex()
    variant = _UUID_VARIANT[text[16]]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}"


def build_record(
    target: Target,
    request: HttpRequest,
    started_ns: int,
    elapsed_ms: float,
    outcome: Outcome[Any],
    verdict: Verdict | None,
    *,
    data: bytes | None,
    max_data_bytes: int,
    span_context: trace.SpanContext | None = None,
) -> db_types_pb2.ApiCallRecord:
    """The record of one call; ``verdict`` is None when no reply arrived.

    ``data`` is the body to keep as ``data_json`` (when it is small JSON and the call
    succeeded); None keeps none, as for a streamed body. ``span_context`` is the call's
    (default: the current span's), whose trace the record names.
    """
    if span_context is None:
        span_context = trace.get_current_span().get_span_context()
    response: Reply | None = outcome.response
    status = response.status if response is not None else 0
    success = verdict is not None and verdict.success
    # Field by field: a third less than keyword arguments, which are looked up by name.
    record = db_types_pb2.ApiCallRecord()
    record.record_id = record_id()
    record.provider = target.provider
    record.success = success
    record.is_validation_error = verdict is not None and verdict.validation_error
    record.response_time_ms = elapsed_ms
    # Field by field: GetCurrentTime goes through datetime, FromNanoseconds through checks a
    # clock reading needs none of.
    created = record.create_time
    created.seconds, created.nanos = divmod(started_ns, 1_000_000_000)
    record.endpoint = target.endpoint
    record.status_code = status
    record.method = request.method
    record.url = public_url(request.url)
    record.trace_id = span_context.trace_id.to_bytes(16).hex()
    record.attempts = outcome.attempts
    if response is not None and success and data is not None:
        text = json_text(response, data, max_data_bytes)
        if text is not None:
            record.data_json = text
    if response is None:
        record.error_message = str(outcome.error)
    elif verdict is not None and verdict.error_message:
        record.error_message = verdict.error_message
    return record


def public_url(url: str) -> str:
    """``redact_url(url)``, without its parse for a URL that has nothing to hide: no userinfo,
    no query, and nothing ``urlsplit`` could refuse (non-ASCII, brackets). Every call's record
    and reply carry a URL, and most have none of these."""
    if url.isascii() and "@" not in url and "?" not in url and "[" not in url:
        return url
    return redact_url(url)


def json_text(response: Reply, body: bytes, max_bytes: int) -> str | None:
    """The body as JSON text when it is JSON and small enough to keep."""
    content_type = response.header("content-type") or ""
    if "json" not in content_type.lower() or len(body) > max_bytes:
        return None
    try:
        text = body.decode()
    except ValueError:
        return None
    return text if is_json(text) else None


def is_json(text: str) -> bool:
    """Whether ``text`` is one JSON document, as ``json.loads`` would accept it; nesting too
    deep for the parser is not (json.loads raises RecursionError there)."""
    document = text.strip(_JSON_WHITESPACE)
    try:
        _, end = _scan_json(document, 0)
    except (StopIteration, ValueError, RecursionError):
        return False
    return end == len(document)
