"""Prometheus metrics. Built against an injected registry: one per run, a fresh one per test.

Names and labels are part of the product's contract (see the README). Label values are a small
fixed set: never a job id.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bulk.backends.base import Endpoint

__all__ = ["ENDPOINTS", "OUTCOMES", "Metrics"]

# The endpoint label: the same names the engine and backends use (one list, the Literal).
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
OUTCOMES = ("ok", "throttled", "transient", "ambiguous", "unreachable", "permanent")
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600)


class Metrics:
    """Every metric bulk exports.

    Example::

        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.jobs.labels(state="succeeded").inc()
        registry.get_sample_value("bulk_jobs_total", {"state": "succeeded"})  # 1.0
    """

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.jobs = Counter(
            "bulk_jobs",
            "Jobs that reached a state: submitted, succeeded, failed, stopped",
            ["state"],
            registry=registry,
        )
        self.active = Gauge(
            "bulk_jobs_active", "Jobs submitted and not yet finished", registry=registry
        )
        self.requests = Counter(
            "bulk_requests",
            "Requests to the service by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "bulk_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "bulk_retries", "Requests sent again, by reason", ["reason"], registry=registry
        )
        self.throttled = Counter(
            "bulk_throttled", "Throttling answers (429 or throttle codes)", registry=registry
        )
        self.rate_limit = Gauge(
            "bulk_rate_limit",
            "Current adaptive request rate per second by endpoint",
            ["endpoint"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "bulk_job_duration_seconds",
            "Time from acceptance to a terminal state",
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
        self.rows_total = Gauge("bulk_rows_total", "Sweep points in the run", registry=registry)
        self.rows_done = Gauge(
            "bulk_rows_done", "Sweep points whose job has finished", registry=registry
        )
        # Labelled children exist from the start, so a scrape shows zeros, not gaps.
        for state in ("submitted", "succeeded", "failed", "stopped"):
            self.jobs.labels(state=state)
        for endpoint in ENDPOINTS:
            self.request_duration.labels(endpoint=endpoint)
