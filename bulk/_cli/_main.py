"""The ``bulk`` command line. The only place that builds concrete objects and prints.

Exit codes: 0 every job succeeded (or the command did what it was asked), 1 some jobs failed,
2 bad config or input (nothing was sent), or output that cannot be written, 3 the service
could not be reached within the retry budget (rows left unsent; rerun resumes), 130
interrupted. A reader that goes away (a closed pipe) is not a failure: exit 0, no message.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import functools
import gc
import math
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import anyio
import orjson

import bulk._cli._progress as progress
import bulk._config as config
import bulk._plan._check as plan
import bulk._runs as runs
from bulk import __version__
from bulk._engine import Engine, stop_run
from bulk._journal import Journal, RunLock, State
from bulk._naming import job_name
from bulk._policy import Policy, RetryConfig
from bulk._retry import Backoff
from bulk.backends import AnyKind, Backend, Command, Endpoint, Send, Simulator, get_kind, kind_names
from bulk.errors import (
    BulkError,
    ConfigError,
    InputErrors,
    OutageError,
    RetryableBackendError,
    UnreachableError,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from bulk._metrics import Metrics

__all__ = ["main"]

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bulk`` command.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit code.
    """
    # bulk allocates millions of short-lived dicts and lists and almost never a reference
    # cycle: a larger first GC generation spares most collections (measured: plan pass
    # 82k -> 89k points/s). Objects alive after start-up are frozen out of collections.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    _ensure_standard_streams()
    arguments = sys.argv[1:] if argv is None else argv
    parser = _parser(arguments)
    try:
        args = parser.parse_args(arguments)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_INPUT
        code: int = args.func(args)
    except SystemExit as exc:  # argparse: --help, --version, or a bad argument (one line)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    except InputErrors as exc:
        for line in exc.lines():
            _err(line)
        return EXIT_INPUT
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_INPUT
    except (OutageError, UnreachableError) as exc:
        _err(f"bulk: error: {exc}")
        return EXIT_UNREACHABLE
    except BulkError as exc:
        _err(f"bulk: error: {exc}")
        return EXIT_INPUT
    except MemoryError:
        # Whatever ran out (a sweep, a value, a template bigger than the machine): one line,
        # never a traceback. A run's journal holds what was committed; the command resumes.
        _err(
            "bulk: error: out of memory; lower [sweep] max_jobs or split the sweep into "
            "several runs, or give bulk more memory (a run resumes where it stopped)"
        )
        return EXIT_INPUT
    except KeyboardInterrupt:
        _err("bulk: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`bulk plan --json | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


def _err(line: str) -> None:
    # A diagnostic must never take a run down: a reader that went away (a closed pipe) only
    # loses the message; the journal is the record.
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)  # noqa: T201 - the CLI's own error channel


def _ensure_standard_streams() -> None:
    """Put /dev/null on a standard descriptor that was closed (``bulk run 2>&-``, a daemon).

    Otherwise the next file bulk opens (the run's lock, a job's log) would get descriptor 1
    or 2, and whatever is printed would land in it; and Python sets ``sys.stderr`` to None,
    which makes ``print(file=sys.stderr)`` write to stdout. A closed stream is treated like
    /dev/null: its output is dropped and the command does its work (as with a closed pipe).
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            stream = open(fd, mode, closefd=False)  # noqa: SIM115 - kept for bulk's whole life
            setattr(sys, name, stream)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``bulk run: error: argument ...: what is wrong``."""

    def error(self, message: str) -> NoReturn:
        _err(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_INPUT)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        msg = f"expected a port number from 0 to 65535 (0: any free port), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# Progress lines more often than this are noise (an interval of 0 used to be a busy loop:
# measured 500,000 lines in 2 s); the crash tests read lines every 0.02 s. An interval of 0
# means no progress lines (the summary at the end is still printed).
MIN_PROGRESS_INTERVAL_S = 0.01


