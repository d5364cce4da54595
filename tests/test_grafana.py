"""The Grafana dashboard (configs/grafana/bulk.json): every PromQL expression in it parses,
and names only metrics (and labels) bulk exports, with the suffixes Prometheus gives them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import CollectorRegistry

from bulk._metrics import Metrics

DASHBOARD = Path(__file__).parent.parent / "configs" / "grafana" / "bulk.json"
# Labels Prometheus adds (job, instance), the Pushgateway's grouping key (run), histograms' le.
ADDED_LABELS = {"job", "instance", "run", "le"}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.*),\s*(?P<label>\w+)\)")


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
    "gauge": ("",),
}


def families() -> dict[str, tuple[str, ...]]:
    """Each metric family bulk's registry holds, and the series names Prometheus stores it
    under: a counter ``x`` as ``x_total``, a histogram as ``x_bucket``/``x_count``/``x_sum``,
    an info ``x`` as ``x_info``, a gauge as itself."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {f.name: tuple(f.name + s for s in SUFFIXES[f.type]) for f in registry.collect()}


def exported() -> dict[str, set[str]]:
    """Every series name bulk exports, with the labels each may carry."""
    metrics = Metrics(CollectorRegistry())
    return {
        series: set(_labels(metrics, family)) | ADDED_LABELS
        for family, names in families().items()
        for series in names
    }


def _labels(metrics: Metrics, family: str) -> tuple[str, ...]:
    if family == "bulk":  # the info metric: its labels are its keys
        return ("version", "backend")
    for value in vars(metrics).values():
        if getattr(value, "_name", None) == family:
            names: tuple[str, ...] = value._labelnames
            return names
    return ()


def expressions(node: Any) -> Iterator[str]:
    """Every ``expr`` of the dashboard's panels, and the selectors of its variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "definition" and isinstance(value, str):
                found = LABEL_VALUES.fullmatch(value)
                assert found is not None, value
                yield found["selector"]
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from expressions(value)


def problems(expr: str, names: dict[str, set[str]]) -> list[str]:
    """What is wrong in one expression: a metric or a label bulk does not export."""
    found: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name not in names:
                found.append(f"{expr}: no metric {node.name}")
                return
            found.extend(
                f"{expr}: {node.name} has no label {m.name}"
                for m in node.matchers.matchers
                if m.name not in names[node.name]
            )
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            known = set().union(*names.values())
            found.extend(f"{expr}: no label {x}" for x in node.modifier.labels if x not in known)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_every_expression_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    names = exported()
    exprs = list(expressions(dashboard))

    assert len(exprs) >= 15
    assert [] == [problem for expr in exprs for problem in problems(expr, names)]


def test_the_dashboard_shows_every_metric() -> None:
    """Rates, states, throttles, the adaptive rate and its ceiling, both durations: each
    metric bulk exports is on the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used: set[str | None] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            used.add(node.name)

    for expr in expressions(dashboard):
        promql_parser.walk(promql_parser.parse(expr), visit)

    assert [] == [family for family, names in families().items() if not used & set(names)]


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(bulk_jobs[1m])", "no metric bulk_jobs"),  # a counter without _total
        ("bulk_request_duration_seconds", "no metric bulk_request_duration_seconds"),
        ("rate(bulk_job_duration_seconds_total[1m])", "no metric bulk_job_duration_seconds_total"),
        ('bulk_jobs_total{status="failed"}', "bulk_jobs_total has no label status"),
        ("sum by (kind) (bulk_rows_done)", "no label kind"),
    ],
)
def test_the_check_catches_wrong_names(expr: str, problem: str) -> None:
    assert [f"{expr}: {problem}"] == problems(expr, exported())


def test_a_syntax_error_is_caught() -> None:
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        problems("sum(rate(bulk_jobs_total[1m])", exported())
