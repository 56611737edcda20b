"""The figures rules are evaluated on: exactly the samples ``/metrics`` exposes at one moment.

Building the table from the prometheus-client families that :class:`~monitor.exposition.
MonitorMetrics` yields means a rule can name anything a scrape shows, under the same name and
labels, and that there is one place where figures are named. Histograms are rebuilt from their
cumulative ``_bucket`` samples for :func:`histogram_quantile`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TypeAlias

from prometheus_client.metrics_core import Metric

# A series' labels, sorted, so it can key a dict.
SeriesKey: TypeAlias = tuple[tuple[str, str], ...]
# Cumulative bucket counts by upper bound, ascending, the last one +Inf.
Buckets: TypeAlias = tuple[tuple[float, float], ...]


def series_key(labels: Mapping[str, str]) -> SeriesKey:
    return tuple(sorted(labels.items()))


def matches(key: SeriesKey, match: Mapping[str, str]) -> bool:
    """Whether a series has every label value in ``match``."""
    labels = dict(key)
    return all(labels.get(name) == value for name, value in match.items())


class FigureTable:
    """Every exposed sample by name and labels, read-only once built.

    Args:
        families: Metric families as a prometheus-client collector yields them.
    """

    def __init__(self, families: Iterable[Metric]) -> None:
        self._samples: dict[str, dict[SeriesKey, float]] = {}
        self._counters: set[str] = set()
        for family in families:
            if family.type == "counter":
                self._counters.add(f"{family.name}_total")
            for sample in family.samples:
                self._samples.setdefault(sample.name, {})[series_key(sample.labels)] = sample.value

    def __repr__(self) -> str:
        count = sum(len(series) for series in self._samples.values())
        return f"<FigureTable names={len(self._samples)} samples={count}>"

    def is_counter(self, name: str) -> bool:
        """Whether ``name`` is a counter's sample, which only a process restart takes down."""
        return name in self._counters

    def values(self, name: str, match: Mapping[str, str]) -> dict[SeriesKey, float]:
        """The samples named ``name`` whose labels include ``match``."""
        return {
            key: value for key, value in self._samples.get(name, {}).items() if matches(key, match)
        }

    def histograms(self, name: str, match: Mapping[str, str]) -> dict[SeriesKey, Buckets]:
        """The histograms named ``name`` (from ``name_bucket``), keyed without ``le``."""
        grouped: dict[SeriesKey, list[tuple[float, float]]] = {}
        for key, count in self._samples.get(f"{name}_bucket", {}).items():
            labels = dict(key)
            bound = labels.pop("le", None)
            if bound is None:
                continue
            base = series_key(labels)
            if matches(base, match):
                grouped.setdefault(base, []).append((float(bound), count))
        return {key: tuple(sorted(buckets)) for key, buckets in grouped.items()}


def bucket_increase(latest: Buckets, baseline: Buckets) -> Buckets:
    """Observations made between two readings of one histogram, as cumulative buckets.

    A histogram whose bounds changed, or whose counts went down (its process restarted), is
    taken as counting from zero, like a counter reset.
    """
    if [bound for bound, _ in latest] != [bound for bound, _ in baseline]:
        return latest
    if any(now < then for (_, now), (_, then) in zip(latest, baseline, strict=True)):
        return latest
    return tuple(
        (bound, now - then) for (bound, now), (_, then) in zip(latest, baseline, strict=True)
    )


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The ``q`` quantile of the observations, as Prometheus' ``histogram_quantile`` computes it.

    Linear interpolation inside the bucket that holds the rank; the first bucket starts at 0;
    a rank in the +Inf bucket yields the highest finite bound. NaN when there are no
    observations.
    """
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound if len(buckets) > 1 else math.nan
            if bound <= 0:
                return bound
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, count
    return math.nan
