"""Test doubles that really implement bulk's interfaces (like ``httpx.MockTransport``).

- :class:`FakeBackend`: a service in memory. A scripted ``handler`` decides each submit's
  fate; jobs then run for a scripted number of status polls. It keeps a *ledger* of how many
  times each name was accepted, which is what exactly-once tests check. Setting ``down``
  makes it unreachable (every request raises ``UnreachableError``) until it is cleared.
- :class:`FakeClock`: virtual time, advanced by the test.
- :class:`ClockLimiter`: a leaky-bucket :class:`~bulk._ratelimit.RateLimiter` on any
  :class:`~bulk._clock.Clock`, so rate limits run on virtual time too.
- :func:`simulator`: ``bulk sim KIND`` in a subprocess on an OS-chosen port, for tests and
  benchmarks that need a service outside their own process (so it outlives a killed bulk).
- :func:`wait_until` (and :func:`wait_until_sync` for synchronous tests): poll a condition
  outside the test's control (a process, a file, a service's job) in a bounded loop.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from bulk._clock import Clock
from bulk._text import cut
from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.errors import PermanentBackendError, UnreachableError

__all__ = [
    "Call",
    "ClockLimiter",
    "FakeBackend",
    "FakeClock",
    "Handler",
    "simulator",
    "wait_until",
    "wait_until_sync",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One request the fake received: its endpoint, job name and (virtual) time."""

    endpoint: str
    name: str
    at: float


# Decides one submit: return normally to accept it, or raise a bulk.errors.BackendError.
# Raising AmbiguousBackendError *after* calling ``backend.accept(submission)`` models
# "the service created the job, but the answer was lost".
Handler = Callable[["FakeBackend", Submission], Awaitable[None]]


async def _accept_all(backend: FakeBackend, submission: Submission) -> None:
    backend.accept(submission)


@dataclass(slots=True)
class _FakeJob:
    name: str
    polls_left: int
    phase: Phase = Phase.QUEUED
    reason: str | None = None


class FakeBackend:
    """An in-memory service implementing :class:`~bulk.backends.base.Backend`.

    Example::

        async def flaky(backend, sub):
            if sub.name.endswith("7"):
                raise ThrottledError("slow down", retry_after=2)
            backend.accept(sub)

        backend = FakeBackend(flaky, clock=clock, runs_for=2)

    Args:
        handler: decides each submit (default: accept).
        clock: stamps :attr:`calls`.
        runs_for: status polls a job spends running before it ends.
        outcome: the phase and reason a job ends with, from its name (default: succeeded).
    """

    def __init__(
        self,
        handler: Handler = _accept_all,
        *,
        clock: Clock | None = None,
        runs_for: int = 1,
        outcome: Callable[[str], tuple[Phase, str | None]] | None = None,
    ):
        self.handler = handler
        self._clock = clock
        self._runs_for = runs_for
        self._outcome = outcome or (lambda _name: (Phase.SUCCEEDED, None))
        self.jobs: dict[str, _FakeJob] = {}
        self.ledger: Counter[str] = Counter()
        self.calls: list[Call] = []
        self.stopped: list[str] = []
        self.closed = False
        self.down = False  # True: the service cannot be reached (nothing gets through)
        self.refused: list[Call] = []  # requests made while it was down

    def _log(self, endpoint: str, name: str) -> None:
        call = Call(endpoint, name, self._clock.now() if self._clock else 0.0)
        if self.down:
            self.refused.append(call)
            msg = "cannot connect to the fake service: Connection refused"
            raise UnreachableError(msg, job_name=name)
        self.calls.append(call)

    def accept(self, submission: Submission) -> Receipt:
        """Create the job (once per name, like a service with unique names)."""
        if submission.name not in self.jobs:
            self.ledger[submission.name] += 1
            self.jobs[submission.name] = _FakeJob(submission.name, self._runs_for)
        return Receipt(submission.name, submission.name)

    def forget(self, name: str) -> None:
        """Make the service lose a job (it then answers MISSING for it)."""
        self.jobs.pop(name, None)

    def calls_to(self, endpoint: str) -> list[Call]:
        """The calls received on one endpoint, in order."""
        return [c for c in self.calls if c.endpoint == endpoint]

    async def submit(self, submission: Submission) -> Receipt:
        if self.closed:
            msg = "cannot submit: backend has been closed"
            raise PermanentBackendError(msg, job_name=submission.name)
        self._log("submit", submission.name)
        if submission.name in self.jobs:  # a duplicate name is the same job: success
            return Receipt(submission.name, submission.name)
        await self.handler(self, submission)
        return self.accept(submission)

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for receipt in jobs:
            self._log("status", receipt.name)
            job = self.jobs.get(receipt.remote_id)
            if job is None:
                out[receipt.remote_id] = JobStatus(Phase.MISSING)
                continue
            if not job.phase.terminal:
                if job.polls_left <= 0:
                    job.phase, job.reason = self._outcome(job.name)
                else:
                    job.phase = Phase.RUNNING
                    job.polls_left -= 1
            out[receipt.remote_id] = JobStatus(job.phase, job.reason)
        return out

    async def stop(self, job: Receipt) -> None:
        self._log("stop", job.name)
        self.stopped.append(job.name)
        fake = self.jobs.get(job.remote_id)
        if fake is not None and not fake.phase.terminal:
            fake.phase, fake.reason = Phase.STOPPED, "stopped"

    async def lookup(self, submission: Submission) -> Receipt | None:
        name = submission.name
        self._log("lookup", name)
        return Receipt(name, name) if name in self.jobs else None

    async def aclose(self) -> None:
        self.closed = True


