"""The engine against FakeBackend, on virtual time: rates, retries, throttling, exactly-once.

These tests run under trio with ``MockClock(autojump_threshold=0)``: whenever every task is
blocked, time jumps to the next deadline, so a run of minutes takes milliseconds and times are
exact. (The engine touches no asyncio-only code once its rate limiter is injected, which this
also proves.) The journal is a real SQLite file.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio.testing

from bulk.backends.base import Phase, Submission
from bulk.clock import AnyioClock
from bulk.config import LimitsConfig, RetryConfig, TrackConfig
from bulk.engine import Engine, Policy, stop_run
from bulk.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)
from bulk.journal import Journal, Record, State
from bulk.plan import job_name
from bulk.spec import compile_template
from bulk.sweep import Point, point_key
from bulk.testing import ClockLimiter, FakeBackend

RUN = "t"
TEMPLATE = compile_template({"command": "echo {x}", "name": "{_name}"})


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


def make_journal(path: Path, n: int) -> Journal:
    journal = Journal.create(path, {"run": RUN})
    points = (Point(i, point_key({"x": i}), f"s.csv:{i + 2}", {"x": i}) for i in range(n))
    for _ in journal.fill(points):
        pass
    journal.finish()
    return journal


@pytest.fixture
def journal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Journal]:
    marker = request.node.get_closest_marker("rows")
    j = make_journal(tmp_path / "journal.sqlite", marker.args[0] if marker else 20)
    yield j
    j.close()


def policy(**kw: Any) -> Policy:
    limits: dict[str, Any] = {
        "submit_rate_per_s": 1000.0,
        "status_rate_per_s": 1000.0,
        "burst": 1,
        "max_in_flight": 8,
        "max_active": 1000,
    }
    retry: dict[str, Any] = {"attempts": 5, "budget_s": 600.0, "base_s": 1.0, "max_s": 30.0}
    track: dict[str, Any] = {"first_s": 1.0, "factor": 2.0, "max_s": 4.0}
    for k, v in kw.items():  # track_max_s: max_s is a key of both retry and track
        if k.startswith("track_"):
            track[k.removeprefix("track_")] = v
        else:
            section = limits if k in limits else retry if k in retry else track
            section[k] = v
    return Policy(LimitsConfig(**limits), RetryConfig(**retry), TrackConfig(**track))


async def inline(func: Callable[..., Any], *args: Any) -> Any:
    """Journal work on the loop itself: virtual time cannot jump during a commit."""
    return func(*args)


def engine(backend: FakeBackend, journal: Journal, pol: Policy | None = None) -> Engine:
    clock = AnyioClock()
    return Engine(
        backend,
        journal,
        template=TEMPLATE,
        run=RUN,
        policy=pol or policy(),
        clock=clock,
        limiter_factory=ClockLimiter.factory(clock),
        rng=random.Random(7),
        offload=inline,
    )


def states(journal: Journal) -> dict[str, int]:
    return journal.counts()


def name(i: int, attempt: int = 1) -> str:
    return job_name(RUN, point_key({"x": i}), attempt)


class TestHappyPath:
    async def test_every_row_submitted_once_and_tracked_to_the_end(self, journal: Journal) -> None:
        """20 rows: 20 accepted jobs, each polled to success, all recorded."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=2)

        stats = await engine(backend, journal).run()

        assert {"succeeded": 20} == await inline(states, journal)
        assert all(count == 1 for count in backend.ledger.values())
        assert 20 == len(backend.ledger) == stats.succeeded == stats.submitted
        job = (await inline(journal.jobs))[0]
        assert (name(0), 1) == (job.remote_id, job.attempt)
        assert job.submitted_at
        assert job.started_at
        assert job.finished_at

    async def test_body_is_the_rendered_template(self, journal: Journal) -> None:
        """The engine sends the template rendered with the row and its job name."""
        seen: list[bytes] = []

        async def record(backend: FakeBackend, sub: Submission) -> None:
            seen.append(sub.body)
            backend.accept(sub)

        await engine(FakeBackend(record, clock=AnyioClock()), journal).run()

        assert f'{{"command":"echo 0","name":"{name(0)}"}}'.encode() in seen

    @pytest.mark.rows(300)
    async def test_status_requests_are_batched(self, journal: Journal) -> None:
        """Jobs due together are polled together: far fewer status requests than jobs."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=1)
        e = engine(backend, journal, policy(submit_rate_per_s=100.0))

        stats = await e.run()

        assert 300 == stats.succeeded
        assert stats.status_requests / 300 < 0.2


class TestPoliteness:
    @pytest.mark.rows(120)
    async def test_submit_rate_is_never_exceeded_in_any_window(self, journal: Journal) -> None:
        """At 10/s with burst 1, no 1 s window holds more than 11 submits; the mean is ~10/s."""
        backend = FakeBackend(clock=AnyioClock())

        await engine(backend, journal, policy(submit_rate_per_s=10.0)).run()

        times = [c.at for c in backend.calls_to("submit")]
        assert 120 == len(times)
        for i, start in enumerate(times):
            in_window = sum(1 for t in times[i:] if t < start + 1.0)
            assert in_window <= 11
        assert 119 / (times[-1] - times[0]) == pytest.approx(10.0, rel=0.03)

    @pytest.mark.rows(40)
    async def test_active_job_cap_holds(self, journal: Journal) -> None:
        """With max_active 3, never more than 3 jobs are on the service unfinished."""
        peak = 0

        async def count(backend: FakeBackend, sub: Submission) -> None:
            nonlocal peak
            active = sum(1 for j in backend.jobs.values() if not j.phase.terminal)
            peak = max(peak, active + 1)
            backend.accept(sub)

        backend = FakeBackend(count, clock=AnyioClock(), runs_for=3)
        stats = await engine(backend, journal, policy(max_active=3)).run()

        assert 40 == stats.succeeded
        assert 3 == peak

    async def test_in_flight_cap_holds(self, journal: Journal) -> None:
        """With max_in_flight 2, at most 2 requests are ever open at once."""
        open_now = peak = 0

        async def slow(backend: FakeBackend, sub: Submission) -> None:
            nonlocal open_now, peak
            open_now += 1
            peak = max(peak, open_now)
            await anyio.sleep(0.5)
            open_now -= 1
            backend.accept(sub)

        await engine(FakeBackend(slow, clock=AnyioClock()), journal, policy(max_in_flight=2)).run()

        assert 2 == peak


class TestRetries:
    @pytest.mark.rows(1)
    async def test_retry_after_is_honoured_to_the_tick(self, journal: Journal) -> None:
        """A 429 with Retry-After 7 is followed by the resend exactly 7 s later."""
        calls = itertools.count()

        async def throttle_once(backend: FakeBackend, sub: Submission) -> None:
            if next(calls) == 0:
                raise ThrottledError("429", job_name=sub.name, retry_after=7)
            backend.accept(sub)

        backend = FakeBackend(throttle_once, clock=AnyioClock())
        await engine(backend, journal).run()

        first, second = (c.at for c in backend.calls_to("submit"))
        assert 7.0 == second - first

    @pytest.mark.rows(1)
    async def test_attempts_end_retries(self, journal: Journal) -> None:
        """Transient errors are retried up to `attempts` sends, then the row fails."""

        async def always_503(backend: FakeBackend, sub: Submission) -> None:
            raise TransientBackendError("503 Service Unavailable", job_name=sub.name)

        backend = FakeBackend(always_503, clock=AnyioClock())
        stats = await engine(backend, journal, policy(attempts=4)).run()

        assert 4 == len(backend.calls_to("submit"))
        assert 1 == stats.failed
        (row,) = await inline(journal.jobs)
        assert State.FAILED == row.state
        assert "gave up after 4 attempts: 503 Service Unavailable" == row.error

    @pytest.mark.rows(1)
    async def test_time_budget_ends_retries(self, journal: Journal) -> None:
        """With many attempts allowed, the 20 s budget stops the retries first."""

        async def always_503(backend: FakeBackend, sub: Submission) -> None:
            raise TransientBackendError("503", job_name=sub.name)

        backend = FakeBackend(always_503, clock=AnyioClock())
        await engine(backend, journal, policy(attempts=1000, budget_s=20.0, max_s=4.0)).run()

        times = [c.at for c in backend.calls_to("submit")]
        assert 3 < len(times) < 1000
        assert times[-1] - times[0] <= 20.0

    @pytest.mark.rows(5)
    async def test_throttles_never_fail_a_job(self, journal: Journal) -> None:
        """Ten 429s per job with only 2 attempts allowed: every job still succeeds."""
        throttles: dict[str, int] = {}

        async def throttle_ten(backend: FakeBackend, sub: Submission) -> None:
            throttles[sub.name] = throttles.get(sub.name, 0) + 1
            if throttles[sub.name] <= 10:
                raise ThrottledError("429", job_name=sub.name, retry_after=0.5)
            backend.accept(sub)

        backend = FakeBackend(throttle_ten, clock=AnyioClock())
        e = engine(backend, journal, policy(attempts=2))
        stats = await e.run()

        assert 5 == stats.succeeded
        assert 0 == stats.failed
        assert 50 == stats.throttled
        registry = e.metrics.registry
        assert 50 == registry.get_sample_value("bulk_throttled_total")
        assert 0 == registry.get_sample_value("bulk_jobs_total", {"state": "failed"})

    @pytest.mark.rows(3)
    async def test_permanent_errors_fail_without_retry(self, journal: Journal) -> None:
        """A refused job fails at once with the service's message."""

        async def refuse(backend: FakeBackend, sub: Submission) -> None:
            raise PermanentBackendError("400 bad image", job_name=sub.name)

        backend = FakeBackend(refuse, clock=AnyioClock())
        stats = await engine(backend, journal).run()

        assert 3 == len(backend.calls_to("submit")) == stats.failed
        rows = await inline(journal.jobs)
        assert {"400 bad image"} == {r.error for r in rows}


