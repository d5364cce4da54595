"""A loopback-only Ray head for the real-head tests, the Ray benchmarks and CI.

Started with the recipe verified in ``shared/api/ray.md`` §1.2: ``ray start --head --block``
as the leader of a session of its own, every listener on 127.0.0.1 (the loopback node IP needs
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` *and* ``--node-ip-address=127.0.0.1``), every fixed
port one the OS chose, usage stats off, auth mode explicit (``disabled``: a token file in
``~/.ray`` would otherwise turn token auth on), a short ``RAY_JOB_START_TIMEOUT_SECONDS`` (a job
that cannot be scheduled fails instead of pending for 15 minutes), and temp and run folders of
its own. It is ready once a real probe job has run to SUCCEEDED, and it is stopped by PID
(never ``ray stop``, which kills every Ray-looking process on the machine): SIGTERM to the head,
then SIGKILL to whatever of its session and descendants is left, and the stop fails if any
process of the head outlives that.

Standard library only: it runs where Ray is installed and bulk's test extra is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RayHead",
    "RayHeadError",
    "RayUnavailableError",
    "left_behind",
    "main",
    "ray_cli",
    "ray_head",
]

# The ports `ray start` would otherwise take from fixed defaults (6379, 8265, 10001, 52365,
# ...): given OS-chosen free ones so that two heads (two engineers, two CI jobs) can coexist.
_PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
)
STOP_GRACE_S = 30.0  # SIGTERM took 3.3 s idle (api/ray.md §1.2); ten times that under load
KILL_GRACE_S = 10.0  # after SIGKILL: only the kernel's own time to tear processes down
_POLL_S = 0.25


class RayHeadError(RuntimeError):
    """The head did not start, did not become ready, or left processes behind."""


class RayUnavailableError(RayHeadError):
    """Ray is not installed next to this interpreter (``pip install -e '.[ray]'``)."""


@dataclass(frozen=True)
class RayHead:
    """A running head.

    Attributes:
        url: the dashboard's base URL (the Jobs REST API), ``http://127.0.0.1:PORT``.
        gcs_address: ``127.0.0.1:PORT`` of the GCS (``RAY_ADDRESS`` for drivers).
        pid: the ``ray start --block`` process; it leads its own session (PID = SID).
        env: the environment the head runs in; the ``ray`` CLI needs the same one.
        run_dir: the head's working directory (jobs without a ``working_dir`` run there).
        log: the head's combined stdout and stderr.
    """

    url: str
    gcs_address: str
    pid: int
    env: Mapping[str, str]
    run_dir: Path
    log: Path


def ray_cli() -> Path | None:
    """The ``ray`` command installed next to this interpreter, or None."""
    path = Path(sys.executable).parent / "ray"
    return path if path.is_file() and os.access(path, os.X_OK) else None


@contextlib.contextmanager
def ray_head(
    *,
    num_cpus: int = 2,
    job_start_timeout_s: int = 60,
    ready_timeout_s: float = 180.0,
    pid_file: Path | None = None,
) -> Iterator[RayHead]:
    """Start a loopback-only head, wait until a probe job has run, yield it, stop it by PID.

    Args:
        num_cpus: CPUs the head offers to jobs.
        job_start_timeout_s: ``RAY_JOB_START_TIMEOUT_SECONDS``: a job pending longer fails.
        ready_timeout_s: how long start-up may take (6–7 s idle; much more on a loaded box).
        pid_file: where to append the PID of every process of the head once it is ready, so
            that a caller outside this process (CI) can check none is left.

    Raises:
        RayUnavailableError: Ray is not installed next to this interpreter.
        RayHeadError: the head did not become ready in time (the message ends with its log),
            or a process of it could not be stopped.
    """
    ray = ray_cli()
    if ray is None:
        msg = f"Ray is not installed next to {sys.executable} (pip install -e '.[ray]')"
        raise RayUnavailableError(msg)
    # Ray's own start-up can time out on a loaded machine ("The current node timed out
    # during startup": its raylet missed a deadline) before anything of ours runs: once,
    # such a head is stopped and another started on fresh ports.
    for last in (False, True):
        try:
            with _one_head(ray, num_cpus, job_start_timeout_s, ready_timeout_s, pid_file) as head:
                yield head
                return
        except _StartTimedOutError:
            if last:
                raise


class _StartTimedOutError(RayHeadError):
    """``ray start`` gave up on its own node's start-up (worth one more try)."""


