"""``bulk run``, ``bulk retry`` and ``bulk stop``: the run's objects, its metrics
server, signals, progress and the event loop."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

import bulk._cli._progress as progress
import bulk._config as config
import bulk._logs as logs
import bulk._runs as runs
from bulk._api import closed_if_refused, execute, open_backend
from bulk._cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    err,
    listen_error,
    reason,
)
from bulk._cli._report import print_summary
from bulk._engine import Engine, Stats, stop_run
from bulk._journal import Journal, RunLock, State
from bulk._loop import run_async
from bulk.backends import Backend
from bulk.errors import (
    ConfigError,
    OutageError,
)

if TYPE_CHECKING:
    from bulk._metrics import Metrics, Pusher


def cmd_run(args: argparse.Namespace) -> int:
    _check_options(args)
    cfg = config.load(args.config)
    # Credentials are read before the run's folder is touched: a missing token or key
    # leaves nothing behind that a later run would take for a started one.
    _, backend = open_backend(cfg)
    with (
        closed_if_refused(backend),
        _logs(args, cfg),
        _metrics(args) as metrics,
        RunLock(cfg.run.dir),
    ):
        journal, resumed = runs.open_run(cfg, restart=args.restart)
        with journal:
            if resumed:
                err(f"bulk: resuming run {cfg.run.name} from {cfg.journal_path}")
            return _execute(cfg, backend, journal, args, metrics)


def cmd_retry(args: argparse.Namespace) -> int:
    _check_options(args)
    cfg = config.load(args.config)
    runs.require_journal(cfg)  # before the lock: a run never started gets no folder
    states = [State.FAILED, State.STOPPED] if args.stopped else [State.FAILED]
    _, backend = open_backend(cfg)  # credentials first, as for run
    with (
        closed_if_refused(backend),
        _logs(args, cfg),
        _metrics(args) as metrics,
        RunLock(cfg.run.dir),
    ):
        journal, count = runs.open_retry(cfg, states, template_changed=args.template_changed)
        with journal:
            err(f"bulk: sending {count:,} {'row' if count == 1 else 'rows'} again")
            return _execute(cfg, backend, journal, args, metrics)


def _check_options(args: argparse.Namespace) -> None:
    """Options that make sense only together.

    Raises:
        ConfigError: ``--pushgateway-delete`` without ``--pushgateway``.
    """
    if args.pushgateway_delete and args.pushgateway is None:
        where = f"bulk {args.command}: error: argument --pushgateway-delete"
        msg = "it needs --pushgateway URL"
        raise ConfigError(msg, where=where)


@contextlib.contextmanager
def _logs(args: argparse.Namespace, cfg: config.Config) -> Iterator[None]:
    """The run's events as ``--log-format`` on stderr or in ``--log-file``.

    Raises:
        ConfigError: ``--log-file`` cannot be opened.
    """
    prog = f"bulk {args.command}"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(logs.configure(args.log_format, args.log_file, run=cfg.run.name))
        except OSError as exc:
            msg = (
                f"cannot append to {args.log_file}: {reason(exc)}; give a file that can be written"
            )
            raise ConfigError(msg, where=f"{prog}: error: argument --log-file") from None
        yield


@contextlib.contextmanager
def _metrics(args: argparse.Namespace) -> Iterator[Metrics]:
    """The run's metrics, served on 127.0.0.1:``--metrics-port`` when asked.

    The port is taken before the run's files are touched, so a port in use stops the
    command before anything is created or sent.

    Raises:
        ConfigError: the port cannot be listened on.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from bulk._metrics import Metrics

    registry = CollectorRegistry()
    port = args.metrics_port
    if port is None:
        yield Metrics(registry)
        return
    try:
        server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        prog = f"bulk {args.command}"
        raise listen_error(prog, "--metrics-port", "127.0.0.1", port, exc) from None
    try:
        bound = server.server_address[1]  # the OS's choice when asked for port 0
        err(f"bulk: metrics on http://127.0.0.1:{bound}/metrics")
        yield Metrics(registry)
    finally:
        server.shutdown()
        server.server_close()


