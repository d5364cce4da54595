"""Adaptive rates and the service-wide budget, on virtual time.

Two shapes of throttling, told apart by how they answer a slower rate: a real limit (a token
bucket on the service) throttles less once the rate is below it; random throttles (a share of
requests refused whatever the rate) do not. The engine runs under trio's
``MockClock(autojump_threshold=0)`` as in ``test_engine.py``: minutes of virtual time take
milliseconds, and every figure is exact and repeatable.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio.testing

from bulk._clock import AnyioClock
from bulk._engine import Engine, Runtime, stop_run
from bulk._journal import Journal, Record, State
from bulk._naming import Point, job_name, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._ratelimit import AdaptiveRate, pace_request
from bulk._sim._common import TokenBucket
from bulk._template import compile_template
from bulk.backends.base import JobStatus, Receipt, Submission
from bulk.errors import ThrottledError
from bulk.testing import ClockLimiter, FakeBackend, FakeClock

TEMPLATE = compile_template({"command": "echo {x}", "name": "{_name}"})


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


def make_journal(path: Path, n: int) -> Journal:
    journal = Journal.create(path, {"run": "t"})
    points = (Point(i, point_key({"x": i}), f"s.csv:{i + 2}", {"x": i}) for i in range(n))
    for _ in journal.fill(points):
        pass
    journal.finish()
    return journal


@pytest.fixture
def journals(tmp_path: Path) -> Iterator[list[Journal]]:
    """Fresh journals on demand (a test may compare two runs)."""
    made: list[Journal] = []
    yield made
    for journal in made:
        journal.close()


def new_journal(journals: list[Journal], tmp_path: Path, n: int) -> Journal:
    journal = make_journal(tmp_path / f"journal-{len(journals)}.sqlite", n)
    journals.append(journal)
    return journal


async def inline(func: Any, *args: Any) -> Any:
    return func(*args)


def engine(backend: Any, journal: Journal, limits: LimitsConfig, **track: Any) -> Engine:
    clock = AnyioClock()
    return Engine(
        backend,
        journal,
        template=TEMPLATE,
        run="t",
        policy=Policy(
            limits,
            RetryConfig(attempts=5, budget_s=600.0, base_s=1.0, max_s=30.0),
            TrackConfig(**{"first_s": 1.0, "factor": 2.0, "max_s": 4.0, **track}),
        ),
        runtime=Runtime(
            clock=clock,
            limiter_factory=ClockLimiter.factory(clock),
            rng=random.Random(7),
            offload=inline,
        ),
    )


def busiest_second(times: Sequence[float]) -> int:
    """The most requests in any window of one second (times sorted)."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


async def answer(rate: AdaptiveRate, clock: FakeClock, n: int, *, every: int, per_s: float) -> None:
    """``n`` answers at ``per_s`` a second, every ``every``-th a throttle (0: none)."""
    for i in range(1, n + 1):
        await clock.advance(1 / per_s)
        if every and i % every == 0:
            rate.throttled(retry_after=1.0)
        else:
            rate.succeeded()


