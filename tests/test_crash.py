"""Crash tests: the real CLI, killed with SIGKILL at seeded random points, resumed to the end.

The kill points are chosen by progress, not by time: the test reads bulk's progress lines
and kills it once a seeded number of jobs is done, so no test sleeps to synchronise. Whatever
the point, every row must end exactly once: one succeeded journal row per sweep point and,
against the HTTP stub, one create per job name in the service's own ledger.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk.journal import Journal
from bulk.testing import simulator

pytestmark = pytest.mark.slow

BULK = [sys.executable, "-m", "bulk"]
DONE = re.compile(r"(\d[\d,]*)/(\d[\d,]*) done")


def run_and_kill(config: Path, kill_when_done: int | None) -> int:
    """Run `bulk run`; SIGKILL it once `kill_when_done` jobs are done. Its exit code."""
    proc = subprocess.Popen(
        [*BULK, "run", str(config), "--progress-interval", "0.02"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ends when the process does
        m = DONE.search(line)
        if kill_when_done is not None and m and int(m.group(1).replace(",", "")) >= kill_when_done:
            proc.kill()
            break
    proc.stderr.close()
    return proc.wait(timeout=120)


def crash_and_resume(config: Path, rows: int, seed: int, kills: int = 4) -> None:
    rng = random.Random(seed)
    points = sorted(rng.randrange(1, rows) for _ in range(kills))
    for point in points:
        code = run_and_kill(config, point)
        assert code in (-signal.SIGKILL, 0), f"bulk exited {code}"
    for _ in range(3):  # bounded: a clean resume finishes in one go
        if run_and_kill(config, None) == 0:
            return
    pytest.fail("bulk did not finish after resuming")


def journal_states(config: Path, name: str) -> list[tuple[int, str]]:
    with Journal.open(config.parent / ".bulk" / name / "journal.sqlite") as journal:
        return [(j.index, j.state.value) for j in journal.iter_jobs()]


def assert_exactly_once(ledger_url: str, config: Path, run: str, rows: int) -> None:
    """The service created each job name exactly once, and every row ended succeeded."""
    with urllib.request.urlopen(ledger_url, timeout=10) as response:
        ledger = json.load(response)["creates"]

    assert rows == len(ledger)
    assert {1} == set(ledger.values())
    assert [(i, "succeeded") for i in range(rows)] == journal_states(config, run)


@pytest.mark.parametrize("seed", [1, 2])
def test_local_backend_survives_kill_9(tmp_path: Path, seed: int) -> None:
    """Killed four times, the local run still ends with every row succeeded once."""
    rows = 200
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
name = "crash"
[sweep]
grid.i = {{range = [0, {rows}]}}
[limits]
max_active = 8
[job]
command = "echo {{i}} >> done.log"
"""
    )

    crash_and_resume(config, rows, seed)

    states = journal_states(config, "crash")
    assert [(i, "succeeded") for i in range(rows)] == states
    finished = {int(x) for x in (tmp_path / "done.log").read_text().split()}
    assert set(range(rows)) == finished


@pytest.fixture
def stub_service() -> Iterator[str]:
    """`bulk sim stub` with commit-then-fail, 5xx and 429 faults, in its own process."""
    with simulator(
        "stub",
        "--fail-after-rate",
        "0.2",
        "--fail-before-rate",
        "0.1",
        "--throttle-rate",
        "0.05",
        "--retry-after",
        "0.05",
        "--run-s",
        "0.05",
        "--seed",
        "3",
    ) as url:
        yield url


@pytest.mark.parametrize("seed", [1, 2])
def test_http_stub_sees_one_create_per_job_across_kills(
    tmp_path: Path, stub_service: str, seed: int
) -> None:
    """Faults and kill -9 together: the service's ledger has exactly one create per name."""
    rows = 300
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
name = "stubcrash"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "stub"
url = "{stub_service}"
[retry]
base_s = 0.01
max_s = 0.2
attempts = 20
[job]
work = "{{i}}"
"""
    )

    crash_and_resume(config, rows, seed)

    assert_exactly_once(f"{stub_service}/ledger", config, "stubcrash", rows)


def test_sigint_exits_130_and_resumes_cleanly(tmp_path: Path) -> None:
    """Ctrl-C once: bulk drains, says how to resume, exits 130; the rerun finishes."""
    config = tmp_path / "run.toml"
    config.write_text(
        """
