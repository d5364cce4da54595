"""``bulk.plan()`` and ``bulk.run()``: what ``bulk plan`` and ``bulk run`` do, for a program.

The command line calls the same code (:func:`open_backend`, :func:`closed_if_refused`,
:func:`execute`) and adds its terminal: progress lines, signals, the summary it prints.

The journal, the engine, the event loop and the metrics are imported by the function that
needs them, not at ``import bulk``: a program that only loads a config does not pay for them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulk._config import Config, load
from bulk._logs import event
from bulk._loop import run_async
from bulk._naming import Point
from bulk._text import one_line
from bulk.backends import AnyKind, Backend, get_kind
from bulk.errors import BulkError, ConfigError

if TYPE_CHECKING:
    import anyio
    from prometheus_client import CollectorRegistry

    from bulk._engine import Engine
    from bulk._journal import Journal
    from bulk._metrics import Metrics

__all__ = ["Plan", "Summary", "closed_if_refused", "execute", "open_backend", "plan", "run"]

_log = logging.getLogger("bulk")

ConfigLike = str | os.PathLike[str] | Config
"""A run config: the path of its TOML file, or one :func:`bulk.load` returned."""

# Work beside a running engine (the terminal's progress and signals): given the engine, the
# event that drains it (no new jobs) and the scope that cancels the run at once.
Beside = Callable[["Engine", "anyio.Event", "anyio.CancelScope"], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Plan:
    """A sweep expanded, rendered and validated throughout, with nothing sent.

    Attributes:
        config: the run's config.
        total: how many jobs the sweep makes.
        samples: the first points, each with the job body rendered from it.
    """

    config: Config
    total: int
    samples: tuple[tuple[Point, Any], ...]


@dataclass(frozen=True, slots=True)
class Summary:
    """How a run ended: its journal's counts when it returned.

    Attributes:
        run: the run's name.
        counts: jobs by state (``"succeeded"``, ``"failed"``, ...; states with no job left out).
        elapsed_s: seconds the run took (this call only, not earlier attempts it resumed).
        interrupted: the run stopped before every job ended; running it again resumes.
    """

    run: str
    counts: Mapping[str, int]
    elapsed_s: float
    interrupted: bool = False

    @property
    def total(self) -> int:
        """How many jobs the run has."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """Whether every job succeeded (``bulk run`` exits 0)."""
        return not self.interrupted and self.counts.get("succeeded", 0) == self.total


def plan(
    config: ConfigLike,
    *,
    samples: int = 5,
    on_job: Callable[[Point, Any], None] | None = None,
) -> Plan:
    """Expand, render and validate every job of a sweep, as ``bulk plan`` does; send nothing.

    Example::

        p = bulk.plan("configs/local-pi.toml")
        print(p.total, "jobs; the first:", p.samples[0][1])

    Args:
        config: the run config (a path, or what :func:`bulk.load` returned).
        samples: how many rendered jobs to keep in :attr:`Plan.samples`.
        on_job: called with every valid point and its rendered job body, in order (to
            stream them all, as ``bulk plan --json`` does).

    Returns:
        The sweep's size and its first rendered jobs.

    Raises:
        ConfigError: the config cannot be read, or something in it is wrong.
        InputErrors: rows of the sweep are wrong (``lines()`` reports them, as ``bulk plan``
            does); every problem is found in one pass.
    """
    from bulk._journal import Journal
    from bulk._plan._check import check

    cfg = _config(config)
    # The pass stores points in a throw-away journal: its unique key index finds duplicates
    # in constant memory, exactly as the run's own journal will.
    with (
        tempfile.TemporaryDirectory(prefix="bulk-plan-") as tmp,
        Journal.create(Path(tmp) / "plan.sqlite", {"run": cfg.run.name}) as journal,
    ):
        result = check(cfg, journal, samples=samples, on_body=on_job)
    result.raise_if_errors()
    return Plan(cfg, result.total, tuple(result.samples))


def run(
    config: ConfigLike,
    *,
    restart: bool = False,
    registry: CollectorRegistry | None = None,
) -> Summary:
    """Submit every job of a run and track each to its end, as ``bulk run`` does.

    A run that was started before (and interrupted, or crashed) resumes where it stopped:
    no job is sent twice. Nothing is printed; notes go to the ``bulk`` logger. Call it from
    synchronous code (it runs its own event loop). A ``KeyboardInterrupt`` stops the run as
    a second Ctrl-C stops ``bulk run``: the journal keeps what was done, and the next call
    resumes.

    Example::

        summary = bulk.run("configs/local-pi.toml")
        if not summary.ok:
            print(summary.counts)  # {'failed': 2, 'succeeded': 22}

    Args:
        config: the run config (a path, or what :func:`bulk.load` returned).
        restart: start over as a new run (new job names; the old journal is kept).
        registry: where the run's Prometheus metrics are registered (default: a registry
            of the run's own).

    Returns:
        The counts by state when every job has ended.

    Raises:
        ConfigError: the config cannot be read, or something in it is wrong.
        InputErrors: rows of the sweep are wrong (nothing was sent).
        RunLockedError: another process is running this run.
        JournalError: the run's journal cannot be used (its config changed, it is damaged).
        OutageError: the service could not be reached within ``retry.budget_s``; rows are
            left unsent and the next call resumes.
    """
    from bulk._journal import RunLock
    from bulk._runs import open_run

    cfg = _config(config)
    _, backend = open_backend(cfg)  # credentials before the run's folder is touched
    with closed_if_refused(backend), RunLock(cfg.run.dir):
        journal, _ = open_run(cfg, restart=restart)
        with journal:
            for note in cfg.limits.over_budget():
                _log.warning("%s", note)
            return execute(cfg, backend, journal, metrics=_metrics(registry))


def _config(config: ConfigLike) -> Config:
    return config if isinstance(config, Config) else load(Path(config))


def _metrics(registry: CollectorRegistry | None) -> Metrics:
    from prometheus_client import CollectorRegistry

    from bulk._metrics import Metrics

    return Metrics(registry if registry is not None else CollectorRegistry())


def execute(
    cfg: Config,
    backend: Backend,
    journal: Journal,
    *,
    metrics: Metrics,
    beside: Beside | None = None,
) -> Summary:
    """Run the engine over ``journal`` until every job has ended; close ``backend``.

    Args:
        beside: work to run next to the engine (the terminal's progress and signals).

    Raises:
        OutageError: the service could not be reached within the retry budget.
    """
    import anyio

    from bulk._engine import Delivery, Engine, Runtime
    from bulk._runs import SentMark, templates

    kind = get_kind(cfg.backend.kind)
    engine = Engine(
        backend,
        journal,
        template=cfg.template,
        templates=templates(cfg, journal),
        run=cfg.run.name,
        policy=cfg.policy,
        runtime=Runtime(metrics=metrics),
        delivery=Delivery(
            jobs_outlive_bulk=kind.jobs_outlive_bulk,
            unique_names=kind.unique_names,
            sent_mark=SentMark(cfg.run.dir),
        ),
    )

    async def drive() -> None:
        drain = anyio.Event()
        async with contextlib.aclosing(backend), anyio.create_task_group() as tg:
            if beside is not None:
                tg.start_soon(beside, engine, drain, tg.cancel_scope)
            await engine.run(drain)
            tg.cancel_scope.cancel()

    started = time.monotonic()
    metrics.started(backend=cfg.backend.kind, at=time.time())
    event("run_start", f"run {cfg.run.name} started", backend=cfg.backend.kind)
    try:
        run_async(drive())
    except BaseException as exc:
        elapsed = time.monotonic() - started
        event(
            "run_end",
            f"run {cfg.run.name} stopped: {one_line(exc)}",
            level=logging.ERROR,
            elapsed_s=round(elapsed, 3),
            ok=False,
        )
        raise
    elapsed = time.monotonic() - started
    summary = Summary(cfg.run.name, journal.counts(), elapsed, engine.interrupted)
    event(
        "run_end",
        f"run {cfg.run.name} {'stopped' if summary.interrupted else 'finished'}",
        elapsed_s=round(elapsed, 3),
        ok=summary.ok,
        interrupted=summary.interrupted,
        counts=dict(summary.counts),
    )
    return summary


def open_backend(cfg: Config) -> tuple[AnyKind, Backend]:
    """The run's backend kind and a live backend for it (credentials are read here)."""
    kind = get_kind(cfg.backend.kind)
    try:
        return kind, kind.create(cfg.backend.options, run=cfg.run.name, run_dir=cfg.run.dir)
    except ConfigError as exc:
        # A kind names the key (backend.token_file); the config it is in is known here.
        if exc.where is not None:
            raise
        raise ConfigError(exc.problem, where=str(cfg.path), field=exc.field) from None


@contextlib.contextmanager
def closed_if_refused(backend: Backend) -> Iterator[None]:
    """Close ``backend`` when the command is refused (a changed config, a held lock, a
    damaged journal) before or after its run. A run closes it in its own event loop;
    closing again does nothing."""
    try:
        yield
    except BulkError:
        run_async(backend.aclose(), uvloop=False)
        raise
