"""The local backend's own behaviour: env, cwd, logs, exit codes, timeouts, orphans."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import orjson
import pytest

from bulk._cli import main
from bulk._problems import Problems
from bulk.backends._procs import stat
from bulk.backends.base import JobStatus, Phase, Receipt, Submission
from bulk.backends.local import KIND, LocalBackend, LocalOptions, _write_pid_file
from bulk.errors import PermanentBackendError, RunRefusedError
from bulk.testing import wait_until


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401 - only probing that it is there
    except ImportError:
        return False
    return True


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(
            ("asyncio", {"use_uvloop": True}),
            id="uvloop",
            marks=pytest.mark.skipif(not _has_uvloop(), reason="uvloop is not installed"),
        ),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every test here runs on both loops the CLI may choose: the backend must not care."""
    return request.param


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    yield backend
    await backend.aclose()


async def finish(backend: LocalBackend, receipt: Receipt) -> JobStatus:
    async def status() -> JobStatus:
        return (await backend.status([receipt]))[receipt.remote_id]

    return await wait_until(status, lambda s: s.phase.terminal, what=f"job {receipt.name} ends")


async def gone(pid: int) -> bool:
    """Whether the process disappears (bounded wait: a killed child is reaped by init)."""

    async def ended() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return await wait_until(ended, what=f"process {pid} ends", polls=500)


def job(name: str, **body: object) -> Submission:
    return Submission(name, orjson.dumps(body))


async def running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has ended: only its exit status is left)."""

    def check() -> list[int]:
        procs = [stat(pid) for pid in pids]
        return [p.pid for p in procs if p is not None and p.alive]

    return await anyio.to_thread.run_sync(check)


async def until_file(path: Path) -> str:
    """The text of a file a job writes, once it is there (bounded wait)."""

    async def text() -> str:
        file = anyio.Path(path)
        return await file.read_text() if await file.exists() else ""

    return await wait_until(text, lambda s: s.endswith("\n"), what=f"{path} is written")


async def pids_in(path: Path, count: int) -> list[int]:
    """The ``count`` pids a job writes to ``path``, one a line (bounded wait)."""

    async def pids() -> list[int]:
        return [int(x) for x in (await until_file(path)).split()]

    return await wait_until(pids, lambda p: len(p) >= count, what=f"{path} gets {count} pids")


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


async def test_jobs_start_and_end_without_the_loops_subprocess_support(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are started with Popen (vfork) and their exits polled, never through the event
    loop's subprocess support (uvloop forks the whole process for each) or child watcher."""

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the event loop's subprocess support was used")

    monkeypatch.setattr(anyio, "open_process", refused)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refused)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "subprocess_exec", refused)
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    try:
        done = await backend.submit(job("w1", command="exit 3"))
        stopped = await backend.submit(job("w2", command=["sleep", "30"]))
        left = await backend.submit(job("w3", command="echo $$ > pid; exec sleep 30"))
        pid = int(await until_file(tmp_path / "pid"))

        assert JobStatus(Phase.FAILED, "exit code 3") == await finish(backend, done)
        await backend.stop(stopped)
        assert JobStatus(Phase.STOPPED, "stopped") == await finish(backend, stopped)
    finally:
        await backend.aclose()
    assert await gone(pid)
    assert JobStatus(Phase.MISSING) == (await backend.status([left]))["w3"]


async def test_a_pid_file_that_cannot_be_written_refuses_the_run(tmp_path: Path) -> None:
    """Without its pid file a crash could leave the job unfound: the run stops (rows kept),
    and the job, already started, is ended with the others when the backend closes."""
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    try:
        await backend.submit(job("p1", command="true"))  # past the dead run's pid files
        # Where p2's pid file goes, a link into a folder that is not there: open() fails.
        await anyio.Path(tmp_path / "pids" / "p2").symlink_to(tmp_path / "nowhere" / "p2")
        with pytest.raises(RunRefusedError, match=r"cannot write the job's pid file in .*pids"):
            await backend.submit(job("p2", command="echo $$ > pid; exec sleep 30"))
        pid = int(await until_file(tmp_path / "pid"))
    finally:
        await backend.aclose()
    assert await gone(pid)


