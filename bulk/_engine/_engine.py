"""The engine: submit every pending job politely, exactly once, and track each to its end.

One run looks like this (``_submitter``, ``_tracker``; every request through ``_gateway``)::

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
  :meth:`Submitter._produce <bulk._engine._submitter.Submitter._produce>`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import anyio

from bulk._engine._context import INTERRUPTED, Stats
from bulk._engine._gateway import Gateway
from bulk._engine._options import Delivery, Runtime
from bulk._engine._run import RunContext
from bulk._engine._series import SeriesSampler
from bulk._engine._slots import Slots
from bulk._engine._submitter import Submitter
from bulk._engine._tracker import Tracker
from bulk._journal import Journal, JournalWriter, Record, State, StoredJob
from bulk._policy import Policy
from bulk._template import Template
from bulk.backends.base import Backend
from bulk.errors import JournalError, OutageError, UnreachableError

__all__ = ["Engine"]


class Engine:
    """Submits and tracks one run's jobs.

    Example::

        engine = Engine(backend, journal, template=cfg.template, run=cfg.run.name,
                        policy=cfg.policy,
                        delivery=Delivery(jobs_outlive_bulk=kind.jobs_outlive_bulk,
                                          unique_names=kind.unique_names))
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
        runtime: the clock, ceilings, jitter, offload and metrics (defaults: production's).
        delivery: what the service does with jobs (its kind's traits), and how many submit
            workers send them.
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
        runtime: Runtime | None = None,
        delivery: Delivery | None = None,
    ):
        runtime = runtime or Runtime()
        delivery = delivery or Delivery()
        self._backend = backend
        self._journal = journal
        self._template = template
        self._templates = templates or {}
        self._run = run
        self._policy = policy
        self._clock = runtime.clock
        self.metrics = runtime.metrics
        self._limiter_factory = runtime.limiter_factory
        self._rng = runtime.rng
        self._workers = delivery.workers or policy.limits.max_in_flight
        self._offload = runtime.offload
        self._jobs_outlive_bulk = delivery.jobs_outlive_bulk
        self._unique_names = delivery.unique_names
        # Where names are not unique: how far this run may send (see SentMark).
        self._sent_mark = None if delivery.unique_names else delivery.sent_mark
        self.stats = Stats()
        self.interrupted = False
        self.outage: UnreachableError | None = None  # set when an outage stopped the run
        self.gateway: Gateway | None = None  # the run's request path, once it started
        self._started = False

    # -- the run ----------------------------------------------------------------------------

    async def run(self, drain: anyio.Event | None = None) -> Stats:
        """Submit every pending row and track every job until it ends (or ``drain`` is set).

        An engine runs once: build another for the next run.

        Returns:
            The run's counters (the journal holds the full record).

        Raises:
            PermanentBackendError: the service refused a status or look-up request outright,
                or refused the credentials (``RunRefusedError``) on any request, the stop of
                a timed-out job included: nothing more can be done until that is fixed.
            OutageError: no request reached the service for ``retry.budget_s``; the run
                stopped with every unfinished row kept for the next run.
            RuntimeError: this engine ran before.
        """
        if self._started:
            msg = "an Engine runs once: build another for the next run"
            raise RuntimeError(msg)
        self._started = True
        policy = self._policy
        gateway = Gateway(
            policy,
            clock=self._clock,
            metrics=self.metrics,
            limiter_factory=self._limiter_factory,
            rng=self._rng,
            stats=self.stats,
        )
        self.gateway = gateway

        unclean = await self._offload(self._journal.begin_session, self._workers)
        window = 0 if self._unique_names else unclean
        sent_below, look_up_below = 0, None
        if self._sent_mark is not None:
            below = await self._offload(self._sent_mark.below)
            sent_below = below or 0
            if unclean and below is not None:
                # The mark bounds every row the unclean sessions sent: look up exactly the
                # pending rows below it, and no window of misses is needed.
                look_up_below, window = below, 0
        counts, unsettled, tracked = await self._offload(self._load)
        ctx = RunContext(
            backend=self._backend,
            journal=self._journal,
            run=self._run,
            template=self._template,
            templates=self._templates,
            policy=policy,
            clock=self._clock,
            rng=self._rng,
            offload=self._offload,
            metrics=self.metrics,
            stats=self.stats,
            writer=JournalWriter(self._journal, offload=self._offload),
            gateway=gateway,
            slots=Slots(policy.limits.max_active),
        )
        tracker = Tracker(ctx)
        submitter = Submitter(
            ctx,
            tracker,
            workers=self._workers,
            # Rows the engine owns from the start. One of them may fall back to ``pending``
            # after a transient error before the pager reaches its index: the pager must
            # skip it, or a second worker would send the same job.
            owned={r.index for r in unsettled} | {r.index for r in tracked},
            window=window,
            sent_mark=self._sent_mark,
            sent_below=sent_below,
            look_up_below=look_up_below,
        )
        self._init_stats(counts)
        for stored in tracked:
            job = ctx.job(stored)
            job.remote_id = stored.remote_id
            job.running = stored.state is State.RUNNING
            ctx.slots.take_now()
            tracker.add(job)

        async with anyio.create_task_group() as io:
            io.start_soon(ctx.writer.run)
            try:
                with ctx.work:
                    async with anyio.create_task_group() as tg:
                        if drain is not None:
                            tg.start_soon(self._watch, drain, ctx.work)
                        # The per-second time series (`bulk report`, `bulk status --watch`).
                        series = SeriesSampler(self.metrics, gateway, policy, self._clock)
                        tg.start_soon(series.run, ctx.writer)
                        tg.start_soon(submitter.submit_all, unsettled)
                        await tracker.run(tg, submitter.submit_job)
                        tg.cancel_scope.cancel()  # ends the drain watcher
            finally:
                self._release_active(ctx, tracker)
                await ctx.writer.aclose()
        # Every state change of this session is committed: a lost WAL can lose no send now.
        await self._offload(self._journal.end_session)
        if self._sent_mark is not None:
            await self._offload(self._sent_mark.clear)
        self.outage = ctx.outage
        if self.outage is not None and not self.interrupted:
            budget = policy.retry.budget_s
            msg = (
                f"the service could not be reached for {budget:g}s (retry.budget_s): "
                f"{self.outage}; no job failed for it, and the rows not yet sent are kept"
            )
            raise OutageError(msg) from self.outage
        return self.stats

    def _release_active(self, ctx: RunContext, tracker: Tracker) -> None:
        """Jobs still active as the run stops: if they end with bulk, they are pending again.

        Recorded before the backend ends them (it closes after the engine): should bulk die
        in between, the next backend ends them before it starts anything, and they run
        again either way.
        """
        if self._jobs_outlive_bulk:
            return
        with contextlib.suppress(JournalError):  # the writer failed: rows stay as they were
            for job in tracker.active():
                ctx.writer.record_nowait(Record(job.index, State.PENDING, error=INTERRUPTED))

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
