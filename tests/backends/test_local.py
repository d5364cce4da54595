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
from bulk.backends.local import KIND, LocalBackend, LocalOptions, _write_pid_file
from bulk.cli import main
from bulk.errors import PermanentBackendError, RunRefusedError
from bulk.validate import Problems


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


async def test_missing_cwd_is_reported_as_the_cwd(local: LocalBackend) -> None:
    """A cwd that does not exist is named as the problem, not the program."""
    with pytest.raises(PermanentBackendError) as caught:
        await local.submit(job("j8", command="true", cwd="no-such-dir"))

    message = str(caught.value)
    assert "cwd" in message
    assert "no-such-dir" in message
    assert "No such file or directory" in message
    assert "'/bin/sh'" not in message


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "no such program"),
        ("directory", "is a directory, not a program"),
        ("not_executable", "is not executable"),
        ("no_interpreter", "is not a program this system can run"),
    ],
)
async def test_program_problems_say_what_is_wrong(
    local: LocalBackend, tmp_path: Path, setup: str, expected: str
) -> None:
    """A missing, non-executable or directory program is reported as exactly that."""
    program = tmp_path / "prog"
    if setup == "directory":
        await anyio.Path(program).mkdir()
    elif setup == "not_executable":
        await anyio.Path(program).write_text("#!/bin/sh\ntrue\n")
    elif setup == "no_interpreter":
        await anyio.Path(program).write_text("true\n")
        await anyio.Path(program).chmod(0o755)

    with pytest.raises(PermanentBackendError, match=expected) as caught:
        await local.submit(job("j9", command=[str(program)]))

    assert str(program) in str(caught.value)


async def test_a_missing_shell_refuses_the_run(tmp_path: Path) -> None:
    """Every string command needs the shell: a missing one stops the run, rows unsent."""
    backend = LocalBackend(LocalOptions(shell="/no/such/shell", base=tmp_path), run_dir=tmp_path)
    try:
        with pytest.raises(RunRefusedError, match=r"shell '/no/such/shell': no such program"):
            await backend.submit(job("j10", command="true"))
    finally:
        await backend.aclose()


async def test_a_nul_byte_is_a_permanent_error_not_a_crash(local: LocalBackend) -> None:
    """A value the OS cannot take (a NUL byte) fails that job; it does not crash bulk."""
    with pytest.raises(PermanentBackendError, match="NUL"):
        await local.submit(job("j11", command=["echo", "a\x00b"]))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": "echo a\x00b"}, "job.command"),
        ({"command": ["echo", "a\x00b"]}, "job.command[1]"),
        ({"command": "true", "env": {"X": "a\x00b"}}, "job.env.X"),
        ({"command": "true", "cwd": "a\x00b"}, "job.cwd"),
    ],
)
def test_validation_refuses_nul_bytes(body: dict[str, object], field: str) -> None:
    """What the OS cannot pass to a process is refused before anything is sent."""
    problems = Problems()

    KIND.validate(body, problems)

    assert [(field, "contains a NUL byte, which cannot be passed to a process")] == problems.items


def test_shell_commands_get_values_quoted(tmp_path: Path) -> None:
    """A cell with `;` or a quote stays one argument of a string command: nothing injected."""
    (tmp_path / "cells.csv").write_text('i,text\n0,a; echo INJECTED\n1,it\'s\n2,"a  b"\n')
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "quoting"\n[sweep]\nfiles = ["cells.csv"]\n'
        "[job]\ncommand = \"printf '%s|' {text} > out-{i}\"\n"
    )

    assert 0 == main(["run", str(tmp_path / "run.toml")])

    outputs = [(tmp_path / f"out-{i}").read_text() for i in range(3)]
    assert ["a; echo INJECTED|", "it's|", "a  b|"] == outputs


def test_raw_placeholders_paste_shell_text(tmp_path: Path) -> None:
    """`{var!raw}` is the explicit opt-out: the value is shell text, expanded by the shell."""
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "raw"\n[sweep]\ngrid.words = ["$GREETING | tr a-z A-Z"]\n'
        '[job]\ncommand = "echo {words!raw} > out"\nenv = {GREETING = "hello"}\n'
    )

    assert 0 == main(["run", str(tmp_path / "run.toml")])

    assert "HELLO\n" == (tmp_path / "out").read_text()