class TestExactlyOnce:
    @pytest.mark.rows(50)
    async def test_commit_then_fail_is_looked_up_not_resent(self, journal: Journal) -> None:
        """The service created the job but the answer was lost: bulk adopts it by name."""

        async def commit_then_fail(backend: FakeBackend, sub: Submission) -> None:
            backend.accept(sub)
            raise AmbiguousBackendError("connection reset", job_name=sub.name)

        backend = FakeBackend(commit_then_fail, clock=AnyioClock())
        stats = await engine(backend, journal).run()

        assert 50 == stats.succeeded
        assert set(backend.ledger.values()) == {1}
        assert 50 == len(backend.calls_to("submit")) == len(backend.calls_to("lookup"))

    @pytest.mark.rows(1)
    async def test_lost_request_is_looked_up_then_resent(self, journal: Journal) -> None:
        """An ambiguous failure where nothing was created: look-up, then one resend."""
        calls = itertools.count()

        async def drop_first(backend: FakeBackend, sub: Submission) -> None:
            if next(calls) == 0:
                raise AmbiguousBackendError("timeout", job_name=sub.name)
            backend.accept(sub)

        backend = FakeBackend(drop_first, clock=AnyioClock())
        await engine(backend, journal).run()

        assert ["submit", "lookup", "submit"] == [
            c.endpoint for c in backend.calls if c.endpoint != "status"
        ]
        assert 1 == backend.ledger[name(0)]

    @pytest.mark.rows(4)
    async def test_resume_reconciles_and_tracks(self, journal: Journal) -> None:
        """On resume: submitting rows are looked up (adopted if there), accepted rows tracked."""
        backend = FakeBackend(clock=AnyioClock())
        backend.accept(Submission(name(0), b"{}"))  # sent before the crash, answer lost
        backend.accept(Submission(name(2), b"{}"))  # accepted and recorded
        await inline(
            journal.apply,
            [
                Record(0, State.SUBMITTING, attempt=1),
                Record(1, State.UNKNOWN, attempt=1),  # never reached the service
                Record(2, State.SUBMITTED, attempt=1, remote_id=name(2)),
            ],
        )

        stats = await engine(backend, journal).run()

        assert 4 == stats.succeeded
        assert sorted([name(1), name(3)]) == sorted(c.name for c in backend.calls_to("submit"))
        assert {name(0), name(1)} == {c.name for c in backend.calls_to("lookup")}
        assert set(backend.ledger.values()) == {1}

    @pytest.mark.rows(3)
    async def test_job_lost_by_the_service_is_sent_again(self, journal: Journal) -> None:
        """A job the service forgets is looked up, then sent again: it still ends once."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=3)
        forgot = False

        async def forget_first(backend_: FakeBackend, sub: Submission) -> None:
            backend_.accept(sub)

        backend.handler = forget_first
        original_status = backend.status

        async def status_that_forgets(jobs: Any) -> Any:
            nonlocal forgot
            if not forgot:
                forgot = True
                backend.forget(jobs[0].name)
                backend.ledger[jobs[0].name] -= 1  # the service lost it: not a duplicate
            return await original_status(jobs)

        backend.status = status_that_forgets  # type: ignore[method-assign]
        stats = await engine(backend, journal).run()

        assert 3 == stats.succeeded
        assert set(backend.ledger.values()) == {1}
        assert 4 == len(backend.calls_to("submit"))


class TestTracking:
    @pytest.mark.rows(2)
    async def test_failures_carry_their_reason(self, journal: Journal) -> None:
        """A job the service ends as failed is recorded failed with the service's reason."""
        backend = FakeBackend(
            clock=AnyioClock(),
            outcome=lambda n: (
                (Phase.FAILED, "exit code 3") if n == name(1) else (Phase.SUCCEEDED, None)
            ),
        )

        stats = await engine(backend, journal).run()

        assert (1, 1) == (stats.succeeded, stats.failed)
        failed = await inline(journal.jobs, [State.FAILED])
        assert ["exit code 3"] == [r.error for r in failed]

    @pytest.mark.rows(2)
    async def test_client_side_timeout_stops_the_job(self, journal: Journal) -> None:
        """A job running past track.timeout_s is stopped and recorded failed: timeout."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=1000)

        stats = await engine(backend, journal, policy(timeout_s=30.0)).run()

        assert 2 == stats.failed
        assert {name(0), name(1)} == set(backend.stopped)
        rows = await inline(journal.jobs)
        assert {"timeout"} == {r.error for r in rows}

    @pytest.mark.rows(2)
    async def test_polling_backs_off(self, journal: Journal) -> None:
        """Polls of one job come at first_s, then grow by factor up to max_s."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=5)

        await engine(backend, journal, policy(first_s=1.0, factor=2.0, track_max_s=4.0)).run()

        polls = [c.at for c in backend.calls_to("status") if c.name == name(0)]
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(polls)]
        assert [2.0, 4.0, 4.0, 4.0, 4.0] == gaps


