"""Reading a job of the Ray family (Ray's JobDetails, openYuanrong's AppInfo): its status,
its failure reason, its times, and when to ask for the whole list rather than job by job.

The five statuses and ``driver_exit_code`` are read as Ray's are
(:mod:`bulk.backends._jobsapi`). openYuanrong's own: a status outside the five is no answer
(None: the job is left as it was), a failure's or a stop's reason joins the exit code and the
free-text ``error_type`` (there is no ``message``), times are strings in seconds or
milliseconds, and when to read the list is a guess of its own (:data:`LIST_ABOVE`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bulk._text import excerpt
from bulk.backends._jobsapi import exit_code, job_phase
from bulk.backends.base import JobStatus, Phase

__all__ = ["LIST_ABOVE", "failure_reason", "job_phase", "job_status", "parse_time", "use_list"]

# More jobs than this in one status call are read from one list request, fewer one GET each.
# The list holds every job the service still keeps (it is neither paged nor filtered, and
# grows with every job), so one list costs as much as many small GETs; 32 GETs of one job
# each are about what one list of a few thousand jobs costs to serve and to parse. A guess
# for openYuanrong (nothing measured there). Kept apart from the ``ray`` backend's rule
# (list from max(LIST_FROM, held // LIST_PER_GET)), which rests on Ray's measured costs and
# on the jobs it deletes as they finish; openYuanrong's list is served from memory and its
# costs are unknown, so a measured Ray figure would be no better a guess here.
LIST_ABOVE = 32


def use_list(active: int, threshold: int = LIST_ABOVE) -> bool:
    """Whether to read ``active`` jobs' states from the list rather than one GET each."""
    return active > threshold


def failure_reason(job: Mapping[str, Any]) -> str | None:
    """Why a job failed or stopped, from ``driver_exit_code``, ``error_type`` and ``message``
    (whichever the service gives; openYuanrong has no ``message`` and a free-text
    ``error_type``), or None when it says nothing."""
    parts = []
    code = exit_code(job)
    if code is not None:
        parts.append(f"exit code {code}")
    for key in ("error_type", "message"):
        value = job.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    return excerpt("; ".join(parts)) if parts else None


def job_status(job: Mapping[str, Any]) -> JobStatus | None:
    """A job dict as a :class:`JobStatus`, or None when its ``status`` is not one of the five
    (an answer bulk cannot read)."""
    phase = job_phase(job.get("status"))
    if phase is None:
        return None
    if phase in (Phase.FAILED, Phase.STOPPED):
        return JobStatus(phase, failure_reason(job))
    return JobStatus(phase)


_MS_FROM = 10**11  # a Unix time past this many seconds (year 5138) must be in milliseconds


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of a job's ``start_time``/``end_time``: an int or a string, in
    seconds or in milliseconds (openYuanrong's docs say ms, their examples are 10-digit
    seconds; Ray's are int ms). None when absent, empty, zero or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number / 1000 if number >= _MS_FROM else number
