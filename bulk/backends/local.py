"""The ``local`` backend: each job is a process on this machine. The embedded default.

What it is for: real work with no account anywhere — a sweep of scripts on a workstation or a
single big server, with the same journal, resume, limits, status and export as the remote
backends; and trying a config out before pointing it at a cluster.

What it is not for: more than one machine (use ``ray`` or ``gongji``), or isolation (jobs run
as the user running bulk, with its environment plus the job's ``env``).

A job body is::

    command   = "python3 work.py --x {x}"      # a string (run by the shell) or an argv list
    env       = {SEED = "{seed}"}               # added to bulk's own environment
    cwd       = "work"                          # relative to the config's folder
    timeout_s = 60                              # the process group is killed after this

Each job runs in its own session and process group; stdout and stderr go to
``<run dir>/logs/<job name>.out|.err``. Exit code 0 is success, anything else a failure with
the code as its reason. A job that outlives ``timeout_s`` (or is stopped) gets SIGTERM, then
SIGKILL after ``kill_grace_s``.

If bulk itself dies (``kill -9``, a power cut), the jobs it was running are not adopted: on
resume, any of them still alive is killed (its pid file names it, checked against the
process's start time so a recycled pid is never hit) and the job is run again from the start.
When bulk stops cleanly (Ctrl-C), it terminates its running jobs the same way; they too are
run again on resume. Jobs should therefore be safe to restart, as with GNU parallel's
``--resume``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import orjson

from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.config import LimitsConfig, TrackConfig
from bulk.errors import PermanentBackendError, RunRefusedError
from bulk.spec import to_text

if TYPE_CHECKING:
    from bulk.config import Table
    from bulk.spec import Template
    from bulk.validate import Problems

__all__ = ["KIND", "LocalBackend", "LocalKind", "LocalOptions"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = frozenset({"command", "env", "cwd", "timeout_s"})


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """``[backend]`` keys of the local backend.

    Attributes:
        shell: the shell that runs string commands (``shell -c command``).
        kill_grace_s: seconds between SIGTERM and SIGKILL when a job is stopped or times out.
        base: the config's folder; relative ``cwd`` values resolve against it.
    """

    shell: str = "/bin/sh"
    kill_grace_s: float = 5.0
    base: Path = Path()


class LocalKind:
    """The ``local`` backend kind."""

    name = "local"
    # Processes are cheap to start, and a "status request" here is a dict lookup: poll
    # often (a slot is freed only when its job is seen to end), and run one job per core.
    default_limits = LimitsConfig(
        submit_rate_per_s=1000.0,
        status_rate_per_s=2000.0,
        stop_rate_per_s=1000.0,
        burst=50,
        max_in_flight=32,
        max_active=os.cpu_count() or 2,
    )
    default_track = TrackConfig(first_s=0.002, factor=1.5, max_s=0.25, batch=1000)
    # uvloop starts a subprocess with a plain fork of the whole bulk process: measured here at
    # 6.7 ms per job against 0.9 ms on asyncio's loop (posix_spawn/vfork). Local runs are
    # spawn-bound, so they stay on asyncio.
    uvloop = False
    # A name is one job while bulk runs it; after bulk died, its job is killed and run again.
    unique_names = True

    def parse_options(self, table: Table, base: Path) -> LocalOptions:
        """Read ``shell`` and ``kill_grace_s``."""
        d = LocalOptions()
        return LocalOptions(
            shell=table.get("shell", str, d.shell),
            kill_grace_s=table.positive("kill_grace_s", float, d.kill_grace_s),
            base=base,
        )

    def validate(self, body: Any, problems: Problems) -> None:
        """Check ``command``, ``env``, ``cwd`` and ``timeout_s``."""
        obj = problems.table(body, "job")
        if obj is None:
            return
        if not _FIELDS.issuperset(obj):
            problems.only(obj, _FIELDS, "job")
        command = problems.kind(obj, "command", "job", (str, list))
        if isinstance(command, str) and not command.strip():
            problems.add("job.command", "is empty; give a shell command or an argv list")
        elif isinstance(command, list):
            if not command:
                problems.add("job.command", "is an empty list; give at least the program")
            for i, arg in enumerate(command):
                kind = type(arg)
                if kind is str or kind is int or kind is float:  # the common cases, fast
                    continue
                if isinstance(arg, bool) or not isinstance(arg, str | int | float):
                    problems.add(f"job.command[{i}]", "argv items are strings or numbers")
        env = problems.kind(obj, "env", "job", (dict,), required=False)
        for name, value in (env or {}).items():
            if not _ENV_NAME.fullmatch(name):
                problems.add(f"job.env.{name}", "is not a valid environment variable name")
            elif isinstance(value, dict | list) or value is None:
                problems.add(f"job.env.{name}", "values are strings, numbers or booleans")
        problems.kind(obj, "cwd", "job", (str,), required=False)
        problems.number(obj, "timeout_s", "job", required=False, minimum=0, exclusive_minimum=True)

    def check_template(self, template: Template) -> str | None:
        """Any template will do: local job names are made by bulk, not by the template."""
        return None

    def create(self, options: LocalOptions, *, run: str, run_dir: Path) -> LocalBackend:
        """A backend that runs this run's jobs under ``run_dir``."""
        return LocalBackend(options, run_dir=run_dir)


