"""--log-format and --log-file: the run's events as JSON lines (or text lines in a file),
and bulk's default output left as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bulk._cli import main
from bulk.testing import simulator

FIELDS = {"time", "level", "event", "run", "message"}


def local_config(folder: Path, rows: int = 4, fail: int = 2) -> Path:
    config = folder / "run.toml"
    config.write_text(
        f'[run]\nname = "logged"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        '[backend]\nkind = "local"\n'
        f'[job]\ncommand = ["sh", "-c", "exit $(( {{i}} == {fail} ))"]\n'
    )
    return config


def events(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object (a line that is not one fails the test)."""
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert FIELDS <= line.keys(), line
    return lines


def test_text_is_the_default_and_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the options, stderr holds bulk's usual lines and no event."""
    config = local_config(tmp_path)

    assert 1 == main(["run", str(config), "--progress-interval", "0"])

    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bulk: run logged finished in ")
    assert err[0].endswith(": 4 jobs: 1 failed, 3 succeeded")
    assert 'sweep #2 {"i":2}: failed: exit code 1' in err[1]
    assert 3 == len(err)
    assert not any(line.startswith("{") for line in err)


def test_json_on_stderr_is_one_object_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every stderr line parses: run start and end, the failure with its row, the summary."""
    config = local_config(tmp_path)

    assert 1 == main(["run", str(config), "--log-format", "json"])

    lines = events(capsys.readouterr().err)
    assert {"logged"} == {line["run"] for line in lines}
    by_event = {line["event"]: line for line in lines}
    assert "local" == by_event["run_start"]["backend"]
    failed = by_event["job_failed"]
    assert ("warning", 2, "exit code 1", 1) == (
        failed["level"],
        failed["index"],
        failed["reason"],
        failed["attempt"],
    )
    end = by_event["run_end"]
    assert ({"failed": 1, "succeeded": 3}, False) == (end["counts"], end["ok"])
    messages = [line["message"] for line in lines if line["event"] == "message"]
    assert messages[0].startswith("bulk: run logged finished in ")
    assert [line["event"] for line in lines].index("run_start") == 0


def test_json_in_a_log_file_leaves_stderr_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-file takes the events (appended); stderr keeps its text lines."""
    config = local_config(tmp_path)
    log = tmp_path / "events.jsonl"

    for _ in range(2):
        main(["run", str(config), "--restart", "--log-format", "json", "--log-file", str(log)])

    err = capsys.readouterr().err
    assert "{" not in err.splitlines()[0]
    assert "bulk: run logged finished in " in err
    lines = events(log.read_text(encoding="utf-8"))
    assert 2 == [line["event"] for line in lines].count("run_start")  # appended, not replaced
    assert {"run_start", "job_failed", "run_end"} <= {line["event"] for line in lines}


def test_text_in_a_log_file(tmp_path: Path) -> None:
    """--log-file alone writes the events as text lines: time, level, event, message."""
    config = local_config(tmp_path)
    log = tmp_path / "events.log"

    main(["run", str(config), "--log-file", str(log)])

    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0].endswith(" info run_start run logged started backend=local")
    failed = next(line for line in lines if " job_failed " in line)
    assert " warning job_failed " in failed
    assert "index=2" in failed


def test_throttles_and_retries_are_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service that throttles and fails before creating: each throttle and retry is one
    event, with its endpoint and reason."""
    fault_args = ["--throttle-rate", "0.3", "--retry-after", "0.01", "--fail-before-rate", "0.3"]
    with simulator("stub", *fault_args, "--run-s", "0.01", "--seed", "3") as url:
        config = tmp_path / "run.toml"
        config.write_text(
            '[run]\nname = "logged"\n[sweep]\ngrid.i = {range = [0, 20]}\n'
            f'[backend]\nkind = "stub"\nurl = "{url}"\n'
            "[limits]\nsubmit_rate_per_s = 500\nstatus_rate_per_s = 500\n"
            "[retry]\nattempts = 20\nbase_s = 0.01\nmax_s = 0.02\n"
            "[track]\nfirst_s = 0.02\nmax_s = 0.05\n"
            '[job]\nwork = "{i}"\n'
        )
        code = main(["run", str(config), "--log-format", "json"])

    lines = events(capsys.readouterr().err)
    assert 0 == code
    throttled = [line for line in lines if line["event"] == "throttled"]
    retries = [line for line in lines if line["event"] == "retry"]
    assert throttled
    assert {"throttled", "ambiguous"} <= {line["reason"] for line in retries}
    assert all(line["level"] == "warning" for line in throttled)
    assert {"submit"} == {line["endpoint"] for line in retries if "job" in line}
