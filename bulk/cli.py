"""The ``bulk`` command line. The only place that builds concrete objects and prints.

Exit codes: 0 every job succeeded (or the command did what it was asked), 1 some jobs failed,
2 bad config or input (nothing was sent), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gc
import os
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson

from bulk import __version__, config, plan, progress, runs
from bulk.backends import Backend, BackendKind, get_kind
from bulk.engine import Engine, Policy, stop_run
from bulk.errors import BulkError, ConfigError, InputErrors, JournalError, TransientBackendError
from bulk.journal import Journal, RunLock, State
from bulk.retry import Backoff

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
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
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    try:
        code: int = args.func(args)
    except InputErrors as exc:
        for line in exc.lines():
            _err(line)
        return EXIT_INPUT
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_INPUT
    except BulkError as exc:
        _err(f"bulk: error: {exc}")
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
            type=int,
            metavar="PORT",
            help="serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port)",
        )
        p.add_argument(
            "--progress-interval",
            type=float,
            default=10.0,
            metavar="S",
            help="seconds between progress lines when not on a terminal",
        )
        if name == "run":
            p.add_argument(
                "--restart",
                action="store_true",
                help="start over as a new run (the old journal is kept)",
            )
        else:
            p.add_argument("--stopped", action="store_true", help="also send stopped rows again")
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

    p = sub.add_parser("sim", help="serve a simulator of a job service on 127.0.0.1")
    sims = p.add_subparsers(dest="sim", metavar="KIND", required=True)
    q = sims.add_parser("stub", help="bulk's reference HTTP job service, with fault injection")
    _serve_options(q)
    for name, kind, default, help_ in (
        ("--throttle-rate", float, 0.0, "share of creates answered 429"),
        ("--retry-after", float, 0.5, "Retry-After of those 429s, seconds"),
        ("--fail-before-rate", float, 0.0, "share of creates answered 503, nothing created"),
        ("--fail-after-rate", float, 0.0, "share of creates that create, then fail"),
        ("--rate-limit", float, None, "requests per second before 429s"),
        ("--latency", float, 0.0, "delay before every answer, seconds"),
        ("--queue-s", float, 0.0, "seconds a job stays queued"),
        ("--run-s", float, 0.0, "seconds a job runs"),
        ("--job-failure-rate", float, 0.0, "share of jobs that end failed"),
        ("--seed", int, 0, "seed of the fault draws"),
    ):
        q.add_argument(name, type=kind, default=default, help=help_)
    q.set_defaults(func=_cmd_sim_stub)

    q = sims.add_parser("gongji", help="a simulator of the Gongji Open API's Job endpoints")
    _serve_options(q)
    q.add_argument(
        "--rsa-token",
        action="append",
        default=[],
        metavar="TOKEN=PUBLIC.pem",
        help="register an RSA-mode token with its public key (repeatable)",
    )
    q.add_argument(
        "--simple-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="register a simple-mode token (repeatable)",
    )
    q.add_argument(
        "--stop-ended-ok",
        action="store_true",
        help="stopping an ended task succeeds (default: code C010)",
    )
    for name, kind, default, help_ in (
        ("--pending-s", float, 0.5, "seconds a task stays Pending"),
        ("--run-s", float, 2.0, "seconds a task runs"),
        ("--failure-rate", float, 0.0, "share of tasks that end Failed"),
        ("--skew-s", float, 300.0, "accepted timestamp skew, seconds"),
        ("--throttle-rate", float, 0.0, "share of requests answered with code C008"),
        ("--http-429-rate", float, 0.0, "share of requests answered HTTP 429"),
        ("--retry-after", float, 1.0, "Retry-After of those 429s, seconds"),
        ("--error-rate", float, 0.0, "share of requests answered HTTP 502"),
        ("--reset-rate", float, 0.0, "share of requests whose connection is dropped"),
        ("--commit-fail-rate", float, 0.0, "share of creates that create, then fail"),
        ("--latency", float, 0.0, "delay before every answer, seconds"),
        ("--rate-limit", float, None, "requests per second per token before HTTP 429"),
        ("--seed", int, 0, "seed of the fault draws"),
    ):
        q.add_argument(name, type=kind, default=default, help=help_)
    q.add_argument(
        "--list-order",
        choices=("newest", "oldest"),
        default="newest",
        help="order of search results (undocumented by the API): newest or oldest task first",
    )
    q.set_defaults(func=_cmd_sim_gongji)

    p = sub.add_parser("gongji", help="Gongji-specific commands")
    gongji = p.add_subparsers(dest="gongji", metavar="COMMAND", required=True)
    q = gongji.add_parser("resources", help="the device list (for resources[].mark)")
    q.add_argument("config", type=Path, help="a gongji run config (for the URL and the key)")
    q.add_argument("--json", action="store_true", help="the raw list as JSON")
    q.set_defaults(func=_cmd_gongji_resources)

    p = sub.add_parser("export", help="the journal as CSV or JSONL")
    p.add_argument("config", type=Path)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=_cmd_export)
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
        out.write(orjson.dumps(line) + b"\n")

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
    if args.json:
        out.flush()
    else:
        _print_plan(cfg, result)
    return EXIT_OK


def _print_plan(cfg: config.Config, result: plan.PlanResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"[bold]{result.total:,}[/bold] jobs in run [bold]{cfg.run.name}[/bold] "
        f"(backend {cfg.backend.kind}) from {cfg.path}"
    )
    if not result.samples:
        return
    table = Table(show_lines=False)
    for column in ("#", "key", "origin", "variables", "job"):
        table.add_column(column, overflow="fold")
    for point, body in result.samples:
        table.add_row(
            str(point.index),
            point.key,
            point.origin,
            orjson.dumps(point.variables).decode(),
            orjson.dumps(body).decode(),
        )
    console.print(table)
    if result.total > len(result.samples):
        console.print(f"... and {result.total - len(result.samples):,} more")


# -- run / retry ------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with RunLock(cfg.run.dir):
        journal, resumed = runs.open_run(cfg, restart=args.restart)
        with journal:
            if resumed:
                _err(f"bulk: resuming run {cfg.run.name} from {cfg.journal_path}")
            return _execute(cfg, journal, args)


def _cmd_retry(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with RunLock(cfg.run.dir):
        journal, _ = runs.open_run(cfg)
        with journal:
            states = [State.FAILED, State.STOPPED] if args.stopped else [State.FAILED]
            count = journal.reset_failed(states)
            _err(f"bulk: sending {count:,} rows again")
            return _execute(cfg, journal, args)


def _execute(cfg: config.Config, journal: Journal, args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from bulk.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if args.metrics_port is not None:
        server, _ = start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
        port = server.server_address[1]  # the OS's choice when asked for port 0
        _err(f"bulk: metrics on http://127.0.0.1:{port}/metrics")
    for note in cfg.limits.over_budget():
        _err(f"bulk: note: {note}")
    kind, backend = _backend(cfg)
    engine = Engine(
        backend,
        journal,
        template=cfg.template,
        run=cfg.run.name,
        policy=Policy(cfg.limits, cfg.retry, cfg.track),
        metrics=metrics,
    )
    started = time.monotonic()
    state = _RunState()
    _run_async(
        _drive(engine, backend, cfg.run.name, args.progress_interval, state), uvloop=kind.uvloop
    )
    counts = journal.counts()
    _print_summary(cfg, journal, counts, time.monotonic() - started, state.interrupted)
    if state.interrupted:
        _err(f"bulk: interrupted; run the same command again to resume: bulk run {cfg.path}")
        return EXIT_INTERRUPTED
    unfinished = sum(v for k, v in counts.items() if k != State.SUCCEEDED)
    return EXIT_OK if unfinished == 0 else EXIT_FAILED


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
    """Run on asyncio; on uvloop where asked and installed (HTTP: 20-25 % less CPU)."""
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
    text = orjson.dumps(variables).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _backend(cfg: config.Config) -> tuple[BackendKind, Backend]:
    """The run's backend kind and a live backend for it (credentials are read here)."""
    kind = get_kind(cfg.backend.kind)
    return kind, kind.create(cfg.backend.options, run=cfg.run.name, run_dir=cfg.run.dir)