KIND = LocalKind()


@dataclass(slots=True)
class _Job:
    process: anyio.abc.Process
    deadline: float | None
    stopped: bool = False
    timed_out: bool = False
    kill_at: float | None = None
    pid_file: Path = field(default_factory=Path)


class LocalBackend:
    """Runs jobs as local process groups. Implements :class:`~bulk.backends.base.Backend`.

    Example::

        backend = KIND.create(LocalOptions(), run="demo", run_dir=Path(".bulk/demo"))
        receipt = await backend.submit(Submission("demo-1", b'{"command": "true"}'))
        await backend.status([receipt])   # {"demo-1": JobStatus(Phase.RUNNING)} ... SUCCEEDED
        await backend.aclose()
    """

    def __init__(self, options: LocalOptions, *, run_dir: Path):
        self._options = options
        self._logs = run_dir / "logs"
        self._pids = run_dir / "pids"
        self._jobs: dict[str, _Job] = {}
        self._closed = False

    async def submit(self, submission: Submission) -> Receipt:
        """Start the job's process; a job of that name already running is adopted."""
        if self._closed:
            msg = "cannot submit: backend has been closed"
            raise PermanentBackendError(msg, job_name=submission.name)
        name = submission.name
        if name in self._jobs:
            return Receipt(name, name)
        body = orjson.loads(submission.body)
        command = body["command"]
        if isinstance(command, str):
            argv = [self._options.shell, "-c", command]
        else:
            argv = [to_text(a) for a in command]
        env = None
        if body.get("env"):
            env = {**os.environ, **{k: to_text(v) for k, v in body["env"].items()}}
        cwd = self._options.base / body["cwd"] if body.get("cwd") else self._options.base
        try:
            out, err = await anyio.to_thread.run_sync(self._open_logs, name)
        except OSError as exc:
            # The run folder, not the job: every job would fail alike. Stop, rows kept.
            msg = f"cannot create the job's log files in {self._logs}: {exc.strerror or exc}"
            raise RunRefusedError(msg, job_name=name) from None
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            msg = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            raise PermanentBackendError(msg, job_name=name) from None
        finally:
            os.close(out)
            os.close(err)
        now = anyio.current_time()
        timeout = body.get("timeout_s")
        job = _Job(process, now + timeout if timeout else None)
        job.pid_file = self._pids / name
        self._jobs[name] = job
        await anyio.to_thread.run_sync(_write_pid_file, job.pid_file, process.pid)
        return Receipt(name, name)

    def _open_logs(self, name: str) -> tuple[int, int]:
        # Owner-only, like the run folder: job output may hold anything the job printed.
        self._logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pids.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out = os.open(self._logs / f"{name}.out", flags, 0o600)
        err = os.open(self._logs / f"{name}.err", flags, 0o600)
        return out, err

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        """Each job's state; a process that has exited is reaped here."""
        now = anyio.current_time()
        out: dict[str, JobStatus] = {}
        ended: list[Path] = []
        for receipt in jobs:
            job = self._jobs.get(receipt.remote_id)
            if job is None:
                out[receipt.remote_id] = JobStatus(Phase.MISSING)
                continue
            code = job.process.returncode
            if code is None:
                self._enforce_deadlines(job, now)
                out[receipt.remote_id] = JobStatus(Phase.RUNNING)
                continue
            del self._jobs[receipt.remote_id]
            ended.append(job.pid_file)
            await job.process.aclose()
            out[receipt.remote_id] = _ended(job, code)
        if ended:
            await anyio.to_thread.run_sync(_remove_files, ended)
        return out

    def _enforce_deadlines(self, job: _Job, now: float) -> None:
        if job.kill_at is not None and now >= job.kill_at:
            _signal_group(job.process.pid, signal.SIGKILL)
            job.kill_at = None
        elif job.deadline is not None and now >= job.deadline and not job.timed_out:
            job.timed_out = True
            _signal_group(job.process.pid, signal.SIGTERM)
            job.kill_at = now + self._options.kill_grace_s

    async def stop(self, job: Receipt) -> None:
        """SIGTERM the job's process group now, SIGKILL it after ``kill_grace_s``.

        A job this process did not start (``bulk stop`` after a run that died) is found by
        its pid file and killed.
        """
        running = self._jobs.get(job.remote_id)
        if running is None:
            await anyio.to_thread.run_sync(_kill_orphan, self._pids / job.remote_id)
            return
        if running.process.returncode is not None or running.stopped:
            return
        running.stopped = True
        _signal_group(running.process.pid, signal.SIGTERM)
        running.kill_at = anyio.current_time() + self._options.kill_grace_s

    async def lookup(self, submission: Submission) -> Receipt | None:
        """A job of this bulk process by name; an orphan of a dead bulk is killed, not adopted.

        Local jobs cannot be re-attached after bulk died (their exit status is lost with
        their parent), so they are run again from the start.
        """
        name = submission.name
        if name in self._jobs:
            return Receipt(name, name)
        await anyio.to_thread.run_sync(_kill_orphan, self._pids / name)
        return None

    async def aclose(self) -> None:
        """Terminate every job still running (they are run again on resume)."""
        self._closed = True
        jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            if job.process.returncode is None:
                _signal_group(job.process.pid, signal.SIGTERM)
        with anyio.move_on_after(self._options.kill_grace_s, shield=True):
            for job in jobs:
                await job.process.wait()
        for job in jobs:
            if job.process.returncode is None:
                _signal_group(job.process.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await job.process.aclose()
        await anyio.to_thread.run_sync(_remove_files, [job.pid_file for job in jobs])


def _ended(job: _Job, code: int) -> JobStatus:
    if job.stopped:
        return JobStatus(Phase.STOPPED, "stopped")
    if job.timed_out:
        return JobStatus(Phase.FAILED, "timeout")
    if code == 0:
        return JobStatus(Phase.SUCCEEDED)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return JobStatus(Phase.FAILED, f"killed by {name}")
    return JobStatus(Phase.FAILED, f"exit code {code}")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _write_pid_file(path: Path, pid: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {_start_time(pid) or ''}\n")


def _kill_orphan(path: Path) -> None:
    try:
        pid_text, _, started = path.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    if started.strip() and _start_time(pid) == started.strip():
        _signal_group(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def _remove_files(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


_check: type[Backend] = LocalBackend  # mypy: LocalBackend implements the Backend protocol
