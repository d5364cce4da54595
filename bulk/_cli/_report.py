"""What bulk reads and prints without sending: ``plan``, ``status``, ``export``, and the
summary at the end of a run."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

import bulk._config as config
import bulk._runs as runs
from bulk._api import Plan, plan
from bulk._cli._common import EXIT_OK, err, output, output_error, stdout_console
from bulk._journal import Journal, State
from bulk._naming import Point, job_name
from bulk._plan._check import preview


def cmd_plan(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer

    def write_json(point: Point, body: Any) -> None:
        line = {"index": point.index, "key": point.key, "origin": point.origin, "job": body}
        # Not output(): a context manager per row costs ~2 µs, four times the write itself.
        try:
            out.write(orjson.dumps(line) + b"\n")
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise output_error(exc) from None

    result = plan(args.config, samples=args.limit, on_job=write_json if args.json else None)
    with output():
        if not args.json:
            _print_plan(result)
    return EXIT_OK


def _print_plan(result: Plan) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    cfg = result.config
    console = stdout_console()
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
            Text(preview(point.variables)),
            Text(preview(body)),
        )
    console.print(table)
    if result.total > len(result.samples):
        console.print(f"... and {result.total - len(result.samples):,} more")


def _short(variables: dict[str, Any], limit: int = 60) -> str:
    return preview(variables, limit)


def print_summary(
    cfg: config.Config,
    journal: Journal,
    counts: dict[str, int],
    elapsed_s: float,
    interrupted: bool,
) -> None:
    total = sum(counts.values())
    parts = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
    verb = "stopped" if interrupted else "finished"
    err(f"bulk: run {cfg.run.name} {verb} in {elapsed_s:.1f}s: {total:,} jobs: {parts}")
    failures = journal.jobs([State.FAILED, State.UNKNOWN], limit=5)
    for job in failures:
        err(f"  {job.origin} #{job.index} {_short(job.variables)}: {job.state}: {job.error}")
    if failures:
        err(f"  (all of them: bulk status {cfg.path})")
    if counts.get(State.STOPPED) and not interrupted:
        err(f"  (to run the stopped jobs again: bulk retry --stopped {cfg.path})")


def _open_existing(cfg: config.Config) -> Journal:
    runs.require_journal(cfg)
    return runs.open_journal(cfg)


def cmd_status(args: argparse.Namespace) -> int:
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
        with output():
            sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    with output():
        console = stdout_console()
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


def cmd_export(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _open_existing(cfg) as journal, output(args.output):
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


def cmd_report(args: argparse.Namespace) -> int:
    from bulk._report import build_report

    cfg = config.load(args.config)
    # Read-only, without the run lock: a report of a run still going is a snapshot.
    with _open_existing(cfg) as journal:
        page = build_report(cfg, journal)
    path = args.output or cfg.run.dir / "report.html"
    with output(path):
        out = _create_output(path)
        try:
            out.write(page)
        finally:
            out.close()
    with output():
        sys.stdout.write(f"{path}\n")
    return EXIT_OK


def _create_output(path: Path) -> TextIO:
    """``path`` opened for writing text; a new file is owner-only (0600), like the journal
    whose variables and errors it holds (an existing file keeps its mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise output_error(exc, path) from None
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
