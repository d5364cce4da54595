"""What the Ray family of job APIs (Ray's Jobs REST API, openYuanrong's job API) shares in
its job records, read the same way by both backends.

Both answer the same five ``status`` strings (openYuanrong maps its instance states onto
Ray's), PENDING may go straight to any terminal status, and both give ``driver_exit_code``
as an int (null when the job never ran or was stopped). What differs stays with each kind
(:mod:`bulk.backends.ray._jobs`, :mod:`bulk.backends.yuanrong._jobs`): Ray's ``error_type``
is an enum and its ``message`` carries the log's tail, openYuanrong's ``error_type`` is free
text and it has no ``message``, so each words a failure's reason its own way; and each reads
a status value outside the five its own way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio

from bulk.backends.base import Phase, Receipt
from bulk.errors import BackendError, RetryableBackendError

__all__ = ["PHASES", "each_job", "exit_code", "job_phase"]

_T = TypeVar("_T")

# The five statuses; the last three are terminal.
PHASES = {
    "PENDING": Phase.QUEUED,
    "RUNNING": Phase.RUNNING,
    "SUCCEEDED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
    "STOPPED": Phase.STOPPED,
}


def job_phase(status: object) -> Phase | None:
    """The phase of a job's ``status``; None for a value that is not one of the five."""
    return PHASES.get(status) if isinstance(status, str) else None


def exit_code(job: Mapping[str, Any]) -> int | None:
    """The job's ``driver_exit_code``, or None when it has none (absent, null, not an int)."""
    code = job.get("driver_exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


async def each_job(
    jobs: Sequence[Receipt],
    fetch: Callable[[Receipt], Awaitable[_T]],
    *,
    in_flight: int,
) -> dict[str, _T]:
    """``fetch`` of every job (one ``GET /api/jobs/{id}`` each, ``in_flight`` at once), keyed
    by remote id: what came back, even if some requests failed.

    A status call of many per-job GETs is not all or nothing: with a few per cent of requests
    failing (a proxy's 502, a reset), a call of 50 GETs would almost never come back whole,
    and its jobs would never be seen to end. A job whose GET failed is left out of the answer
    (unchanged, as far as the caller knows; it is asked again next time). The call raises
    only when nothing came back (the first error, for the gateway's retries and outage
    handling) or when a failure is not one to retry (a refused token stops the run).
    """
    out: dict[str, _T] = {}
    failed: list[BackendError] = []
    limiter = anyio.CapacityLimiter(max(1, in_flight))

    async def one(job: Receipt) -> None:
        try:
            async with limiter:
                out[job.remote_id] = await fetch(job)
        except BackendError as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(one, job)
    final = next((e for e in failed if not isinstance(e, RetryableBackendError)), None)
    if final is not None:
        raise final
    if failed and not out:
        raise failed[0]
    return out
