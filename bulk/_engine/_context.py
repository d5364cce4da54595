"""What the parts of one run share: its jobs in memory, its counters, the sent mark."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import anyio

from bulk._journal import State
from bulk._naming import Point
from bulk._ratelimit import RateLimiter
from bulk.backends.base import Phase, Receipt

__all__ = ["END_STATE", "INTERRUPTED", "Job", "LimiterFactory", "SentMark", "Stats", "job_point"]

LimiterFactory = Callable[[float, int], RateLimiter]


class SentMark(Protocol):
    """How far a run may have sent, kept durably outside the journal (``bulk._runs``)."""

    def below(self) -> int | None:
        """Every row sent since the last clean end has a smaller index (None: unknown)."""

    def raise_to(self, value: int) -> None:
        """Record durably that rows below ``value`` may be sent."""

    def clear(self) -> None:
        """Record that the journal holds every row sent."""


# The reason recorded on a job that bulk ended as it stopped (jobs_outlive_bulk False).
INTERRUPTED = "interrupted: killed by bulk, runs again on resume"


@dataclass(slots=True)
class Stats:
    """Live counters for progress display; the journal remains the record."""

    total: int = 0
    done: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    stopped: int = 0
    unknown: int = 0
    active: int = 0
    throttled: int = 0
    retries: int = 0
    status_requests: int = 0
    unreachable: bool = False  # the service cannot be reached right now (bulk is waiting)


@dataclass(slots=True)
class Job:
    """A job the engine is working on (``__slots__``: there may be many)."""

    index: int
    key: str
    origin: str
    # None while the job is tracked: an accepted job needs its variables again only if the
    # service loses it, and the journal holds them (see Tracker.add). Rendering reloads them.
    variables: dict[str, Any] | None
    attempt: int
    name: str
    template: int = 1  # the version of the job template this attempt is rendered with
    remote_id: str | None = None
    reconcile: bool = False  # look the name up before sending anything
    accepted_at: float = 0.0  # clock time the service accepted it
    interval: float = 0.0  # current polling interval
    running: bool = False  # "running" recorded already
    lost: int = 0  # times the service said it did not know the job
    # For a row the scan of a lost history looks up (Scan): set once its name has been
    # looked up, or once it left its worker without; ``found`` is that look-up's answer.
    looked_up: anyio.Event | None = None
    found: bool | None = None

    @property
    def receipt(self) -> Receipt:
        assert self.remote_id is not None  # noqa: S101 - a type guard: accepted jobs only
        return Receipt(self.name, self.remote_id)


def job_point(job: Job) -> Point:
    """The sweep point of a job whose variables are in memory (not a tracked one)."""
    assert job.variables is not None  # noqa: S101 - the submitter reloads them first
    return Point(job.index, job.key, job.origin, job.variables)


# The one mapping from a backend's terminal phase to the journal's state. A job the service
# lost (``Phase.MISSING``) is not here: the tracker looks it up and sends it again first.
END_STATE: Mapping[Phase, State] = MappingProxyType(
    {
        Phase.SUCCEEDED: State.SUCCEEDED,
        Phase.FAILED: State.FAILED,
        Phase.STOPPED: State.STOPPED,
    }
)
