"""Alert rules: what figure to watch, how to reduce it, the threshold and how long it must hold.

A rule names any figure the monitor exposes on ``/metrics`` (a reported metric, or one of the
monitor's own ``paca_host_*``, ``paca_process_*``, ``paca_service_*``), optionally narrowed by
exact label values, and reduces each matching series to one number with a function:

- ``value`` (any sample): the latest value, a counter's running total or a gauge's level;
- ``increase`` (counter or gauge): the latest value minus the one ``window_s`` earlier (a
  counter that went down was reset by a restart and counts from 0);
- ``rate`` (counter or gauge): ``increase`` per second;
- ``quantile`` (histogram): the ``quantile`` (e.g. 0.95) of the observations made over
  ``window_s``, or since the process started when ``window_s`` is 0;
- ``ratio`` (two counters with the same labels): the increase of ``metric`` over the increase
  of ``denominator`` over ``window_s`` (their totals when 0), e.g. an error rate.

Rules come from a TOML file (``PACA_MONITOR_RULES``) of ``[[rule]]`` tables; see
``deploy/alerts.toml`` for the shipped defaults, annotated. TOML rather than a query language:
the standard library reads it, every field is validated with a message naming the rule and the
field, and the file reads like the README's configuration table.
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

from paca.monitor.v1 import monitor_types_pb2

SeverityValue: TypeAlias = monitor_types_pb2.Severity.ValueType

FUNCTIONS: Final = frozenset({"value", "increase", "rate", "quantile", "ratio"})
# Functions that compare two samples and so need a window to compare over.
WINDOWED: Final = frozenset({"increase", "rate"})

OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

SEVERITIES: Final[Mapping[str, SeverityValue]] = {
    "info": monitor_types_pb2.SEVERITY_INFO,
    "warning": monitor_types_pb2.SEVERITY_WARNING,
    "critical": monitor_types_pb2.SEVERITY_CRITICAL,
}

_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_METRIC: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYS: Final = frozenset(
    {
        "name",
        "metric",
        "match",
        "function",
        "window_s",
        "quantile",
        "denominator",
        "op",
        "threshold",
        "for_s",
        "severity",
        "summary",
    }
)


class RuleError(ValueError):
    """A rule is malformed; the message names the rule and the field."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert rule; validates itself on construction.

    Attributes:
        name: Unique among the rules; shown in alerts.
        metric: The figure's name as on ``/metrics`` (a counter with its ``_total``; a
            histogram by its base name).
        match: Label values a series must have to be watched, e.g. ``{"database": "main"}``.
        function: How a series becomes one number (see the module docs).
        threshold: The value compared with.
        op: The comparison that makes the condition hold: ``value op threshold``.
        for_s: How long the condition must hold before the alert fires; 0 fires at once.
        severity: ``SEVERITY_INFO``, ``SEVERITY_WARNING`` or ``SEVERITY_CRITICAL``.
        window_s: The span ``increase``, ``rate``, ``ratio`` and ``quantile`` cover.
        quantile: For ``quantile``: in (0, 1).
        denominator: For ``ratio``: the counter divided by.
        summary: One line for people; ``$value``, ``$threshold``, ``$rule`` and every label
            (``$service``, ``$instance``...) are substituted.
    """

    name: str
    metric: str
    threshold: float
    op: str = ">"
    function: str = "value"
    match: Mapping[str, str] = field(default_factory=dict)
    for_s: float = 0.0
    severity: SeverityValue = monitor_types_pb2.SEVERITY_WARNING
    window_s: float = 0.0
    quantile: float = 0.0
    denominator: str = ""
    summary: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise RuleError(f'"name" must match {_NAME.pattern}, got {self.name!r}')
        for key, metric in (("metric", self.metric), ("denominator", self.denominator)):
            if (metric or key == "metric") and not _METRIC.fullmatch(metric):
                raise RuleError(f'"{key}" must be a metric name, got {metric!r}')
        if self.function not in FUNCTIONS:
            raise RuleError(f'"function" must be one of {sorted(FUNCTIONS)}, got {self.function!r}')
        if self.op not in OPERATORS:
            raise RuleError(f'"op" must be one of {list(OPERATORS)}, got {self.op!r}')
        if not math.isfinite(self.threshold):
            raise RuleError(f'"threshold" must be finite, got {self.threshold}')
        for key, seconds in (("for_s", self.for_s), ("window_s", self.window_s)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise RuleError(f'"{key}" must be >= 0, got {seconds}')
        if self.function in WINDOWED and self.window_s <= 0:
            raise RuleError(f'"window_s" must be > 0 for function {self.function!r}')
        if (self.function == "quantile") != (0 < self.quantile < 1):
            raise RuleError('"quantile" must be in (0, 1), and is only for function "quantile"')
        if (self.function == "ratio") != bool(self.denominator):
            raise RuleError('"denominator" is required for function "ratio", and only for it')
        if self.severity not in SEVERITIES.values():
            raise RuleError(f'"severity" must be one of {list(SEVERITIES)}')
        for label, value in self.match.items():
            if not isinstance(label, str) or not isinstance(value, str):
                raise RuleError(f'"match" values must be strings, got {label}={value!r}')

    @property
    def severity_name(self) -> str:
        return next(name for name, value in SEVERITIES.items() if value == self.severity)

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the condition (NaN never does)."""
        return not math.isnan(value) and OPERATORS[self.op](value, self.threshold)


