"""The journal's per-second time series: stored by the group commit, summed per step,
upgraded into older journals, and sampled from a real engine run's counters."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio.testing

from bulk._clock import AnyioClock
from bulk._engine import Delivery, Engine, Runtime
from bulk._journal import SCHEMA_VERSION, Journal, Record, SeriesRow, State
from bulk._naming import Point, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._template import compile_template
from bulk.backends.base import Submission
from bulk.errors import ThrottledError
from bulk.testing import ClockLimiter, FakeBackend


def make_journal(path: Path, n: int) -> Journal:
    journal = Journal.create(path, {"run": "t"})
    points = (Point(i, point_key({"x": i}), f"s.csv:{i + 2}", {"x": i}) for i in range(n))
    for _ in journal.fill(points):
        pass
    journal.finish()
    return journal


class TestStore:
    def test_rows_are_summed_per_step_with_the_latest_rate(self, tmp_path: Path) -> None:
        """Counts add up over a step; rate and ceiling are the step's latest written ones,
        and rows written twice for the same second add their counts."""
        journal = make_journal(tmp_path / "j.sqlite", 1)
        journal.apply(
            [],
            [
                SeriesRow(100, "submit", ok=3, rate=10.0, ceiling=20.0),
                SeriesRow(101, "submit", ok=2, throttled=1, rate=5.0, ceiling=20.0),
                SeriesRow(102, "submit", ok=4),  # rate unchanged: carried forward
                SeriesRow(102, "run", retries=2),
            ],
        )
        journal.apply([Record(0, State.SUBMITTING, attempt=1)], [SeriesRow(102, "submit", ok=1)])

        assert [
            SeriesRow(100, "submit", ok=3, rate=10.0, ceiling=20.0),
            SeriesRow(101, "submit", ok=2, throttled=1, rate=5.0, ceiling=20.0),
            SeriesRow(102, "run", retries=2),
            SeriesRow(102, "submit", ok=5),
        ] == journal.series()
        assert [
            SeriesRow(100, "run", retries=2),
            SeriesRow(100, "submit", ok=10, throttled=1, rate=5.0, ceiling=20.0),
        ] == journal.series(step=10)
        assert [SeriesRow(102, "run", retries=2), SeriesRow(102, "submit", ok=5)] == (
            journal.series(since=102.5)
        )
        assert 11 == sum(r.requests for r in journal.series())

    def test_a_journal_of_schema_2_gains_the_series_table(self, tmp_path: Path) -> None:
        """An older journal (no ``series``) is upgraded in place when opened."""
        path = tmp_path / "j.sqlite"
        make_journal(path, 2).close()
        with sqlite3.connect(path) as conn:
            conn.executescript("DROP TABLE series; UPDATE meta SET v = '2' WHERE k = 'schema';")
        conn.close()

        with Journal.open(path) as journal:
            assert SCHEMA_VERSION == journal.meta()["schema"] == "3"
            assert [] == journal.series()
            journal.apply([], [SeriesRow(5, "status", ok=1)])
            assert [SeriesRow(5, "status", ok=1)] == journal.series()


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


async def inline(func: Any, *args: Any) -> Any:
    return func(*args)


class VirtualWall(AnyioClock):
    """The test runner's virtual time, with a wall clock that follows it."""

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now()


async def test_a_run_records_its_requests_throttles_retries_and_rates(tmp_path: Path) -> None:
    """On virtual time: the series holds every request the metrics counted, by endpoint and
    outcome, the retries, and the submit rate that the throttles cut, under its ceiling."""
    journal = make_journal(tmp_path / "j.sqlite", 30)
    throttled: set[str] = set()

    async def throttle_once(backend: FakeBackend, sub: Submission) -> None:
        if sub.name not in throttled:
            throttled.add(sub.name)
            raise ThrottledError("429", job_name=sub.name, retry_after=0.5)
        backend.accept(sub)

    clock = VirtualWall()
    backend = FakeBackend(throttle_once, clock=clock, runs_for=3)
    pol = Policy(
        LimitsConfig(submit_rate_per_s=10.0, status_rate_per_s=50.0, burst=1),
        RetryConfig(attempts=3, budget_s=600.0, base_s=1.0, max_s=5.0),
        TrackConfig(first_s=1.0, factor=2.0, max_s=2.0),
    )
    runtime = Runtime(
        clock=clock,
        limiter_factory=ClockLimiter.factory(clock),
        offload=inline,
        rng=random.Random(3),
    )
    compiled = compile_template({"command": "echo {x}", "name": "{_name}"})
    e = Engine(
        backend,
        journal,
        template=compiled,
        run="t",
        policy=pol,
        runtime=runtime,
        delivery=Delivery(),
    )
    await e.run()

    rows = journal.series()
    registry = e.metrics.registry
    for endpoint in ("submit", "status"):
        for outcome in ("ok", "throttled"):
            want = registry.get_sample_value(
                "bulk_requests_total", {"endpoint": endpoint, "outcome": outcome}
            )
            got = sum(getattr(r, outcome) for r in rows if r.endpoint == endpoint)
            assert want == got, (endpoint, outcome)
    assert 30 == sum(r.throttled for r in rows if r.endpoint == "submit")
    assert 30 == sum(r.ok for r in rows if r.endpoint == "submit")
    retries = sum(
        s.value for m in e.metrics.retries.collect() for s in m.samples if s.name.endswith("_total")
    )
    assert retries == sum(r.retries for r in rows if r.endpoint == "run")
    submit_rates = [r.rate for r in rows if r.endpoint == "submit" and r.rate is not None]
    assert 10.0 == submit_rates[0]  # the first row says where it starts
    assert min(submit_rates) < 10.0  # throttles cut it
    assert {10.0} == {r.ceiling for r in rows if r.endpoint == "submit" and r.rate is not None}
    assert len({r.t for r in rows}) > 3  # spread over the seconds of the run
    wall = [j.submitted_at for j in journal.jobs() if j.submitted_at]
    assert min(wall) - 1 <= rows[0].t <= max(wall)