class TestAdaptiveRate:
    """Windows and probes, answer by answer, without the engine."""

    async def test_a_real_limit_is_cut_to_what_the_service_takes(self) -> None:
        """At 100/s every other answer throttled: cut to the ~50/s taken; the throttles
        stop below the limit, so the cut stands, and clean windows then add 5 %."""
        clock = FakeClock()
        rate = AdaptiveRate(100.0, clock)

        await answer(rate, clock, 101, every=2, per_s=100)  # one window of 1.01 s
        cut = rate.rate_per_s
        await answer(rate, clock, 10, every=0, per_s=cut)  # the probe: no more throttles
        stood = rate.rate_per_s
        await answer(rate, clock, 60, every=0, per_s=cut)

        assert cut == pytest.approx(50 / 1.01, rel=0.01)
        assert stood == cut
        assert rate.rate_per_s == pytest.approx(cut * 1.05)
        assert 0.0 == rate.background

    async def test_random_throttles_are_learnt_and_the_rate_restored(self) -> None:
        """10 % throttled whatever the rate: after two cuts the share has not fallen, so the
        rate goes back to 100/s, and 10 % is the background later windows are judged by."""
        clock = FakeClock()
        rate = AdaptiveRate(100.0, clock)

        await answer(rate, clock, 100, every=10, per_s=99)  # one window of 1.01 s
        first = rate.rate_per_s
        seen = [first]
        for _ in range(6):  # the probes: the same share of throttles at any rate
            await answer(rate, clock, 50, every=10, per_s=rate.rate_per_s)
            seen.append(rate.rate_per_s)
        learnt = rate.background
        await answer(rate, clock, 200, every=10, per_s=100)

        assert first == pytest.approx(90, rel=0.02)
        assert min(seen) < first  # cut a second time before concluding
        assert 100.0 == seen[-1]
        assert learnt == pytest.approx(0.1, abs=0.01)
        assert 100.0 == rate.rate_per_s  # 10 % is the background now: no cut

    async def test_a_cut_that_makes_no_clear_difference_counts_as_random(self) -> None:
        """20 % throttled, then 1 in 18 after the cut: neither as many nor none. After 100
        answers without 19:1 odds either way, twice, the rate goes back."""
        clock = FakeClock()
        rate = AdaptiveRate(100.0, clock)

        await answer(rate, clock, 100, every=5, per_s=99)
        cut = rate.rate_per_s
        await answer(rate, clock, 100, every=18, per_s=cut)
        probing = rate.rate_per_s
        await answer(rate, clock, 100, every=18, per_s=cut)

        assert cut < 100.0
        assert probing < cut  # undecided after 100 answers: cut again, ask again
        assert 100.0 == rate.rate_per_s
        assert rate.background == pytest.approx(1 / 18, abs=0.01)

    async def test_a_throttle_or_two_cut_only_the_share_refused(self) -> None:
        """An endpoint idle for 5 s, then a burst of 20 with one throttle: it took 4/s
        in that window only for want of demand, so the cut is the 5 % refused, not to 4/s."""
        clock = FakeClock()
        rate = AdaptiveRate(40.0, clock)

        await clock.advance(5.0)
        await answer(rate, clock, 20, every=20, per_s=40)

        assert rate.rate_per_s == pytest.approx(38.0)

    async def test_past_a_known_limit_growth_is_careful_then_faster(self) -> None:
        """Past the limit it found, the rate climbs 5 % per clean window three times, then
        10 %, 20 %: a burst allowance hides an excess for a while, a stale estimate not long."""
        clock = FakeClock()
        rate = AdaptiveRate(1000.0, clock)
        await answer(rate, clock, 200, every=2, per_s=199)  # cut to the ~100/s taken
        seen = [rate.rate_per_s]
        for _ in range(800):  # the probe (no more throttles: it stands), then clean windows
            await answer(rate, clock, 1, every=0, per_s=100)
            if rate.rate_per_s != seen[-1]:
                seen.append(rate.rate_per_s)

        growth = [b / a for a, b in itertools.pairwise(seen)]
        assert growth[:5] == pytest.approx([1.05, 1.05, 1.05, 1.1, 1.2])

    async def test_a_slow_endpoint_is_judged_after_ten_seconds(self) -> None:
        """At one answer every 2 s, a window closes after 10 s: a throttle among 6 answers
        is judged then, not after 20 answers (40 s)."""
        clock = FakeClock()
        rate = AdaptiveRate(5.0, clock)

        await answer(rate, clock, 5, every=0, per_s=0.5)  # t = 10: a clean window
        await answer(rate, clock, 5, every=5, per_s=0.5)  # t = 20: the 5th is a throttle

        assert rate.rate_per_s < 5.0

    async def test_a_lone_throttle_holds_only_its_own_request(self) -> None:
        """One throttle with Retry-After 3 among many answers: nobody else waits."""
        clock = FakeClock()
        rate = AdaptiveRate(100.0, clock)
        rate.throttled(retry_after=3.0)
        woke: list[float] = []

        async with anyio.create_task_group() as tg:

            async def request() -> None:
                await rate.acquire()
                woke.append(clock.now())

            tg.start_soon(request)
            await clock.advance(0.1)

        assert [0.0] == woke

    async def test_an_overloaded_service_holds_every_request(self) -> None:
        """Most of a window throttled with Retry-After 3: every request waits until then."""
        clock = FakeClock()
        rate = AdaptiveRate(100.0, clock)
        for _ in range(20):
            await clock.advance(0.0501)
            rate.throttled(retry_after=3.0)  # the last at t = 1.002: held until 4.002
        woke: list[float] = []

        async with anyio.create_task_group() as tg:

            async def request() -> None:
                await rate.acquire()
                woke.append(clock.now())

            tg.start_soon(request)
            await clock.advance(2.9)
            assert [] == woke
            await clock.advance(0.2)

        assert woke == pytest.approx([4.002])