@contextlib.contextmanager
def _one_head(
    ray: Path,
    num_cpus: int,
    job_start_timeout_s: int,
    ready_timeout_s: float,
    pid_file: Path | None,
) -> Iterator[RayHead]:
    run_dir = Path(tempfile.mkdtemp(prefix="bulk-ray-run-"))
    # Short: the head's unix sockets live under it (sun_path holds 107 bytes).
    ray_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    ports = _free_ports(len(_PORT_FLAGS))
    env = _head_env(ray.parent, job_start_timeout_s)
    log = run_dir / "ray-head.log"
    argv = [
        str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={num_cpus}",
        "--disable-usage-stats", f"--temp-dir={ray_tmp}",
        *(f"{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports, strict=True)),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - the ray CLI of this venv, no shell
            argv,
            cwd=run_dir,  # jobs' cwd: must not hold a `ray/` folder (it would shadow Ray)
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: PID = PGID = SID, the head's processes share it
        )
    head = RayHead(
        url=f"http://127.0.0.1:{ports[1]}",
        gcs_address=f"127.0.0.1:{ports[0]}",
        pid=proc.pid,
        env=env,
        run_dir=run_dir,
        log=log,
    )
    seen: set[int] = set()
    try:
        try:
            _wait_ready(head, proc, time.monotonic() + ready_timeout_s)
        except RayHeadError as exc:
            if proc.poll() is not None and _START_TIMED_OUT in str(exc):
                raise _StartTimedOutError(str(exc)) from exc
            raise
        seen |= _head_pids(proc.pid)
        if pid_file is not None:
            _record(pid_file, seen | {proc.pid})
        yield head
    finally:
        seen |= _head_pids(proc.pid)  # with the workers and job supervisors started since
        if pid_file is not None:
            _record(pid_file, seen)
        try:
            _stop(proc, seen)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
            shutil.rmtree(run_dir, ignore_errors=True)


_START_TIMED_OUT = "timed out during startup"


def _record(pid_file: Path, pids: set[int]) -> None:
    """Append ``PID START`` lines (the start time tells a later process of the PID apart)."""
    lines = [f"{pid} {st[3]}\n" for pid in sorted(pids) if (st := _stat(pid))]
    with pid_file.open("a") as f:
        f.writelines(lines)


def left_behind(pid_file: Path) -> list[int]:
    """The processes recorded in ``pid_file`` (by :func:`ray_head`) that are still alive:
    same PID, same start time, not a zombie."""
    left = []
    for line in pid_file.read_text().splitlines():
        pid, start = (int(f) for f in line.split())
        st = _stat(pid)
        if st is not None and st[3] == start and st[2] != "Z":
            left.append(pid)
    return left


def main(argv: list[str]) -> int:
    """``python -m bulk._rayhead PID_FILE``: for CI, after the tests. Exit 0 when no process
    recorded there is left; otherwise name them, SIGKILL them (by PID) and exit 1."""
    left = left_behind(Path(argv[0]))
    for pid in left:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        print(f"Ray process left behind: {pid} {cmdline[:200]}", file=sys.stderr)  # noqa: T201
        _kill(pid)
    return 1 if left else 0


def _head_env(bin_dir: Path, job_start_timeout_s: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",  # no phone-home
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # loopback node IP: every listener on 127.0.0.1
        RAY_AUTH_MODE="disabled",  # explicit: a ~/.ray token file would turn token auth on
        RAY_JOB_START_TIMEOUT_SECONDS=str(job_start_timeout_s),
        # Jobs inherit this PATH: `python` in an entrypoint is this venv's, which has Ray.
        PATH=os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)]),
    )
    return env


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports the OS picks on 127.0.0.1 (all held open until all chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _wait_ready(head: RayHead, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll until ``/api/version`` answers, then until a probe job is accepted and succeeds
    (the job agent lags behind the HTTP server; a run proves jobs find Python and Ray)."""
    probe = f"bulk-probe-{head.pid}"
    body = {"entrypoint": "python -c 'import ray'", "submission_id": probe}
    steps: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("the dashboard answers", lambda: _answers(head.url, "GET", "/api/version")),
        ("the probe job is accepted", lambda: _submitted(head.url, body)),
        ("the probe job succeeds", lambda: _probe_done(head.url, probe)),
    )
    for what, ready in steps:
        while not ready():
            if proc.poll() is not None:
                _fail(head, f"ray start exited with {proc.returncode} before {what}")
            if time.monotonic() > deadline:
                _fail(head, f"not ready: waited in vain for {what}")
            time.sleep(_POLL_S)
    _call(head.url, "DELETE", f"/api/jobs/{probe}")  # keep the head's job list empty


def _answers(url: str, method: str, path: str) -> bool:
    try:
        return _call(url, method, path) is not None
    except _HttpError:  # routes not up yet
        return False


def _submitted(url: str, body: Mapping[str, object]) -> bool:
    try:
        return _call(url, "POST", "/api/jobs/", body) is not None
    except _HttpError as e:  # a retried probe the head had already taken is accepted
        return "already exists" in e.text


def _probe_done(url: str, probe: str) -> bool:
    try:
        job = _call(url, "GET", f"/api/jobs/{probe}")
    except _HttpError:
        return False
    if not isinstance(job, dict):
        return False
    if job.get("status") in {"FAILED", "STOPPED"}:
        msg = f"the probe job {job['status']}: {job.get('message')}"
        raise RayHeadError(msg)
    return job.get("status") == "SUCCEEDED"


class _HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.text = text


def _call(url: str, method: str, path: str, body: Mapping[str, object] | None = None) -> object:
    """One JSON request; its decoded answer, or None when the head is not answering yet."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        raise _HttpError(e.code, e.read().decode(errors="replace")) from None
    except (OSError, ValueError):  # refused, reset, timed out, half an answer
        return None


def _fail(head: RayHead, what: str) -> None:
    tail = head.log.read_text(errors="replace")[-3000:] if head.log.exists() else ""
    msg = f"Ray head at {head.url}: {what}; its log ends:\n{tail}"
    raise RayHeadError(msg)


def _stat(pid: int) -> tuple[int, int, str, int] | None:
    """``(parent pid, session id, state, start time)`` of a process, or None once it is gone
    (the start time, in clock ticks since boot, tells a process from a later one of its PID)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return int(fields[1]), int(fields[3]), fields[0], int(fields[19])


def _head_pids(leader: int) -> set[int]:
    """The live processes of the head: its session's, and the descendants of its leader
    (in case one started a session of its own). Zombies are dead: left out."""
    stats = {
        int(p.name): st
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (st := _stat(int(p.name)))
    }
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, (_, sid, *_) in stats.items() if sid == leader}
    todo = [leader]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid for pid in found if pid in stats and stats[pid][2] != "Z"}


def _alive(pids: set[int], leader: int) -> set[int]:
    return {pid for pid in pids if (st := _stat(pid)) and st[2] != "Z"} | _head_pids(leader)


def _stop(proc: subprocess.Popen[bytes], seen: set[int]) -> None:
    """SIGTERM the head (it drains and stops its children), wait; then SIGKILL by PID what is
    left of it. Raises :class:`RayHeadError` naming any process that survives both."""
    pids = seen | _head_pids(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    if _reaped(proc, pids, STOP_GRACE_S):
        return
    for pid in _alive(pids, proc.pid):
        _kill(pid)
    if not _reaped(proc, pids, KILL_GRACE_S):
        left = sorted(_alive(pids, proc.pid))
        msg = f"Ray head {proc.pid}: processes left after SIGKILL: {left}"
        raise RayHeadError(msg)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reaped(proc: subprocess.Popen[bytes], pids: set[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while True:
        proc.poll()  # reaps the leader once it exits
        if proc.returncode is not None and not _alive(pids - {proc.pid}, proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
