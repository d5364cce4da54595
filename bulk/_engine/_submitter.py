"""The submitter: the producer, the submit workers, exactly-once delivery and the sent mark.

The producer hands every row to a bounded stream (unsettled rows to look up first, then
pending rows in index order); each worker delivers one job at a time under the active-job
cap and hands it to the tracker once the service accepted it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.abc

from bulk._engine._context import Job, SentMark, job_point
from bulk._engine._run import RunContext
from bulk._engine._tracker import Tracker
from bulk._journal import Record, State, StoredJob
from bulk._logs import event
from bulk._naming import render_context
from bulk._retry import Backoff
from bulk._template import to_json
from bulk._text import EXCERPT_LIMIT, cut
from bulk.backends.base import Endpoint, Receipt, Submission
from bulk.errors import (
    AmbiguousBackendError,
    BulkError,
    JournalError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

__all__ = ["PAGE", "Scan", "Submitter", "UnexpectedError"]

_T = TypeVar("_T")
_log = logging.getLogger("bulk._engine")


PAGE = 1000  # pending rows read from the journal at a time


class UnexpectedError(BulkError):
    """Internal: a backend's submit or look-up raised something that is not a bulk error."""


class Scan:
    """Which pending rows to look up before sending, after a session that may have lost
    records: rows in index order until ``window`` consecutive ones are not on the service.

    Up to ``concurrency`` look-ups run at once; answers are counted in index order, so the
    scan ends at the same row as one look-up at a time would, having started at most
    ``concurrency - 1`` more.
    """

    def __init__(self, window: int, concurrency: int):
        self._window = window
        self._concurrency = max(1, concurrency)
        self._misses = 0  # consecutive misses among the answered rows, in index order
        self._waiting: deque[tuple[Job, anyio.Event]] = deque()  # not counted yet, in order

    async def needs_lookup(self, job: Job) -> bool:
        """Whether ``job`` must be looked up (if so, it is counted once answered)."""
        while True:
            while self._waiting and self._waiting[0][1].is_set():
                answered, _ = self._waiting.popleft()
                # Not looked up (it failed, or the look-up gave up): no evidence, go on.
                self._misses = self._misses + 1 if answered.found is False else 0
            if self._misses >= self._window:
                return False
            if len(self._waiting) < self._concurrency:
                break
            await self._waiting[0][1].wait()
        job.looked_up = anyio.Event()
        self._waiting.append((job, job.looked_up))
        return True