async def test_orphan_of_a_dead_bulk_is_killed_on_lookup(
    local: LocalBackend, tmp_path: Path
) -> None:
    """A job left running by a killed bulk is ended by the look-up (SIGTERM), never adopted."""
    orphan = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(["sleep", "30"], start_new_session=True)
    )
    await anyio.Path(tmp_path / "pids").mkdir()
    await anyio.to_thread.run_sync(_write_pid_file, tmp_path / "pids" / "j5", orphan.pid)

    found = await local.lookup(job("j5", command="true"))
    code = await anyio.to_thread.run_sync(orphan.wait, 5)

    assert found is None
    assert -signal.SIGTERM == code
    assert not await anyio.Path(tmp_path / "pids" / "j5").exists()


async def test_stop_kills_a_job_of_a_dead_bulk(local: LocalBackend, tmp_path: Path) -> None:
    """`bulk stop` runs in a new process: it ends a dead run's job found by its pid file,
    with SIGKILL after the grace period when the job ignores SIGTERM."""
    orphan = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            ["sh", "-c", "trap '' TERM; echo > ready; exec sleep 30"],
            start_new_session=True,
            cwd=tmp_path,
        )
    )
    await until_file(tmp_path / "ready")
    await anyio.Path(tmp_path / "pids").mkdir()
    await anyio.to_thread.run_sync(_write_pid_file, tmp_path / "pids" / "j7", orphan.pid)

    await local.stop(Receipt("j7", "j7"))
    code = await anyio.to_thread.run_sync(orphan.wait, 5)

    assert -signal.SIGKILL == code


async def test_aclose_terminates_running_jobs(tmp_path: Path) -> None:
    """Closing the backend (bulk exiting) ends the jobs it started."""
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    await backend.submit(job("j6", command="echo $$ > pid; exec sleep 30"))
    pid = int(await until_file(tmp_path / "pid"))

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

    assert [p.field for p in problems.items] == [field]
    assert "NUL byte" in problems.items[0].message


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"command": " "}, "job.command", "is empty; give a shell command or an argv list"),
        ({"command": []}, "job.command", "is an empty list; give at least the program"),
        ({"command": ["echo", True]}, "job.command[1]", "argv items are strings or numbers"),
        ({"command": ["echo", [1]]}, "job.command[1]", "argv items are strings or numbers"),
        ({"command": "true", "env": {"1X": "v"}}, "job.env.1X", "is not a valid environment"),
        ({"command": "true", "env": {"X": None}}, "job.env.X", "values are strings, numbers"),
        ({"command": "true", "env": {"X": [1]}}, "job.env.X", "values are strings, numbers"),
    ],
)
def test_validation_refuses_bad_commands_and_env(
    body: dict[str, object], field: str, message: str
) -> None:
    """An empty command, an argv item or env value of the wrong type, a bad variable name."""
    problems = Problems()

    KIND.validate(body, problems)

    assert [p.field for p in problems.items] == [field]
    assert problems.items[0].message.startswith(message)


def test_validation_accepts_argv_numbers_and_env_scalars() -> None:
    problems = Problems()

    KIND.validate({"command": ["sleep", 1, 0.5], "env": {"A": "x", "B": 2, "C": True}}, problems)

    assert [] == problems.items


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


@pytest.mark.parametrize(
    "command",
    [
        "printf '%s|' {text} > out-{i}",
        'printf "%s|" {text} > "out-"{i}',
        'printf "%s|" "$(printf %s {text})" > out-{i}',
    ],
    ids=["bare", "beside-quotes", "in-substitution-in-double-quotes"],
)
def test_shell_syntax_in_cells_stays_literal(tmp_path: Path, command: str) -> None:
    """`$(...)`, backticks and `'; echo X; '` in a cell are printed, never run, in every
    form of command bulk accepts."""
    cells = ["$(echo INJ)", "`echo INJ`", "'; echo X; '", '"; echo Y; "']
    rows = "".join(f"{i},{orjson.dumps(c).decode()}\n" for i, c in enumerate(cells))
    (tmp_path / "cells.csv").write_text("i,text\n" + rows.replace('\\"', '""'))
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "quoting"\n[sweep]\nfiles = ["cells.csv"]\n'
        f"[job]\ncommand = {orjson.dumps(command).decode()}\n"
    )

    assert 0 == main(["run", str(tmp_path / "run.toml")])

    outputs = [(tmp_path / f"out-{i}").read_text() for i in range(len(cells))]
    assert [f"{c}|" for c in cells] == outputs