# -- status / stop / export -------------------------------------------------------------------


def _open_existing(cfg: config.Config) -> Journal:
    if not cfg.journal_path.exists():
        msg = f"{cfg.journal_path}: no journal: this run has not been started (bulk run {cfg.path})"
        raise JournalError(msg)
    return Journal.open(cfg.journal_path)


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
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"run [bold]{cfg.run.name}[/bold]: {total:,} jobs ({cfg.journal_path})")
    table = Table("state", "jobs")
    for state in State:
        if counts.get(state.value):
            table.add_row(state.value, f"{counts[state.value]:,}")
    console.print(table)
    if failures:
        table = Table("origin", "state", "attempt", "error", title="failures")
        for j in failures:
            table.add_row(j.origin, j.state.value, str(j.attempt), j.error or "")
        console.print(table)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with RunLock(cfg.run.dir), _open_existing(cfg) as journal:
        kind, backend = _backend(cfg)
        result: list[tuple[int, list[str]]] = []

        async def stop() -> None:
            async with contextlib.aclosing(backend):
                result.append(
                    await stop_run(
                        backend,
                        journal,
                        run=cfg.run.name,
                        template=cfg.template,
                        policy=Policy(cfg.limits, cfg.retry, cfg.track),
                    )
                )

        _run_async(stop(), uvloop=kind.uvloop)
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
    with _open_existing(cfg) as journal:
        out = args.output.open("w", newline="", encoding="utf-8") if args.output else sys.stdout
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
                    "name": plan.job_name(cfg.run.name, job.key, job.attempt),
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


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# -- simulators -------------------------------------------------------------------------------


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (0: let the OS choose)")


