"""The ``bulk`` command line. The only place that builds concrete objects and prints.

Exit codes: 0 every job succeeded (or the command did what it was asked), 1 some jobs failed,
2 bad config or input (nothing was sent), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bulk import __version__, config, plan
from bulk.errors import BulkError, ConfigError, InputErrors
from bulk.journal import Journal

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