def test_a_placeholder_in_double_quotes_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`"{v}"` would let `$(...)` in a cell run: refused at config time, exit 2, nothing run."""
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "quoting"\n[sweep]\ngrid.v = ["$(touch ran)"]\n'
        '[job]\ncommand = "printf \'%s|\' \\"{v}\\" > out"\n'
    )

    assert 2 == main(["run", str(tmp_path / "run.toml")])

    err = capsys.readouterr().err
    assert "run.toml:" in err
    assert "job.command: {v} is inside double quotes" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "out").exists()


def test_raw_placeholders_paste_shell_text(tmp_path: Path) -> None:
    """`{var!raw}` is the explicit opt-out: the value is shell text, expanded by the shell."""
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "raw"\n[sweep]\ngrid.words = ["$GREETING | tr a-z A-Z"]\n'
        '[job]\ncommand = "echo {words!raw} > out"\nenv = {GREETING = "hello"}\n'
    )

    assert 0 == main(["run", str(tmp_path / "run.toml")])

    assert "HELLO\n" == (tmp_path / "out").read_text()


# -- whole process trees ------------------------------------------------------------------

# A child that ignores SIGTERM (SIG_IGN survives exec): only SIGKILL ends it.
STUBBORN = "(trap '' TERM; exec sleep 300) & echo $! >> children; "


async def test_timeout_ends_members_that_ignore_sigterm(
    local: LocalBackend, tmp_path: Path
) -> None:
    """Past timeout_s the leader dies of SIGTERM; its stubborn child gets SIGKILL after the
    grace period, and only then is the job reported ended."""
    receipt = await local.submit(job("t1", command=STUBBORN + "sleep 300", timeout_s=0.2))
    (child,) = await pids_in(tmp_path / "children", 1)

    status = await finish(local, receipt)

    assert JobStatus(Phase.FAILED, "timeout") == status
    assert [] == await running([child])


ESCAPES = {
    "group member": STUBBORN,
    "new session": "setsid sleep 300 & echo $! >> children; ",
    "double fork": "(setsid sh -c 'sleep 300 & echo $! >> children' &); ",
    "cleared environment": "env -i sleep 300 & echo $! >> children; ",
}


@pytest.mark.parametrize("escape", ESCAPES)
async def test_what_a_job_leaves_behind_is_ended_with_it(
    local: LocalBackend, tmp_path: Path, escape: str
) -> None:
    """A leader that exits 0 leaving processes behind: they are ended (SIGTERM, then
    SIGKILL), wherever they went, before the job is reported succeeded."""
    receipt = await local.submit(job("t2", command=ESCAPES[escape] + "exit 0"))
    (child,) = await pids_in(tmp_path / "children", 1)

    status = await finish(local, receipt)

    assert JobStatus(Phase.SUCCEEDED) == status
    assert [] == await running([child])


async def test_stop_ends_the_whole_tree(local: LocalBackend, tmp_path: Path) -> None:
    """`stop` reaches the stubborn child and the one in its own session too."""
    receipt = await local.submit(job("t3", command=STUBBORN + ESCAPES["new session"] + "sleep 300"))
    children = await pids_in(tmp_path / "children", 2)

    await local.stop(receipt)
    left = await running(children)  # stop returns once the tree is gone
    status = await finish(local, receipt)

    assert [] == left
    assert JobStatus(Phase.STOPPED, "stopped") == status


async def test_aclose_ends_whole_trees(tmp_path: Path) -> None:
    """Closing the backend (bulk stopping on Ctrl-C) ends every process of every job."""
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    await backend.submit(job("t4", command=STUBBORN + ESCAPES["double fork"] + "sleep 300"))
    children = await pids_in(tmp_path / "children", 2)

    await backend.aclose()

    assert [] == await running(children)


async def test_a_dead_runs_processes_are_ended_before_the_first_job_starts(
    tmp_path: Path,
) -> None:
    """After `kill -9` of bulk, its jobs' trees live on; the next backend on the run ends
    them all (by pid file, by environment, by session) before it starts anything."""
    run_dir = await anyio.Path(tmp_path).resolve()
    env = {**os.environ, "BULK_RUN_DIR": str(run_dir), "BULK_JOB": "old"}
    script = STUBBORN + ESCAPES["double fork"] + ESCAPES["cleared environment"] + "sleep 300"
    leader = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            ["sh", "-c", script], start_new_session=True, cwd=tmp_path, env=env
        )
    )
    old = [leader.pid, *await pids_in(tmp_path / "children", 3)]
    await anyio.Path(tmp_path / "pids").mkdir()
    await anyio.to_thread.run_sync(_write_pid_file, tmp_path / "pids" / "old", leader.pid)
    backend = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=0.2), run_dir=tmp_path)
    try:
        assert old == await running(old)

        receipt = await backend.submit(job("new", command="true"))

        assert [] == await running(old)
        assert JobStatus(Phase.SUCCEEDED) == await finish(backend, receipt)
    finally:
        await backend.aclose()
        await anyio.to_thread.run_sync(leader.wait, 5)


async def test_jobs_see_their_name_and_run_folder(local: LocalBackend, tmp_path: Path) -> None:
    """BULK_JOB and BULK_RUN_DIR are in every job's environment (bulk finds its processes
    by them); a job's env cannot change them."""
    receipt = await local.submit(
        job("t5", command='echo "$BULK_JOB $BULK_RUN_DIR"', env={"BULK_JOB": "hidden"})
    )
    await finish(local, receipt)

    text = await anyio.Path(tmp_path / "logs" / "t5.out").read_text()
    assert f"t5 {await anyio.Path(tmp_path).resolve()}\n" == text