class Service:
    """A submit handler for FakeBackend that throttles in one of two shapes, and records
    when each create was accepted.

    Args:
        random_share: refuse this share of creates, whatever the rate (seeded).
        limit_per_s: a token bucket of this rate (one second's worth saved up at most).
    """

    def __init__(self, *, random_share: float = 0.0, limit_per_s: float | None = None):
        self.random_share = random_share
        self.rng = random.Random(3)
        self.limit_per_s = limit_per_s
        self.bucket: TokenBucket | None = None
        self.accepted: list[float] = []

    async def __call__(self, backend: FakeBackend, sub: Submission) -> None:
        if self.limit_per_s is not None:
            # The simulators' own bucket, on the test's virtual time.
            self.bucket = self.bucket or TokenBucket(self.limit_per_s, anyio.current_time)
            if not self.bucket.take():
                raise ThrottledError("429", job_name=sub.name, retry_after=1.0)
        if self.random_share and self.rng.random() < self.random_share:
            raise ThrottledError("C008", job_name=sub.name, retry_after=1.0)
        self.accepted.append(anyio.current_time())
        backend.accept(sub)

    def rate_per_s(self) -> float:
        """Creates per second from the first accepted to the last."""
        return (len(self.accepted) - 1) / (self.accepted[-1] - self.accepted[0])


SUBMIT_20 = LimitsConfig(
    submit_rate_per_s=20.0, status_rate_per_s=1000.0, burst=1, max_in_flight=8, max_active=1000
)


class TestThrottleShapes:
    """The engine against each shape: random throttles cost little, a real limit is found."""

    @pytest.mark.parametrize("seed", [1, 3, 21])
    async def test_random_throttles_cost_little_time(
        self, seed: int, journals: list[Journal], tmp_path: Path
    ) -> None:
        """500 jobs at 20/s with 10 % of creates throttled at random (Retry-After 1 s): the
        creates take less than 1.5 times as long as without throttles (the target is 2x;
        the retries alone cost 1.11x)."""
        calm, random_10 = Service(), Service(random_share=0.10)
        random_10.rng.seed(seed)
        await engine(
            FakeBackend(calm, clock=AnyioClock()), new_journal(journals, tmp_path, 500), SUBMIT_20
        ).run()
        e = engine(
            FakeBackend(random_10, clock=AnyioClock()),
            new_journal(journals, tmp_path, 500),
            SUBMIT_20,
        )
        stats = await e.run()

        assert (500, 0) == (stats.succeeded, stats.failed)
        assert stats.throttled > 30
        assert calm.rate_per_s() / random_10.rate_per_s() < 1.5
        assert _rates(e)["submit"].background > 0.05  # learnt: not mistaken for a limit

    async def test_a_real_limit_is_found_and_used(
        self, journals: list[Journal], tmp_path: Path
    ) -> None:
        """A service taking 50 creates/s, bulk allowed 200/s: creates go at ≥ 97 % of the
        limit, few requests are throttled, and the rate settles near the limit."""
        limit_50 = Service(limit_per_s=50.0)
        limits = LimitsConfig(
            submit_rate_per_s=200.0,
            status_rate_per_s=1000.0,
            burst=1,
            max_in_flight=8,
            max_active=2000,
        )
        e = engine(
            FakeBackend(limit_50, clock=AnyioClock()),
            new_journal(journals, tmp_path, 1500),
            limits,
        )
        stats = await e.run()

        assert (1500, 0) == (stats.succeeded, stats.failed)
        assert limit_50.rate_per_s() >= 0.97 * 50
        assert stats.throttled < 0.1 * 1500
        assert 40 <= _rates(e)["submit"].rate_per_s <= 80
        assert 0.0 == _rates(e)["submit"].background


