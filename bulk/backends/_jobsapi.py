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

from collections.abc import Mapping
from typing import Any

from bulk.backends.base import Phase

__all__ = ["PHASES", "exit_code", "job_phase"]

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
