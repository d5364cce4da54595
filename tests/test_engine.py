"""The engine against FakeBackend, on virtual time: rates, retries, throttling, exactly-once.

These tests run under trio with ``MockClock(autojump_threshold=0)``: whenever every task is
blocked, time jumps to the next deadline, so a run of minutes takes milliseconds and times are
exact. (The engine touches no asyncio-only code once its rate limiter is injected, which this
also proves.) The journal is a real SQLite file.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import trio.testing
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from bulk._clock import AnyioClock
from bulk._engine import INTERRUPTED, Delivery, Engine, Runtime, stop_run
from bulk._engine._context import END_STATE
from bulk._engine._gateway import Gateway
from bulk._journal import Journal, Record, State
from bulk._metrics import Metrics
from bulk._naming import Point, job_name, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._retry import Backoff
from bulk._runs import SentMark
from bulk._sim.stub import StubFaults, make_app
from bulk._template import compile_template
from bulk.backends.base import JobStatus, Phase, Receipt, Send, Submission
from bulk.backends.stub import StubBackend, StubOptions
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    OutageError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)
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


def virtual(clock: AnyioClock, **kw: Any) -> Runtime:
    """A runtime on ``clock`` (virtual time under the test runner), journal work inline."""
    return Runtime(clock=clock, limiter_factory=ClockLimiter.factory(clock), offload=inline, **kw)


def engine(
    backend: FakeBackend, journal: Journal, pol: Policy | None = None, **delivery: Any
) -> Engine:
    return Engine(
        backend,
        journal,
        template=TEMPLATE,
        run=RUN,
        policy=pol or policy(),
        runtime=virtual(AnyioClock(), rng=random.Random(7)),
        delivery=Delivery(**delivery),
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


class TestLostHistory:
    """A lost -wal forgets the latest records: rows sent just before a crash read pending."""

    @staticmethod
    def sent_before(backend: FakeBackend, rows: list[int]) -> None:
        """The service has these rows' jobs, though the journal says they are pending."""
        for i in rows:
            backend.accept(Submission(name(i), b"{}"))

    @pytest.mark.rows(40)
    @pytest.mark.parametrize("workers", [pytest.param(1, id="one"), pytest.param(8, id="eight")])
    async def test_pending_rows_are_looked_up_until_a_window_of_misses(
        self, journal: Journal, workers: int
    ) -> None:
        """After an unclean session of 4 workers: look-ups up to 4 misses in a row, no more
        (a few more when several run at once: at most workers - 1)."""
        await inline(journal.begin_session, 4)  # a session that never ended
        backend = FakeBackend(clock=AnyioClock())
        hits = [0, 1, 2, 6, 7]  # 3, 4, 5: held by workers when it died (3 misses < 4)
        self.sent_before(backend, hits)

        stats = await engine(backend, journal, unique_names=False, workers=workers).run()

        submitted = {c.name for c in backend.calls_to("submit")}
        looked_up = [c.name for c in backend.calls_to("lookup")]
        assert 40 == stats.succeeded
        assert {name(i) for i in range(40) if i not in hits} == submitted
        assert {name(i) for i in range(12)} <= set(looked_up)  # 8, 9, 10, 11: four misses
        assert len(set(looked_up)) == len(looked_up) <= 12 + workers - 1
        if workers == 1:
            assert [name(i) for i in range(12)] == looked_up

    @pytest.mark.rows(10)
    async def test_no_look_ups_after_a_clean_end(self, journal: Journal) -> None:
        """A session that ended cleanly left every record in the journal: nothing to check."""
        await inline(journal.begin_session, 4)
        await inline(journal.end_session)
        backend = FakeBackend(clock=AnyioClock())

        await engine(backend, journal, unique_names=False).run()

        assert [] == backend.calls_to("lookup")

    @pytest.mark.rows(10)
    async def test_no_look_ups_where_names_are_unique(self, journal: Journal) -> None:
        """A service that refuses a second job of a name makes a resend harmless."""
        await inline(journal.begin_session, 4)
        backend = FakeBackend(clock=AnyioClock())

        await engine(backend, journal).run()

        assert [] == backend.calls_to("lookup")

    @pytest.mark.rows(10)
    async def test_a_run_marks_its_session_then_its_clean_end(self, journal: Journal) -> None:
        """While a run works the journal file says "unclean"; after it ends, "clean"."""
        seen: list[str] = []
        copies = itertools.count()

        async def note(backend: FakeBackend, sub: Submission) -> None:
            # The database file alone, as a lost -wal would leave it.
            copy = journal.path.with_name(f"copy-{next(copies)}.sqlite")
            seen.append(await anyio.to_thread.run_sync(meta_without_wal, journal.path, copy))
            backend.accept(sub)

        await engine(FakeBackend(note, clock=AnyioClock()), journal, workers=3).run()

        assert {"3"} == set(seen)
        assert "0" == (await inline(journal.meta))["unclean_workers"]


