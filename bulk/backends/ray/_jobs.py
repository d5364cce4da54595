"""What a Ray job record means: its phase and, once it has failed, why.

The five statuses and ``driver_exit_code`` are read as openYuanrong's are
(:mod:`bulk.backends._jobsapi`). Ray's own: a status outside the five is read as PENDING,
a stop's reason is "stopped", and a failure's reason tags the exit code with the
``error_type`` enum and adds the first line of ``message`` (openYuanrong has no ``message``
and a free-text ``error_type``: its reasons are worded apart).
"""

from __future__ import annotations

from typing import Any

from bulk._text import excerpt
from bulk.backends._jobsapi import PHASES, exit_code, job_phase
from bulk.backends.base import JobStatus, Phase

__all__ = ["PHASES", "WAITING_FOR_RESOURCES", "failure_reason", "job_status", "last_line"]

# The words Ray's ``message`` of a PENDING job holds while no node has the resources it
# asks for: such a job ignores a stop until RAY_JOB_START_TIMEOUT_SECONDS runs out.
WAITING_FOR_RESOURCES = "waiting for resources"


def job_status(job: dict[str, Any]) -> JobStatus:
    """The phase of a job record (``status``), with the reason of a failure or a stop.

    PENDING may be followed by any terminal status without RUNNING in between: nothing here
    assumes an order.
    """
    phase = job_phase(job.get("status"))
    if phase is None:  # a value Ray does not have: not an end
        phase = Phase.QUEUED
    if phase is Phase.FAILED:
        return JobStatus(phase, failure_reason(job))
    if phase is Phase.STOPPED:
        return JobStatus(phase, "stopped")
    return JobStatus(phase)


def failure_reason(job: dict[str, Any]) -> str:
    """Why a job failed, from ``driver_exit_code``, ``error_type`` and the first line of
    ``message`` (Ray appends the job's last 20,000 characters of log to it; ``bulk logs``
    shows those): ``exit code 3 (JOB_ENTRYPOINT_COMMAND_ERROR): Job entrypoint command
    failed with exit code 3, last available logs (truncated to 20,000 chars):``."""
    parts = []
    code = exit_code(job)
    if code is not None:
        parts.append(f"exit code {code}")
    error_type = job.get("error_type")
    if isinstance(error_type, str) and error_type:
        parts.append(f"({error_type})" if parts else error_type)
    head = " ".join(parts)
    message = job.get("message")
    first = message.strip().splitlines()[0] if isinstance(message, str) and message.strip() else ""
    reason = f"{head}: {first}" if head and first else head or first or "failed"
    return excerpt(reason)


def last_line(text: bytes) -> str:
    """The last non-blank line of an error body: a Python traceback's exception line
    (``ValueError: Job with submission_id x already exists. ...``), which says what went
    wrong, where its first lines only say where."""
    lines = [line.strip() for line in text.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""
