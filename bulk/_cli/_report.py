"""What bulk reads and prints without sending: ``plan``, ``status``, ``export``, and the
summary at the end of a run."""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

import bulk._config as config
import bulk._runs as runs
from bulk._api import Plan, plan
from bulk._cli._common import EXIT_OK, err, output, output_error, stdout_console
from bulk._journal import Journal, State, StoredJob
from bulk._naming import Point, job_name
from bulk._plan._check import origin_where, preview
from bulk._text import cut
from bulk.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console


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


# The rows `bulk status` lists when no --state is given: those that need the user's eyes.
_TROUBLE = (State.FAILED, State.UNKNOWN)
_SHORT_VARIABLES = 60  # characters of a row's variables in a status table cell
_SHORT_REASON = 300  # characters of a row's reason in a status table cell (JSON: in full)


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        if args.json or args.state or args.failed:
            msg = "the live view shows every state; --json, --state and --failed are for one look"
            raise ConfigError(msg, where="bulk status: error: argument --watch")
        from bulk._cli._watch import cmd_watch

        return cmd_watch(args)
    cfg = config.load(args.config)
    states = _listed_states(args)
    with _open_existing(cfg) as journal:
        with journal.snapshot():
            counts = journal.counts()
            rows = journal.jobs(states, limit=args.limit)
        meta = journal.meta()
    total = sum(counts.values())
    matching = sum(counts.get(s.value, 0) for s in states)
    listed = [_row(cfg, j) for j in rows]
    if args.json:
        data = {
            "run": cfg.run.name,
            "journal": str(cfg.journal_path),
            "created": meta.get("created"),
            "total": total,
            "counts": {state.value: counts.get(state.value, 0) for state in State},
            # The listed rows (failed and unknown unless --state or --failed chose others),
            # under the key it always had.
            "listed_states": [s.value for s in states],
            "listed_of": matching,
            "failures": listed,
        }
        with output():
            sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    with output():
        if sys.stdout.isatty():
            _status_table(cfg, _Status(total, counts, states, matching, listed))
        else:
            _status_plain(cfg, _Status(total, counts, states, matching, listed))
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class _Status:
    total: int
    counts: dict[str, int]
    states: list[State]  # the states of the listed rows
    matching: int  # how many rows are in them
    listed: list[dict[str, Any]]


def _listed_states(args: argparse.Namespace) -> list[State]:
    chosen = [State(s) for s in args.state or ()]
    if args.failed:
        chosen.append(State.FAILED)
    return list(dict.fromkeys(chosen)) if chosen else list(_TROUBLE)


def job_output(cfg: config.Config, job: StoredJob) -> tuple[list[str] | None, str | None]:
    """Where a row's output is: its log files in the run's folder, where the backend wrote
    them there (one running jobs on this machine does), else the ``bulk logs`` command that
    fetches them from the service; ``(None, None)`` for a row never sent."""
    if job.state in (State.PENDING, State.SUBMITTING) or (
        job.remote_id is None and job.submitted_at is None
    ):
        return None, None
    name = job_name(cfg.run.name, job.key, job.attempt)
    logs = cfg.run.dir / "logs"
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    if out.exists() or err.exists():
        return [str(out), str(err)], None
    return None, f"bulk logs {shlex.quote(str(cfg.path))} {job.index}"


def _row(cfg: config.Config, j: StoredJob) -> dict[str, Any]:
    logs, logs_command = job_output(cfg, j)
    return {
        "index": j.index,
        "key": j.key,
        "origin": j.origin,
        "where": origin_where(cfg, j.origin),
        "state": j.state.value,
        "attempt": j.attempt,
        "remote_id": j.remote_id,
        "error": j.error,
        "name": job_name(cfg.run.name, j.key, j.attempt),
        "variables": j.variables,
        "submitted_at": _iso(j.submitted_at),
        "started_at": _iso(j.started_at),
        "finished_at": _iso(j.finished_at),
        "logs": logs,
        "logs_command": logs_command,
    }


