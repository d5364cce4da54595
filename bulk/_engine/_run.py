"""The run context: what the submitter and the tracker of one run share, built by ``Engine.run``."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
from prometheus_client import Counter

from bulk._clock import Clock
from bulk._engine._context import Job, Stats
from bulk._engine._gateway import Gateway
from bulk._engine._slots import Slots
from bulk._journal import Journal, JournalWriter, Offload, Record, State, StoredJob
from bulk._logs import event
from bulk._metrics import Metrics
from bulk._naming import job_name
from bulk._policy import Policy
from bulk._template import Template
from bulk.backends.base import Backend
from bulk.errors import UnreachableError

__all__ = ["RunContext"]


@dataclass(slots=True, eq=False)
class RunContext:
    """One run's shared state and the few things every part of it does alike.

    Attributes:
        work: the scope of the run's work; cancelled when an outage stops the run.
        outage: the error that stopped the run for an outage (None: none did).
    """

    backend: Backend
    journal: Journal
    run: str
    template: Template
    templates: Mapping[int, Template]
    policy: Policy
    clock: Clock
    rng: random.Random
    offload: Offload
    metrics: Metrics
    stats: Stats
    writer: JournalWriter
    gateway: Gateway
    slots: Slots
    work: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    outage: UnreachableError | None = None
    _m_jobs: dict[str, Counter] = field(init=False)

    def __post_init__(self) -> None:
        # Labelled metric children, looked up once: .labels() is a dict walk under a lock.
        jobs = self.metrics.jobs
        self._m_jobs = {s: jobs.labels(state=s) for s in ("submitted", *_ENDED)}

    def job(self, stored: StoredJob) -> Job:
        """The job of a journal row, named for its attempt."""
        return Job(
            index=stored.index,
            key=stored.key,
            origin=stored.origin,
            variables=stored.variables,
            attempt=stored.attempt,
            name=job_name(self.run, stored.key, stored.attempt),
            template=stored.template,
        )

    def count_submitted(self) -> None:
        self.stats.submitted += 1
        self._m_jobs["submitted"].inc()

    async def ended(self, job: Job, state: State, reason: str | None) -> None:
        """Record a terminal state (committed before returning)."""
        await self.writer.write(self._count_end(job, state, reason))

    def record_end(self, job: Job, state: State, reason: str | None) -> None:
        """Count a terminal state and queue it; it is committed with the next batch."""
        self.writer.record_nowait(self._count_end(job, state, reason))

    def _count_end(self, job: Job, state: State, reason: str | None) -> Record:
        s = self.stats
        s.done += 1
        if state is State.SUCCEEDED:
            s.succeeded += 1
        elif state is State.FAILED:
            s.failed += 1
            event(
                "job_failed",
                f"{job.name} failed: {reason}",
                level=logging.WARNING,
                job=job.name,
                index=job.index,
                key=job.key,
                origin=job.origin,
                attempt=job.attempt,
                reason=reason,
                remote_id=job.remote_id,
            )
        else:
            s.stopped += 1
        self._m_jobs[state.value].inc()
        self.metrics.rows_done.set(s.done)
        if job.accepted_at:
            self.metrics.job_duration.observe(max(0.0, self.clock.now() - job.accepted_at))
        return Record(job.index, state, finished_at=self.clock.wall(), error=reason)

    def outage_left(self) -> float:
        """Seconds of the outage budget left (all of it if the service was just reached)."""
        return self.gateway.outage_left()

    def unreachable_too_long(self, exc: UnreachableError) -> bool:
        """Whether no request has reached the service for ``retry.budget_s``. If so, the run
        stops: everything in it is cancelled, and ``Engine.run`` raises ``OutageError``."""
        if self.gateway.outage_left() > 0:
            return False
        if self.outage is None:
            self.outage = exc
            self.work.cancel()
        return True


_ENDED = ("succeeded", "failed", "stopped")
