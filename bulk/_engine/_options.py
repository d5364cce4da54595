"""What an engine runs on (:class:`Runtime`) and how it delivers jobs (:class:`Delivery`).

Two small groups of the options :class:`~bulk._engine.Engine` and
:func:`~bulk._engine.stop_run` take besides the run itself (backend, journal, templates,
policy): production uses the defaults; tests inject a virtual clock, a limiter on that clock,
a seeded ``rng`` and journal work done inline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import anyio
from prometheus_client import CollectorRegistry

from bulk._clock import AnyioClock, Clock
from bulk._engine._context import LimiterFactory, SentMark
from bulk._journal import Offload
from bulk._metrics import Metrics
from bulk._ratelimit import aiolimiter_factory

__all__ = ["Delivery", "Runtime"]


def _private_metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _jitter() -> random.Random:
    return random.Random()  # noqa: S311 - back-off jitter, not a secret


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the engine waits, paces, measures and does blocking work with.

    Attributes:
        clock: all waiting and timing.
        limiter_factory: builds each endpoint's ceiling, inside the running loop.
        rng: jitter for back-off (seed it for reproducible tests).
        offload: runs blocking journal work (default: a worker thread).
        metrics: Prometheus metrics (default: a private registry).
    """

    clock: Clock = field(default_factory=AnyioClock)
    limiter_factory: LimiterFactory = aiolimiter_factory
    rng: random.Random = field(default_factory=_jitter)
    offload: Offload = anyio.to_thread.run_sync
    metrics: Metrics = field(default_factory=_private_metrics)


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the engine delivers jobs to the service: its kind's traits, and how many workers.

    Attributes:
        jobs_outlive_bulk: whether accepted jobs go on running when bulk stops (a service's
            do; local processes are ended when the backend closes, and jobs still active
            when the run stops are then recorded ``pending``, :data:`~bulk._engine.INTERRUPTED`)
            (``BackendKind.jobs_outlive_bulk``).
        unique_names: whether the service refuses a second job of the same name
            (``BackendKind.unique_names``); if not, pending rows are looked up before they
            are sent where an unclean end may have lost their records (see
            ``Submitter._produce``).
        sent_mark: where names are not unique, how far the run may have sent, kept outside
            the journal (:class:`~bulk._engine._context.SentMark`; ignored where they are).
        workers: submit workers (None: ``policy.limits.max_in_flight``).
    """

    jobs_outlive_bulk: bool = True
    unique_names: bool = True
    sent_mark: SentMark | None = None
    workers: int | None = None
