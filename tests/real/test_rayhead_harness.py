"""The real-head harness without a head (no Ray needed): how bulk._rayhead stops a head (on a
stand-in process tree: by PID, the whole session, loudly when a process cannot be stopped),
and what the ``real_ray_head`` fixture does where Ray is missing (skip; fail under CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk import _rayhead
from bulk._rayhead import RayHeadError, _head_pids, _record, _stop, left_behind, main
from bulk.testing import wait_until_sync

# A leader that ignores nothing, two children that ignore SIGTERM, and a grandchild that
# leaves the session (setsid) and ignores SIGTERM too: what a head's stragglers look like.
TREE = """
import os, signal, subprocess, sys, time
sub = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
escape = (
    "import os, subprocess, sys, time; os.setsid(); "
    "subprocess.Popen([sys.executable, '-c', %r]); time.sleep(600)" % sub
)
kids = [subprocess.Popen([sys.executable, "-c", sub]) for _ in range(2)]
kids.append(subprocess.Popen([sys.executable, "-c", escape]))
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """The stand-in head; whatever of it a failed test left is SIGKILLed by PID."""
    proc = _tree()
    pids = _head_pids(proc.pid)
    yield proc
    for pid in _rayhead._alive(pids, proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _tree() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline() == b"ready\n"
    wait_until_sync(lambda: len(_head_pids(proc.pid)), lambda n: n == 5, what="5 processes")
    return proc


def test_stop_ends_every_process_of_the_head_even_those_that_ignore_sigterm(
    monkeypatch: pytest.MonkeyPatch, tree: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setattr(_rayhead, "STOP_GRACE_S", 0.5)
    proc = tree
    pids = _head_pids(proc.pid)
    assert proc.pid in pids
    assert len(pids) == 5  # the escaped grandchild is found as well
    _stop(proc, pids)
    assert proc.returncode == -signal.SIGTERM
    assert not _rayhead._alive(pids, proc.pid)


def test_stop_names_the_processes_it_could_not_end(
    monkeypatch: pytest.MonkeyPatch, tree: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setattr(_rayhead, "STOP_GRACE_S", 0.1)
    monkeypatch.setattr(_rayhead, "KILL_GRACE_S", 0.1)
    monkeypatch.setattr(_rayhead, "_kill", lambda pid: None)  # SIGKILL never lands
    pids = _head_pids(tree.pid)
    with pytest.raises(RayHeadError, match="processes left after SIGKILL") as caught:
        _stop(tree, pids)
    assert str(sorted(pids - {tree.pid})) in str(caught.value)


def _run_fixture_without_ray(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest, in a subprocess, on one test using ``real_ray_head`` where Ray is missing."""
    (tmp_path / "conftest.py").write_text(
        "import bulk._rayhead\nbulk._rayhead.ray_cli = lambda: None  # no Ray here\n"
    )
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(Path(__file__).parent.parent / "conftest.py", real / "conftest.py")
    (real / "test_uses_head.py").write_text("def test_it(real_ray_head):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(real)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_without_ray_the_real_head_tests_skip_and_say_why(tmp_path: Path) -> None:
    done = _run_fixture_without_ray(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "Ray is not installed" in done.stdout


def test_without_ray_under_ci_the_real_head_tests_fail(tmp_path: Path) -> None:
    done = _run_fixture_without_ray(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout
    assert "CI is set: Ray is not installed" in done.stdout


def test_ci_finds_and_kills_by_pid_what_a_stop_left(
    tree: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """``python -m bulk._rayhead PIDS`` (run by .ci/run after the tests): nothing left is
    exit 0; a recorded process still alive is named, SIGKILLed and exit 1."""
    pids = _head_pids(tree.pid)
    pid_file = tmp_path / "pids"
    _record(pid_file, pids)
    assert sorted(left_behind(pid_file)) == sorted(pids)
    assert main([str(pid_file)]) == 1
    wait_until_sync(lambda: left_behind(pid_file), lambda left: not left, what="all killed")
    assert main([str(pid_file)]) == 0


def test_a_later_process_with_a_recorded_pid_is_not_taken_for_the_head(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    pid_file.write_text(f"{os.getpid()} 1\n")  # this process, but not started at tick 1
    assert left_behind(pid_file) == []
