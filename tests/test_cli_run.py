"""`bulk run`, `status`, `export`, `retry` and `stop` on the local backend, in-process."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from pathlib import Path

import pytest

import bulk._runs as runs
from bulk._cli._main import main
from bulk._cli._parser import build_parser
from bulk._config import Config
from bulk._journal import Journal, RunLock, State
from bulk._runs import require_journal


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

    def test_status_table_names_each_failed_row(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The failures table says which row failed: its index and its job name."""
        monkeypatch.setenv("COLUMNS", "200")
        config = write_config(tmp_path, command="exit $(( {i} == 4 ))")
        main(["run", str(config)])
        capsys.readouterr()

        assert 0 == main(["status", str(config)])
        out = capsys.readouterr().out

        from bulk._config import load
        from bulk._journal import Journal, State

        cfg = load(config)
        with Journal.open(cfg.journal_path) as journal:
            (failed,) = journal.jobs([State.FAILED])
        # Not a terminal: tab-separated fields, the index first.
        row = next(line for line in out.splitlines() if "exit code 1" in line)
        assert "4" == row.split("\t")[0]
        assert f"demo-{failed.key}" in row

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


def test_stop_checks_for_the_journal_once(
    squares: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bulk stop` looks for the run's journal once, before it takes the run's lock (opening
    the journal refuses a missing one anyway)."""
    main(["run", str(squares)])
    checks: list[Path] = []

    def counted(cfg: Config) -> None:
        checks.append(cfg.journal_path)
        require_journal(cfg)

    monkeypatch.setattr(runs, "require_journal", counted)

    assert 0 == main(["stop", str(squares)])
    assert [squares.parent / ".bulk" / "demo" / "journal.sqlite"] == checks


def advised_commands(message: str) -> list[list[str]]:
    """Every `bulk run|retry ... CONFIG` command a message advises, as argument lists."""
    return [shlex.split(m) for m in re.findall(r"bulk (?:run|retry)(?: --[a-z-]+)* \S+", message)]


def journal_of(config: Path) -> Journal:
    return Journal.open(config.parent / ".bulk" / "demo" / "journal.sqlite")


class TestRetry:
    @pytest.fixture
    def half_failed(self, tmp_path: Path) -> Path:
        """A finished run whose rows 3, 4 and 5 failed (template version 1 wrote 'v1')."""
        config = write_config(tmp_path, command="test {i} -lt 3 && echo v1 > out-{i}")
        assert 1 == main(["run", str(config)])
        return config

    def test_retry_before_any_run_is_refused(
        self, squares: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`bulk retry` on a run never started sends nothing and says what to do, like status."""
        assert 2 == main(["retry", str(squares)])

        assert f"this run has not been started (bulk run {squares})" in capsys.readouterr().err
        assert not (squares.parent / "out-0").exists()
        assert not (squares.parent / ".bulk").exists()

    def test_stop_before_any_run_leaves_no_folder(self, squares: Path) -> None:
        """`bulk stop` on a run never started is refused before it takes the run's lock."""
        assert 2 == main(["stop", str(squares)])

        assert not (squares.parent / ".bulk").exists()

    def test_changed_template_is_refused_with_advice_the_commands_accept(
        self, half_failed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A changed template: `retry` and `run` refuse, and every command they advise parses."""
        half_failed.write_text(half_failed.read_text().replace("v1", "v2"))
        capsys.readouterr()

        assert 2 == main(["retry", str(half_failed)])
        retry_err = capsys.readouterr().err
        assert 2 == main(["run", str(half_failed)])
        run_err = capsys.readouterr().err

        assert f"bulk retry --template-changed {half_failed}" in retry_err
        assert f"bulk retry --template-changed {half_failed}" in run_err
        advised = advised_commands(retry_err) + advised_commands(run_err)
        assert len(advised) >= 4
        for command in advised:
            build_parser().parse_args(command[1:])  # exits (argparse) if it is not accepted

    def test_template_changed_sends_failed_rows_with_the_new_template(
        self, half_failed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Only the failed rows are sent again, with the fixed template and a new attempt."""
        half_failed.write_text(
            half_failed.read_text().replace("test {i} -lt 3 && echo v1", "echo v2")
        )

        assert 0 == main(["retry", str(half_failed), "--template-changed"])

        outputs = [(half_failed.parent / f"out-{i}").read_text().strip() for i in range(6)]
        assert ["v1", "v1", "v1", "v2", "v2", "v2"] == outputs
        with journal_of(half_failed) as journal:
            rows = [(j.attempt, j.template, j.state) for j in journal.jobs()]
            assert 2 == journal.template_version()
        assert [(1, 1, State.SUCCEEDED)] * 3 + [(2, 2, State.SUCCEEDED)] * 3 == rows
        capsys.readouterr()
        assert 0 == main(["run", str(half_failed)])  # the changed config is now the run's
        assert "resuming run demo" in capsys.readouterr().err

    def test_template_changed_still_refuses_a_changed_sweep(
        self, half_failed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Only the template may change this way: a changed sweep is refused (exit 2)."""
        text = (
            half_failed.read_text().replace("v1", "v2").replace("range = [0, 6]", "range = [0, 7]")
        )
        half_failed.write_text(text)
        capsys.readouterr()

        assert 2 == main(["retry", str(half_failed), "--template-changed"])

        err = capsys.readouterr().err
        assert "the job template, the [sweep] settings changed" in err
        assert f"bulk run --restart {half_failed}" in err
        with journal_of(half_failed) as journal:
            assert {"failed": 3, "succeeded": 3} == journal.counts()

    def test_new_template_is_validated_before_anything_changes(
        self, half_failed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A new template that does not render for a failed row: exit 2, journal untouched."""
        half_failed.write_text(half_failed.read_text().replace("echo v1", "echo {j}"))
        capsys.readouterr()

        assert 2 == main(["retry", str(half_failed), "--template-changed"])

        err = capsys.readouterr().err.splitlines()
        expected = "sweep: job.command: variable 'j' is not defined; the row has: i"
        assert f"{half_failed}: {expected}" == err[0]
        with journal_of(half_failed) as journal:
            assert {"failed": 3, "succeeded": 3} == journal.counts()
            assert 1 == journal.template_version()
            assert {1} == {j.attempt for j in journal.jobs()}


def test_journal_of_schema_1_is_upgraded_and_resumed(
    squares: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal from before template versions resumes; its template's text is then kept."""
    import sqlite3

    import bulk._config as config
    import bulk._runs as runs

    cfg = config.load(squares)
    runs.open_run(cfg)[0].close()
    with sqlite3.connect(cfg.journal_path) as db:  # back to what bulk wrote before
        db.executescript(
            "ALTER TABLE jobs DROP COLUMN template; DROP TABLE templates; DROP TABLE series; "
            "UPDATE meta SET v = '1' WHERE k = 'schema';"
        )

    assert 0 == main(["run", str(squares)])

    with journal_of(squares) as journal:
        assert {"succeeded": 6} == journal.counts()
        assert {1: cfg.template.source} == journal.template_sources()
        assert "3" == journal.meta()["schema"]
        assert journal.series()  # the run recorded its time series in the upgraded journal


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        pytest.param(["run", "c.toml", "--restart"], [], id="run-restart"),
        pytest.param(["retry", "c.toml"], [], id="retry"),
        pytest.param(
            ["retry", "c.toml", "--template-changed", "--stopped"],
            ["--stopped", "--template-changed"],
            id="retry-flags",
        ),
    ],
)
def test_interrupted_advice_repeats_the_command(argv: list[str], flags: list[str]) -> None:
    """ "Run the same command again" names that command: never --restart, retry's own flags."""
    from bulk._cli._run import resume_flags

    assert flags == resume_flags(build_parser().parse_args(argv))


def test_the_cli_chooses_the_event_loop_for_every_kind(
    squares: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local run goes on uvloop where it is installed: the kind has no say in the loop."""
    pytest.importorskip("uvloop")
    import anyio

    import bulk._loop

    monkeypatch.setattr(bulk._loop, "UVLOOP", True)  # the suite runs in-process on asyncio
    chosen: list[object] = []
    real_run = anyio.run

    def recording_run(*args: object, **kwargs: object) -> object:
        chosen.append(kwargs.get("backend_options"))
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(anyio, "run", recording_run)

    assert 0 == main(["run", str(squares)])

    assert [{"use_uvloop": True}] == chosen