class TestInterrupt:
    @pytest.mark.rows(30)
    async def test_drain_stops_and_a_rerun_finishes_exactly_once(self, journal: Journal) -> None:
        """Draining mid-run leaves a journal that a second run completes, each job once."""
        drain = anyio.Event()
        sent = itertools.count(1)

        async def drain_after_ten(backend: FakeBackend, sub: Submission) -> None:
            backend.accept(sub)
            if next(sent) == 10:
                drain.set()

        backend = FakeBackend(drain_after_ten, clock=AnyioClock(), runs_for=2)
        first = engine(backend, journal, policy(submit_rate_per_s=5.0))
        await first.run(drain)
        mid = await inline(states, journal)

        backend.handler = FakeBackend().handler
        stats = await engine(backend, journal).run()

        assert first.interrupted
        assert mid.get("pending", 0) >= 15
        assert 30 == stats.succeeded
        assert 30 == len(backend.ledger)
        assert set(backend.ledger.values()) == {1}


@pytest.mark.rows(4)
async def test_stop_run_stops_every_unfinished_job(journal: Journal) -> None:
    """`bulk stop`: accepted jobs are stopped, unsettled ones looked up first, pending left."""
    backend = FakeBackend(clock=AnyioClock(), runs_for=100)
    backend.accept(Submission(name(0), b"{}"))
    backend.accept(Submission(name(1), b"{}"))
    await inline(
        journal.apply,
        [
            Record(0, State.RUNNING, attempt=1, remote_id=name(0)),
            Record(1, State.SUBMITTING, attempt=1),
            Record(2, State.UNKNOWN, attempt=1),  # not on the service
        ],
    )

    clock = AnyioClock()
    stopped, problems = await stop_run(
        backend,
        journal,
        run=RUN,
        template=TEMPLATE,
        policy=policy(),
        clock=clock,
        limiter_factory=ClockLimiter.factory(clock),
        offload=inline,
    )

    assert (2, []) == (stopped, problems)
    assert [name(0), name(1)] == backend.stopped
    assert {"stopped": 2, "pending": 2} == await inline(states, journal)
