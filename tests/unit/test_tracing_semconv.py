"""The helpers that make span attribute values safe and conventional, and the sampler settings."""

from __future__ import annotations

import sqlite3

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling

from db_service.tracing import response_status_code, span_name, statement_attributes
from paca_runtime import semconv
from paca_runtime.settings import SettingsError
from paca_runtime.telemetry import make_provider, sampler_from_env

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("select 1.5e3, .5, 0xFF, -7", "select ?, ?, ?, -?"),
        ("INSERT INTO t VALUES ($1, $2)", "INSERT INTO t VALUES ($1, $2)"),
        (
            "INSERT INTO t VALUES (%s, %(name)s, ?, :named)",
            "INSERT INTO t VALUES (%s, %(name)s, ?, :named)",
        ),
        ("SELECT 'it''s', E'a\\'b', $$body$$, $q$x$q$", "SELECT ?, ?, ?, ?"),
        ('SELECT "col1", `col2`, t1.c2 FROM t1', 'SELECT "col1", `col2`, t1.c2 FROM t1'),
        ("SELECT a -- the password 'x'\nFROM t /* 'y' */ WHERE  b=1", "SELECT a FROM t WHERE b=?"),
        ("SELECT 'unterminated", "SELECT ?"),
    ],
)
def test_sanitize_sql_replaces_every_literal_and_keeps_placeholders(
    sql: str, expected: str
) -> None:
    assert semconv.sanitize_sql(sql) == expected


def test_double_quoted_text_is_a_literal_only_where_the_engine_says_so() -> None:
    sql = 'SELECT * FROM t WHERE name = "bob"'
    assert semconv.sanitize_sql(sql) == sql
    assert semconv.sanitize_sql(sql, double_quoted_strings=True) == "SELECT * FROM t WHERE name = ?"


@pytest.mark.parametrize(
    ("sql", "operation", "summary"),
    [
        ("SELECT a FROM users WHERE id = ?", "SELECT", "SELECT users"),
        ("insert into orders (a) values (?)", "INSERT", "INSERT orders"),
        ("INSERT OR IGNORE INTO logs (a) VALUES (?)", "INSERT", "INSERT logs"),
        ("INSERT IGNORE INTO logs (a) VALUES (%s)", "INSERT", "INSERT logs"),
        ("UPDATE public.items SET a = ?", "UPDATE", "UPDATE public.items"),
        ("DELETE FROM t WHERE a = ?", "DELETE", "DELETE t"),
        ("WITH x AS (SELECT 1) DELETE FROM t", "DELETE", ""),
        ("CREATE TABLE t (a INTEGER)", "CREATE", ""),
        ("", "", ""),
    ],
)
def test_operation_name_and_summary(sql: str, operation: str, summary: str) -> None:
    assert semconv.sql_operation_name(sql) == operation
    assert semconv.sql_query_summary(sql) == summary


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1?q=1", "https://api.example.com/v1?q=1"),
        ("https://u:p@api.example.com/v1", "https://REDACTED:REDACTED@api.example.com/v1"),
        ("https://token@api.example.com/", "https://REDACTED:REDACTED@api.example.com/"),
        (
            "https://h/x?api_key=s3cr3t&page=2&Signature=abc",
            "https://h/x?api_key=REDACTED&page=2&Signature=REDACTED",
        ),
        ("http://[::1", "REDACTED"),
    ],
)
def test_url_full_hides_credentials_and_secret_query_values(url: str, expected: str) -> None:
    assert semconv.url_full(url) == expected


def test_url_server_gives_the_scheme_port_when_none_is_written() -> None:
    assert semconv.url_server("https://api.example.com/x") == ("api.example.com", 443)
    assert semconv.url_server("http://127.0.0.1:8081/") == ("127.0.0.1", 8081)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50052", ("127.0.0.1", 50052)),
        ("dns:///db.internal:50052", ("db.internal", 50052)),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", ("10.0.0.1", 1)),
        ("[::1]:50052", ("::1", 50052)),
        ("unix:///run/paca.sock", ("run/paca.sock", None)),
        ("db.internal", ("db.internal", None)),
    ],
)
def test_grpc_target_server(target: str, expected: tuple[str, int | None]) -> None:
    assert semconv.grpc_target_server(target) == expected


