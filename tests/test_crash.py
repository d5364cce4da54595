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

from bulk._journal import Journal
from bulk.testing import simulator, wait_until_sync

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


def lines_while(proc: subprocess.Popen[bytes], path: Path) -> list[str]:
    """The lines of ``path`` so far (none while it is missing); fails once ``proc`` ended."""
    assert proc.poll() is None, "bulk ended before its jobs started"
    return path.read_text().splitlines() if path.exists() else []


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


def gongji_config(folder: Path, url: str, run: str, rows: int) -> Path:
    """A run of `rows` signed Gongji jobs against `url`, with fast retries and tracking."""
    job = folder / "job.json"
    job.write_text(
        '{"task_name": "{_name}", "points": 1, '
        '"resources": [{"gpu_name": "4090", "gpu_count": 1, "region": "chengde-p1"}], '
        '"job_support": {"timeout_sec": 600, "parallelism": 1, "mod_param": {"default": {}}}, '
        '"services": [{"service_name": "main", "service_image": "ubuntu:22.04", '
        '"env": [{"name": "I", "value": "{i}"}], '
        '"resource_weight": {"cpu_weight": 1, "mem_weight": 1, "gpu_weight": 1}}]}'
    )
    config = folder / "run.toml"
    config.write_text(
        f"""
[run]
name = "{run}"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "gongji"
url = "{url}"
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
    return config


def test_gongji_sees_one_create_per_task_name_across_kills(
    tmp_path: Path, gongji_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed requests, faults and kill -9: one create per task name, every row succeeded."""
    monkeypatch.setenv("GONGJI_TOKEN", "crash-token")
    rows = 200
    config = gongji_config(tmp_path, gongji_service, "gjcrash", rows)

    crash_and_resume(config, rows, seed=4)

    assert_exactly_once(f"{gongji_service}/_sim/ledger", config, "gjcrash", rows)


def test_gongji_wal_lost_after_kill_9_creates_each_task_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9, then the -wal deleted: the journal forgets 100+ sends; none is sent twice.

    Gongji accepts a second task with the same name, so the resume looks the first pending
    rows up by name (until a window of misses) instead of trusting "pending". Commit-then-
    fail faults only: throttles and 5xx would slow it down and are tested above.
    """
    monkeypatch.setenv("GONGJI_TOKEN", "crash-token")
    rows = 300
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
        "--seed",
        "9",
    ) as url:
        config = gongji_config(tmp_path, url, "gjwal", rows)

        assert -signal.SIGKILL == run_and_kill(config, 100)
        journal_path = tmp_path / ".bulk" / "gjwal" / "journal.sqlite"
        journal_path.with_name("journal.sqlite-wal").unlink()
        with Journal.open(journal_path) as journal:
            forgotten = journal.counts()

        assert {"pending": rows} == forgotten  # every record of the killed run was in the WAL
        assert 0 == run_and_kill(config, None)
        assert_exactly_once(f"{url}/_sim/ledger", config, "gjwal", rows)


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


# A local job that checks, as it starts, that no process of a dead run still runs (an
# "overlap"), and leaves two processes behind: one that ignores SIGTERM, one in a session of
# its own. It records its processes, as "pid start-time" lines, for the test to check.
JOB = """
import os, pathlib, subprocess, sys, time

row, here = sys.argv[1], pathlib.Path.cwd()


def start_time(pid):
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


old = here / "old-procs"
for line in (old.read_text().splitlines() if old.exists() else []):
    pid, start = line.split()
    if start_time(int(pid)) == start:
        with open(here / "overlaps", "a") as f:
            f.write(f"row {row} started beside {pid}\\n")
stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 300"])
escaped = subprocess.Popen(["sleep", "300"], start_new_session=True)
with open(here / "procs", "a") as f:
    f.write("".join(f"{p} {start_time(p)}\\n" for p in (os.getpid(), stubborn.pid, escaped.pid)))
time.sleep(float((here / "run_s").read_text()))
with open(here / "done", "a") as f:
    f.write(f"{row}\\n")
"""


def still_running(procs: list[str]) -> list[str]:
    """Those of the "pid start-time" lines whose process still runs (not a zombie)."""
    out = []
    for line in procs:
        pid, start = line.split()
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if fields[0] not in ("Z", "X") and fields[19] == start:
            out.append(line)
    return out


def test_resume_after_kill_9_ends_the_dead_runs_jobs_first(tmp_path: Path) -> None:
    """`kill -9` of bulk leaves its jobs' trees running; the resumed bulk ends every one of
    their processes before its first job starts, so no row ever runs twice at once, and
    nothing of either run is left when it is done."""
    rows = 8
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "run_s").write_text("300")  # the first run's jobs run until bulk dies
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nname = "orphans"\n[sweep]\ngrid.row = {{range = [0, {rows}]}}\n'
        f"[backend]\nkill_grace_s = 0.2\n[limits]\nmax_active = 4\n"
        f'[job]\ncommand = ["{sys.executable}", "job.py", "{{row}}"]\n'
    )
    procs = tmp_path / "procs"
    proc = subprocess.Popen([*BULK, "run", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_until_sync(
            lambda: lines_while(proc, procs),
            lambda lines: len(lines) >= 12,
            what="4 jobs start",
            polls=3000,  # 60 s: 4 jobs start in well under a minute
            interval_s=0.02,
        )
    finally:
        proc.kill()
        proc.wait(timeout=60)
    old = procs.read_text().splitlines()
    assert 12 == len(still_running(old)), "the dead run's processes live on"
    procs.rename(tmp_path / "old-procs")
    (tmp_path / "run_s").write_text("0.1")

    assert 0 == run_and_kill(config, None)

    assert not (tmp_path / "overlaps").exists(), (tmp_path / "overlaps").read_text()
    assert [] == still_running(old)
    assert [] == still_running(procs.read_text().splitlines())
    assert list(range(rows)) == sorted(int(r) for r in (tmp_path / "done").read_text().split())
    assert [(i, "succeeded") for i in range(rows)] == journal_states(config, "orphans")


CTRL_C_JOB = """
test -e go && exit 0
echo $$ $(cut -d' ' -f22 /proc/$$/stat) >> pids
sh -c 'trap "" TERM; echo $$ $(cut -d" " -f22 /proc/$$/stat) >> pids; exec sleep 300' &
exec sleep 300
"""


def test_ctrl_c_records_the_local_jobs_it_ended(tmp_path: Path) -> None:
    """Ctrl-C ends the running local jobs, children that ignore SIGTERM too; the journal and
    `bulk status` say they are pending again (and why), not running; a rerun finishes."""
    (tmp_path / "job.sh").write_text(CTRL_C_JOB)  # records "pid start-time" of 2 processes
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "ctrlc"\n[sweep]\ngrid.i = {range = [0, 8]}\n[limits]\nmax_active = 4\n'
        '[backend]\nkill_grace_s = 0.2\n[job]\ncommand = ["sh", "job.sh", "{i}"]\n'
    )
    pids = tmp_path / "pids"
    proc = subprocess.Popen([*BULK, "run", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_until_sync(
            lambda: lines_while(proc, pids),
            lambda lines: len(lines) >= 8,
            what="4 jobs start",
            polls=3000,  # 60 s: 4 jobs start in well under a minute
            interval_s=0.02,
        )
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    status = subprocess.run(
        [*BULK, "status", str(config), "--json"], capture_output=True, text=True, check=True
    )
    with Journal.open(tmp_path / ".bulk" / "ctrlc" / "journal.sqlite") as journal:
        rows = [(j.state.value, j.error) for j in journal.iter_jobs()]

    assert 130 == code
    assert {"pending": 8} == {k: v for k, v in json.loads(status.stdout)["counts"].items() if v}
    assert 4 == rows.count(("pending", "interrupted: killed by bulk, runs again on resume"))
    assert [] == still_running(pids.read_text().splitlines())
    (tmp_path / "go").touch()
    assert 0 == run_and_kill(config, None)


def ray_config(folder: Path, url: str, run: str, rows: int) -> Path:
    """A run of `rows` trivial Ray jobs against `url` (delete_finished on, the default)."""
    config = folder / "run.toml"
    config.write_text(
        f"""
[run]
name = "{run}"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "ray"
url = "{url}"
[retry]
base_s = 0.01
max_s = 0.2
attempts = 20
[track]
first_s = 0.05
max_s = 0.2
[job]
entrypoint = "echo {{i}}"
"""
    )
    return config


def test_ray_sees_one_create_per_submission_id_across_kills(tmp_path: Path) -> None:
    """20 % commit-then-fail creates, 5xx, kill -9 at random points, each ended job
    deleted from the head: one create per submission id, every row succeeded."""
    rows = 150
    with simulator(
        "ray",
        "--pending-s",
        "0",
        "--run-s",
        "0.05",
        "--commit-fail-rate",
        "0.2",
        "--error-rate",
        "0.05",
        "--seed",
        "5",
    ) as url:
        config = ray_config(tmp_path, url, "raycrash", rows)

        crash_and_resume(config, rows, seed=6)

        assert_exactly_once(f"{url}/_sim/ledger", config, "raycrash", rows)


# `bulk run` whose first delete_finished DELETE is replaced by a SIGKILL of itself, just
# before the request (the end is journaled, the job still on the head) or just after it.
_KILL_AT_DELETE = """
import os, signal, sys
from bulk.backends.ray import DeletingRayBackend
from bulk._cli import main
original = DeletingRayBackend.delete_ended
async def delete_ended(self, job):
    if sys.argv[2] == "after":
        await original(self, job)
    os.kill(os.getpid(), signal.SIGKILL)
DeletingRayBackend.delete_ended = delete_ended
sys.exit(main(["run", sys.argv[1]]))
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_ray_kill_9_around_a_delete_sends_nothing_twice(tmp_path: Path, when: str) -> None:
    """kill -9 between a job's end being journaled and its DELETE (or right after the
    DELETE): the resume never polls, looks up or sends that job again."""
    rows = 20
    with simulator("ray", "--pending-s", "0", "--run-s", "0", "--commit-fail-rate", "0.2") as url:
        config = ray_config(tmp_path, url, f"raydel-{when}", rows)
        killed = subprocess.run(
            [sys.executable, "-c", _KILL_AT_DELETE, str(config), when],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=120,
        )
        assert -signal.SIGKILL == killed.returncode
        assert 0 == run_and_kill(config, None)

        assert_exactly_once(f"{url}/_sim/ledger", config, f"raydel-{when}", rows)
