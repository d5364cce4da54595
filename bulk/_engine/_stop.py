"""``bulk stop``: stop every job of a run that may be on the service, and record it."""

from __future__ import annotations

from collections.abc import Mapping

import anyio

from bulk._engine._gateway import Gateway
from bulk._engine._options import Runtime
from bulk._journal import Journal, JournalWriter, Record, State
from bulk._naming import job_name, render_context
from bulk._policy import Policy
from bulk._template import Template
from bulk.backends.base import Backend, Receipt, Submission
from bulk.errors import (
    BackendError,
    BulkError,
    OutageError,
    RunRefusedError,
    UnreachableError,
)

__all__ = ["stop_run"]


async def stop_run(
    backend: Backend,
    journal: Journal,
    *,
    run: str,
    template: Template,
    policy: Policy,
    templates: Mapping[int, Template] | None = None,
    runtime: Runtime | None = None,
) -> tuple[int, list[str]]:
    """``bulk stop``: stop every job of the run that may be on the service, and record it.

    Accepted jobs are stopped by their remote id; ``submitting``/``unknown`` rows are looked
    up by name first (and only stopped if found), each rendered with its own template
    version (``templates``, as for :class:`Engine`). Rows never sent stay ``pending``.
    Every request goes through a :class:`~bulk._engine._gateway.Gateway`, as the engine's
    do: stops at the adaptive stop rate under its ceiling, look-ups at the status rate, both
    within any service-wide budget, capped in flight and counted in ``runtime.metrics``. A throttle
    slows the rate and waits its ``Retry-After``; it never makes a job "could not be
    stopped". Other failures are retried within ``retry.attempts``/``retry.budget_s``, and a
    service that cannot be reached is waited for, up to ``retry.budget_s`` for the whole
    command.

    Returns:
        How many jobs were recorded stopped, and one message per job that could not be.

    Raises:
        OutageError: the service could not be reached for ``retry.budget_s``; the jobs
            stopped so far are recorded, the others are left as they were.
        RunRefusedError: the service refused the credentials (no use trying every job).
    """
    runtime = runtime or Runtime()
    clock, offload = runtime.clock, runtime.offload
    gateway = Gateway(
        policy,
        clock=clock,
        metrics=runtime.metrics,
        limiter_factory=runtime.limiter_factory,
        rng=runtime.rng,
    )
    rows = await offload(
        journal.jobs, [State.SUBMITTING, State.UNKNOWN, State.SUBMITTED, State.RUNNING]
    )
    writer = JournalWriter(journal, offload=offload)
    stopped = 0
    problems: list[str] = []
    ended: BulkError | None = None  # why the command stopped before the last row

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
                        receipt = await gateway.send(
                            "lookup", backend.lookup, Submission(name, body)
                        )
                        if receipt is None:
                            writer.record_nowait(
                                Record(row.index, State.PENDING, error="not on the service")
                            )
                            continue
                        remote_id = receipt.remote_id
                    await gateway.send("stop", backend.stop, Receipt(name, remote_id))
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
