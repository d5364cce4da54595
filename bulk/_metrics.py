"""Prometheus metrics. Built against an injected registry: one per run, a fresh one per test.

Names and labels are part of the product's contract (see the README). Label values are a small
fixed set: never a job id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.client import HTTPException
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bulk._text import one_line
from bulk.backends.base import Endpoint

__all__ = ["ENDPOINTS", "JOB_BUCKETS", "OUTCOMES", "REQUEST_BUCKETS", "Metrics", "Pusher"]

# The endpoint label: the same names the engine and backends use (one list, the Literal).
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
OUTCOMES = ("ok", "throttled", "transient", "ambiguous", "unreachable", "permanent")
# Requests take a millisecond (a local process) to tens of seconds (a slow service before its
# timeout); jobs a fraction of a second (a local script) to days (a training run).
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
_HOUR = 3600
JOB_BUCKETS = (
    0.5, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800,
    _HOUR, 2 * _HOUR, 4 * _HOUR, 8 * _HOUR, 12 * _HOUR, 24 * _HOUR, 48 * _HOUR,
)  # fmt: skip


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
            buckets=REQUEST_BUCKETS,
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
        self.rate_ceiling = Gauge(
            "bulk_rate_ceiling",
            "Configured request rate ceiling per second by endpoint: bulk_rate_limit's maximum",
            ["endpoint"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "bulk_job_duration_seconds",
            "Time from acceptance to a terminal state",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.rows_total = Gauge("bulk_rows_total", "Sweep points in the run", registry=registry)
        self.rows_done = Gauge(
            "bulk_rows_done", "Sweep points whose job has finished", registry=registry
        )
        self.info = Info("bulk", "The bulk version and the run's backend kind", registry=registry)
        self.start_time = Gauge(
            "bulk_run_start_time_seconds",
            "When this session of the run started, in seconds since the Unix epoch",
            registry=registry,
        )
        # Labelled children exist from the start, so a scrape shows zeros, not gaps.
        for state in ("submitted", "succeeded", "failed", "stopped"):
            self.jobs.labels(state=state)
        for endpoint in ENDPOINTS:
            self.request_duration.labels(endpoint=endpoint)

    def started(self, *, backend: str, at: float) -> None:
        """Say which run this is: ``bulk_info{version,backend}`` and the session's start
        (``at``: Unix time). ``backend`` is the kind's name: never an address or a key."""
        from bulk._version import __version__

        self.info.info({"version": __version__, "backend": backend})
        self.start_time.set(at)


# A push waits at most this long for the Pushgateway: a slow or silent one never holds the run
# (pushes run in a worker thread) and holds the end of the command at most this long.
PUSH_TIMEOUT_S = 3.0
# Pushes at most this often while the run goes on (Prometheus scrapes every 15 s by default).
PUSH_INTERVAL_S = 1.0
# The ``job`` label of every push; the grouping key adds ``run``.
PUSH_JOB = "bulk"


class Pusher:
    """Pushes a run's registry to a Prometheus Pushgateway, grouped as ``job="bulk",
    run=<run name>``, with prometheus-client's own ``push_to_gateway`` (PUT: the group is
    replaced by the registry as it is now).

    A Pushgateway that is down or slow never fails or slows the run: pushes run in a worker
    thread (one at a time; a tick that finds the previous push still going is skipped), each
    waits at most ``timeout_s``, and the first failure is reported once through ``warn``
    (later ones are quiet).

    Example::

        pusher = Pusher("http://127.0.0.1:9091", registry, run="sweep", warn=print)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pusher.run)  # every PUSH_INTERVAL_S until cancelled
            ...
        pusher.push()  # the final state
    """

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        *,
        run: str,
        warn: Callable[[str], None],
        timeout_s: float = PUSH_TIMEOUT_S,
    ):
        self.url = url
        self._registry = registry
        self._grouping = {"run": run}
        self._warn = warn
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # one push at a time, and the last one last
        self._warned = False
        self._busy = False

    async def run(self, interval_s: float = PUSH_INTERVAL_S) -> None:
        """Push every ``interval_s`` seconds until cancelled."""
        import anyio

        while True:
            if not self._busy:
                self._busy = True
                try:
                    await anyio.to_thread.run_sync(self.push, abandon_on_cancel=True)
                finally:
                    self._busy = False
            await anyio.sleep(interval_s)

    def push(self) -> bool:
        """Push the registry now (blocking, at most ``timeout_s``); whether it went through."""
        from prometheus_client import push_to_gateway

        return self._do("push", push_to_gateway, registry=self._registry)

    def delete(self) -> bool:
        """Delete the run's group from the Pushgateway; whether it went through."""
        from prometheus_client import delete_from_gateway

        return self._do("delete", delete_from_gateway)

    def _do(self, verb: str, call: Callable[..., None], **kwargs: Any) -> bool:
        with self._lock:
            try:
                call(
                    self.url,
                    job=PUSH_JOB,
                    grouping_key=self._grouping,
                    timeout=self._timeout_s,
                    **kwargs,
                )
            except (OSError, HTTPException, ValueError) as exc:
                if not self._warned:
                    self._warned = True
                    self._warn(
                        f"bulk: warning: cannot {verb} metrics to the Pushgateway at "
                        f"{self.url}: {_reason(exc)}; the run goes on (no further warning)"
                    )
                return False
            return True


def _reason(exc: BaseException) -> str:
    """What went wrong with a push, in one line (urllib wraps the socket's error)."""
    from urllib.error import HTTPError, URLError

    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return one_line(exc)