def _execute(
    cfg: config.Config,
    backend: Backend,
    journal: Journal,
    args: argparse.Namespace,
    metrics: Metrics,
) -> int:
    for note in cfg.limits.over_budget():
        if logs.json_on_stderr() is None:
            err(f"bulk: note: {note}")
        logs.event("note", note, level=logging.WARNING)
    started = time.monotonic()
    pusher = None
    if args.pushgateway is not None:
        from bulk._metrics import Pusher

        pusher = Pusher(args.pushgateway, metrics.registry, run=cfg.run.name, warn=err)
    terminal = _Terminal(cfg.run.name, args.progress_interval, pusher)
    succeeded = False
    try:
        summary = execute(cfg, backend, journal, metrics=metrics, beside=terminal)
        succeeded = summary.ok and not terminal.interrupted
    except OutageError as exc:
        print_summary(cfg, journal, journal.counts(), time.monotonic() - started, True)
        err(f"bulk: error: {exc}")
        err(f"bulk: run the same command again to resume: bulk run {cfg.path}")
        return EXIT_UNREACHABLE
    finally:
        if pusher is None:
            pass
        elif succeeded and args.pushgateway_delete:
            pusher.delete()  # asked for: the run's group goes once every job succeeded
        else:
            pusher.push()  # the final state
    interrupted = terminal.interrupted or summary.interrupted
    print_summary(cfg, journal, dict(summary.counts), summary.elapsed_s, interrupted)
    if interrupted:
        again = " ".join(["bulk", args.command, str(cfg.path), *resume_flags(args)])
        err(f"bulk: interrupted; run the same command again to resume: {again}")
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


def resume_flags(args: argparse.Namespace) -> list[str]:
    """The flags that make running the same command again resume what was interrupted."""
    if args.command == "run":
        return []  # not --restart: that would start yet another run
    return [
        flag
        for flag, given in (
            ("--stopped", args.stopped),
            ("--template-changed", args.template_changed),
        )
        if given
    ]


@dataclass(slots=True)
class _Terminal:
    """Beside the engine: progress lines, and Ctrl-C (drain, then stop at once).

    Attributes:
        interrupted: a signal asked the run to stop.
    """

    run: str
    interval_s: float
    pusher: Pusher | None = None
    interrupted: bool = False

    async def __call__(self, engine: Engine, drain: anyio.Event, scope: anyio.CancelScope) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals, drain, scope)
            if self.pusher is not None:
                tg.start_soon(self.pusher.run)
            if logs.json_on_stderr() is not None:  # no bar: every line on stderr is JSON
                await _progress_events(engine.stats, self.interval_s)
            else:
                await progress.show(engine.stats, self.run, interval_s=self.interval_s)

    async def _watch_signals(self, drain: anyio.Event, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.interrupted = True
                if not drain.is_set():
                    err("bulk: stopping: no new jobs; Ctrl-C again to stop at once")
                    drain.set()
                else:
                    scope.cancel()  # the journal writer's last flush is shielded
                    return


async def _progress_events(stats: Stats, interval_s: float) -> None:
    """A ``progress`` event every ``interval_s`` seconds (none when 0) until cancelled."""
    if interval_s <= 0:
        await anyio.sleep_forever()
    while True:
        await anyio.sleep(interval_s)
        logs.event(
            "progress",
            progress.describe(stats),
            total=stats.total,
            done=stats.done,
            succeeded=stats.succeeded,
            failed=stats.failed,
            stopped=stats.stopped,
            active=stats.active,
            throttled=stats.throttled,
            retries=stats.retries,
        )


def cmd_stop(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    runs.require_journal(cfg)  # before the lock: a run never started gets no folder
    with RunLock(cfg.run.dir), runs.open_journal(cfg) as journal:  # refuses a lost one
        _, backend = open_backend(cfg)
        templates = runs.templates(cfg, journal)
        result: list[tuple[int, list[str]]] = []

        async def stop() -> None:
            async with contextlib.aclosing(backend):
                result.append(
                    await stop_run(
                        backend,
                        journal,
                        run=cfg.run.name,
                        template=cfg.template,
                        templates=templates,
                        policy=cfg.policy,
                    )
                )

        run_async(stop())
    stopped, problems = result[0]
    for line in problems:
        err(line)
    err(f"bulk: stopped {stopped:,} jobs" + (f"; {len(problems)} could not be" if problems else ""))
    return EXIT_FAILED if problems else EXIT_OK