class TestSentMark:
    """Where names are not unique, a mark outside the journal bounds what a run sent."""

    @pytest.mark.rows(40)
    async def test_after_an_unclean_end_every_pending_row_below_the_mark_is_looked_up(
        self, journal: Journal, tmp_path: Path
    ) -> None:
        """Twenty rows that ended uncreated (records lost) before two that were sent: a
        window of misses would stop before them; the mark sees them."""
        mark = SentMark(tmp_path)
        await inline(mark.raise_to, 30)
        await inline(journal.begin_session, 4)  # a session that never ended
        backend = FakeBackend(clock=AnyioClock())
        TestLostHistory.sent_before(backend, [20, 21])

        stats = await engine(backend, journal, unique_names=False, sent_mark=mark).run()

        assert 40 == stats.succeeded
        assert {1} == set(backend.ledger.values())
        assert {name(i) for i in range(30)} == {c.name for c in backend.calls_to("lookup")}
        assert 0 == (await inline(mark.below))  # the session ended cleanly

    @pytest.mark.rows(600)
    async def test_the_mark_is_durable_past_each_row_before_it_is_sent(
        self, journal: Journal, tmp_path: Path
    ) -> None:
        """Every submit finds run.json already saying its row may have been sent."""
        mark = SentMark(tmp_path)
        late: list[int] = []

        async def check(backend: FakeBackend, sub: Submission) -> None:
            index = int(orjson.loads(sub.body)["command"].removeprefix("echo "))
            below = SentMark(tmp_path).below()  # as a later bulk would read it
            if below is None or index >= below:
                late.append(index)
            backend.accept(sub)

        backend = FakeBackend(check, clock=AnyioClock())
        await engine(backend, journal, unique_names=False, sent_mark=mark, workers=8).run()

        assert [] == late
        assert 600 == len(backend.calls_to("submit"))
        assert {"succeeded": 600} == await inline(states, journal)

    @pytest.mark.rows(10)
    async def test_no_mark_is_kept_where_names_are_unique(
        self, journal: Journal, tmp_path: Path
    ) -> None:
        """A service that refuses a second job of a name needs no mark (no file writes)."""
        mark = SentMark(tmp_path)

        await engine(FakeBackend(clock=AnyioClock()), journal, sent_mark=mark).run()

        assert not (tmp_path / "run.json").exists()


def meta_without_wal(path: Path, copy: Path) -> str:
    """unclean_workers as read from a copy of the database file without its -wal."""
    copy.write_bytes(path.read_bytes())
    with Journal.open(copy, check=False) as journal:
        return journal.meta()["unclean_workers"]