def _progress_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or MIN_PROGRESS_INTERVAL_S <= value < math.inf):
        msg = (
            f"expected seconds between progress lines, at least {MIN_PROGRESS_INTERVAL_S} "
            f"(0: no progress lines), got {text!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


# The commands of every kind; a kind's own commands and simulator are added next to them.
_COMMON_COMMANDS = frozenset({"plan", "run", "retry", "status", "stop", "export", "sim"})


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``argv``: the common commands, and the kinds' ones where ``argv`` may
    name them (``bulk sim KIND``, ``bulk KIND COMMAND``, ``bulk --help``)."""
    parser = _Parser(
        prog="bulk",
        description="Submit very large batches of jobs, politely, exactly once, resumably.",
    )
    parser.add_argument("--version", action="version", version=f"bulk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plan", help="expand and validate a sweep; send nothing")
    p.add_argument("config", type=Path, help="the run's TOML config")
    p.add_argument("--json", action="store_true", help="write every rendered job as JSONL")
    p.add_argument(
        "--limit",
        type=_non_negative,
        default=5,
        metavar="N",
        help="how many rendered jobs to show (default 5)",
    )
    p.set_defaults(func=_cmd_plan)

    for name, help_ in (
        ("run", "expand, validate, submit and track to the end; resumes an existing run"),
        ("retry", "send the failed rows again (new attempt, new job names), then track them"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", type=Path, help="the run's TOML config")
        p.add_argument(
            "--metrics-port",
            type=_port,
            metavar="PORT",
            help="serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port)",
        )
        p.add_argument(
            "--progress-interval",
            type=_progress_interval,
            default=10.0,
            metavar="S",
            help="seconds between progress lines when not on a terminal (0: none)",
        )
        if name == "run":
            p.add_argument(
                "--restart",
                action="store_true",
                help="start over as a new run (the old journal is kept)",
            )
        else:
            p.add_argument("--stopped", action="store_true", help="also send stopped rows again")
            p.add_argument(
                "--template-changed",
                action="store_true",
                help="the job template was changed on purpose: send the rows again with it "
                "(the sweep must be the same; rows not sent again keep their template)",
            )
        p.set_defaults(func=_cmd_run if name == "run" else _cmd_retry)

    p = sub.add_parser("status", help="counts by state, and failures with their reasons")
    p.add_argument("config", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--failures",
        type=_non_negative,
        default=20,
        metavar="N",
        help="how many failures to list (default 20)",
    )
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("stop", help="stop every unfinished job of the run on the service")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("export", help="the journal as CSV or JSONL")
    p.add_argument("config", type=Path)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("sim", help="serve a simulator of a job service on 127.0.0.1")
    sims = p.add_subparsers(dest="sim", metavar="KIND", required=True)
    # The kinds' simulators and commands: their modules are imported only when the command
    # line may need them (a `bulk run` imports no kind but its config's).
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first not in _COMMON_COMMANDS - {"sim"}:
        _add_kind_parsers(sub, sims)
    return parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a whole number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _cmd_plan(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    out = sys.stdout.buffer

    def write_json(point: Any, body: Any) -> None:
        line = {"index": point.index, "key": point.key, "origin": point.origin, "job": body}
        # Not _output(): a context manager per row costs ~2 µs, four times the write itself.
        try:
            out.write(orjson.dumps(line) + b"\n")
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _output_error(exc) from None

    # The pass stores points in a throw-away journal: its unique key index finds duplicates
    # in constant memory, exactly as the run's own journal will.
    with (
        tempfile.TemporaryDirectory(prefix="bulk-plan-") as tmp,
        Journal.create(Path(tmp) / "plan.sqlite", {"run": cfg.run.name}) as journal,
    ):
        result = plan.check(
            cfg, journal, samples=args.limit, on_body=write_json if args.json else None
        )
    result.raise_if_errors()
    with _output():
        if not args.json:
            _print_plan(cfg, result)
    return EXIT_OK


def _console() -> Console:
    """A rich console on stdout that reports a closed pipe like every other write does.

    rich's own handling of a reader that went away (``bulk status | head -1``) is to exit
    with status 1; here it raises ``BrokenPipeError``, which :func:`main` turns into a quiet
    exit 0, as for ``plan --json`` and ``export``.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console(highlight=False)


class _OutputError(BulkError):
    """The command's output could not be written (a full disk, a bad ``-o`` path)."""


@contextlib.contextmanager
def _output(target: Path | None = None) -> Iterator[None]:
    """Turn a failed write to stdout (or ``target``) into a one-line error (exit 2).

    stdout is flushed before leaving, so that no write error is left for the interpreter
    to meet at exit. A closed pipe is not a failure: ``BrokenPipeError`` passes through to
    :func:`main`, which exits 0.
    """
    try:
        yield
        if target is None:
            sys.stdout.flush()
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _output_error(exc, target) from None


def _output_error(exc: OSError, target: Path | None = None) -> _OutputError:
    where = "standard output" if target is None else str(target)
    return _OutputError(f"cannot write {where}: {_reason(exc)}")


def _reason(exc: OSError) -> str:
    """What went wrong, in lower case, without the errno number or the file name."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        text = exc.strerror or str(exc)
    else:
        text = os.strerror(exc.errno)  # uvloop's strerror repeats the address, for one
    return text[:1].lower() + text[1:]


def _print_plan(cfg: config.Config, result: plan.PlanResult) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = _console()
    console.print(
        f"[bold]{result.total:,}[/bold] jobs in run [bold]{cfg.run.name}[/bold] "
        f"(backend {cfg.backend.kind}) from {escape(str(cfg.path))}"
    )
    if not result.samples:
        return
    table = Table(show_lines=False)
    for column in ("#", "key", "origin", "variables", "job"):
        table.add_column(column, overflow="fold")
    for point, body in result.samples:
        # Values are cut before they are formatted (a 50 MB value costs what a short one
        # does), and shown as plain text: a "[/b]" in a value is not rich markup.
        table.add_row(
            str(point.index),
            point.key,
            Text(point.origin),
            Text(plan.preview(point.variables)),
            Text(plan.preview(body)),
        )
    console.print(table)
    if result.total > len(result.samples):
        console.print(f"... and {result.total - len(result.samples):,} more")


# -- run / retry ------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    # Credentials are read before the run's folder is touched: a missing token or key
    # leaves nothing behind that a later run would take for a started one.
    kind, backend = _backend(cfg)
    with _closed_if_refused(backend), _metrics(args) as metrics, RunLock(cfg.run.dir):
        journal, resumed = runs.open_run(cfg, restart=args.restart)
        with journal:
            if resumed:
                _err(f"bulk: resuming run {cfg.run.name} from {cfg.journal_path}")
            return _execute(cfg, kind, backend, journal, args, metrics)


def _cmd_retry(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    runs.require_journal(cfg)  # before the lock: a run never started gets no folder
    states = [State.FAILED, State.STOPPED] if args.stopped else [State.FAILED]
    kind, backend = _backend(cfg)  # credentials first, as for run
    with _closed_if_refused(backend), _metrics(args) as metrics, RunLock(cfg.run.dir):
        journal, count = runs.open_retry(cfg, states, template_changed=args.template_changed)
        with journal:
            _err(f"bulk: sending {count:,} {'row' if count == 1 else 'rows'} again")
            return _execute(cfg, kind, backend, journal, args, metrics)


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
        raise _listen_error(prog, "--metrics-port", "127.0.0.1", port, exc) from None
    try:
        bound = server.server_address[1]  # the OS's choice when asked for port 0
        _err(f"bulk: metrics on http://127.0.0.1:{bound}/metrics")
        yield Metrics(registry)
    finally:
        server.shutdown()
        server.server_close()


def _listen_error(prog: str, option: str, host: str, port: int, exc: OSError) -> ConfigError:
    """An address that cannot be listened on, as a one-line argument error (exit 2)."""
    if option == "--host":
        advice = "give an address of this machine, such as 127.0.0.1"
    else:
        advice = "choose another port, or 0 to let the OS choose"
    msg = f"cannot listen on {host}:{port}: {_reason(exc)}; {advice}"
    return ConfigError(msg, where=f"{prog}: error: argument {option}")


def _execute(
    cfg: config.Config,
    kind: AnyKind,
    backend: Backend,
    journal: Journal,
    args: argparse.Namespace,
    metrics: Metrics,
) -> int:
    for note in cfg.limits.over_budget():
        _err(f"bulk: note: {note}")
    engine = Engine(
        backend,
        journal,
        template=cfg.template,
        templates=runs.templates(cfg, journal),
        run=cfg.run.name,
        policy=Policy(cfg.limits, cfg.retry, cfg.track),
        metrics=metrics,
        jobs_outlive_bulk=kind.jobs_outlive_bulk,
        unique_names=kind.unique_names,
        sent_mark=runs.SentMark(cfg.run.dir),
    )
    started = time.monotonic()
    state = _RunState()
    try:
        _run_async(_drive(engine, backend, cfg.run.name, args.progress_interval, state))
    except OutageError as exc:
        _print_summary(cfg, journal, journal.counts(), time.monotonic() - started, True)
        _err(f"bulk: error: {exc}")
        _err(f"bulk: run the same command again to resume: bulk run {cfg.path}")
        return EXIT_UNREACHABLE
    counts = journal.counts()
    _print_summary(cfg, journal, counts, time.monotonic() - started, state.interrupted)
    if state.interrupted:
        again = " ".join(["bulk", args.command, str(cfg.path), *_resume_flags(args)])
        _err(f"bulk: interrupted; run the same command again to resume: {again}")
        return EXIT_INTERRUPTED
    unfinished = sum(v for k, v in counts.items() if k != State.SUCCEEDED)
    return EXIT_OK if unfinished == 0 else EXIT_FAILED


def _resume_flags(args: argparse.Namespace) -> list[str]:
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


class _RunState:
    interrupted = False


async def _drive(
    engine: Engine, backend: Backend, run: str, interval_s: float, state: _RunState
) -> None:
    """Run the engine with signal handling and progress; close the backend at the end."""
    drain = anyio.Event()
    async with contextlib.aclosing(backend), anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, drain, tg.cancel_scope, state)
        tg.start_soon(functools.partial(progress.show, interval_s=interval_s), engine.stats, run)
        await engine.run(drain)
        state.interrupted = state.interrupted or engine.interrupted
        tg.cancel_scope.cancel()


async def _watch_signals(drain: anyio.Event, scope: anyio.CancelScope, state: _RunState) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            state.interrupted = True
            if not drain.is_set():
                _err("bulk: stopping: no new jobs; Ctrl-C again to stop at once")
                drain.set()
            else:
                scope.cancel()  # the journal writer's last flush is shielded
                return


def _run_async(coro: Coroutine[Any, Any, None], *, uvloop: bool = True) -> None:
    """Run on asyncio; on uvloop where installed, unless asked not to.

    The CLI chooses the loop, the same for every backend kind (the kind has no say): uvloop
    costs 20-25 % less CPU per HTTP request. Its one known cost is spawning: it forks the
    whole process for each subprocess (measured 6.7 ms against 0.9 ms per spawn on asyncio's
    posix_spawn), a ceiling of about 150 process starts a second for a backend of processes.
    """
    options: dict[str, Any] = {}
    if uvloop:
        try:
            import uvloop as _probe  # noqa: F401 - only probing that it is there
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            pass
        else:
            options["use_uvloop"] = True

    async def main() -> None:
        await coro

    try:
        anyio.run(main, backend="asyncio", backend_options=options)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; a bulk error inside is the real message.
        error = _first_bulk_error(group)
        if error is None:
            if group.subgroup(MemoryError) is not None:
                raise MemoryError from None  # main() says it in one line
            raise
        raise error from None


def _first_bulk_error(error: BaseException) -> BulkError | None:
    if isinstance(error, BulkError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_bulk_error(inner)
            if found is not None:
                return found
    return None


def _short(variables: dict[str, Any], limit: int = 60) -> str:
    return plan.preview(variables, limit)


def _print_summary(
    cfg: config.Config,
    journal: Journal,
    counts: dict[str, int],
    elapsed_s: float,
    interrupted: bool,
) -> None:
    total = sum(counts.values())
    parts = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
    verb = "stopped" if interrupted else "finished"
    _err(f"bulk: run {cfg.run.name} {verb} in {elapsed_s:.1f}s: {total:,} jobs: {parts}")
    failures = journal.jobs([State.FAILED, State.UNKNOWN], limit=5)
    for job in failures:
        _err(f"  {job.origin} #{job.index} {_short(job.variables)}: {job.state}: {job.error}")
    if failures:
        _err(f"  (all of them: bulk status {cfg.path})")
    if counts.get(State.STOPPED) and not interrupted:
        _err(f"  (to run the stopped jobs again: bulk retry --stopped {cfg.path})")


def _backend(cfg: config.Config) -> tuple[AnyKind, Backend]:
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
def _closed_if_refused(backend: Backend) -> Iterator[None]:
    """Close ``backend`` when the command is refused (a changed config, a held lock, a
    damaged journal) before or after its run. A run closes it in its own event loop;
    closing again does nothing."""
    try:
        yield
    except BulkError:
        _run_async(backend.aclose(), uvloop=False)
        raise


# -- status / stop / export -------------------------------------------------------------------


def _open_existing(cfg: config.Config) -> Journal:
    runs.require_journal(cfg)
    return runs.open_journal(cfg)


def _cmd_status(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _open_existing(cfg) as journal:
        counts = journal.counts()
        failures = journal.jobs([State.FAILED, State.UNKNOWN], limit=args.failures)
        meta = journal.meta()
    total = sum(counts.values())
    if args.json:
        data = {
            "run": cfg.run.name,
            "journal": str(cfg.journal_path),
            "created": meta.get("created"),
            "total": total,
            "counts": {state.value: counts.get(state.value, 0) for state in State},
            "failures": [
                {
                    "index": j.index,
                    "key": j.key,
                    "origin": j.origin,
                    "state": j.state.value,
                    "attempt": j.attempt,
                    "remote_id": j.remote_id,
                    "error": j.error,
                }
                for j in failures
            ],
        }
        with _output():
            sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    with _output():
        console = _console()
        console.print(
            f"run [bold]{cfg.run.name}[/bold]: {total:,} jobs ({escape(str(cfg.journal_path))})"
        )
        table = Table("state", "jobs")
        for state in State:
            if counts.get(state.value):
                table.add_row(state.value, f"{counts[state.value]:,}")
        console.print(table)
        if failures:
            table = Table("#", "job", "origin", "state", "error", title="failures")
            for j in failures:
                # Plain text: an error may quote a service's answer, and "[/x]" is not markup.
                name = job_name(cfg.run.name, j.key, j.attempt)
                table.add_row(
                    str(j.index), name, Text(j.origin), j.state.value, Text(j.error or "")
                )
            console.print(table)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    runs.require_journal(cfg)  # before the lock: a run never started gets no folder
    with RunLock(cfg.run.dir), _open_existing(cfg) as journal:
        _, backend = _backend(cfg)
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
                        policy=Policy(cfg.limits, cfg.retry, cfg.track),
                    )
                )

        _run_async(stop())
    stopped, problems = result[0]
    for line in problems:
        _err(line)
    _err(
        f"bulk: stopped {stopped:,} jobs" + (f"; {len(problems)} could not be" if problems else "")
    )
    return EXIT_FAILED if problems else EXIT_OK


_EXPORT_FIELDS = (
    "index",
    "key",
    "origin",
    "attempt",
    "name",
    "remote_id",
    "state",
    "submitted_at",
    "started_at",
    "finished_at",
    "error",
    "variables",
)


def _cmd_export(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _open_existing(cfg) as journal, _output(args.output):
        out = _create_output(args.output) if args.output else sys.stdout
        try:
            writer = csv.writer(out) if args.format == "csv" else None
            if writer is not None:
                writer.writerow(_EXPORT_FIELDS)
            for job in journal.iter_jobs():
                row = {
                    "index": job.index,
                    "key": job.key,
                    "origin": job.origin,
                    "attempt": job.attempt,
                    "name": job_name(cfg.run.name, job.key, job.attempt),
                    "remote_id": job.remote_id,
                    "state": job.state.value,
                    "submitted_at": _iso(job.submitted_at),
                    "started_at": _iso(job.started_at),
                    "finished_at": _iso(job.finished_at),
                    "error": job.error,
                    "variables": job.variables,
                }
                if writer is not None:
                    row["variables"] = orjson.dumps(job.variables).decode()
                    writer.writerow(["" if row[f] is None else row[f] for f in _EXPORT_FIELDS])
                else:
                    out.write(orjson.dumps(row).decode() + "\n")
        finally:
            if args.output:
                out.close()
            else:
                out.flush()
    return EXIT_OK


def _create_output(path: Path) -> TextIO:
    """``path`` opened for writing text; a new file is owner-only (0600), like the journal
    whose variables and errors it holds (an existing file keeps its mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _output_error(exc, path) from None
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# -- simulators -------------------------------------------------------------------------------


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port (0: let the OS choose)")


def _serve(app: Any, kind: str, host: str, port: int) -> None:
    """Serve an aiohttp app until SIGINT/SIGTERM; print the address once listening.

    Raises:
        ConfigError: the address cannot be listened on (a port in use, an unknown host).
    """
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                option = "--port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
                prog = f"bulk sim {kind}"
                raise _listen_error(prog, option, host, port, exc) from None
            bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]  # port 0
            # Signals are caught before the address is printed: a caller that stops the
            # simulator as soon as it reads the line gets a clean exit, not a kill.
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                address = f"http://{bound[0]}:{bound[1]}"
                print(f"bulk sim {kind}: listening on {address}", flush=True)  # noqa: T201
                async for _ in signals:
                    return
        finally:
            await runner.cleanup()

    _run_async(main())


def _add_kind_parsers(
    sub: argparse._SubParsersAction[_Parser],
    sims: argparse._SubParsersAction[_Parser],
) -> None:
    """``bulk sim KIND`` for each kind with a simulator, ``bulk KIND COMMAND`` for each kind
    with commands of its own."""
    for name in kind_names():
        try:
            kind = get_kind(name)
        except KeyError:
            continue  # a plug-in that cannot be loaded: a config naming it says why
        simulator = kind.simulator()
        if simulator is not None:
            q = sims.add_parser(name, help=simulator.help)
            _serve_options(q)
            simulator.add_arguments(q)
            q.set_defaults(func=functools.partial(_cmd_sim, name, simulator))
        commands = kind.commands()
        if not commands or name in _COMMON_COMMANDS:
            continue
        p = sub.add_parser(name, help=f"commands of the {name} backend")
        group = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        for command in commands:
            q = group.add_parser(command.name, help=command.help)
            q.add_argument("config", type=Path, help=f"a {name} run config (its [backend])")
            command.arguments(q)
            q.set_defaults(func=functools.partial(_cmd_kind, kind, command))


def _cmd_sim(name: str, simulator: Simulator, args: argparse.Namespace) -> int:
    _serve(simulator.app(args), name, args.host, args.port)
    return EXIT_OK


def _cmd_kind(kind: AnyKind, command: Command, args: argparse.Namespace) -> int:
    """``bulk KIND COMMAND CONFIG``: the command on a backend made from a config of the kind."""
    cfg = config.load(args.config)
    if cfg.backend.kind != kind.name:
        msg = f"{cfg.path}: backend.kind is {cfg.backend.kind!r}; this command needs {kind.name!r}"
        raise ConfigError(msg)
    _, backend = _backend(cfg)
    send = _send_with_backoff(cfg.retry)
    result: list[bytes | RenderableType] = []

    async def run() -> None:
        async with contextlib.aclosing(backend):
            result.append(await command.run(backend, args, send))

    _run_async(run())
    with _output():
        if isinstance(result[0], bytes):
            sys.stdout.buffer.write(result[0])
        else:
            _console().print(result[0])
    return EXIT_OK


def _send_with_backoff(retry: RetryConfig) -> Send:
    """A :class:`~bulk.backends.base.Send` for one-off commands: each request is retried
    like the engine's (transient failures and throttles back off, ``Retry-After`` wins,
    within the config's retry policy).

    It stands in for the engine's gateway until that is shared: it neither paces nor counts
    requests in metrics, which a one-off command of a few requests does not need.
    """

    async def send(endpoint: Endpoint, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        backoff = Backoff(retry, started=time.monotonic())
        while True:
            try:
                return await call(*args)
            except RetryableBackendError as exc:
                delay = backoff.next_delay(time.monotonic(), exc.retry_after)
                if delay is None:
                    raise
                await anyio.sleep(delay)

    return send
