"""The local backend's own behaviour: env, cwd, logs, exit codes, timeouts, orphans."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
import pytest

from bulk.backends.base import JobStatus, Phase, Receipt, Submission
from bulk.backends.local import LocalBackend, LocalOptions, _write_pid_file
from bulk.errors import PermanentBackendError


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    yield backend
    await backend.aclose()


async def finish(backend: LocalBackend, receipt: Receipt) -> JobStatus:
    for _ in range(1000):  # bounded: a job that never ends fails the test
        status = (await backend.status([receipt]))[receipt.remote_id]
        if status.phase.terminal:
            return status
        await anyio.sleep(0.01)
    pytest.fail("job did not end")


async def gone(pid: int) -> bool:
    """Whether the process disappears (bounded wait: a killed child is reaped by init)."""
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await anyio.sleep(0.01)
    return False


def job(name: str, **body: object) -> Submission:
    return Submission(name, orjson.dumps(body))


async def test_env_cwd_and_logs(local: LocalBackend, tmp_path: Path) -> None:
    """A job runs in its cwd with its env added; its output lands in logs/<name>.out."""
    await anyio.Path(tmp_path / "work").mkdir()
    receipt = await local.submit(
        job(
            "j1",
            command="echo $GREETING from $(basename $PWD); echo oops >&2",
            env={"GREETING": "hello", "N": 3},
            cwd="work",
        )
    )

    status = await finish(local, receipt)

    assert Phase.SUCCEEDED == status.phase
    log = await anyio.Path(tmp_path / "logs" / "j1.out").read_text()
    err = await anyio.Path(tmp_path / "logs" / "j1.err").read_text()
    assert ("hello from work\n", "oops\n") == (log, err)


async def test_argv_commands_and_exit_codes(local: LocalBackend) -> None:
    """An argv list runs without a shell; a non-zero exit is a failure with its code."""
    receipt = await local.submit(job("j2", command=["sh", "-c", "exit 7"]))

    status = await finish(local, receipt)

    assert JobStatus(Phase.FAILED, "exit code 7") == status


async def test_timeout_kills_the_process_group(local: LocalBackend, tmp_path: Path) -> None:
    """Past timeout_s the whole group is killed (children too) and the job fails: timeout."""
    receipt = await local.submit(
        job("j3", command="sleep 30 & echo $! > child; wait", timeout_s=0.2)
    )

    status = await finish(local, receipt)

    assert JobStatus(Phase.FAILED, "timeout") == status
    child = int(await anyio.Path(tmp_path / "child").read_text())
    assert await gone(child)


async def test_missing_program_is_permanent(local: LocalBackend) -> None:
    """A program that does not exist cannot be retried into existence."""
    with pytest.raises(PermanentBackendError, match="cannot start"):
        await local.submit(job("j4", command=["/no/such/program"]))


async def test_orphan_of_a_dead_bulk_is_killed_on_lookup(
    local: LocalBackend, tmp_path: Path
) -> None:
    """A job left running by a killed bulk is killed by the look-up, never adopted."""
    orphan = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(["sleep", "30"], start_new_session=True)
    )
    await anyio.Path(tmp_path / "pids").mkdir()
    await anyio.to_thread.run_sync(_write_pid_file, tmp_path / "pids" / "j5", orphan.pid)

    found = await local.lookup(job("j5", command="true"))
    code = await anyio.to_thread.run_sync(orphan.wait, 5)

    assert found is None
    assert -signal.SIGKILL == code
    assert not await anyio.Path(tmp_path / "pids" / "j5").exists()


async def test_stop_kills_a_job_of_a_dead_bulk(local: LocalBackend, tmp_path: Path) -> None:
    """`bulk stop` runs in a new process: it kills a dead run's job through its pid file."""
    orphan = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(["sleep", "30"], start_new_session=True)
    )
    await anyio.Path(tmp_path / "pids").mkdir()
    await anyio.to_thread.run_sync(_write_pid_file, tmp_path / "pids" / "j7", orphan.pid)

    await local.stop(Receipt("j7", "j7"))
    code = await anyio.to_thread.run_sync(orphan.wait, 5)

    assert -signal.SIGKILL == code


async def test_aclose_terminates_running_jobs(tmp_path: Path) -> None:
    """Closing the backend (bulk exiting) ends the jobs it started."""
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    await backend.submit(job("j6", command="echo $$ > pid; exec sleep 30"))
    pid_file = anyio.Path(tmp_path / "pid")
    for _ in range(500):
        if await pid_file.exists() and (await pid_file.read_text()).strip():
            break
        await anyio.sleep(0.01)
    pid = int(await pid_file.read_text())

    await backend.aclose()

    assert await gone(pid)