def test_sampler_default_follows_callers_and_keeps_one_in_twenty_new_traces() -> None:
    sampler = sampler_from_env({})
    assert isinstance(sampler, sampling.ParentBasedTraceIdRatio)
    assert "0.05" in sampler.get_description()  # type: ignore[no-untyped-call]
    # The argument alone tunes the default's ratio; a ratio sampler named alone keeps all.
    tuned = sampler_from_env({"OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert isinstance(tuned, sampling.ParentBasedTraceIdRatio)
    assert "0.5" in tuned.get_description()  # type: ignore[no-untyped-call]
    named = sampler_from_env({"OTEL_TRACES_SAMPLER": "traceidratio"})
    assert isinstance(named, sampling.TraceIdRatioBased)
    assert named.rate == 1.0
    assert sampler_from_env({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}) is (
        sampling.DEFAULT_ON
    )


def test_sampler_ratio_comes_from_the_argument() -> None:
    sampler = sampler_from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    assert isinstance(sampler, sampling.ParentBasedTraceIdRatio)
    assert "0.25" in sampler.get_description()  # type: ignore[no-untyped-call]
    assert sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"}) is sampling.ALWAYS_OFF


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)
def test_bad_sampler_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=f'"{variable}"'):
        sampler_from_env(env)


class _Engine:
    """Just what the attribute builder reads of a Backend."""

    def __init__(self, dialect: str, url: str, mariadb: bool = False) -> None:
        self.dialect = dialect
        self.url = url
        self.name = "main"
        self.mariadb = mariadb


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (
            _Engine("postgresql", "postgresql://u:pw@db.internal/orders"),
            {"db.system.name": "postgresql", "db.namespace": "orders", "server.port": 5432},
        ),
        (
            _Engine("mysql", "mysql://u:pw@10.0.0.5:3307/shop", mariadb=True),
            {"db.system.name": "mariadb", "db.namespace": "shop", "server.port": 3307},
        ),
        (
            _Engine("sqlite", "sqlite:////var/lib/paca/main.db"),
            {"db.system.name": "sqlite", "db.namespace": "/var/lib/paca/main.db"},
        ),
    ],
)
def test_engine_attributes_never_include_the_password(
    engine: _Engine, expected: dict[str, object]
) -> None:
    attributes = statement_attributes(engine, "SELECT 1")  # type: ignore[arg-type]
    assert expected.items() <= attributes.items()
    assert "pw" not in repr(attributes)
    assert span_name(attributes) == f"SELECT {expected['db.namespace']}"


def test_response_status_code_is_found_behind_the_translated_error() -> None:
    def translated(connection: sqlite3.Connection) -> None:
        try:
            connection.execute("INSERT INTO t VALUES (1)")
        except sqlite3.Error as exc:
            raise RuntimeError("duplicate") from exc

    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError) as caught:
        translated(connection)
    connection.close()
    assert response_status_code(caught.value) == "SQLITE_CONSTRAINT_PRIMARYKEY"
    assert response_status_code(RuntimeError("no engine")) == ""


def test_no_span_is_built_under_an_unsampled_parent_with_a_parent_based_sampler() -> None:
    tracer = make_provider("t", sampling.ParentBasedTraceIdRatio(0.0)).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        assert root.get_span_context().is_valid  # still a trace id for logs and headers
        child = tracer.start_span("child")
        assert child is root
    remote = trace.NonRecordingSpan(
        trace.SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=trace.TraceFlags(0))
    )
    with trace.use_span(remote), tracer.start_as_current_span("server") as server:
        assert server is remote


def test_spans_under_a_sampled_parent_and_other_samplers_are_unchanged() -> None:
    tracer = make_provider("t", sampling.DEFAULT_ON).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        child = tracer.start_span("child")
        assert child.is_recording()
        assert child.get_span_context().span_id != root.get_span_context().span_id
        child.end()
    unsampled = trace.NonRecordingSpan(
        trace.SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=trace.TraceFlags(0))
    )
    always = make_provider("t", sampling.ALWAYS_ON).get_tracer("t")
    with trace.use_span(unsampled):
        recorded = always.start_span("recorded anyway")
        assert recorded.is_recording()
        recorded.end()
