"""Tracking accepted jobs to their end: per-job back-off, batched status requests."""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from bulk._engine._context import END_STATE, Job
from bulk._engine._run import RunContext
from bulk._journal import Record, State
from bulk.backends.base import JobStatus, Phase
from bulk.errors import (
    BackendError,
    PermanentBackendError,
    RetryableBackendError,
    RunRefusedError,
    ThrottledError,
    UnreachableError,
)

# Sends a job the service lost again (after a look-up by name): the submitter's submit_job.
Resubmit = Callable[[Job], Awaitable[None]]

__all__ = ["Tracker"]

_log = logging.getLogger("bulk")


class Tracker:
    """Polls accepted jobs to a terminal state: per-job back-off, batched requests."""

    def __init__(self, ctx: RunContext):
        self._ctx = ctx
        self._track = ctx.policy.track
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._intake_open = True
        self._busy = 0  # tasks the tracker started that may still record or re-add a job
        self._active: dict[int, Job] = {}  # accepted and not ended, by row index
        # A backend that drops ended jobs from its service (Ray's delete_finished) says so
        # with a ``delete_ended(receipt)`` coroutine method, called once the end is committed.
        delete = getattr(ctx.backend, "delete_ended", None)
        self._delete_ended = delete if inspect.iscoroutinefunction(delete) else None

    def add(self, job: Job) -> None:
        """Start tracking an accepted job; its first poll is ``track.first_s`` from now."""
        job.interval = self._track.first_s
        if not job.accepted_at:
            job.accepted_at = self._ctx.clock.now()
        self._active[job.index] = job
        self._ctx.stats.active += 1
        self._ctx.metrics.active.inc()
        self._push(job, self._ctx.clock.now() + job.interval)
        self._wake.set()

    def active(self) -> list[Job]:
        """The jobs accepted and not yet ended."""
        return list(self._active.values())

    def close_intake(self) -> None:
        """No more jobs will be added (except the tracker's own resubmissions)."""
        self._intake_open = False
        self._wake.set()

    def _push(self, job: Job, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job))

    async def run(self, tg: anyio.abc.TaskGroup, resubmit: Resubmit) -> None:
        """Poll until every job has ended and no more can come.

        ``resubmit`` sends a job the service lost again (it looks the name up first).
        """
        clock = self._ctx.clock
        while True:
            if not self._heap:
                if not self._intake_open and not self._busy:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            now = clock.now()
            due = self._heap[0][0]
            if due > now:
                # A job added meanwhile is due first_s after it came, never before we wake.
                await clock.sleep(min(due - now, self._track.first_s))
                continue
            await self._poll(tg, self._due_batch(now), resubmit)

    def _due_batch(self, now: float) -> list[Job]:
        # Take jobs due within half a first interval too: fewer, fuller status requests.
        horizon = now + self._track.first_s / 2
        batch: list[Job] = []
        while self._heap and self._heap[0][0] <= horizon and len(batch) < self._track.batch:
            batch.append(heapq.heappop(self._heap)[2])
        return batch

    async def _poll(self, tg: anyio.abc.TaskGroup, batch: list[Job], resubmit: Resubmit) -> None:
        ctx = self._ctx
        clock = ctx.clock
        ctx.stats.status_requests += 1
        try:
            answers = await ctx.gateway.request(
                "status", ctx.backend.status, [job.receipt for job in batch]
            )
        except RetryableBackendError as exc:
            # Throttled, unreachable or a failed read: the jobs are as they were. Ask again
            # after their (growing) interval, or the service's Retry-After; never at once,
            # which would poll a service that is down as fast as the rate limit allows.
            if isinstance(exc, UnreachableError) and ctx.unreachable_too_long(exc):
                return  # the run is stopping: the jobs stay accepted, tracked on resume
            retry_at = clock.now() + exc.retry_after if exc.retry_after else None
            for job in batch:
                self._reschedule(job, retry_at)
            return
        now = clock.now()
        timeout = self._track.timeout_s
        for job in batch:
            status = answers.get(job.remote_id or "")
            if status is None or not (status.phase.terminal or status.phase is Phase.MISSING):
                if status is not None and status.phase is Phase.RUNNING and not job.running:
                    job.running = True
                    ctx.writer.record_nowait(
                        Record(job.index, State.RUNNING, started_at=clock.wall())
                    )
                if timeout is not None and now - job.accepted_at > timeout:
                    self._spawn(tg, self._time_out, job)
                else:
                    self._reschedule(job, None)
                continue
            self._finished(tg, job, status, resubmit)

    def _reschedule(self, job: Job, at: float | None) -> None:
        job.interval = min(self._track.max_s, job.interval * self._track.factor)
        self._push(job, at if at is not None else self._ctx.clock.now() + job.interval)

    def _finished(
        self, tg: anyio.abc.TaskGroup, job: Job, status: JobStatus, resubmit: Resubmit
    ) -> None:
        ctx = self._ctx
        self._forget(job)
        if status.phase is Phase.MISSING:
            # The service does not know a job it accepted (purged, or a local job whose
            # runner died): look its name up and send it again if it really is gone.
            job.lost += 1
            if job.lost <= ctx.policy.retry.attempts:
                job.reconcile = True
                ctx.slots.release()
                self._spawn(tg, resubmit, job)
                return
            status = JobStatus(Phase.FAILED, "lost by the service")
        state = END_STATE.get(status.phase, State.FAILED)
        ctx.slots.release()
        # Not awaited: if this record is lost in a crash, the job is still "submitted" in the
        # journal, so a resume polls it again and gets the same end. No task needed.
        ctx.record_end(job, state, status.reason)
        if self._delete_ended is not None and status.phase.terminal:
            self._spawn(tg, self._delete_when_committed, job, ctx.writer.queued_commit())

    async def _delete_when_committed(self, job: Job, committed: anyio.Event) -> None:
        """Let the backend drop an ended job from the service, once its end is committed:
        never before, or a crash in between would leave a journaled ``submitted`` job the
        service no longer knows, which a resume would look up, not find and send again.
        Best effort: a failure leaves the job on the service, nothing else."""
        await committed.wait()
        delete = self._delete_ended
        if delete is None or self._ctx.writer.failed:
            return
        try:  # paced and counted with the stops (it is a write about a job that exists)
            await self._ctx.gateway.request("stop", delete, job.receipt)
        except BackendError as exc:
            _log.info("bulk: %s stays on the service: %s", job.name, exc)

    def _spawn(
        self, tg: anyio.abc.TaskGroup, func: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        """Start a task the tracker must wait for before it may say it is done."""

        async def tracked() -> None:
            try:
                await func(*args)
            finally:
                self._busy -= 1
                self._wake.set()

        self._busy += 1
        tg.start_soon(tracked)

    def _forget(self, job: Job) -> None:
        """The job is no longer active (ended, or lost and about to be sent again)."""
        del self._active[job.index]
        self._ctx.stats.active -= 1
        self._ctx.metrics.active.dec()

    async def _time_out(self, job: Job) -> None:
        """The client-side job timeout: stop the job, record it failed with ``timeout``.

        The stop goes through the gateway like every request (a throttle cuts the stop
        rate). A stop that never reached the service, or was throttled, is tried again at
        the next poll past the timeout: the job may still run. A refusal of the credentials
        stops the run, as everywhere else; any other failure is recorded with the job.
        """
        ctx = self._ctx
        reason = "timeout"
        try:
            await ctx.gateway.request("stop", ctx.backend.stop, job.receipt)
        except UnreachableError as exc:
            if not ctx.unreachable_too_long(exc):
                self._reschedule(job, None)
            return
        except ThrottledError as exc:
            self._reschedule(job, ctx.clock.now() + exc.retry_after if exc.retry_after else None)
            return
        except RunRefusedError:
            raise
        except (RetryableBackendError, PermanentBackendError) as exc:
            reason = f"timeout; the stop request failed, the job may still run: {exc}"
        self._forget(job)
        ctx.slots.release()
        await ctx.ended(job, State.FAILED, reason)