def parse_rules(document: Mapping[str, object]) -> tuple[AlertRule, ...]:
    """Rules from a parsed TOML document with a ``rule`` array of tables.

    Raises:
        RuleError: Naming the rule (position and name) and the field at fault.
    """
    unknown = set(document) - {"rule"}
    if unknown:
        raise RuleError(f"unknown top-level keys {sorted(unknown)}; rules go in [[rule]] tables")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError('"rule" must be an array of tables ([[rule]])')
    rules: list[AlertRule] = []
    for index, table in enumerate(tables):
        where = f"rule {index + 1}"
        try:
            if not isinstance(table, dict):
                raise RuleError("must be a table")
            where += f" ({table.get('name', '?')!s})"
            rules.append(_rule(table))
        except RuleError as exc:
            raise RuleError(f"{where}: {exc}") from None
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuleError(f"rule names must be unique; repeated: {duplicates}")
    return tuple(rules)


def load_rules(path: Path) -> tuple[AlertRule, ...]:
    """Read and validate a rules file.

    Raises:
        RuleError: The file cannot be read, is not TOML, or holds a bad rule.
    """
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise RuleError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path} is not valid TOML: {exc}") from exc
    return parse_rules(document)


def _rule(table: Mapping[str, object]) -> AlertRule:
    unknown = set(table) - _KEYS
    if unknown:
        raise RuleError(f"unknown keys {sorted(unknown)}")
    for required in ("name", "metric", "threshold"):
        if required not in table:
            raise RuleError(f'"{required}" is required')
    severity = _text(table, "severity", "warning")
    if severity not in SEVERITIES:
        raise RuleError(f'"severity" must be one of {list(SEVERITIES)}, got {severity!r}')
    match = table.get("match", {})
    if not isinstance(match, dict):
        raise RuleError('"match" must be a table of label = "value"')
    return AlertRule(
        name=_text(table, "name", ""),
        metric=_text(table, "metric", ""),
        threshold=_number(table, "threshold", 0.0),
        op=_text(table, "op", ">"),
        function=_text(table, "function", "value"),
        match=dict(match),
        for_s=_number(table, "for_s", 0.0),
        severity=SEVERITIES[severity],
        window_s=_number(table, "window_s", 0.0),
        quantile=_number(table, "quantile", 0.0),
        denominator=_text(table, "denominator", ""),
        summary=_text(table, "summary", ""),
    )


def _text(table: Mapping[str, object], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise RuleError(f'"{key}" must be a string, got {value!r}')
    return value


def _number(table: Mapping[str, object], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f'"{key}" must be a number, got {value!r}')
    return float(value)
