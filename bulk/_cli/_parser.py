"""The ``bulk`` argument parser: every command, its options and the function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import bulk._cli._args as arg
from bulk._cli._kinds import add_kind_commands
from bulk._cli._logs import cmd_logs
from bulk._cli._report import cmd_export, cmd_plan, cmd_status
from bulk._cli._run import cmd_retry, cmd_run, cmd_stop
from bulk._version import __version__


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``argv``: every command sets ``func``, the function that runs it.

    The backend kinds' simulators and commands are added where ``argv`` may name them
    (``bulk sim KIND``, ``bulk KIND COMMAND``, ``bulk --help``).
    """
    parser = arg.Parser(
        prog="bulk",
        description="Submit very large batches of jobs, politely, exactly once, resumably.",
    )
    parser.add_argument("--version", action="version", version=f"bulk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_plan(sub)
    _add_run_and_retry(sub)
    _add_status_and_stop(sub)
    _add_export(sub)
    add_kind_commands(sub, argv)
    return parser


def _add_plan(sub: arg.Subparsers) -> None:
    p = sub.add_parser("plan", help="expand and validate a sweep; send nothing")
    p.add_argument("config", type=Path, help="the run's TOML config")
    p.add_argument("--json", action="store_true", help="write every rendered job as JSONL")
    p.add_argument(
        "--limit",
        type=arg.non_negative,
        default=5,
        metavar="N",
        help="how many rendered jobs to show (default 5)",
    )
    p.set_defaults(func=cmd_plan)


def _add_run_and_retry(sub: arg.Subparsers) -> None:
    for name, help_ in (
        ("run", "expand, validate, submit and track to the end; resumes an existing run"),
        ("retry", "send the failed rows again (new attempt, new job names), then track them"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", type=Path, help="the run's TOML config")
        p.add_argument(
            "--metrics-port",
            type=arg.port,
            metavar="PORT",
            help="serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port)",
        )
        p.add_argument(
            "--progress-interval",
            type=arg.progress_interval,
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
        p.set_defaults(func=cmd_run if name == "run" else cmd_retry)


def _add_status_and_stop(sub: arg.Subparsers) -> None:
    p = sub.add_parser("status", help="counts by state, and failures with their reasons")
    p.add_argument("config", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--failures",
        type=arg.non_negative,
        default=20,
        metavar="N",
        help="how many failures to list (default 20)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", help="stop every unfinished job of the run on the service")
    p.add_argument("config", type=Path)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("logs", help="print one job's log (row index, key or job name)")
    p.add_argument("config", type=Path, help="the run's TOML config")
    p.add_argument("row", help="the row's index, key or job name")
    p.set_defaults(func=cmd_logs)


def _add_export(sub: arg.Subparsers) -> None:
    p = sub.add_parser("export", help="the journal as CSV or JSONL")
    p.add_argument("config", type=Path)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)
