"""Query fingerprints, their cap, and percentiles of the figures db_service reports."""

from __future__ import annotations

import time

import pytest

from db_service import figures as figures_module
from db_service.figures import OTHER, DbFigures, Samples, fingerprint

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = ?"),
        ("select  *\n from t where name = 'it''s'", "select * from t where name = ?"),
        ("SELECT * FROM t WHERE id = $1 AND x = $2", "SELECT * FROM t WHERE id = ? AND x = ?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?+)"),
        ("SELECT * FROM t WHERE id IN (%s, %s)", "SELECT * FROM t WHERE id IN (?+)"),
        ("SELECT -1.5e3, TRUE, NULL, x'ff'", "SELECT ?, ?, ?, ?"),
        # Digits inside identifiers are names, not literals.
        ("SELECT col2 FROM table_3", "SELECT col2 FROM table_3"),
    ],
)
def test_fingerprint_replaces_literals_and_keeps_identifiers(sql: str, shape: str) -> None:
    assert fingerprint(sql) == shape


def test_statements_differing_only_in_literals_share_one_series() -> None:
    figures = DbFigures("main")
    for n in range(10):
        figures.query(f"SELECT * FROM t WHERE id = {n}", 0.0, ok=n != 3)
    (series,) = figures.to_proto(10).queries
    assert series.fingerprint == "SELECT * FROM t WHERE id = ?"
    assert (series.calls, series.errors) == (10, 1)


def test_fingerprints_past_the_cap_count_as_other() -> None:
    figures = DbFigures("main", max_fingerprints=3)
    for table in ("a", "b", "c", "d", "e"):
        figures.query(f"SELECT * FROM {table}", 0.0, ok=True)
    shapes = {q.fingerprint: q.calls for q in figures.to_proto(10).queries}
    assert len(shapes) == 4
    assert shapes[OTHER] == 2


def test_a_shape_past_the_cap_stays_under_other_when_its_text_comes_again() -> None:
    figures = DbFigures("main", max_fingerprints=1)
    for _ in range(3):
        figures.query("SELECT * FROM a", 0.0, ok=True)
        figures.query("SELECT * FROM b WHERE id = 1", 0.0, ok=False)
    figures.query("SELECT * FROM b WHERE id = 2", 0.0, ok=True)
    shapes = {q.fingerprint: (q.calls, q.errors) for q in figures.to_proto(10).queries}
    assert shapes == {"SELECT * FROM a": (3, 0), OTHER: (4, 3)}


def test_statements_keep_their_series_when_the_text_cache_is_emptied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(figures_module, "_CACHE_SIZE", 2)
    figures = DbFigures("main")
    for n in range(7):  # more distinct texts than the cache holds, each twice
        figures.query(f"SELECT * FROM t WHERE id = {n}", 0.0, ok=True)
        figures.query(f"SELECT * FROM t WHERE id = {n}", 0.0, ok=True)
    (series,) = figures.to_proto(10).queries
    assert (series.fingerprint, series.calls) == ("SELECT * FROM t WHERE id = ?", 14)
    assert figures.query_p95_ms() >= 0.0
    assert len(figures.latency_s) == 14


def test_latency_is_measured_from_the_start_given() -> None:
    figures = DbFigures("main")
    figures.query("SELECT 1", time.perf_counter() - 0.05, ok=True)
    (series,) = figures.to_proto(10).queries
    assert 50.0 <= series.p50_ms < 5000.0
    assert figures.query_p95_ms() == series.p95_ms


def test_pool_efficiency_is_the_share_of_acquires_without_waiting() -> None:
    figures = DbFigures("main")
    assert figures.to_proto(10).pool_efficiency == 1.0  # nothing asked yet
    for waited in (False, False, False, True):
        figures.acquired(0.004 if waited else 0.0, waited=waited)
    reported = figures.to_proto(10)
    assert reported.pool_efficiency == 0.75
    assert reported.acquire_wait_max_ms == pytest.approx(4.0)
    assert reported.acquire_wait_p50_ms == 0.0


def test_percentiles_use_nearest_rank_over_recent_samples() -> None:
    samples = Samples(size=100)
    for value in range(1, 201):  # only the latest 100 (101..200) are kept
        samples.add(float(value))
    assert samples.percentile(50) == 150.0
    assert samples.percentile(95) == 195.0
    assert samples.percentile(100) == 200.0
    assert Samples().percentile(99) == 0.0
