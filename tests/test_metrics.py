"""Metrics: the contract's names and labels, on a fresh registry per test."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bulk._cli import main
from bulk._metrics import Metrics, Pusher
from bulk._version import __version__
from bulk.testing import wait_until


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


def test_info_and_start_time() -> None:
    """``bulk_info{version,backend}`` is 1 and the start time is the one given."""
    registry = CollectorRegistry()
    Metrics(registry).started(backend="local", at=1_700_000_000.5)

    labels = {"version": __version__, "backend": "local"}
    assert 1 == registry.get_sample_value("bulk_info", labels)
    assert 1_700_000_000.5 == registry.get_sample_value("bulk_run_start_time_seconds")


def test_buckets_fit_requests_and_jobs() -> None:
    """Request buckets reach from a millisecond to a minute; job buckets from half a second
    to two days, with an hour in between."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.request_duration.labels(endpoint="submit").observe(0.0008)
    metrics.job_duration.observe(0.3)

    def bounds(name: str) -> list[float]:
        return sorted(
            float(s.labels["le"])
            for m in registry.collect()
            for s in m.samples
            if s.name == name and s.labels.get("endpoint", "submit") == "submit"
        )

    request, job = (
        bounds("bulk_request_duration_seconds_bucket"),
        bounds("bulk_job_duration_seconds_bucket"),
    )
    assert request[0] <= 0.001
    assert 60 <= request[-2]  # the last is +Inf
    assert job[0] <= 0.5
    assert 3600 in job
    assert 24 * 3600 <= job[-2]
    # The smallest observations land in the first bucket, not in a coarse one.
    assert 1 == registry.get_sample_value(
        "bulk_request_duration_seconds_bucket", {"endpoint": "submit", "le": str(request[0])}
    )
    assert 1 == registry.get_sample_value("bulk_job_duration_seconds_bucket", {"le": str(job[0])})


def write_config(folder: Path, rows: int, *, fail: int | None = None) -> Path:
    """A local run of ``rows`` jobs; row ``fail`` exits 1."""
    config = folder / "run.toml"
    check = f"exit $(( {{i}} == {fail} ))" if fail is not None else "exit 0"
    config.write_text(
        f'[run]\nname = "pushed"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        f'[backend]\nkind = "local"\n[job]\ncommand = ["sh", "-c", "{check}"]\n'
    )
    return config


Gateway = tuple[str, list[tuple[str, str, bytes]]]


def test_pushgateway_gets_the_final_state(fake_pushgateway: Gateway, tmp_path: Path) -> None:
    """The last push holds the run's final counts, grouped by job="bulk" and run=<name>."""
    url, received = fake_pushgateway
    config = write_config(tmp_path, 4)

    code = main(["run", str(config), "--pushgateway", url + "/"])

    assert 0 == code
    method, path, body = received[-1]
    assert ("PUT", "/metrics/job/bulk/run/pushed") == (method, path)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert 4 == samples["bulk_jobs_total", (("state", "succeeded"),)]
    assert 1 == samples["bulk_info", (("backend", "local"), ("version", __version__))]
    assert samples["bulk_run_start_time_seconds", ()] > 0


def test_pushgateway_delete_on_success_only(fake_pushgateway: Gateway, tmp_path: Path) -> None:
    """--pushgateway-delete deletes the run's group when every job succeeded; after a failed
    run the final state stays pushed."""
    url, received = fake_pushgateway
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    ok, bad = write_config(tmp_path / "ok", 2), write_config(tmp_path / "bad", 2, fail=1)

    assert 0 == main(["run", str(ok), "--pushgateway", url, "--pushgateway-delete"])
    assert ("DELETE", "/metrics/job/bulk/run/pushed") == received[-1][:2]
    assert 1 == main(["run", str(bad), "--pushgateway", url, "--pushgateway-delete"])
    assert ("PUT", "/metrics/job/bulk/run/pushed") == received[-1][:2]


def test_a_down_pushgateway_warns_once_and_the_run_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens: one warning naming the gateway, exit 0, every job done."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, 3)

    code = main(["run", str(config), "--pushgateway", f"http://127.0.0.1:{port}"])

    err = capsys.readouterr().err
    assert 0 == code
    warnings = [line for line in err.splitlines() if "Pushgateway" in line]
    expected = (
        f"bulk: warning: cannot push metrics to the Pushgateway at http://127.0.0.1:{port}: "
        "connection refused; the run goes on (no further warning)"
    )
    assert [expected] == warnings


def test_a_silent_pushgateway_costs_at_most_the_timeout() -> None:
    """A gateway that accepts the connection and never answers: the push gives up after
    its timeout and warns once; the next one is quiet."""
    warned: list[str] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pusher = Pusher(url, CollectorRegistry(), run="r", warn=warned.append, timeout_s=0.2)
        started = time.monotonic()
        assert not pusher.push()
        assert not pusher.push()
        elapsed = time.monotonic() - started

    assert elapsed < 5  # two timeouts of 0.2 s, with room for a loaded machine
    assert 1 == len(warned)
    assert "timed out" in warned[0]


async def test_pushes_run_off_the_event_loop() -> None:
    """Pusher.run pushes in a worker thread: while a push waits, the loop goes on (here: it
    is the loop that lets the push finish; a push on the loop would time out instead)."""
    started, release = threading.Event(), threading.Event()
    released: list[bool] = []

    class Waiting(Pusher):
        def push(self) -> bool:
            started.set()
            released.append(release.wait(timeout=5))
            return True

    pusher = Waiting("http://127.0.0.1:9", CollectorRegistry(), run="r", warn=print)

    async def push_started() -> bool:
        return started.is_set()

    async def push_returned() -> bool:
        return bool(released)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pusher.run, 0.01)
        await wait_until(push_started, what="the first push")
        release.set()
        await wait_until(push_returned, what="the first push to return")
        tg.cancel_scope.cancel()

    assert [True] == released[:1]