[run]
name = "int"
[sweep]
grid.i = {range = [0, 60]}
[limits]
max_active = 2
[job]
command = "sleep 0.05; echo {i} >> done.log"
"""
    )
    proc = subprocess.Popen(
        [*BULK, "run", str(config), "--progress-interval", "0.02"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    err = []
    for line in proc.stderr:
        err.append(line)
        m = DONE.search(line)
        if m and int(m.group(1)) >= 5:
            proc.send_signal(signal.SIGINT)
            break
    err.extend(proc.stderr)
    proc.stderr.close()
    code = proc.wait(timeout=60)

    assert 130 == code
    assert any("run the same command again to resume" in line for line in err)
    assert 0 == run_and_kill(config, None)
    assert [(i, "succeeded") for i in range(60)] == journal_states(config, "int")


DATA = Path(__file__).parent / "data"


@pytest.fixture
def gongji_service() -> Iterator[str]:
    """`bulk sim gongji` with an RSA token, commit-then-fail, 5xx and C008 faults."""
    with simulator(
        "gongji",
        "--rsa-token",
        f"crash-token={DATA / 'test-key.pub.pem'}",
        "--pending-s",
        "0",
        "--run-s",
        "0.05",
        "--commit-fail-rate",
        "0.2",
        "--error-rate",
        "0.1",
        "--throttle-rate",
        "0.05",
        "--seed",
        "9",
    ) as url:
        yield url


def test_gongji_sees_one_create_per_task_name_across_kills(
    tmp_path: Path, gongji_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed requests, faults and kill -9: one create per task name, every row succeeded."""
    monkeypatch.setenv("GONGJI_TOKEN", "crash-token")
    rows = 200
    job = tmp_path / "job.json"
    job.write_text(
        '{"task_name": "{_name}", "points": 1, '
        '"resources": [{"gpu_name": "4090", "gpu_count": 1, "region": "chengde-p1"}], '
        '"job_support": {"timeout_sec": 600, "parallelism": 1, "mod_param": {"default": {}}}, '
        '"services": [{"service_name": "main", "service_image": "ubuntu:22.04", '
        '"env": [{"name": "I", "value": "{i}"}], '
        '"resource_weight": {"cpu_weight": 1, "mem_weight": 1, "gpu_weight": 1}}]}'
    )
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
name = "gjcrash"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "gongji"
url = "{gongji_service}"
private_key_file = "{DATA / "test-key-pkcs8.pem"}"
[limits]
submit_rate_per_s = 500
status_rate_per_s = 100
service_rate_per_s = 0
[retry]
base_s = 0.01
max_s = 0.2
attempts = 20
[track]
first_s = 0.1
max_s = 0.3
[job]
template_file = "job.json"
"""
    )

    crash_and_resume(config, rows, seed=4)

    assert_exactly_once(f"{gongji_service}/_sim/ledger", config, "gjcrash", rows)


def test_metrics_endpoint_serves_the_runs_counters(tmp_path: Path) -> None:
    """`--metrics-port 0` serves /metrics on 127.0.0.1; the contract's names are there."""
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "metrics"\n[sweep]\ngrid.i = {range = [0, 4]}\n[limits]\nmax_active = 4\n'
        '[job]\ncommand = "test {i} -lt 2 || exec sleep 30"\n'
    )
    proc = subprocess.Popen(
        [*BULK, "run", str(config), "--metrics-port", "0", "--progress-interval", "0.02"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    url = None
    text = ""
    for line in proc.stderr:  # ends when the process does
        if url is None and "metrics on " in line:
            url = line.rsplit(" ", 1)[-1].strip()
        m = DONE.search(line)
        if url and m and int(m.group(1)) >= 2:  # two quick jobs done, two still running
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()  # to the end: bulk reports the drain on stderr
    proc.stderr.close()
    code = proc.wait(timeout=60)

    assert "run the same command again to resume" in rest
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    assert 130 == code
    assert 'bulk_jobs_total{state="succeeded"} 2.0' in text
    assert "bulk_jobs_active 2.0" in text
    assert 'bulk_requests_total{endpoint="submit",outcome="ok"} 4.0' in text
    assert "bulk_rows_total 4.0" in text
    assert 'bulk_rate_limit{endpoint="submit"}' in text
