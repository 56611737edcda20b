"""Pooled keys and OAuth2 secrets never leave api_service: calls through the whole stack.

Keys placed in a custom query parameter (a name the generic redaction does not know), in a
header and as OAuth2 client credentials (plus the tokens the provider issues) go through
successes, a revoked key, a throttled key, an unreachable upstream and a bad client; then every
log line (as the process writes it), every span attribute and event, every stored call record,
every error and GetStats are searched for each secret.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from paca.api.v1 import api_service_pb2, api_service_pb2_grpc, api_types_pb2
from paca.db.v1 import db_service_pb2, db_service_pb2_grpc

from api_service import ApiApp, ApiSettings, CallLogSettings
from api_service.auth.settings import AuthSettings, PoolSettings
from db_service import DbApp
from tests.conftest import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, Upstream
from tests.integration.conftest import runtime_settings
from tests.integration.test_api_secrets import logged_and_traced

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

QUERY_KEY = "qk-7c1e55aa"
HEADER_KEY = "hk-0b9d2f17"
REVOKED_KEY = "revoked-4e2a91"
THROTTLED_KEY = "throttled-d61c07"
SCOPE = "scope-9f3b"


def secret_file(tmp_path: Path, name: str, *keys: str) -> str:
    path = tmp_path / name
    path.write_text("\n".join(keys) + "\n")
    return f"file:{path}"


@pytest.fixture
async def keyed_app(db_app: DbApp, upstream: Upstream, tmp_path: Path) -> AsyncIterator[ApiApp]:
    pools = (
        PoolSettings("prov-q", key_sources=(secret_file(tmp_path, "q", QUERY_KEY),)),
        PoolSettings(
            "prov-h",
            key_sources=(secret_file(tmp_path, "h", REVOKED_KEY, HEADER_KEY, THROTTLED_KEY),),
        ),
        PoolSettings(
            "idp",
            token_url=f"{upstream.url}/oauth/token",
            client_id=OAUTH_CLIENT_ID,
            client_secret_source=secret_file(tmp_path, "cs", OAUTH_CLIENT_SECRET),
            scope=SCOPE,
        ),
        PoolSettings(
            "idp-bad",
            token_url=f"{upstream.url}/oauth/token",
            client_id=OAUTH_CLIENT_ID,
            client_secret_source=secret_file(tmp_path, "bad", "wr0ng-cl1ent-s3cret"),
        ),
    )
    settings = ApiSettings(
        listen="127.0.0.1:0",
        db_address=db_app.server.bound_address,
        api_timeout_s=5.0,
        calllog=CallLogSettings(flush_interval_s=0.05, spool_dir=tmp_path / "spool"),
        auth=AuthSettings(pools=pools),
    )
    app = ApiApp(settings, runtime_settings(tmp_path))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def endpoint(
    name: str, base_url: str, path: str, pool: str, placement: int, parameter: str = ""
) -> api_types_pb2.Endpoint:
    made = api_types_pb2.Endpoint(name=name, provider="prov", base_url=base_url, path=path)
    made.auth.key_pool = pool
    made.auth.placement = placement  # type: ignore[assignment]
    made.auth.parameter_name = parameter
    made.retry.max_attempts = 1
    return made


async def test_no_pooled_secret_appears_in_logs_spans_records_errors_or_stats(
    keyed_app: ApiApp,
    db_stub: db_service_pb2_grpc.DbServiceStub,
    upstream: Upstream,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    query, header = api_types_pb2.KEY_PLACEMENT_QUERY, api_types_pb2.KEY_PLACEMENT_HEADER
    endpoints = [
        endpoint("p.query", upstream.url, "/keyed", "prov-q", query, "appid"),
        endpoint("p.header", upstream.url, "/keyed", "prov-h", header, "X-Api-Key"),
        endpoint("p.oauth", upstream.url, "/oauth/protected", "idp", 0),
        endpoint("p.bad-client", upstream.url, "/oauth/protected", "idp-bad", 0),
        endpoint("p.unreachable", "http://127.0.0.1:1", "/keyed", "prov-q", query, "appid"),
    ]
    async with grpc.aio.insecure_channel(keyed_app.server.bound_address) as channel:
        stub = api_service_pb2_grpc.ApiServiceStub(channel)
        for spec in endpoints:
            await stub.RegisterEndpoint(api_service_pb2.RegisterEndpointRequest(endpoint=spec))
        statuses = []
        for name in ["p.query", "p.query", "p.header", "p.header", "p.header", "p.oauth"] * 2:
            reply = await stub.Call(api_service_pb2.CallRequest(endpoint=name))
            statuses.append(reply.status_code)
            assert QUERY_KEY not in reply.url
        errors = []
        for name in ["p.bad-client", "p.unreachable"]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Call(api_service_pb2.CallRequest(endpoint=name))
            errors.append(f"{caught.value.code()} {caught.value.details()}")
            errors.append(caught.value.debug_error_string())
        stats = await stub.GetStats(api_service_pb2.GetStatsRequest())
    await keyed_app.recorder.flushed()
    rows = await db_stub.Query(
        db_service_pb2.QueryRequest(sql="SELECT * FROM external_api_logs", read_only=True)
    )

    # The keys really were used: the secrets below are live ones, not absent ones.
    assert upstream.keys_seen.count(QUERY_KEY) == 4
    assert REVOKED_KEY in upstream.keys_seen
    assert THROTTLED_KEY in upstream.keys_seen
    assert 429 in statuses
    assert statuses.count(200) >= 9
    issued = list(upstream.tokens_issued)
    assert len(issued) == 1
    secrets = [QUERY_KEY, HEADER_KEY, REVOKED_KEY, THROTTLED_KEY, OAUTH_CLIENT_SECRET]
    secrets += ["wr0ng-cl1ent-s3cret", *issued]
    pair = f"{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"
    secrets.append(base64.b64encode(pair.encode()).decode())

    log_lines, span_texts = logged_and_traced(caplog, spans)
    assert any("appid=REDACTED" in text for text in span_texts)
    assert len(rows.rows) >= 12
    health = [(h.label, h.state) for h in stats.key_health]
    assert ("prov-h", api_types_pb2.KEY_STATE_QUARANTINED) in [
        (label.split("#")[0], state) for label, state in health
    ]

    def leaks(text: str) -> list[str]:
        return [secret for secret in secrets if secret in text]

    found = {
        "logs": [line for line in log_lines if leaks(line)],
        "spans": [text for text in span_texts if leaks(text)],
        "records": [str(row) for row in rows.rows if leaks(str(row))],
        "errors": [text for text in errors if leaks(text)],
        "stats": leaks(str(stats)),
    }
    assert found == {"logs": [], "spans": [], "records": [], "errors": [], "stats": []}