_check: type[Backend] = FakeBackend


class FakeClock:
    """Virtual time. Sleepers wake in order as the test advances the clock.

    Example::

        clock = FakeClock()
        async with anyio.create_task_group() as tg:
            tg.start_soon(something_that_sleeps, clock)
            await clock.advance(6.9)   # nothing due yet
            await clock.advance(0.1)   # the sleeper of 7 s wakes at exactly 7.0
    """

    def __init__(self, start: float = 0.0):
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return 1_700_000_000.0 + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper due, in order, letting each run."""
        target = self._now + seconds
        await anyio.wait_all_tasks_blocked()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, event = heapq.heappop(self._sleepers)
            self._now = when
            event.set()
            await anyio.wait_all_tasks_blocked()
        self._now = target


@dataclass(slots=True)
class ClockLimiter:
    """A leaky bucket on an injected clock: at most ``burst`` back to back, then
    ``rate_per_s``. Waiters are served in arrival order.

    Over any window of ``t`` seconds it lets at most ``burst + rate_per_s * t`` through.
    """

    rate_per_s: float
    burst: int
    clock: Clock
    _level: float = 0.0
    _last: float = 0.0
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def acquire(self, amount: float = 1) -> None:
        async with self._lock:
            while True:
                now = self.clock.now()
                self._level = max(0.0, self._level - (now - self._last) * self.rate_per_s)
                self._last = now
                # The tolerance matters: after sleeping exactly the computed time, float
                # rounding can leave the level 1e-16 too high, and a 1e-19 s sleep does not
                # move a virtual clock: without it the limiter would spin forever.
                if self._level + amount <= self.burst + 1e-9:
                    self._level += amount
                    return
                await self.clock.sleep((self._level + amount - self.burst) / self.rate_per_s)

    @classmethod
    def factory(cls, clock: Clock) -> Callable[[float, int], ClockLimiter]:
        """A limiter factory for :class:`~bulk._engine.Engine` that runs on ``clock``."""
        return lambda rate, burst: cls(rate, burst, clock)


@contextlib.contextmanager
def simulator(kind: str, *args: str, port: int = 0) -> Iterator[str]:
    """Run ``bulk sim KIND --port PORT ARGS`` in a subprocess; yield its base URL; stop it.

    Example::

        with simulator("stub", "--fail-after-rate", "0.2") as url:
            ...  # point a config's [backend] url at it

    Args:
        port: where to listen (0: a port the OS chooses; give one to start a service where
            a client already looks for it).
    """
    proc = subprocess.Popen(  # noqa: S603 - this interpreter running bulk, no shell
        [sys.executable, "-m", "bulk", "sim", kind, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None  # noqa: S101 - narrows the type: stdout=PIPE
    try:
        line = proc.stdout.readline()  # "bulk sim KIND: listening on http://127.0.0.1:PORT"
        url = line.rsplit(" ", 1)[-1].strip()
        if not url.startswith("http://"):
            msg = f"bulk sim {kind} did not start: {line!r}"
            raise RuntimeError(msg)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# 1000 polls 10 ms apart: about 10 s plus the probes' own time, far more than anything a
# test waits for takes; the bound only turns a hang into a failure that says what hung.
POLLS = 1000
POLL_INTERVAL_S = 0.01


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = bool,
    *,
    what: str,
    polls: int = POLLS,
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Call ``probe`` until ``done`` says yes to what it returns, and return that.

    For what a test cannot be told about (a process ending, a file appearing, a job's state
    on a service); a test waits on its own tasks with events instead. Bounded: at most
    ``polls`` probes, ``interval_s`` apart.

    Example::

        status = await wait_until(lambda: status_of(job), lambda s: s.phase.terminal,
                                  what="the job ends")

    Raises:
        AssertionError: ``done`` never said yes (the message names ``what`` and the last
            value seen).
    """
    value: T | None = None
    for _ in range(polls):
        value = await probe()
        if done(value):
            return value
        await anyio.sleep(interval_s)
    raise AssertionError(_never(what, polls, interval_s, value))


def wait_until_sync(
    probe: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    what: str,
    polls: int = POLLS,
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """:func:`wait_until` for synchronous tests (it sleeps the thread between probes)."""
    value: T | None = None
    for _ in range(polls):
        value = probe()
        if done(value):
            return value
        time.sleep(interval_s)
    raise AssertionError(_never(what, polls, interval_s, value))


def _never(what: str, polls: int, interval_s: float, last: object) -> str:
    shown = cut(repr(last), 200)
    return f"{what}: not after {polls} polls {interval_s:g} s apart (last seen: {shown})"