class CountingBackend(FakeBackend):
    """A FakeBackend that records every request of every endpoint, and whose status makes
    ``pages`` HTTP-like requests (each awaits ``pace_request``, as HttpClient does)."""

    def __init__(self, *args: Any, pages: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pages = pages
        self.times: list[float] = []

    def _note(self) -> None:
        self.times.append(anyio.current_time())

    async def submit(self, submission: Submission) -> Receipt:
        await pace_request()
        self._note()
        return await super().submit(submission)

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        for _ in range(self.pages):
            await pace_request()
            self._note()
        return await super().status(jobs)

    async def stop(self, job: Receipt) -> None:
        await pace_request()
        self._note()
        await super().stop(job)

    async def lookup(self, submission: Submission) -> Receipt | None:
        await pace_request()
        self._note()
        return await super().lookup(submission)


class TestServiceBudget:
    """One budget for all endpoints: never above it in any second, and used to the full."""

    async def test_every_request_of_a_call_waits_its_turn(
        self, journals: list[Journal], tmp_path: Path
    ) -> None:
        """A status call of 3 requests at 2 status requests/s spreads them 0.5 s apart."""
        backend = CountingBackend(clock=AnyioClock(), pages=3)
        limits = LimitsConfig(
            submit_rate_per_s=1000.0, status_rate_per_s=2.0, burst=1, max_in_flight=8
        )

        await engine(backend, new_journal(journals, tmp_path, 1), limits).run()

        status = backend.times[1:4]  # after the one submit
        assert [0.5, 0.5] == [round(b - a, 6) for a, b in itertools.pairwise(status)]

    async def test_all_endpoints_share_the_budget(
        self, journals: list[Journal], tmp_path: Path
    ) -> None:
        """Creates and 3-page status calls, each endpoint allowed 40/s, the service 40/s in
        all: no second holds more than 40 + burst requests, and ≥ 90 % of 40/s is used."""
        backend = CountingBackend(clock=AnyioClock(), pages=3, runs_for=4)
        limits = LimitsConfig(
            submit_rate_per_s=40.0,
            status_rate_per_s=40.0,
            service_rate_per_s=40.0,
            burst=4,
            max_in_flight=8,
            max_active=1000,
        )
        e = engine(backend, new_journal(journals, tmp_path, 600), limits, batch=20)
        stats = await e.run()

        times = sorted(backend.times)
        submits = [c.at for c in backend.calls_to("submit")]
        busy = [t for t in times if submits[0] <= t <= submits[-1]]
        assert 600 == stats.succeeded
        assert busiest_second(times) <= 40 + 4
        assert len(busy) / (submits[-1] - submits[0]) >= 0.9 * 40
        assert len(times) > 600 + 200  # status requests took their share of the budget

    async def test_throttles_cut_the_shared_rate(
        self, journals: list[Journal], tmp_path: Path
    ) -> None:
        """With a service budget, a real limit's throttles cut the service's rate, and the
        endpoint's own rate stays at its ceiling."""
        backend = FakeBackend(Service(limit_per_s=20.0), clock=AnyioClock())
        limits = LimitsConfig(
            submit_rate_per_s=100.0,
            status_rate_per_s=100.0,
            service_rate_per_s=100.0,
            burst=1,
            max_in_flight=8,
            max_active=1000,
        )
        e = engine(backend, new_journal(journals, tmp_path, 300), limits)
        stats = await e.run()

        assert (300, 0) == (stats.succeeded, stats.failed)
        assert _rates(e)["service"].rate_per_s < 50
        assert 100.0 == _rates(e)["submit"].rate_per_s
        registry = e.metrics.registry
        assert registry.get_sample_value("bulk_rate_limit", {"endpoint": "service"}) == (
            _rates(e)["service"].rate_per_s
        )
        # The ceilings beside the adaptive rates, for a dashboard to draw one against the other.
        for endpoint in ("service", "submit", "status"):
            assert 100.0 == registry.get_sample_value("bulk_rate_ceiling", {"endpoint": endpoint})

    async def test_bulk_stop_keeps_the_budget_and_waits_out_throttles(
        self, journals: list[Journal], tmp_path: Path
    ) -> None:
        """`bulk stop` on 20 jobs (10 to look up first) within 5 requests/s in all; two
        throttled stops are sent again after their Retry-After, not reported as failures."""
        backend = CountingBackend(clock=AnyioClock())
        journal = new_journal(journals, tmp_path, 20)
        records = []
        for i in range(20):
            name = job_name("t", point_key({"x": i}), 1)
            backend.accept(Submission(name, b"{}"))
            known = i % 2 == 0
            records.append(
                Record(
                    i,
                    State.SUBMITTED if known else State.SUBMITTING,
                    attempt=1,
                    remote_id=name if known else None,
                )
            )
        await inline(journal.apply, records)
        throttles = iter([True, True])
        plain_stop = backend.stop

        async def stop(job: Receipt) -> None:
            await plain_stop(job)
            if next(throttles, False):
                raise ThrottledError("C008", job_name=job.name, retry_after=2.0)

        backend.stop = stop  # type: ignore[method-assign]
        limits = LimitsConfig(
            stop_rate_per_s=100.0, status_rate_per_s=100.0, service_rate_per_s=5.0, burst=1
        )
        clock = AnyioClock()

        stopped, problems = await stop_run(
            backend,
            journal,
            run="t",
            template=TEMPLATE,
            policy=Policy(limits),
            runtime=Runtime(
                clock=clock, limiter_factory=ClockLimiter.factory(clock), offload=inline
            ),
        )

        assert (20, []) == (stopped, problems)
        assert 32 == len(backend.times)  # 10 look-ups, 20 stops, 2 stops again
        assert busiest_second(backend.times) <= 5 + 1


def _rates(engine: Engine) -> dict[str, AdaptiveRate]:
    """The adaptive rates of an engine's run (after it ran)."""
    assert engine.gateway is not None
    return engine.gateway.rates