def _cmd_sim_stub(args: argparse.Namespace) -> int:
    from bulk.sim.stub import StubFaults, make_app

    faults = StubFaults(
        throttle_rate=args.throttle_rate,
        retry_after_s=args.retry_after,
        fail_before_rate=args.fail_before_rate,
        fail_after_rate=args.fail_after_rate,
        rate_limit_per_s=args.rate_limit,
        latency_s=args.latency,
        queue_s=args.queue_s,
        run_s=args.run_s,
        job_failure_rate=args.job_failure_rate,
        seed=args.seed,
    )
    _serve(make_app(faults), "stub", args.host, args.port)
    return EXIT_OK


def _serve(app: Any, kind: str, host: str, port: int) -> None:
    """Serve an aiohttp app until SIGINT/SIGTERM; print the address once listening."""
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]  # port 0
        print(f"bulk sim {kind}: listening on http://{bound[0]}:{bound[1]}", flush=True)  # noqa: T201
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return
        finally:
            await runner.cleanup()

    _run_async(main())


def _cmd_sim_gongji(args: argparse.Namespace) -> int:
    from bulk.sim.gongji import GongjiSim, SimConfig, make_app

    sim = GongjiSim(
        SimConfig(
            pending_s=args.pending_s,
            run_s=args.run_s,
            failure_rate=args.failure_rate,
            skew_s=args.skew_s,
            stop_ended_ok=args.stop_ended_ok,
            throttle_rate=args.throttle_rate,
            http_429_rate=args.http_429_rate,
            retry_after_s=args.retry_after,
            error_rate=args.error_rate,
            reset_rate=args.reset_rate,
            commit_fail_rate=args.commit_fail_rate,
            latency_s=args.latency,
            rate_limit_per_s=args.rate_limit,
            list_order=args.list_order,
            seed=args.seed,
        )
    )
    for entry in args.rsa_token:
        token, sep, key_path = entry.partition("=")
        if not sep or not token:
            msg = f"--rsa-token {entry!r}: expected TOKEN=PUBLIC_KEY.pem"
            raise ConfigError(msg)
        try:
            sim.add_token(token, Path(key_path).read_bytes())
        except (OSError, ValueError) as exc:
            msg = f"--rsa-token: {key_path}: {exc}"
            raise ConfigError(msg) from None
    for token in args.simple_token:
        sim.add_token(token, None)
    if not sim.tokens:
        msg = "register at least one token: --rsa-token TOKEN=PUBLIC.pem or --simple-token TOKEN"
        raise ConfigError(msg)
    _serve(make_app(sim), "gongji", args.host, args.port)
    return EXIT_OK


def _cmd_gongji_resources(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bulk.backends.gongji import GongjiBackend

    cfg = config.load(args.config)
    if cfg.backend.kind != "gongji":
        msg = f"{cfg.path}: backend.kind is {cfg.backend.kind!r}; this command needs 'gongji'"
        raise ConfigError(msg)
    _, backend = _backend(cfg)
    assert isinstance(backend, GongjiBackend)  # the kind's factory: the CLI builds objects
    devices: list[Any] = []

    async def fetch() -> None:
        # A one-off read, retried like the engine's requests: transient failures and
        # throttles back off (Retry-After wins) within the config's retry policy.
        backoff = Backoff(cfg.retry, started=time.monotonic())
        async with contextlib.aclosing(backend):
            while True:
                try:
                    devices.extend(await backend.resources())
                    return
                except TransientBackendError as exc:
                    delay = backoff.next_delay(time.monotonic(), exc.retry_after)
                    if delay is None:
                        raise
                    await anyio.sleep(delay)

    _run_async(fetch())
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(devices, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    table = Table("device", "GPU", "count", "region", "inventory", "price", "mark")
    for device in devices:
        for region in device.get("regions") or []:
            mark = str((region.get("mark") or {}).get("mark", ""))
            table.add_row(
                str(device.get("device_name")),
                str(device.get("gpu_name")),
                str(device.get("gpu_count")),
                f"{region.get('region')} ({region.get('region_name')})",
                str(region.get("inventory")),
                str(region.get("price")),
                mark[:24] + "…" if len(mark) > 24 else mark,
            )
    Console(highlight=False).print(table)
    return EXIT_OK
