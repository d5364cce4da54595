"""`bulk status`: which rows failed, where they came from and where their output is."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from bulk._cli._main import main
from bulk._config import load
from bulk._journal import Journal, Record, State


def failing_run(folder: Path, rows: int = 6) -> Path:
    """A finished local run whose rows 1 and 4 failed (i % 3 == 1), each writing output."""
    path = folder / "run.toml"
    path.write_text(
        f"""
[run]
name = "demo"

[sweep]
grid.i = {{range = [0, {rows}]}}
grid.word = ["x"]

[retry]
attempts = 1

[job]
command = "echo row {{i}}; exit $(( {{i}} % 3 == 1 ))"
"""
    )
    assert 1 == main(["run", str(path)])
    return path


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = failing_run(tmp_path)
    capsys.readouterr()
    return path


def status(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert 0 == main(["status", *args])
    return capsys.readouterr().out


def test_plain_rows_name_each_failed_row(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal: a header and one tab-separated line per failed row, naming the row
    (index, key, variables, origin, job name, attempt, reason) and its log files."""
    out = status(capsys, str(run)).splitlines()

    header = out.index(next(line for line in out if line.startswith("index\t")))
    fields = out[header].split("\t")
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out[header + 1 :]]
    cfg = load(run)
    with Journal.open(cfg.journal_path) as journal:
        failed = journal.jobs([State.FAILED])
    assert [1, 4] == [job.index for job in failed]
    assert [str(job.index) for job in failed] == [r["index"] for r in rows]
    assert [job.key for job in failed] == [r["key"] for r in rows]
    assert ['{"i":1,"word":"x"}', '{"i":4,"word":"x"}'] == [r["variables"] for r in rows]
    assert {f"{run}: sweep"} == {r["origin"] for r in rows}
    assert [f"demo-{job.key}" for job in failed] == [r["name"] for r in rows]
    assert {"1"} == {r["attempt"] for r in rows}
    assert {"exit code 1"} == {r["reason"] for r in rows}
    out_log, err_log = rows[1]["output"].split(" ")
    assert "row 4\n" == Path(out_log).read_text()
    assert Path(err_log).name == f"demo-{failed[1].key}.err"


def test_terminal_table_names_each_failed_row(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: a table with the same columns, and where the log files are."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

    out = re.sub(r"\x1b\[[0-9;]*m", "", status(capsys, str(run)))  # bold headers

    header = next(line for line in out.splitlines() if "variables" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert ["#", "key", "variables", "origin", "name", "attempt", "reason"] == cells
    row = next(line for line in out.splitlines() if line.startswith("│ 4 "))
    assert '{"i":4,"word":"x"}' in row
    assert "exit code 1" in row
    cfg = load(run)
    assert f"output: {cfg.run.dir / 'logs'}/NAME.out and NAME.err" in out


def test_json_keeps_its_keys_and_adds_the_row_details(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(status(capsys, str(run), "--json"))

    assert {"run", "journal", "created", "total", "counts", "failures"} <= data.keys()
    first = data["failures"][0]
    assert {"index", "key", "origin", "state", "attempt", "remote_id", "error"} <= first.keys()
    assert (1, {"i": 1, "word": "x"}) == (first["index"], first["variables"])
    assert first["name"] == f"demo-{first['key']}"
    assert first["logs"][0].endswith(f"{first['name']}.out")
    assert first["logs_command"] is None
    assert first["finished_at"].endswith("+00:00")
    assert (["failed", "unknown"], 2) == (data["listed_states"], data["listed_of"])


def test_state_and_limit_choose_the_rows(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--state S` lists the rows in S (repeatable), `--limit N` the first N of them."""
    data = json.loads(status(capsys, str(run), "--json", "--state", "succeeded", "--limit", "2"))

    assert [0, 2] == [r["index"] for r in data["failures"]]
    assert (["succeeded"], 4) == (data["listed_states"], data["listed_of"])
    out = status(capsys, str(run), "--state", "succeeded", "--limit", "2")
    assert "succeeded (the first 2 of 4; --limit N for more):" in out.splitlines()


def test_failed_leaves_out_the_unknown(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default the rows that need a look are listed (failed and unknown); `--failed`
    lists only the failed."""
    cfg = load(run)
    with Journal.open(cfg.journal_path) as journal:
        journal.apply([Record(5, State.UNKNOWN, error="no answer")])

    default = json.loads(status(capsys, str(run), "--json"))
    failed = json.loads(status(capsys, str(run), "--json", "--failed"))

    assert [1, 4, 5] == [r["index"] for r in default["failures"]]
    assert [1, 4] == [r["index"] for r in failed["failures"]]


def test_a_service_row_points_to_bulk_logs(run: Path) -> None:
    """A row of a service's run: its output is fetched with `bulk logs CONFIG ROW`."""
    from dataclasses import replace

    from bulk._cli._report import job_output

    cfg = load(run)
    with Journal.open(cfg.journal_path) as journal:
        (job,) = journal.jobs([State.FAILED], limit=1)
        (pending,) = journal.jobs(limit=1)
    for log in (cfg.run.dir / "logs").iterdir():
        log.unlink()  # as a service's run: no log files in the run's folder

    assert (None, f"bulk logs {run} 1") == job_output(cfg, job)
    assert (None, None) == job_output(cfg, replace(pending, state=State.PENDING))


def test_watch_with_json_is_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["status", str(run), "--watch", "--json"])
    err = capsys.readouterr().err
    assert err.startswith("bulk status: error: argument --watch: ")
    assert 1 == len(err.splitlines())
