"""`bulk run`, `status`, `export`, `retry` and `stop` on the local backend, in-process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from bulk.cli import main
from bulk.journal import RunLock


def write_config(folder: Path, *, command: str, extra: str = "", rows: int = 6) -> Path:
    path = folder / "run.toml"
    path.write_text(
        f"""
[run]
name = "demo"

[sweep]
grid.i = {{range = [0, {rows}]}}

[retry]
attempts = 2
base_s = 0.01

{extra}

[job]
command = "{command}"
"""
    )
    return path


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    return write_config(tmp_path, command="echo $(( {i} * {i} )) > out-{i}")


class TestRun:
    def test_runs_every_job_then_resumes_as_a_no_op(
        self, squares: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run does every job (exit 0); running it again sends nothing."""
        assert 0 == main(["run", str(squares)])
        outputs = sorted((squares.parent / f"out-{i}").read_text().strip() for i in range(6))
        assert ["0", "1", "16", "25", "4", "9"] == outputs
        assert "6 succeeded" in capsys.readouterr().err

        assert 0 == main(["run", str(squares)])

        assert "resuming run demo" in capsys.readouterr().err

    def test_failed_jobs_exit_1_and_retry_sends_them_again(self, tmp_path: Path) -> None:
        """A failing job makes exit 1; `bulk retry` after a fix runs it with a new attempt."""
        config = write_config(tmp_path, command="test -e ok-{i}")
        for i in range(6):
            if i != 3:
                (tmp_path / f"ok-{i}").touch()

        assert 1 == main(["run", str(config)])

        (tmp_path / "ok-3").touch()
        assert 0 == main(["retry", str(config)])

    def test_status_json_counts_and_failures(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status --json` gives counts by state and each failure with its reason."""
        config = write_config(tmp_path, command="exit $(( {i} % 2 ))")
        main(["run", str(config)])
        capsys.readouterr()

        assert 0 == main(["status", str(config), "--json"])
        data = json.loads(capsys.readouterr().out)

        assert 6 == data["total"]
        assert (3, 3) == (data["counts"]["succeeded"], data["counts"]["failed"])
        assert {"exit code 1"} == {f["error"] for f in data["failures"]}

    def test_export_csv_and_jsonl(self, squares: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Export writes one record per row with identity, state, times and variables."""
        main(["run", str(squares)])
        capsys.readouterr()

        assert 0 == main(["export", str(squares)])
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert 0 == main(["export", str(squares), "--format", "jsonl"])
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

        assert 6 == len(rows) == len(records)
        assert {"succeeded"} == {r["state"] for r in rows}
        assert '{"i":2}' == rows[2]["variables"]
        assert {"i": 2} == records[2]["variables"]
        assert records[2]["name"] == f"demo-{records[2]['key']}"
        assert records[2]["finished_at"].endswith("+00:00")


class TestRefusals:
    def test_changed_template_is_refused_and_restart_starts_over(
        self, squares: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A changed template refuses to resume (exit 2) and names the change; --restart works."""
        main(["run", str(squares)])
        squares.write_text(squares.read_text().replace("echo", "printf"))
        capsys.readouterr()

        assert 2 == main(["run", str(squares)])
        err = capsys.readouterr().err
        assert "the job template changed since this run started" in err
        assert "--restart" in err

        assert 0 == main(["run", str(squares), "--restart"])
        assert (squares.parent / ".bulk" / "demo" / "journal-1.sqlite").exists()
        capsys.readouterr()
        main(["export", str(squares), "--format", "jsonl"])
        attempts = {json.loads(x)["attempt"] for x in capsys.readouterr().out.splitlines()}
        assert {2} == attempts  # new names: a restarted run never reuses one

    def test_slower_limits_still_resume(self, squares: Path) -> None:
        """Changing limits is not a change of the run."""
        main(["run", str(squares)])
        squares.write_text(squares.read_text() + "\n[limits]\nmax_active = 1\n")

        assert 0 == main(["run", str(squares)])

    def test_concurrent_run_is_refused(
        self, squares: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """While another process holds the run, `bulk run` exits 2 and sends nothing."""
        with RunLock(squares.parent / ".bulk" / "demo"):
            assert 2 == main(["run", str(squares)])

        assert "in use by another bulk process" in capsys.readouterr().err
        assert not (squares.parent / "out-0").exists()

    def test_bad_input_sends_nothing(self, tmp_path: Path) -> None:
        """A sweep with one bad row exits 2 before any job runs, and leaves no journal."""
        config = write_config(tmp_path, command="touch ran-{i}", extra="")
        config.write_text(config.read_text().replace('"touch ran-{i}"', '"touch ran-{i} {j}"'))

        assert 2 == main(["run", str(config)])

        assert [] == list(tmp_path.glob("ran-*"))
        assert not (tmp_path / ".bulk" / "demo" / "journal.sqlite").exists()

    def test_status_before_any_run(self, squares: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Status of a run never started is a one-line error."""
        assert 2 == main(["status", str(squares)])
        assert "this run has not been started" in capsys.readouterr().err


def test_stop_records_unfinished_jobs(squares: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bulk stop` on a finished run stops nothing and says so."""
    main(["run", str(squares)])
    capsys.readouterr()

    assert 0 == main(["stop", str(squares)])
    assert "stopped 0 jobs" in capsys.readouterr().err
