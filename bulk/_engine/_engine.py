"""The engine: submit every pending job politely, exactly once, and track each to its end.

The only module that starts tasks. One run looks like this::

    journal ──pending rows──► producer ──bounded stream──► N submit workers ──► backend.submit
                                                               │ accepted
                                                               ▼
                              journal writer ◄── every change ── tracker ──► backend.status

Guarantees, and where they are kept:

- *Exactly once.* A worker commits ``submitting`` (and waits for the commit) before it sends
  a job; an answer is recorded as soon as it arrives. An ambiguous failure (timeout, reset,
  5xx after sending) and every ``submitting``/``unknown`` row found on resume is looked up by
  the job's deterministic name before anything is sent again. A "name already exists" answer
  is a success (backends return the existing job's receipt).
- *Polite.* Each endpoint class (submit, status, stop; look-ups share status) has a hard
  ceiling (the injected rate limiter, aiolimiter in production) and an adaptive rate below it
  (:class:`~bulk._ratelimit.AdaptiveRate`); a service-wide budget, when configured, adds one
  ceiling and adaptive rate shared by all endpoints. Every HTTP request is paced, not only the
  first of a backend call. Requests in flight are capped by a ``CapacityLimiter``; active
  jobs (accepted, not yet finished) by a semaphore. Throttling answers slow the run down as
  far as the evidence says and are retried without counting as attempts: a throttled job
  never fails for being throttled.
- *Bounded.* Retries stop after ``retry.attempts`` or ``retry.budget_s``, whichever first;
  ``Retry-After`` wins over the computed back-off.
- *Outages are waited out.* A service that cannot be reached (nothing was sent) fails no job
  and uses no attempt: submitting, looking up, polling and stopping all wait and try again.
  Once no request has reached the service for ``retry.budget_s``, the run stops as a whole
  (rather than spending that budget again for each row in turn): rows never sent stay
  ``pending``, rows being sent stay to be looked up, accepted jobs stay to be tracked, and
  :meth:`Engine.run` raises :class:`~bulk.errors.OutageError` (the CLI exits 3).
- *Interruptible.* Setting the ``drain`` event stops taking new rows and abandons requests in
  flight (their rows stay ``submitting`` and are looked up on resume); the journal writer is
  then flushed under a shield. Where jobs do not outlive bulk (local processes, ended when
  the backend closes), the jobs still active go back to ``pending`` with the reason
  :data:`INTERRUPTED`: they run again on resume, and the journal never calls them running.
- *History lost.* A journal whose ``-wal`` was lost after a crash has forgotten its latest
  records: rows sent just before the crash read ``pending``. A service that refuses a second
  job of the same name makes that harmless (the resend is "already exists"); on one that
  does not (``BackendKind.unique_names`` false: Gongji), a run that follows a session that
  did not end cleanly looks its first pending rows up by name before sending them (see
  :meth:`Engine._produce`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry

from bulk._clock import AnyioClock, Clock
from bulk._engine._context import INTERRUPTED, Job, LimiterFactory, SentMark, Stats, job_point
from bulk._engine._gateway import outcome_of
from bulk._engine._slots import Slots
from bulk._engine._submitter import PAGE, Scan, UnexpectedError
from bulk._engine._tracker import Tracker
from bulk._journal import Journal, JournalWriter, Offload, Record, State, StoredJob
from bulk._metrics import ENDPOINTS, OUTCOMES, Metrics
from bulk._naming import job_name, render_context
from bulk._policy import Policy
from bulk._ratelimit import AdaptiveRate, RateLimiter, aiolimiter_factory, pacing
from bulk._retry import Backoff
from bulk._template import Template
from bulk.backends.base import Backend, Receipt, Submission
from bulk.errors import (
    AmbiguousBackendError,
    BackendError,
    BulkError,
    JournalError,
    OutageError,
    PermanentBackendError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

__all__ = ["Engine"]

_T = TypeVar("_T")
_ENDED = ("succeeded", "failed", "stopped")
_log = logging.getLogger("bulk._engine")


class Engine:
    """Submits and tracks one run's jobs.

    Example::

        engine = Engine(backend, journal, template=cfg.template, run=cfg.run.name,
                        policy=Policy(cfg.limits, cfg.retry, cfg.track))
        stats = await engine.run(drain=drain_event)

    Args:
        backend: where jobs go.
        journal: the run's journal (already filled).
        template: renders each job's body (validated before the run).
        templates: the templates of rows planned with an earlier version of the job
            template, by version (``bulk retry --template-changed``); every other row
            renders with ``template``.
        run: the run's name (part of every job name).
        policy: limits, retry and tracking.
        clock: all waiting and timing.
        metrics: Prometheus metrics (a private registry when None).
        limiter_factory: builds each endpoint's ceiling, inside the running loop.
        rng: jitter for back-off (seed it for reproducible tests).
        workers: submit workers (default: ``max_in_flight``).
        offload: runs blocking journal work (default: a worker thread).
        jobs_outlive_bulk: whether accepted jobs go on running when bulk stops (a service's
            do; local processes are ended when the backend closes, and jobs still active
            when the run stops are then recorded ``pending``, :data:`INTERRUPTED`).
        unique_names: whether the service refuses a second job of the same name
            (``BackendKind.unique_names``); if not, pending rows are looked up before they
            are sent where an unclean end may have lost their records (see ``_produce``).
    """

    def __init__(
        self,
        backend: Backend,
        journal: Journal,
        *,
        template: Template,
        templates: Mapping[int, Template] | None = None,
        run: str,
        policy: Policy,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        limiter_factory: LimiterFactory = aiolimiter_factory,
        rng: random.Random | None = None,
        workers: int | None = None,
        offload: Offload | None = None,
        jobs_outlive_bulk: bool = True,
        unique_names: bool = True,
        sent_mark: SentMark | None = None,
    ):
        self._backend = backend
        self._journal = journal
        self._template = template
        self._templates = templates or {}
        self._run = run
        self._policy = policy
        self._clock = clock or AnyioClock()
        self.metrics = metrics or Metrics(CollectorRegistry())
        self._limiter_factory = limiter_factory
        self._rng = rng or random.Random()
        self._workers = workers or policy.limits.max_in_flight
        self._offload = offload or anyio.to_thread.run_sync
        self._jobs_outlive_bulk = jobs_outlive_bulk
        self._unique_names = unique_names
        self._window = 0  # consecutive look-up misses that end the scan of pending rows
        # Where names are not unique: how far this run may send (see SentMark), and, after
        # an unclean end, the rows below which pending ones are looked up first.
        self._sent_mark = None if unique_names else sent_mark
        self._sent_below = 0
        self._look_up_below: int | None = None
        self._mark_lock = anyio.Lock()
        self.stats = Stats()
        self.interrupted = False
        self.outage: UnreachableError | None = None  # set when an outage stopped the run
        self._unreachable_since: float | None = None  # no request has reached the service since
        # Labelled metric children, looked up once: .labels() is a dict walk under a lock.
        m = self.metrics
        self._m_jobs = {s: m.jobs.labels(state=s) for s in ("submitted", *_ENDED)}
        self._m_requests = {
            (e, o): m.requests.labels(endpoint=e, outcome=o) for e in ENDPOINTS for o in OUTCOMES
        }
        self._m_duration = {e: m.request_duration.labels(endpoint=e) for e in ENDPOINTS}

    # -- the run ----------------------------------------------------------------------------

    async def run(self, drain: anyio.Event | None = None) -> Stats:
        """Submit every pending row and track every job until it ends (or ``drain`` is set).

        Returns:
            The run's counters (the journal holds the full record).

        Raises:
            PermanentBackendError: the service refused a status or look-up request outright
                (bad credentials): nothing more can be done until that is fixed.
            OutageError: no request reached the service for ``retry.budget_s``; the run
                stopped with every unfinished row kept for the next run.
        """
        limits = self._policy.limits
        clock = self._clock
        self._writer = JournalWriter(self._journal, offload=self._offload)
        self._slots = Slots(limits.max_active)
        # The same gate as the active-job cap: no checkpoint while a slot is free (one
        # request per job goes through it), FIFO hand-off when the cap is reached.
        self._in_flight = Slots(limits.max_in_flight)
        self._ceilings = {
            "submit": self._limiter_factory(limits.submit_rate_per_s, limits.burst),
            "status": self._limiter_factory(limits.status_rate_per_s, limits.burst),
            "stop": self._limiter_factory(limits.stop_rate_per_s, limits.burst),
        }
        self._rates = {
            "submit": AdaptiveRate(limits.submit_rate_per_s, clock),
            "status": AdaptiveRate(limits.status_rate_per_s, clock),
            "stop": AdaptiveRate(limits.stop_rate_per_s, clock),
        }
        # The service-wide budget, shared by every endpoint (``[limits] service_rate_per_s``).
        # With it, throttles cut the shared rate: they say the service is over its limit,
        # not which endpoint is (see bulk._ratelimit).
        self._service: tuple[AdaptiveRate, RateLimiter] | None = None
        if limits.service_rate_per_s is not None:
            self._service = (
                AdaptiveRate(limits.service_rate_per_s, clock),
                self._limiter_factory(limits.service_rate_per_s, limits.burst),
            )
            self._rates["service"] = self._service[0]
        for endpoint, rate in self._rates.items():
            self.metrics.rate_limit.labels(endpoint=endpoint).set(rate.rate_per_s)
        self._pace_extra = {c: functools.partial(self._pace, c) for c in self._ceilings}
        self._tracker = Tracker(self)

        unclean = await self._offload(self._journal.begin_session, self._workers)
        self._window = 0 if self._unique_names else unclean
        if self._sent_mark is not None:
            below = await self._offload(self._sent_mark.below)
            self._sent_below = below or 0
            if unclean and below is not None:
                # The mark bounds every row the unclean sessions sent: look up exactly the
                # pending rows below it, and no window of misses is needed.
                self._look_up_below, self._window = below, 0
        counts, unsettled, tracked = await self._offload(self._load)
        # Rows the engine owns from the start. One of them may fall back to ``pending`` after
        # a transient error before the pager reaches its index: the pager must skip it, or a
        # second worker would send the same job.
        self._owned = {r.index for r in unsettled} | {r.index for r in tracked}
        self._init_stats(counts)
        for stored in tracked:
            job = self._job(stored)
            job.remote_id = stored.remote_id
            job.running = stored.state is State.RUNNING
            self._slots.take_now()
            self._tracker.add(job)

        async with anyio.create_task_group() as io:
            io.start_soon(self._writer.run)
            try:
                with anyio.CancelScope() as work:
                    self._work = work
                    async with anyio.create_task_group() as tg:
                        if drain is not None:
                            tg.start_soon(self._watch, drain, work)
                        tg.start_soon(self._submit_all, unsettled)
                        await self._tracker.run(tg)
                        tg.cancel_scope.cancel()  # ends the drain watcher
            finally:
                self._release_active()
                await self._writer.aclose()
        # Every state change of this session is committed: a lost WAL can lose no send now.
        await self._offload(self._journal.end_session)
        if self._sent_mark is not None:
            await self._offload(self._sent_mark.clear)
        if self.outage is not None and not self.interrupted:
            budget = self._policy.retry.budget_s
            msg = (
                f"the service could not be reached for {budget:g}s (retry.budget_s): "
                f"{self.outage}; no job failed for it, and the rows not yet sent are kept"
            )
            raise OutageError(msg) from self.outage
        return self.stats

    def _release_active(self) -> None:
        """Jobs still active as the run stops: if they end with bulk, they are pending again.

        Recorded before the backend ends them (it closes after the engine): should bulk die
        in between, the next backend ends them before it starts anything, and they run
        again either way.
        """
        if self._jobs_outlive_bulk:
            return
        with contextlib.suppress(JournalError):  # the writer failed: rows stay as they were
            for job in self._tracker.active():
                self._writer.record_nowait(Record(job.index, State.PENDING, error=INTERRUPTED))

    async def _watch(self, drain: anyio.Event, work: anyio.CancelScope) -> None:
        await drain.wait()
        self.interrupted = True
        work.cancel()

    def _load(self) -> tuple[dict[str, int], list[StoredJob], list[StoredJob]]:
        j = self._journal
        unsettled = j.jobs([State.SUBMITTING, State.UNKNOWN])
        accepted = j.jobs([State.SUBMITTED, State.RUNNING])
        tracked = [r for r in accepted if r.remote_id]
        # An accepted row without a remote id cannot be polled: look it up like an unsettled one.
        unsettled += [r for r in accepted if not r.remote_id]
        return j.counts(), unsettled, tracked

    def _init_stats(self, counts: Mapping[str, int]) -> None:
        s = self.stats
        s.total = sum(counts.values())
        s.succeeded = counts.get(State.SUCCEEDED, 0)
        s.failed = counts.get(State.FAILED, 0)
        s.stopped = counts.get(State.STOPPED, 0)
        s.done = s.succeeded + s.failed + s.stopped
        self.metrics.rows_total.set(s.total)
        self.metrics.rows_done.set(s.done)

    def _job(self, stored: StoredJob) -> Job:
        return Job(
            index=stored.index,
            key=stored.key,
            origin=stored.origin,
            variables=stored.variables,
            attempt=stored.attempt,
            name=job_name(self._run, stored.key, stored.attempt),
            template=stored.template,
        )

    # -- submitting -------------------------------------------------------------------------

    async def _submit_all(self, unsettled: list[StoredJob]) -> None:
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
        async with send:
            for stored in unsettled:
                job = self._job(stored)
                job.reconcile = True
                await send.send(job)
            scan = Scan(self._window, self._workers)
            after = -1
            while True:
                rows = await self._offload(self._pending_page, after)
                for stored in rows:
                    if stored.index in self._owned:
                        continue
                    job = self._job(stored)
                    if self._look_up_below is not None:
                        job.reconcile = stored.index < self._look_up_below
                    elif await scan.needs_lookup(job):
                        job.reconcile = True
                    await send.send(job)
                if len(rows) < PAGE:
                    return
                after = rows[-1].index

    def _pending_page(self, after: int) -> list[StoredJob]:
        return self._journal.jobs([State.PENDING], after=after, limit=PAGE)

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[Job]) -> None:
        async with receive:
            async for job in receive:
                await self._submit_job(job)

    async def _submit_job(self, job: Job) -> None:
        """Deliver one job under the active-job cap, then hand it to the tracker."""
        await self._slots.acquire()
        try:
            accepted = await self._deliver(job)
        except BaseException:
            self._slots.release()
            raise
        finally:
            if job.looked_up is not None:
                job.looked_up.set()  # the producer waits for nothing more from this job
        if accepted:
            self._tracker.add(job)
        else:
            self._slots.release()

    async def _deliver(self, job: Job) -> bool:
        """Get the job accepted exactly once; whether it was (else it was recorded ended)."""
        clock = self._clock
        backoff = Backoff(self._policy.retry, started=clock.now(), rng=self._rng)
        last_error = ""
        while True:
            try:
                template = self._templates.get(job.template, self._template)
                submission = Submission(
                    job.name,
                    template.render_bytes(render_context(job_point(job), self._run, job.attempt)),
                )
                if job.reconcile:
                    receipt = await self._call("lookup", self._backend.lookup, submission)
                    job.reconcile = False
                    if job.looked_up is not None and not job.looked_up.is_set():
                        job.found = receipt is not None  # the first answer is the evidence
                        job.looked_up.set()
                    if receipt is not None:
                        await self._accepted(job, receipt, adopted=True)
                        return True
                await self._pace("submit")
                if self._sent_mark is not None and job.index >= self._sent_below:
                    await self._raise_sent_mark(job.index)
                intent = Record(job.index, State.SUBMITTING, attempt=job.attempt)
                try:
                    await self._writer.write(intent)
                except anyio.get_cancelled_exc_class():
                    # Stopped (Ctrl-C, an outage) while the intent was being committed: the
                    # request never went out, so the row is plainly pending again.
                    with contextlib.suppress(JournalError):
                        self._writer.record_nowait(Record(job.index, State.PENDING))
                    raise
                receipt = await self._call("submit", self._backend.submit, submission)
            except ThrottledError as exc:
                # Not an attempt: wait as asked (the adaptive rate already slowed down) and go on.
                self.stats.retries += 1
                self.metrics.retries.labels(reason="throttled").inc()
                await clock.sleep(exc.retry_after or 0)
                continue
            except RunRefusedError:
                # Bad credentials (or an unknown device) fail every job alike: stop the run
                # and keep this row unsent.
                if not job.reconcile:
                    await self._writer.write(Record(job.index, State.PENDING))
                raise
            except UnreachableError as exc:
                # Nothing was sent: not an attempt, and not this job's failure. A row being
                # looked up stays as it is (it may exist); one being sent is pending again.
                if not job.reconcile:
                    self._writer.record_nowait(Record(job.index, State.PENDING, error=str(exc)))
                if self._unreachable_too_long(exc):
                    return False  # the run is stopping; the row is kept as recorded
                self.stats.retries += 1
                self.metrics.retries.labels(reason="unreachable").inc()
                await clock.sleep(min(backoff.outage_delay(), self._outage_left()))
                continue
            except PermanentBackendError as exc:
                await self._ended(job, State.FAILED, str(exc))
                return False
            except AmbiguousBackendError as exc:
                job.reconcile = True
                last_error = str(exc)
                reason = "ambiguous"
                self._writer.record_nowait(Record(job.index, State.UNKNOWN, error=last_error))
                retry_after = exc.retry_after
            except TransientBackendError as exc:
                last_error = str(exc)
                reason = "transient"
                if not job.reconcile:  # known not sent: it is pending again
                    self._writer.record_nowait(Record(job.index, State.PENDING, error=last_error))
                retry_after = exc.retry_after
            except UnexpectedError as exc:
                # Not a bulk error: a backend bug, or an error it did not translate. Whether
                # the request reached the service is unknown, so the row is left unknown (never
                # failed: `bulk retry` would send it under a new name) and a resume looks it up
                # by name before sending anything. Not retried now: the same request would meet
                # the same error. The run goes on with the other rows.
                _log.debug("%s: %s", job.name, exc, exc_info=exc.__cause__)
                self.stats.unknown += 1
                await self._writer.write(Record(job.index, State.UNKNOWN, error=str(exc)))
                return False
            except BulkError as exc:  # a row that no longer renders (an old journal)
                await self._ended(job, State.FAILED, str(exc))
                return False
            else:
                await self._accepted(job, receipt, adopted=False)
                return True

            delay = backoff.next_delay(clock.now(), retry_after)
            if delay is None:
                await self._give_up(job, backoff.failures, last_error)
                return False
            self.stats.retries += 1
            self.metrics.retries.labels(reason=reason).inc()
            await clock.sleep(delay)

    async def _call(
        self, endpoint: str, call: Callable[[Submission], Awaitable[_T]], submission: Submission
    ) -> _T:
        """A submit or look-up request; anything but a bulk error becomes ``UnexpectedError``.

        Only the backend call is wrapped: an error of the journal or of bulk itself is not one
        row's problem and still stops the run.
        """
        try:
            return await self._request(endpoint, call, submission)
        except BulkError:
            raise
        except Exception as exc:
            text = str(exc)  # cut: it is stored in the journal and shown
            text = text if len(text) <= 300 else text[:300] + "…"
            msg = f"unexpected error from the backend: {type(exc).__name__}: {text}"
            raise UnexpectedError(msg) from exc

    async def _raise_sent_mark(self, index: int) -> None:
        """Make the sent mark durable past ``index`` before that row is sent (see SentMark).

        Raised a step ahead at a time, a second of sending at the submit ceiling (16 rows at
        least): about one fsynced file write a second at full speed, and after a crash about
        a second's worth of rows never sent is looked up in vain.
        """
        assert self._sent_mark is not None
        async with self._mark_lock:
            if index >= self._sent_below:
                step = max(16, math.ceil(self._policy.limits.submit_rate_per_s))
                below = index + step
                await self._offload(self._sent_mark.raise_to, below)
                self._sent_below = below

    async def _give_up(self, job: Job, attempts: int, last_error: str) -> None:
        message = f"gave up after {attempts} attempts: {last_error}"
        if job.reconcile:
            # The last answer was ambiguous and the look-up did not settle it: the job may
            # exist. Leave it unknown, never failed, so that a resume looks it up first.
            self.stats.unknown += 1
            await self._writer.write(Record(job.index, State.UNKNOWN, error=message))
            return
        await self._ended(job, State.FAILED, message)

    async def _accepted(self, job: Job, receipt: Receipt, *, adopted: bool) -> None:
        job.remote_id = receipt.remote_id
        job.accepted_at = self._clock.now()
        self.stats.submitted += 1
        self._m_jobs["submitted"].inc()
        error = "adopted after a look-up" if adopted else None
        self._writer.record_nowait(
            Record(
                job.index,
                State.SUBMITTED,
                attempt=job.attempt,
                remote_id=receipt.remote_id,
                submitted_at=self._clock.wall(),
                error=error,
            )
        )

    async def _ended(self, job: Job, state: State, reason: str | None) -> None:
        """Record a terminal state (committed before returning)."""
        await self._writer.write(self._count_end(job, state, reason))

    def _record_end(self, job: Job, state: State, reason: str | None) -> None:
        """Count a terminal state and queue it; it is committed with the next batch."""
        self._writer.record_nowait(self._count_end(job, state, reason))

    def _count_end(self, job: Job, state: State, reason: str | None) -> Record:
        s = self.stats
        s.done += 1
        if state is State.SUCCEEDED:
            s.succeeded += 1
        elif state is State.FAILED:
            s.failed += 1
        else:
            s.stopped += 1
        self._m_jobs[state.value].inc()
        self.metrics.rows_done.set(s.done)
        if job.accepted_at:
            self.metrics.job_duration.observe(max(0.0, self._clock.now() - job.accepted_at))
        return Record(job.index, state, finished_at=self._clock.wall(), error=reason)

    # -- outages ----------------------------------------------------------------------------

    def _outage_left(self) -> float:
        """Seconds of the outage budget left (all of it if the service was just reached)."""
        since = self._unreachable_since
        if since is None:
            return self._policy.retry.budget_s
        return max(0.0, since + self._policy.retry.budget_s - self._clock.now())

    def _unreachable_too_long(self, exc: UnreachableError) -> bool:
        """Whether no request has reached the service for ``retry.budget_s``. If so, the run
        stops: everything in it is cancelled, and :meth:`run` raises ``OutageError``."""
        if self._outage_left() > 0:
            return False
        if self.outage is None:
            self.outage = exc
            self._work.cancel()
        return True

    # -- requests ---------------------------------------------------------------------------

    async def _pace(self, endpoint: str) -> None:
        await self._rates[endpoint].acquire()
        await self._ceilings[endpoint].acquire()
        if self._service is not None:
            await self._service[0].acquire()
            await self._service[1].acquire()

    async def _request(self, endpoint: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """One backend call: paced (look-ups as status), capped in flight, measured.

        The call's first HTTP request was paced here (submit: by the worker, before its
        journal write); any further one waits its turn in ``pace_request`` (a Gongji status
        reads several pages). Every answer is evidence for the adaptive rate: the service's
        when there is a service-wide budget, else the endpoint's.
        """
        rate_class = "status" if endpoint == "lookup" else endpoint
        if endpoint != "submit":  # submit is paced by the worker, before its journal write
            await self._pace(rate_class)
        judged = "service" if self._service is not None else rate_class
        rate = self._rates[judged]
        started = self._clock.now()
        outcome = "ok"
        with pacing(self._pace_extra[rate_class]) as pacer:
            try:
                await self._in_flight.acquire()
                try:
                    result = await call(*args)
                finally:
                    self._in_flight.release()
            except BackendError as exc:
                outcome = outcome_of(exc)
                if isinstance(exc, UnreachableError):
                    if self._unreachable_since is None:
                        self._unreachable_since = started
                        self.stats.unreachable = True
                elif isinstance(exc, ThrottledError | PermanentBackendError):
                    # The service answered. (A reset or a timeout proves nothing either way.)
                    self._reached()
                if isinstance(exc, ThrottledError):
                    self.stats.throttled += 1
                    self.metrics.throttled.inc()
                    if pacer.requests > 1:  # the requests before the throttled one went through
                        rate.succeeded(pacer.requests - 1)
                    if rate.throttled(exc.retry_after):
                        self.metrics.rate_limit.labels(endpoint=judged).set(rate.rate_per_s)
                elif pacer.requests > 1:
                    rate.succeeded(pacer.requests - 1)
                raise
            else:
                self._reached()
                if rate.succeeded(max(1, pacer.requests)):
                    self.metrics.rate_limit.labels(endpoint=judged).set(rate.rate_per_s)
                return result
            finally:
                self._m_requests[endpoint, outcome].inc()
                self._m_duration[endpoint].observe(max(0.0, self._clock.now() - started))

    def _reached(self) -> None:
        """The service answered (whatever it said): any outage is over."""
        if self._unreachable_since is not None:
            self._unreachable_since = None
            self.stats.unreachable = False