class TestMemory:
    """Memory grows with the jobs active at once, not with the run's rows (issue 11)."""

    @pytest.mark.rows(50)
    async def test_tracked_jobs_hold_no_variables(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A tracked job keeps only what polling needs: its point's variables stay in the
        journal (a sweep's points may be large; up to max_active are tracked at once)."""
        from bulk._engine._context import Job
        from bulk._engine._tracker import Tracker

        held: list[object] = []
        add = Tracker.add

        def spy(self: Tracker, job: Job) -> None:
            add(self, job)
            held.append(job.variables)

        monkeypatch.setattr(Tracker, "add", spy)
        stats = await engine(FakeBackend(clock=AnyioClock(), runs_for=3), journal).run()

        assert 50 == stats.succeeded
        assert [None] * 50 == held

    @pytest.mark.rows(3)
    async def test_a_lost_job_is_sent_again_with_its_own_body(self, journal: Journal) -> None:
        """The variables a tracked job dropped are read back from the journal before a job
        the service lost is sent again: the same body as the first time."""
        bodies: dict[str, list[bytes]] = {}
        backend = FakeBackend(clock=AnyioClock(), runs_for=3)

        async def keep(backend_: FakeBackend, sub: Submission) -> None:
            bodies.setdefault(sub.name, []).append(sub.body)
            backend_.accept(sub)

        backend.handler = keep
        original_status = backend.status
        forgot = False

        async def status_that_forgets(jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
            nonlocal forgot
            if not forgot:
                forgot = True
                for job in jobs:
                    backend.forget(job.name)
                    backend.ledger[job.name] -= 1  # the service lost it: not a duplicate
            return await original_status(jobs)

        backend.status = status_that_forgets  # type: ignore[method-assign]
        stats = await engine(backend, journal).run()

        assert 3 == stats.succeeded
        assert 3 == len(bodies)
        for i in range(3):
            first, again = bodies[name(i)]
            assert first == again == f'{{"command":"echo {i}","name":"{name(i)}"}}'.encode()

    @pytest.mark.rows(300)
    async def test_no_job_outlives_the_run(self, journal: Journal) -> None:
        """Nothing keeps a job once it ended: after a run no Job object is left alive."""
        import gc

        from bulk._engine._context import Job

        e = engine(FakeBackend(clock=AnyioClock(), runs_for=1), journal)
        stats = await e.run()

        assert 300 == stats.succeeded
        gc.collect()
        assert 0 == sum(isinstance(o, Job) for o in gc.get_objects())


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

    @pytest.mark.parametrize("outlive", [True, False])
    @pytest.mark.rows(10)
    async def test_jobs_that_end_with_bulk_go_back_to_pending(
        self, journal: Journal, outlive: bool
    ) -> None:
        """Jobs still active when a run stops: a service's stay tracked (they run on); local
        ones, which bulk ends as it stops, are recorded pending with what happened."""
        drain = anyio.Event()
        sent = itertools.count(1)

        async def drain_after_four(backend: FakeBackend, sub: Submission) -> None:
            backend.accept(sub)
            if next(sent) == 4:
                drain.set()

        clock = AnyioClock()
        backend = FakeBackend(drain_after_four, clock=clock, runs_for=1000)
        first = Engine(
            backend,
            journal,
            template=TEMPLATE,
            run=RUN,
            policy=policy(max_active=4),
            runtime=virtual(clock),
            delivery=Delivery(jobs_outlive_bulk=outlive),
        )
        await first.run(drain)
        rows = await inline(journal.jobs)

        active = [(r.state.value, r.error) for r in rows if r.index < 4]
        if outlive:
            assert {"submitted", "running"} >= {state for state, _ in active}
        else:
            assert [("pending", INTERRUPTED)] * 4 == active
        assert [("pending", None)] * 6 == [(r.state.value, r.error) for r in rows[4:]]


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

    stopped, problems = await stop_run(
        backend,
        journal,
        run=RUN,
        template=TEMPLATE,
        policy=policy(),
        runtime=virtual(AnyioClock()),
    )

    assert (2, []) == (stopped, problems)
    assert [name(0), name(1)] == backend.stopped
    assert {"stopped": 2, "pending": 2} == await inline(states, journal)


class TestTemplateVersions:
    """Each row is rendered with the template version its attempt was planned with."""

    OLD = compile_template({"command": "echo old {x}", "name": "old-{_name}"})
    NEW = compile_template({"command": "echo new {x}", "name": "new-{_name}"})

    class RecordingBackend(FakeBackend):
        """Keeps the body of every look-up and submit, by endpoint and job name."""

        def __init__(self) -> None:
            super().__init__(clock=AnyioClock())
            self.bodies: dict[tuple[str, str], bytes] = {}

        async def lookup(self, submission: Submission) -> Any:
            self.bodies["lookup", submission.name] = submission.body
            return await super().lookup(submission)

        async def submit(self, submission: Submission) -> Any:
            self.bodies["submit", submission.name] = submission.body
            return await super().submit(submission)

    def body(self, template: Any, i: int, attempt: int = 1) -> bytes:
        from bulk._naming import render_context

        point = Point(i, point_key({"x": i}), f"s.csv:{i + 2}", {"x": i})
        rendered: bytes = template.render_bytes(render_context(point, RUN, attempt))
        return rendered

    async def crashed_mid_retry(self, journal: Journal) -> None:
        """Row 0 was in flight under the old template; row 1 was retried with the new one."""
        await inline(
            journal.apply,
            [Record(0, State.SUBMITTING, attempt=1), Record(1, State.FAILED, attempt=1)],
        )
        await inline(functools.partial(journal.reset_failed, [State.FAILED], template=2))

    @pytest.mark.rows(3)
    async def test_resume_looks_up_and_sends_each_row_with_its_version(
        self, journal: Journal
    ) -> None:
        """The in-flight row is looked up as sent (old template); the retried row goes new."""
        await self.crashed_mid_retry(journal)
        backend = self.RecordingBackend()
        clock = AnyioClock()

        await Engine(
            backend,
            journal,
            template=self.NEW,
            templates={1: self.OLD},
            run=RUN,
            policy=policy(),
            runtime=virtual(clock),
        ).run()

        assert self.body(self.OLD, 0) == backend.bodies["lookup", name(0)]
        assert self.body(self.OLD, 0) == backend.bodies["submit", name(0)]
        assert self.body(self.NEW, 1, attempt=2) == backend.bodies["submit", name(1, 2)]
        assert self.body(self.OLD, 2) == backend.bodies["submit", name(2)]  # never retried

    @pytest.mark.rows(2)
    async def test_stop_looks_up_with_the_rows_version(self, journal: Journal) -> None:
        """`bulk stop` after a template change looks an in-flight row up as it was sent."""
        await self.crashed_mid_retry(journal)
        backend = self.RecordingBackend()
        clock = AnyioClock()

        await stop_run(
            backend,
            journal,
            run=RUN,
            template=self.NEW,
            templates={1: self.OLD},
            policy=policy(),
            runtime=virtual(clock),
        )

        assert self.body(self.OLD, 0) == backend.bodies["lookup", name(0)]


async def down_between(backend: FakeBackend, start: float, end: float) -> None:
    """Make the fake service unreachable from ``start`` to ``end`` (virtual seconds)."""
    await anyio.sleep(start)
    backend.down = True
    await anyio.sleep(end - start)
    backend.down = False


class TestOutages:
    """A service that cannot be reached fails no job; past retry.budget_s the run stops."""

    async def test_an_outage_within_the_budget_fails_nothing(self, journal: Journal) -> None:
        """Down for 300 s of a 600 s budget with 2 attempts: every row still succeeds once."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=2)
        backend.down = True
        e = engine(backend, journal, policy(attempts=2, budget_s=600.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(down_between, backend, 0.0, 300.0)
            stats = await e.run()

        assert (20, 0) == (stats.succeeded, stats.failed)
        assert set(backend.ledger.values()) == {1}
        assert all(c.at <= 300.0 for c in backend.refused)
        assert min(c.at for c in backend.calls_to("submit")) >= 300.0
        registry = e.metrics.registry
        refused = registry.get_sample_value(
            "bulk_requests_total", {"endpoint": "submit", "outcome": "unreachable"}
        )
        assert len(backend.refused) == refused
        assert 0 == registry.get_sample_value("bulk_jobs_total", {"state": "failed"})

    async def test_past_the_budget_the_run_stops_with_every_row_kept(
        self, journal: Journal
    ) -> None:
        """Down for good: the run stops once, 60 s in, rows pending (or still to be looked
        up); the next run, with the service back, sends each row exactly once."""
        await inline(journal.apply, [Record(0, State.SUBMITTING, attempt=1)])
        backend = FakeBackend(clock=AnyioClock())
        backend.down = True
        first = engine(backend, journal, policy(attempts=2, budget_s=60.0, max_s=8.0))

        with pytest.raises(OutageError, match=r"could not be reached for 60s \(retry.budget_s\)"):
            await first.run()
        after_outage = await inline(states, journal)
        backend.down = False
        stats = await engine(backend, journal).run()

        assert {"pending": 19, "submitting": 1} == after_outage  # row 0: to be looked up
        assert 60.0 <= max(c.at for c in backend.refused) <= 60.0 + 8.0
        assert len(backend.refused) < 8 * 20  # the workers waited; no row burned its budget
        assert 20 == stats.succeeded
        assert set(backend.ledger.values()) == {1}
        assert ["lookup"] == [c.endpoint for c in backend.calls if c.name == name(0)][:1]

    @pytest.mark.rows(4)
    async def test_tracking_waits_an_outage_out_and_polls_calmly(self, journal: Journal) -> None:
        """Jobs running while the service is down for 100 s: none fails, and the polls
        back off to track.max_s (not a request per rate-limit tick)."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=30)
        e = engine(backend, journal, policy(first_s=1.0, factor=2.0, track_max_s=4.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(down_between, backend, 5.0, 105.0)
            stats = await e.run()

        assert (4, 0) == (stats.succeeded, stats.failed)
        polls = [c.at for c in backend.refused if c.endpoint == "status"]
        assert 0 < len(polls) <= 100 / 4 + 5

    @pytest.mark.rows(3)
    async def test_tracking_past_the_budget_stops_and_resumes(self, journal: Journal) -> None:
        """Accepted jobs and a service gone for good: the run stops, the jobs stay accepted,
        and the next run tracks them to the end without sending anything again."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=50)
        e = engine(backend, journal, policy(budget_s=30.0, track_max_s=4.0))

        async def down_at_10() -> None:
            await anyio.sleep(10.0)
            backend.down = True

        with pytest.RaisesGroup(OutageError, allow_unwrapped=True):
            async with anyio.create_task_group() as tg:
                tg.start_soon(down_at_10)
                await e.run()
        after_outage = await inline(states, journal)
        backend.down = False
        stats = await engine(backend, journal).run()

        assert {"running": 3} == after_outage
        assert (3, 3) == (stats.succeeded, len(backend.calls_to("submit")))

    @pytest.mark.rows(2)
    async def test_a_timeout_stop_that_cannot_get_through_is_tried_again(
        self, journal: Journal
    ) -> None:
        """A job past its timeout while the service is down is stopped once it is back,
        and only then recorded failed: timeout."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=1000)
        e = engine(backend, journal, policy(timeout_s=30.0, track_max_s=4.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(down_between, backend, 25.0, 100.0)
            stats = await e.run()

        assert 2 == stats.failed
        assert {name(0), name(1)} == set(backend.stopped)
        assert all(c.at >= 100.0 for c in backend.calls_to("stop"))
        assert {"timeout"} == {r.error for r in await inline(journal.jobs)}

    @pytest.mark.rows(4)
    async def test_bulk_stop_waits_for_the_service_then_says_when_it_gave_up(
        self, journal: Journal
    ) -> None:
        """`bulk stop`: an outage shorter than the budget is waited out; a longer one ends
        the command with the count of jobs stopped and not, the rest left as they were."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=100)
        for i in range(4):
            backend.accept(Submission(name(i), b"{}"))
        await inline(
            journal.apply,
            [Record(i, State.RUNNING, attempt=1, remote_id=name(i)) for i in range(4)],
        )
        clock = AnyioClock()

        async def stop(budget_s: float) -> tuple[int, list[str]]:
            return await stop_run(
                backend,
                journal,
                run=RUN,
                template=TEMPLATE,
                policy=policy(budget_s=budget_s, max_s=4.0),
                runtime=virtual(clock, rng=random.Random(1)),
            )

        backend.down = True
        with pytest.raises(OutageError, match="0 jobs stopped, 4 not: run bulk stop again"):
            await stop(budget_s=20.0)
        untouched = await inline(states, journal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(down_between, backend, 0.0, 50.0)
            result = await stop(budget_s=600.0)

        assert {"running": 4} == untouched
        assert (4, []) == result
        assert {"stopped": 4} == await inline(states, journal)


class TestTrackingBackOff:
    @pytest.mark.rows(1)
    async def test_a_failed_status_request_is_asked_again_after_the_interval(
        self, journal: Journal
    ) -> None:
        """A 503 on status (no Retry-After) waits the job's interval; it is not re-sent at once."""
        backend = FakeBackend(clock=AnyioClock(), runs_for=2)
        real_status = backend.status
        failures = 0

        async def failing_status(jobs: Any) -> Any:
            nonlocal failures
            if failures < 3:
                failures += 1
                backend.calls.append(type(backend.calls[0])("status-503", "", anyio.current_time()))
                raise TransientBackendError("HTTP 503")
            return await real_status(jobs)

        backend.status = failing_status  # type: ignore[method-assign]
        await engine(backend, journal, policy(first_s=1.0, factor=2.0, track_max_s=4.0)).run()

        failed_at = [c.at for c in backend.calls_to("status-503")]
        assert [2.0, 4.0] == [round(b - a, 6) for a, b in itertools.pairwise(failed_at)]


def test_backoff_never_overflows() -> None:
    """Thousands of attempts (or outage waits) keep the wait at max_s, never OverflowError."""
    backoff = Backoff(RetryConfig(attempts=5000, budget_s=1e12, base_s=0.5, max_s=60.0), 0.0)

    delays = [backoff.next_delay(0.0) for _ in range(2000)]
    waits = [backoff.outage_delay() for _ in range(2000)]

    assert all(d is not None and 0 <= d <= 60.0 for d in delays)
    assert all(0 <= w <= 60.0 for w in waits)


def test_every_terminal_phase_has_one_end_state() -> None:
    """One mapping from a backend's terminal phase to the journal's state, name for name."""
    assert {p for p in Phase if p.terminal} == set(END_STATE)
    assert all(state.value == phase.value for phase, state in END_STATE.items())


class TestRunContext:
    @pytest.mark.rows(3)
    async def test_an_engine_runs_once(self, journal: Journal) -> None:
        """A second run() of one engine is refused: each run builds its own context."""
        e = engine(FakeBackend(clock=AnyioClock()), journal, policy())
        await e.run()

        with pytest.raises(RuntimeError, match="runs once"):
            await e.run()
        assert 3 == e.stats.succeeded

    @pytest.mark.rows(2)
    async def test_refused_credentials_on_a_timeout_stop_end_the_run(
        self, journal: Journal
    ) -> None:
        """The client-side timeout's stop is not swallowed when the credentials are refused."""

        class Refusing(FakeBackend):
            async def stop(self, job: Receipt) -> None:
                msg = "HTTP 401: token rejected"
                raise AuthenticationError(msg, job_name=job.name, status=401)

        backend = Refusing(clock=AnyioClock(), runs_for=1000)
        e = engine(backend, journal, policy(timeout_s=5.0))

        with pytest.RaisesGroup(AuthenticationError, flatten_subgroups=True):
            await e.run()
        assert 0 == (await inline(journal.counts)).get("failed", 0)

    @pytest.mark.rows(2)
    async def test_a_refused_timeout_stop_is_recorded_with_its_reason(
        self, journal: Journal
    ) -> None:
        """Any other permanent refusal of the stop is recorded with the job (as before)."""

        class NotStoppable(FakeBackend):
            async def stop(self, job: Receipt) -> None:
                msg = "HTTP 409: cannot stop a job in this state"
                raise PermanentBackendError(msg, job_name=job.name, status=409)

        backend = NotStoppable(clock=AnyioClock(), runs_for=1000)
        await engine(backend, journal, policy(timeout_s=5.0)).run()

        rows = await inline(journal.jobs, [State.FAILED])
        assert 2 == len(rows)
        assert all("the stop request failed" in (r.error or "") for r in rows)
        assert all("409" in (r.error or "") for r in rows)

    @pytest.mark.rows(40)
    async def test_throttled_status_and_stop_cut_the_adaptive_rates(self, journal: Journal) -> None:
        """Throttles of status and of the timeout's stop reach the adaptive rate; a throttled
        stop is tried again, never recorded as a failed stop."""

        class Throttling(FakeBackend):
            polls = 0
            stops = 0

            async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
                self.polls += 1
                if self.polls % 2:
                    raise ThrottledError("HTTP 429: slow down", status=429)
                return await super().status(jobs)

            async def stop(self, job: Receipt) -> None:
                self.stops += 1
                if self.stops % 2:
                    raise ThrottledError("HTTP 429: slow down", status=429)
                await super().stop(job)

        backend = Throttling(clock=AnyioClock(), runs_for=1000)
        pol = policy(timeout_s=5.0, batch=1)
        e = engine(backend, journal, pol)
        await e.run()

        assert e.gateway is not None
        assert e.gateway.rates["status"].rate_per_s < pol.limits.status_rate_per_s
        assert e.gateway.rates["stop"].rate_per_s < pol.limits.stop_rate_per_s
        rows = await inline(journal.jobs, [State.FAILED])
        assert 40 == len(rows)
        assert {"timeout"} == {r.error for r in rows}  # every stop went through in the end
        samples = e.metrics.registry.get_sample_value
        assert 0 < (
            samples("bulk_requests_total", {"endpoint": "stop", "outcome": "throttled"}) or 0
        )


async def test_the_gateway_is_the_send_of_a_one_off_command() -> None:
    """What the CLI builds for a one-off command: ``Gateway.for_command(...).send`` is a
    ``Send``; a throttle is waited out and sent again, and both answers are in the metrics."""
    clock = AnyioClock()
    metrics = Metrics(CollectorRegistry())
    pol = policy()
    send: Send = Gateway.for_command(pol, metrics, clock, ClockLimiter.factory(clock)).send
    answers: list[Exception | str] = [ThrottledError("HTTP 429", status=429, retry_after=3), "ok"]

    async def read(what: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return f"{answer}: {what}"

    started = clock.now()
    assert "ok: devices" == await send("status", read, "devices")

    assert 3 <= clock.now() - started  # the Retry-After was waited
    get = metrics.registry.get_sample_value
    assert 1 == get("bulk_requests_total", {"endpoint": "status", "outcome": "throttled"})
    assert 1 == get("bulk_requests_total", {"endpoint": "status", "outcome": "ok"})
    assert 1 == get("bulk_retries_total", {"reason": "throttled"})


async def test_a_service_that_throttles_everything_ends_a_one_off_call() -> None:
    """Throttles are waited out only while something goes through: a service that throttles
    every request ends the call after retry.budget_s, saying so (a one-off command is
    bounded), and a call that is answered in between is not ended."""
    clock = AnyioClock()
    pol = policy(budget_s=0.5)
    gateway = Gateway.for_command(
        pol, Metrics(CollectorRegistry()), clock, ClockLimiter.factory(clock)
    )

    async def throttled() -> str:
        raise ThrottledError("HTTP 429", status=429, retry_after=0.2)

    started = clock.now()
    with pytest.raises(ThrottledError, match=r"nothing went through for 0\.5 s"):
        await gateway.send("status", throttled)

    assert 0.3 <= clock.now() - started <= 0.5 + 0.2  # bounded by the budget (+ one wait)


class TestStopThroughTheGateway:
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.mark.rows(12)
    async def test_bulk_stop_under_a_throttling_service_stops_every_job(
        self, journal: Journal
    ) -> None:
        """`bulk stop` against the stub simulator with a tight rate limit: every job is stopped
        (a 429 is waited out, never "could not be stopped", while stops go through), and the
        throttles show in the metrics. The retry budget is a few of the service's 1 s
        Retry-After long: throttles are not bounded by it while requests go through."""
        n = 12
        server = TestServer(
            make_app(StubFaults(rate_limit_per_s=4.0, run_s=300.0)), host="127.0.0.1"
        )
        await server.start_server()
        backend = StubBackend(StubOptions(url=str(server.make_url(""))))
        try:
            pol = policy(budget_s=3.0, attempts=2)
            metrics = Metrics(CollectorRegistry())
            # The jobs are created through a gateway too (the stub's names are unique, so a
            # submit sent again is the same job).
            setup = Gateway.for_command(pol, Metrics(CollectorRegistry()), AnyioClock())
            receipts = [
                await setup.send("submit", backend.submit, Submission(name(i), b"{}"))
                for i in range(n)
            ]
            await anyio.to_thread.run_sync(
                journal.apply,
                [
                    Record(i, State.SUBMITTED, attempt=1, remote_id=r.remote_id)
                    for i, r in enumerate(receipts)
                ],
            )

            with anyio.fail_after(60):
                stopped, problems = await stop_run(
                    backend,
                    journal,
                    run=RUN,
                    template=TEMPLATE,
                    policy=pol,
                    runtime=Runtime(metrics=metrics),
                )

            assert (n, []) == (stopped, problems)
            assert {"stopped": n} == await anyio.to_thread.run_sync(journal.counts)
            statuses = await setup.send("status", backend.status, receipts)
            assert {Phase.STOPPED} == {s.phase for s in statuses.values()}
            get = metrics.registry.get_sample_value
            assert n == get("bulk_requests_total", {"endpoint": "stop", "outcome": "ok"})
            assert 0 < (
                get("bulk_requests_total", {"endpoint": "stop", "outcome": "throttled"}) or 0
            )
            assert 0 < (get("bulk_throttled_total") or 0)
        finally:
            await backend.aclose()
            await server.close()
