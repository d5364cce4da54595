"""Metrics: the contract's names and labels, on a fresh registry per test."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bulk._metrics import Metrics


def test_contract_names_are_exported() -> None:
    """Every metric named in the design is present from the start."""
    registry = CollectorRegistry()
    Metrics(registry)

    text = generate_latest(registry).decode()

    for name in (
        'bulk_jobs_total{state="submitted"}',
        "bulk_jobs_active",
        "bulk_requests_total",
        'bulk_request_duration_seconds_bucket{endpoint="submit"',
        "bulk_retries_total",
        "bulk_throttled_total",
        "bulk_rate_limit",
        "bulk_job_duration_seconds",
        "bulk_rows_total",
        "bulk_rows_done",
    ):
        assert name in text, name


def test_registries_are_independent() -> None:
    """Two runs (or tests) never share counters."""
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).jobs.labels(state="failed").inc()
    Metrics(b)

    assert 1 == a.get_sample_value("bulk_jobs_total", {"state": "failed"})
    assert 0 == b.get_sample_value("bulk_jobs_total", {"state": "failed"})