def _title(states: list[State], shown: int, matching: int) -> str:
    which = "failures" if states == list(_TROUBLE) else " and ".join(s.value for s in states)
    more = f" (the first {shown:,} of {matching:,}; --limit N for more)" if matching > shown else ""
    return f"{which}{more}"


def _status_table(cfg: config.Config, status: _Status) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    console.print(
        f"run [bold]{cfg.run.name}[/bold]: {status.total:,} jobs ({escape(str(cfg.journal_path))})"
    )
    table = Table("state", "jobs")
    for state in State:
        if status.counts.get(state.value):
            table.add_row(state.value, f"{status.counts[state.value]:,}")
    console.print(table)
    if status.listed:
        _listed_table(cfg, status, console)


def _listed_table(cfg: config.Config, status: _Status, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_title(status.states, len(status.listed), status.matching))
    rows = status.listed
    # Columns that would repeat what another says are left out: a remote id that is the job
    # name (on this machine's processes), the state when one state is listed, and each row's log
    # files when the line below the table says where they are.
    remote_ids = any(row["remote_id"] not in (None, row["name"]) for row in rows)
    states = len({row["state"] for row in rows}) > 1
    # Narrow terminals: the short identity columns keep their width, long ones fold or cut.
    table.add_column("#", no_wrap=True)
    table.add_column("key", overflow="ellipsis", max_width=18)
    table.add_column("variables", overflow="fold", ratio=2)
    table.add_column("origin", overflow="fold", ratio=1)
    table.add_column("name", overflow="fold", ratio=1)
    if remote_ids:
        table.add_column("remote id", overflow="fold", ratio=1)
    table.add_column("attempt", no_wrap=True)
    if states:
        table.add_column("state", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=2)
    for row in rows:
        # Plain text: an error may quote a service's answer, and "[/x]" is not markup.
        cells: list[Any] = [
            str(row["index"]),
            Text(row["key"]),
            Text(preview(row["variables"], _SHORT_VARIABLES)),
            Text(row["where"]),
            Text(row["name"]),
        ]
        if remote_ids:
            cells.append(Text(row["remote_id"] or ""))
        cells.append(str(row["attempt"]))
        if states:
            cells.append(row["state"])
        cells.append(Text(cut(row["error"] or "", _SHORT_REASON)))
        table.add_row(*cells)
    console.print(table)
    if any(row["logs"] for row in rows):
        console.print(Text(f"output: {cfg.run.dir / 'logs'}/NAME.out and NAME.err"))
    elif any(row["logs_command"] for row in rows):
        console.print(Text(f"output: bulk logs {shlex.quote(str(cfg.path))} #"))


def _output_text(row: dict[str, Any], sep: str) -> str:
    if row["logs"]:
        return sep.join(row["logs"])
    return str(row["logs_command"] or "")


_PLAIN_COLUMNS = (
    "index",
    "key",
    "variables",
    "origin",
    "name",
    "remote_id",
    "attempt",
    "state",
    "reason",
    "output",
)


def _status_plain(cfg: config.Config, status: _Status) -> None:
    """Not a terminal: lines for grep and cut, rows as tab-separated fields with a header
    line (a field's tabs and line breaks are spaces; nothing is cut but the variables)."""
    out = sys.stdout
    out.write(f"run {cfg.run.name}: {status.total:,} jobs ({cfg.journal_path})\n")
    for state in State:
        if status.counts.get(state.value):
            out.write(f"{state.value}\t{status.counts[state.value]}\n")
    if not status.listed:
        return
    out.write(f"{_title(status.states, len(status.listed), status.matching)}:\n")
    out.write("\t".join(_PLAIN_COLUMNS) + "\n")
    for row in status.listed:
        fields = (
            str(row["index"]),
            row["key"],
            preview(row["variables"], _SHORT_VARIABLES),
            row["where"],
            row["name"],
            row["remote_id"] or "",
            str(row["attempt"]),
            row["state"],
            row["error"] or "",
            _output_text(row, " "),
        )
        out.write("\t".join(" ".join(f.split()) for f in fields) + "\n")


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