class Submitter:
    """Delivers every row of the run exactly once and hands each accepted job to the tracker.

    Args:
        ctx: the run.
        tracker: where accepted jobs go.
        workers: submit workers.
        owned: rows the engine holds from the start (unsettled or tracked): the pager skips
            them, should one fall back to ``pending`` before the pager reaches its index.
        window: consecutive look-up misses that end the scan of pending rows (0: no scan).
        sent_mark: how far this run may send (names not unique only; see SentMark).
        sent_below: the sent mark's value as the run starts.
        look_up_below: after an unclean end with a known sent mark, the rows below which
            pending ones are looked up first.
    """

    def __init__(
        self,
        ctx: RunContext,
        tracker: Tracker,
        *,
        workers: int,
        owned: set[int],
        window: int = 0,
        sent_mark: SentMark | None = None,
        sent_below: int = 0,
        look_up_below: int | None = None,
    ):
        self._ctx = ctx
        self._tracker = tracker
        self._workers = workers
        self._owned = owned
        self._window = window
        self._sent_mark = sent_mark
        self._sent_below = sent_below
        self._look_up_below = look_up_below
        self._mark_lock = anyio.Lock()

    async def submit_all(self, unsettled: list[StoredJob]) -> None:
        send, receive = anyio.create_memory_object_stream[Job](max_buffer_size=PAGE)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce, send, unsettled)
            async with receive:
                for _ in range(self._workers):
                    tg.start_soon(self._worker, receive.clone())
        self._tracker.close_intake()

    async def _produce(
        self, send: anyio.abc.ObjectSendStream[Job], unsettled: list[StoredJob]
    ) -> None:
        """Hand every row to the workers: unsettled ones to look up, then pending ones.

        Pending rows go in index order, and each worker holds one job at a time. So when an
        earlier session sent a row, every pending row before it had been handed out, and at
        most ``workers - 1`` of those could still be unsent (held by the other workers).
        Where the records of such a session may be lost (``self._window`` > 0: the most
        workers of any session since the last clean end), pending rows are looked up by name
        in index order (up to ``workers`` at a time) until the first ``window`` consecutive
        rows not on the service: no later row can have been sent. Later rows go out
        without a look-up. Cost: a look-up for each row the lost records had sent, plus
        ``window``, plus at most ``workers - 1`` looked up past the end of the scan.

        What this cannot see: more than ``window`` consecutive rows that ended without
        being created (refused outright) and whose records were lost too, followed by rows
        that were sent.
        """
        ctx = self._ctx
        async with send:
            for stored in unsettled:
                job = ctx.job(stored)
                job.reconcile = True
                await send.send(job)
            scan = Scan(self._window, self._workers)
            after = -1
            while True:
                rows = await ctx.offload(self._pending_page, after)
                for stored in rows:
                    if stored.index in self._owned:
                        continue
                    job = ctx.job(stored)
                    if self._look_up_below is not None:
                        job.reconcile = stored.index < self._look_up_below
                    elif await scan.needs_lookup(job):
                        job.reconcile = True
                    await send.send(job)
                if len(rows) < PAGE:
                    return
                after = rows[-1].index

    def _pending_page(self, after: int) -> list[StoredJob]:
        return self._ctx.journal.jobs([State.PENDING], after=after, limit=PAGE)

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[Job]) -> None:
        async with receive:
            async for job in receive:
                await self.submit_job(job)

    async def submit_job(self, job: Job) -> None:
        """Deliver one job under the active-job cap, then hand it to the tracker."""
        ctx = self._ctx
        await ctx.slots.acquire()
        try:
            accepted = await self._deliver(job)
        except BaseException:
            ctx.slots.release()
            raise
        finally:
            if job.looked_up is not None:
                job.looked_up.set()  # the producer waits for nothing more from this job
        if accepted:
            self._tracker.add(job)
        else:
            ctx.slots.release()

    async def _deliver(self, job: Job) -> bool:
        """Get the job accepted exactly once; whether it was (else it was recorded ended)."""
        ctx = self._ctx
        backoff = Backoff(ctx.policy.retry, started=ctx.clock.now(), rng=ctx.rng)
        while True:
            try:
                receipt = await self._attempt(job)
            except (ThrottledError, AmbiguousBackendError, TransientBackendError) as exc:
                delay = await self._retry_delay(job, exc, backoff)
                if delay is None:
                    return False
                await ctx.clock.sleep(delay)
                continue
            except RunRefusedError:
                # Bad credentials (or an unknown device) fail every job alike: stop the run
                # and keep this row unsent.
                if not job.reconcile:
                    await ctx.writer.write(Record(job.index, State.PENDING))
                raise
            except UnexpectedError as exc:
                # Not a bulk error: a backend bug, or an error it did not translate. Whether
                # the request reached the service is unknown, so the row is left unknown (never
                # failed: `bulk retry` would send it under a new name) and a resume looks it up
                # by name before sending anything. Not retried now: the same request would meet
                # the same error. The run goes on with the other rows.
                _log.debug("%s: %s", job.name, exc, exc_info=exc.__cause__)
                ctx.stats.unknown += 1
                await ctx.writer.write(Record(job.index, State.UNKNOWN, error=str(exc)))
                return False
            except BulkError as exc:
                # PermanentBackendError: the service refused this job; any other bulk error:
                # a row that no longer renders (an old journal).
                await ctx.ended(job, State.FAILED, str(exc))
                return False
            if receipt is not None:
                await self._accepted(job, receipt, adopted=False)
            return True

    async def _attempt(self, job: Job) -> Receipt | None:
        """One try at getting ``job`` accepted: look its name up first if it may have been
        sent, then, unless found, record the intent and send it.

        Returns:
            The receipt of the submit, or None if the look-up found the job (it is recorded
            accepted, as adopted, already).
        """
        ctx = self._ctx
        if job.variables is None:  # a tracked job the service lost: see Tracker.add
            await ctx.offload(self._reload, job)
        template = ctx.templates.get(job.template, ctx.template)
        rendered = template.render(render_context(job_point(job), ctx.run, job.attempt))
        submission = Submission(job.name, to_json(rendered), rendered)
        if job.reconcile:
            receipt = await self._look_up(job, submission)
            if receipt is not None:
                await self._accepted(job, receipt, adopted=True)
                return None
        await ctx.gateway.pace("submit")
        if self._sent_mark is not None and job.index >= self._sent_below:
            await self._raise_sent_mark(self._sent_mark, job.index)
        intent = Record(job.index, State.SUBMITTING, attempt=job.attempt)
        try:
            await ctx.writer.write(intent)
        except anyio.get_cancelled_exc_class():
            # Stopped (Ctrl-C, an outage) while the intent was being committed: the
            # request never went out, so the row is plainly pending again.
            with contextlib.suppress(JournalError):
                ctx.writer.record_nowait(Record(job.index, State.PENDING))
            raise
        return await self._call("submit", ctx.backend.submit, submission)

    def _reload(self, job: Job) -> None:
        """Read the point of ``job`` back from the journal (its row holds it unchanged)."""
        (stored,) = self._ctx.journal.jobs(after=job.index - 1, limit=1)
        job.key, job.origin, job.variables = stored.key, stored.origin, stored.variables

    async def _look_up(self, job: Job, submission: Submission) -> Receipt | None:
        """Look ``job`` up by name; the first answer is also the evidence the scan of a lost
        history waits for (``job.looked_up``)."""
        receipt = await self._call("lookup", self._ctx.backend.lookup, submission)
        job.reconcile = False
        if job.looked_up is not None and not job.looked_up.is_set():
            job.found = receipt is not None  # the first answer is the evidence
            job.looked_up.set()
        return receipt

    async def _retry_delay(
        self,
        job: Job,
        exc: ThrottledError | AmbiguousBackendError | TransientBackendError,
        backoff: Backoff,
    ) -> float | None:
        """Record what a retryable error says of ``job``'s row; how long to wait before the
        next try (counted as a retry), or None if there is none (recorded as such)."""
        ctx = self._ctx
        if isinstance(exc, ThrottledError):
            # Not an attempt: wait as asked (the adaptive rate already slowed down) and go on.
            reason, delay = "throttled", exc.retry_after or 0
        elif isinstance(exc, UnreachableError):
            # Nothing was sent: not an attempt, and not this job's failure. A row being
            # looked up stays as it is (it may exist); one being sent is pending again.
            if not job.reconcile:
                ctx.writer.record_nowait(Record(job.index, State.PENDING, error=str(exc)))
            if ctx.unreachable_too_long(exc):
                return None  # the run is stopping; the row is kept as recorded
            reason, delay = "unreachable", min(backoff.outage_delay(), ctx.outage_left())
        else:
            last_error = str(exc)
            if isinstance(exc, AmbiguousBackendError):
                job.reconcile = True
                reason = "ambiguous"
                ctx.writer.record_nowait(Record(job.index, State.UNKNOWN, error=last_error))
            else:
                reason = "transient"
                if not job.reconcile:  # known not sent: it is pending again
                    ctx.writer.record_nowait(Record(job.index, State.PENDING, error=last_error))
            next_delay = backoff.next_delay(ctx.clock.now(), exc.retry_after)
            if next_delay is None:
                await self._give_up(job, backoff.failures, last_error)
                return None
            delay = next_delay
        ctx.stats.retries += 1
        ctx.metrics.retries.labels(reason=reason).inc()
        event(
            "retry",
            f"{job.name} again in {delay:.3g} s ({reason})",
            endpoint="submit",
            reason=reason,
            delay_s=round(delay, 3),
            job=job.name,
            index=job.index,
        )
        return delay

    async def _call(
        self,
        endpoint: Endpoint,
        call: Callable[[Submission], Awaitable[_T]],
        submission: Submission,
    ) -> _T:
        """A submit or look-up request; anything but a bulk error becomes ``UnexpectedError``.

        Only the backend call is wrapped: an error of the journal or of bulk itself is not one
        row's problem and still stops the run.
        """
        try:
            # A submit was paced by its worker, before the journal write.
            return await self._ctx.gateway.request(
                endpoint, call, submission, paced=endpoint == "submit"
            )
        except BulkError:
            raise
        except Exception as exc:
            # Cut: it is stored in the journal and shown.
            text = cut(str(exc), EXCERPT_LIMIT)
            msg = f"unexpected error from the backend: {type(exc).__name__}: {text}"
            raise UnexpectedError(msg) from exc

    async def _raise_sent_mark(self, sent_mark: SentMark, index: int) -> None:
        """Make the sent mark durable past ``index`` before that row is sent (see SentMark).

        Raised a step ahead at a time, a second of sending at the submit ceiling (16 rows at
        least): about one fsynced file write a second at full speed, and after a crash about
        a second's worth of rows never sent is looked up in vain.
        """
        ctx = self._ctx
        async with self._mark_lock:
            if index >= self._sent_below:
                step = max(16, math.ceil(ctx.policy.limits.submit_rate_per_s))
                below = index + step
                await ctx.offload(sent_mark.raise_to, below)
                self._sent_below = below

    async def _give_up(self, job: Job, attempts: int, last_error: str) -> None:
        ctx = self._ctx
        message = f"gave up after {attempts} attempts: {last_error}"
        if job.reconcile:
            # The last answer was ambiguous and the look-up did not settle it: the job may
            # exist. Leave it unknown, never failed, so that a resume looks it up first.
            ctx.stats.unknown += 1
            event(
                "job_unknown",
                f"{job.name} unknown (looked up on resume): {message}",
                level=logging.WARNING,
                job=job.name,
                index=job.index,
                key=job.key,
                origin=job.origin,
                attempt=job.attempt,
                reason=message,
            )
            await ctx.writer.write(Record(job.index, State.UNKNOWN, error=message))
            return
        await ctx.ended(job, State.FAILED, message)

    async def _accepted(self, job: Job, receipt: Receipt, *, adopted: bool) -> None:
        ctx = self._ctx
        job.remote_id = receipt.remote_id
        job.accepted_at = ctx.clock.now()
        ctx.count_submitted()
        error = "adopted after a look-up" if adopted else None
        ctx.writer.record_nowait(
            Record(
                job.index,
                State.SUBMITTED,
                attempt=job.attempt,
                remote_id=receipt.remote_id,
                submitted_at=ctx.clock.wall(),
                error=error,
            )
        )