def test_track_timeout_records_failed_only_once_the_tree_is_gone(tmp_path: Path) -> None:
    """`[track] timeout_s` (the engine stops the job, then records it failed): with
    max_active = 1 the next job never starts beside what is left of the timed-out one."""
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "ttimeout"\n[sweep]\ngrid.i = [0, 1]\n[limits]\nmax_active = 1\n'
        "[backend]\nkill_grace_s = 0.2\n[track]\ntimeout_s = 0.3\n"
        '[job]\ncommand = "for p in $(cat children 2>/dev/null); do '
        "test -d /proc/$p && echo {i}: $p >> overlaps; done; " + STUBBORN + 'sleep 300"\n'
    )

    assert 1 == main(["run", str(tmp_path / "run.toml")])

    assert not (tmp_path / "overlaps").exists(), (tmp_path / "overlaps").read_text()
    assert 2 == len((tmp_path / "children").read_text().split())


ENDS_ON_THE_LOOP = """
import anyio, orjson
from pathlib import Path
from bulk.backends.base import Phase, Submission
from bulk.backends.local import LocalBackend, LocalOptions

async def main():
    folder = Path.cwd()
    backend = LocalBackend(LocalOptions(base=folder, kill_grace_s=0.2), run_dir=folder)
    try:
        quick = await backend.submit(Submission("q1", orjson.dumps({"command": "true"})))
        slow = await backend.submit(Submission("q2", orjson.dumps({"command": ["sleep", "30"]})))
        await backend.status([slow])  # a running leader is no orphan
        trips, real = [], anyio.to_thread.run_sync

        async def counted(func, *args):
            trips.append(func.__qualname__)
            return await real(func, *args)

        anyio.to_thread.run_sync = counted
        for _ in range(5000):
            if (await backend.status([quick]))["q1"].phase is Phase.SUCCEEDED:
                break
            await anyio.sleep(0.002)
        else:
            raise SystemExit("q1 did not end")
        anyio.to_thread.run_sync = real
        print(len(trips), (folder / "pids" / "q1").exists(), (folder / "pids" / "q2").exists())
    finally:
        await backend.aclose()

anyio.run(main)
"""


def test_a_job_that_leaves_nothing_ends_without_a_worker_thread(
    tmp_path: Path, bounded_python: Callable[[str, Path], subprocess.CompletedProcess[str]]
) -> None:
    """The common end of a job (its leader exited, nothing re-parented to bulk) is learnt
    on the loop: no trip to a worker thread per job, and its pid file is gone. (In a fresh
    process: here, other tests' leftovers may be re-parented to pytest at any time.)"""
    done = bounded_python(ENDS_ON_THE_LOOP, tmp_path)
    assert "" == done.stderr
    assert "0 False True" == done.stdout.strip()


async def test_log_and_pid_folders_removed_mid_run_are_made_again(
    local: LocalBackend, tmp_path: Path
) -> None:
    """The folders are made when missing, not checked for every job: removing them between
    jobs does not stop the next one."""
    assert JobStatus(Phase.SUCCEEDED) == await finish(
        local, await local.submit(job("m1", command="true"))
    )
    for folder in ("logs", "pids"):
        await anyio.to_thread.run_sync(shutil.rmtree, tmp_path / folder)
    receipt = await local.submit(job("m2", command="echo made"))
    assert await anyio.Path(tmp_path / "pids" / "m2").exists()
    assert JobStatus(Phase.SUCCEEDED) == await finish(local, receipt)
    assert "made\n" == await anyio.Path(tmp_path / "logs" / "m2.out").read_text()
