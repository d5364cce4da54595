"""The ``bulk`` argument parser: every command, its options and the function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import bulk._cli._args as arg
from bulk._cli._kinds import add_kind_commands
from bulk._cli._logs import cmd_logs
from bulk._cli._report import cmd_export, cmd_plan, cmd_report, cmd_status
from bulk._cli._run import cmd_retry, cmd_run, cmd_stop
from bulk._cli._watch import cmd_watch
from bulk._journal import State
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
            "--pushgateway",
            type=arg.pushgateway_url,
            metavar="URL",
            help="push the metrics to this Prometheus Pushgateway every second and at the end "
            '(job="bulk", run=<run name>)',
        )
        p.add_argument(
            "--pushgateway-delete",
            action="store_true",
            help="delete the run's metrics from the Pushgateway when every job succeeded",
        )
        p.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="json: one JSON object per event (run start and end, throttles, retries, "
            "failures, notes) per line, on stderr or in --log-file (default: text)",
        )
        p.add_argument(
            "--log-file",
            type=Path,
            metavar="PATH",
            help="append the run's events to PATH (in --log-format) instead of stderr",
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
                "(the sweep must be the same; rows not sent again, pending ones included, "
                "keep their template)",
            )
        p.set_defaults(func=cmd_run if name == "run" else cmd_retry)


def _add_status_and_stop(sub: arg.Subparsers) -> None:
    p = sub.add_parser("status", help="counts by state, and the failed rows with their reasons")
    p.add_argument("config", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--failed", action="store_true", help="list the failed rows only (not the unknown)"
    )
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in State],
        metavar="S",
        help="list the rows in state S (repeatable; default: failed and unknown)",
    )
    p.add_argument(
        "--limit",
        "--failures",  # its name before --state: listed rows need not be failures
        dest="limit",
        type=arg.non_negative,
        default=20,
        metavar="N",
        help="how many rows to list (default 20)",
    )
    _add_watch_options(p, alias=False)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("top", help="a live view of a run (bulk status --watch)")
    p.add_argument("config", type=Path)
    _add_watch_options(p, alias=True)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("stop", help="stop every unfinished job of the run on the service")
    p.add_argument("config", type=Path)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("logs", help="print one job's log (row index, key or job name)")
    p.add_argument("config", type=Path, help="the run's TOML config")
    p.add_argument("row", help="the row's index, key or job name")
    p.set_defaults(func=cmd_logs)


def _add_watch_options(p: arg.Parser, *, alias: bool) -> None:
    if not alias:
        p.add_argument(
            "--watch",
            action="store_true",
            help="a live view refreshed from the journal until Ctrl-C or the run's end",
        )
    p.add_argument(
        "--interval",
        type=arg.watch_interval,
        default=1.0,
        metavar="S",
        help="seconds between refreshes of the live view (default 1)",
    )


def _add_export(sub: arg.Subparsers) -> None:
    p = sub.add_parser("export", help="the journal as CSV or JSONL")
    p.add_argument("config", type=Path)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="the run as one self-contained HTML page (charts, failures)")
    p.add_argument("config", type=Path)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="file to write (default: report.html in the run's folder)",
    )
    p.set_defaults(func=cmd_report)
