"""``bulk stop``: stop every job of a run that may be on the service, and record it."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from bulk._clock import AnyioClock, Clock
from bulk._engine._context import LimiterFactory
from bulk._journal import Journal, JournalWriter, Offload, Record, State
from bulk._naming import job_name, render_context
from bulk._policy import Policy
from bulk._ratelimit import RateLimiter, aiolimiter_factory, pacing
from bulk._retry import Backoff
from bulk._template import Template
from bulk.backends.base import Backend, Receipt, Submission
from bulk.errors import (
    BackendError,
    BulkError,
    OutageError,
    PermanentBackendError,
    RetryableBackendError,
    RunRefusedError,
    ThrottledError,
    UnreachableError,
)

__all__ = ["stop_run"]

_T = TypeVar("_T")


async def stop_run(
    backend: Backend,
    journal: Journal,
    *,
    run: str,
    template: Template,
    policy: Policy,
    templates: Mapping[int, Template] | None = None,
    clock: Clock | None = None,
    limiter_factory: LimiterFactory = aiolimiter_factory,
    offload: Offload | None = None,
    rng: random.Random | None = None,
) -> tuple[int, list[str]]:
    """``bulk stop``: stop every job of the run that may be on the service, and record it.

    Accepted jobs are stopped by their remote id; ``submitting``/``unknown`` rows are looked
    up by name first (and only stopped if found), each rendered with its own template
    version (``templates``, as for :class:`Engine`). Rows never sent stay ``pending``. Stops
    go at the stop rate, look-ups at the status rate, both within any service-wide budget.
    Each request is retried as the engine's are: throttles as the service asks, failures
    within ``retry.attempts``/``retry.budget_s``, and a service that cannot be reached is
    waited for, up to ``retry.budget_s`` for the whole command.

    Returns:
        How many jobs were recorded stopped, and one message per job that could not be.

    Raises:
        OutageError: the service could not be reached for ``retry.budget_s``; the jobs
            stopped so far are recorded, the others are left as they were.
        RunRefusedError: the service refused the credentials (no use trying every job).
    """
    clock = clock or AnyioClock()
    offload = offload or anyio.to_thread.run_sync
    rng = rng or random.Random()
    limits = policy.limits
    stops = limiter_factory(limits.stop_rate_per_s, limits.burst)
    lookups = limiter_factory(limits.status_rate_per_s, limits.burst)
    service = (
        limiter_factory(limits.service_rate_per_s, limits.burst)
        if limits.service_rate_per_s is not None
        else None
    )
    rows = await offload(
        journal.jobs, [State.SUBMITTING, State.UNKNOWN, State.SUBMITTED, State.RUNNING]
    )
    writer = JournalWriter(journal, offload=offload)
    stopped = 0
    problems: list[str] = []
    unreachable_since: float | None = None
    ended: BulkError | None = None  # why the command stopped before the last row

    async def patiently(limiter: RateLimiter, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """One request, every HTTP request of it paced (a look-up may read several pages)."""
        nonlocal unreachable_since

        async def pace() -> None:
            await limiter.acquire()
            if service is not None:
                await service.acquire()

        started = clock.now()
        backoff = Backoff(policy.retry, started=started, rng=rng)
        while True:
            await pace()
            try:
                with pacing(pace):
                    result = await call(*args)
            except ThrottledError as exc:
                unreachable_since = None  # the service answered
                wait = exc.retry_after or 1.0
                if clock.now() + wait - started > policy.retry.budget_s:
                    raise
                await clock.sleep(wait)
                continue
            except PermanentBackendError:
                unreachable_since = None
                raise
            except UnreachableError:
                now = clock.now()
                unreachable_since = now if unreachable_since is None else unreachable_since
                left = unreachable_since + policy.retry.budget_s - now
                if left <= 0:
                    raise
                await clock.sleep(min(backoff.outage_delay(), left))
                continue
            except RetryableBackendError as exc:
                delay = backoff.next_delay(clock.now(), exc.retry_after)
                if delay is None:
                    raise
                await clock.sleep(delay)
                continue
            unreachable_since = None
            return result

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        try:
            for done, row in enumerate(rows):
                name = job_name(run, row.key, row.attempt)
                try:
                    remote_id = row.remote_id
                    if remote_id is None:
                        row_template = (templates or {}).get(row.template, template)
                        body = row_template.render_bytes(
                            render_context(row.point, run, row.attempt)
                        )
                        receipt = await patiently(lookups, backend.lookup, Submission(name, body))
                        if receipt is None:
                            writer.record_nowait(
                                Record(row.index, State.PENDING, error="not on the service")
                            )
                            continue
                        remote_id = receipt.remote_id
                    await patiently(stops, backend.stop, Receipt(name, remote_id))
                except UnreachableError as exc:
                    budget = policy.retry.budget_s
                    msg = (
                        f"the service could not be reached for {budget:g}s (retry.budget_s): "
                        f"{exc}; {stopped:,} jobs stopped, {len(rows) - done:,} not: run "
                        "bulk stop again once the service can be reached"
                    )
                    ended = OutageError(msg)
                    ended.__cause__ = exc
                    break
                except RunRefusedError as exc:
                    ended = exc
                    break
                except BackendError as exc:
                    problems.append(f"{row.origin}: {name}: {exc}")
                    continue
                stopped += 1
                writer.record_nowait(
                    Record(
                        row.index,
                        State.STOPPED,
                        remote_id=remote_id,
                        finished_at=clock.wall(),
                        error="stopped by bulk stop",
                    )
                )
        finally:
            await writer.aclose()
    if ended is not None:
        raise ended  # out here, not wrapped in the writer's task group
    return stopped, problems
