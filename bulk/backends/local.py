"""The ``local`` backend: each job is a process on this machine. The embedded default.

What it is for: real work with no account anywhere — a sweep of scripts on a workstation or a
single big server, with the same journal, resume, limits, status and export as the remote
backends; and trying a config out before pointing it at a cluster.

What it is not for: more than one machine (use a service's backend: ``gongji`` today), or
isolation (jobs run as the user running bulk, with its environment plus the job's ``env``).

A job body is::

    command   = "python3 work.py --x {x}"      # a string, run by ``shell -c`` (values
                                                # shell-quoted; ``{x!raw}`` pastes as is),
                                                # or an argv list (no shell)
    env       = {SEED = "{seed}"}               # added to bulk's own environment
    cwd       = "work"                          # relative to the config's folder (default:
                                                # the config's folder)
    timeout_s = 60                              # the whole tree is ended after this

Each job runs in a session of its own, with ``BULK_JOB`` (its name) and ``BULK_RUN_DIR``
(the run's folder) added to its environment; stdout and stderr go to
``<run dir>/logs/<job name>.out|.err``. Exit code 0 is success, anything else a failure with
the code as its reason.

A job is its whole process tree, not only its first process: when it times out, is
stopped, or bulk stops, the tree gets SIGTERM, then SIGKILL after ``kill_grace_s``; and
when its first process exits, whatever it left behind is ended the same way before the job
is reported ended (:mod:`bulk.backends._procs` says how the processes are found, and which
ones cannot be).

If bulk itself dies (``kill -9``, a power cut), the jobs it was running are not adopted:
before the next bulk on the run starts anything, every process of the dead run still alive
is ended (found by its environment, and by the pid files of the jobs' first processes,
checked against their start times so that a recycled pid is never hit), and the jobs are
run again from the start. When bulk stops cleanly (Ctrl-C), it ends its running jobs the
same way; they too are run again on resume. Jobs should therefore be safe to restart, as
with GNU parallel's ``--resume``.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from bulk._policy import LimitsConfig, TrackConfig
from bulk._template import to_text
from bulk._text import short_repr
from bulk.backends._procs import (
    JOB_VAR,
    RUN_VAR,
    Leader,
    Trees,
    hold_subreaper,
    release_subreaper,
    stat,
)
from bulk.backends.base import (
    Backend,
    BackendKind,
    Command,
    JobStatus,
    Phase,
    Receipt,
    Submission,
    Testbed,
)
from bulk.errors import BackendError, PermanentBackendError, RunRefusedError

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = ["KIND", "LocalBackend", "LocalKind", "LocalOptions"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = frozenset({"command", "env", "cwd", "timeout_s"})
# What execve() can carry: no NUL anywhere (strings are C strings), and on Linux at most
# MAX_ARG_STRLEN (32 pages, its terminating NUL included) per argument or "NAME=value"
# environment entry. Other systems only cap the total (ARG_MAX), checked at spawn time.
_MAX_ARG_BYTES = 32 * 4096 - 1 if sys.platform.startswith("linux") else None
# Strings this short are within the limit whatever their characters (UTF-8: 4 bytes at most).
_SAFE_CHARS = _MAX_ARG_BYTES // 4 if _MAX_ARG_BYTES is not None else sys.maxsize
_POLL_S = 0.01  # how often a process bulk has signalled is looked at again
_KILL_ROUNDS = 500  # SIGKILL rounds (each _POLL_S apart) before giving up on a process
_REAP_EVERY_S = 1.0  # how often exited orphans of running jobs are reaped


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """``[backend]`` keys of the local backend.

    Attributes:
        shell: the shell that runs string commands (``shell -c command``).
        kill_grace_s: seconds between SIGTERM and SIGKILL whenever bulk ends a job's
            processes (a timeout, a stop, bulk stopping, what a job left behind, the
            processes of a dead run).
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
    # A string command is parsed by the shell: values pasted into it are shell-quoted, as
    # GNU parallel does, so that `it's` or `a; rm -rf ~` in a cell stays one argument.
    # ``{var!raw}`` pastes a value as it is; a command that is one placeholder alone
    # (``command = "{cmd}"``) is the whole command line, taken as written. A placeholder
    # inside quotes, backticks or a comment is refused (bulk._template._check_shell_context).
    quoted_fields: Mapping[str, Callable[[str], str]] = MappingProxyType(
        {"job.command": shlex.quote}
    )
    # The backend ends its jobs when it closes (bulk stopping): they run again on resume.
    jobs_outlive_bulk = False
    # A name is one job while bulk runs it; after bulk died, its job is killed and run again.
    unique_names = True

    def parse_options(self, table: Table, base: Path) -> LocalOptions:
        """Read ``shell`` and ``kill_grace_s``."""
        d = LocalOptions()
        shell = table.get("shell", str, d.shell)
        if not shell or "\x00" in shell:
            table.fail("shell", f'{shell!r} is not a program path; e.g. shell = "/bin/bash"')
        return LocalOptions(
            shell=shell,
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
        if isinstance(command, str):
            if not command.strip():
                problems.add("job.command", "is empty; give a shell command or an argv list")
            else:
                _check_c_string(command, "job.command", problems)
        elif isinstance(command, list):
            _check_argv(command, problems)
        env = problems.kind(obj, "env", "job", (dict,), required=False)
        _check_env(env or {}, problems)
        cwd = problems.kind(obj, "cwd", "job", (str,), required=False)
        if cwd is not None:
            _check_c_string(cwd, "job.cwd", problems)
        problems.number(obj, "timeout_s", "job", required=False, minimum=0, exclusive_minimum=True)

    def check_template(self, template: Template) -> str | None:
        """Any template will do: local job names are made by bulk, not by the template."""
        return None

    def create(self, options: LocalOptions, *, run: str, run_dir: Path) -> LocalBackend:
        """A backend that runs this run's jobs under ``run_dir``."""
        return LocalBackend(options, run_dir=run_dir)

    @asynccontextmanager
    async def testbed(self, folder: Path) -> AsyncIterator[Testbed]:
        """Jobs run in ``folder``: ``true``, or ``sleep 30`` for a long one."""
        backend = LocalBackend(LocalOptions(base=folder, kill_grace_s=1), run_dir=folder)
        quick, slow = b'{"command": "true"}', b'{"command": ["sleep", "30"]}'
        try:
            yield Testbed(backend, lambda _name, long: slow if long else quick)
        finally:
            await backend.aclose()

    def commands(self) -> Sequence[Command]:
        """None: local runs have only the common commands."""
        return ()

    def simulator(self) -> None:
        """None: the service is this machine."""


KIND: BackendKind[LocalOptions] = LocalKind()


def _check_argv(command: list[Any], problems: Problems) -> None:
    """``job.command`` as an argv list: the program, then strings or numbers."""
    if not command:
        problems.add("job.command", "is an empty list; give at least the program")
    for i, arg in enumerate(command):
        kind = type(arg)
        if kind is str:  # the common cases, fast
            if "\x00" in arg or len(arg) > _SAFE_CHARS:
                _check_c_string(arg, f"job.command[{i}]", problems)
        elif kind is int or kind is float:
            continue
        elif isinstance(arg, bool) or not isinstance(arg, str | int | float):
            problems.add(f"job.command[{i}]", "argv items are strings or numbers")


def _check_env(env: dict[str, Any], problems: Problems) -> None:
    """``job.env``: variable names, and values that are strings, numbers or booleans."""
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            problems.add(
                f"job.env.{name}",
                "is not a valid environment variable name; use letters, digits and '_', "
                "not starting with a digit",
                key=True,
            )
        elif isinstance(value, dict | list) or value is None:
            problems.add(f"job.env.{name}", "values are strings, numbers or booleans")
        elif isinstance(value, str) and ("\x00" in value or len(value) + len(name) >= _SAFE_CHARS):
            _check_c_string(value, f"job.env.{name}", problems, extra=len(name) + 1)


def _check_c_string(text: str, field: str, problems: Problems, *, extra: int = 0) -> None:
    """Whether ``text`` can be a process argument, environment value or path (see above).

    ``extra``: bytes the kernel counts with it (``NAME=`` before an environment value).
    """
    if "\x00" in text:
        at = text.index("\x00") + 1
        problems.add(
            field,
            f"holds a NUL byte (character {at}); process arguments, environment values and "
            "paths cannot carry one",
        )
    # A UTF-8 character is at most 4 bytes: only long strings need encoding to be measured.
    elif _MAX_ARG_BYTES is not None and (len(text) + extra) * 4 > _MAX_ARG_BYTES:
        size = len(text.encode("utf-8", "surrogatepass")) + extra
        if size > _MAX_ARG_BYTES:
            problems.add(
                field,
                f"is {size:,} bytes long; the kernel takes at most {_MAX_ARG_BYTES:,} bytes "
                "per argument or environment entry (pass large values in a file)",
            )


@dataclass(slots=True)
class _Job:
    process: subprocess.Popen[bytes]
    deadline: float | None
    start: str | None = None  # the leader's start time: with its pid, its identity
    stopped: bool = False
    timed_out: bool = False
    kill_at: float | None = None  # SIGKILL is due then (SIGTERM has been sent)
    pid_file: Path = field(default_factory=Path)

    def leader(self, name: str) -> Leader:
        return Leader(name, self.process.pid, self.start, self.process.returncode is None)

    def exited(self) -> bool:
        """Whether the leader has exited; reaps it if it just did (``waitpid``, WNOHANG)."""
        return self.process.poll() is not None


class LocalBackend:
    """Runs jobs as local process trees. Implements :class:`~bulk.backends.base.Backend`.

    A job has ended when its first process (the leader) has exited *and* nothing else of
    its tree is left: whatever the leader leaves behind gets SIGTERM, then SIGKILL after
    ``kill_grace_s``, before the job is reported ended (see :mod:`bulk.backends._procs`
    for how a job's processes are found, and what cannot be).

    Example::

        backend = KIND.create(LocalOptions(), run="demo", run_dir=Path(".bulk/demo"))
        receipt = await backend.submit(Submission("demo-1", b'{"command": "true"}'))
        await backend.status([receipt])   # {"demo-1": JobStatus(Phase.RUNNING)} ... SUCCEEDED
        await backend.aclose()
    """

    def __init__(self, options: LocalOptions, *, run_dir: Path):
        self._options = options
        self._run_dir = run_dir
        self._logs = run_dir / "logs"
        self._pids = run_dir / "pids"
        self._jobs: dict[str, _Job] = {}
        self._closed = False
        # While this backend is open, orphans of its jobs are re-parented to this process.
        self._subreaper = hold_subreaper()
        self._trees: Trees | None = None  # set once a dead run's processes are gone
        self._env: dict[str, str] = {}
        self._run_mark = ""  # BULK_RUN_DIR: the run's folder, absolute
        self._readying: anyio.Event | None = None
        self._ready_error: BackendError | None = None
        self._last_sweep = -math.inf

    async def logs(self, job: Receipt) -> bytes:
        """The job's ``.out`` and ``.err`` files, each after a ``==> path <==`` line (as
        ``tail`` shows several files). Read only: nothing of the run is touched."""

        def read() -> bytes:
            parts = []
            for suffix in ("out", "err"):
                path = self._logs / f"{job.name}.{suffix}"
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    data = b"(no such file: the job has not started here)\n"
                except OSError as exc:
                    msg = f"cannot read {path}: {exc.strerror or exc}"
                    raise PermanentBackendError(msg, job_name=job.name) from None
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                parts.append(f"==> {path} <==\n".encode() + data)
            return b"\n".join(parts)

        return await anyio.to_thread.run_sync(read)

    async def _ready(self) -> Trees:
        """Before the first job of this process starts, every process left by an earlier
        bulk on this run (killed with ``kill -9``, or a power cut) is ended: SIGTERM, then
        SIGKILL after ``kill_grace_s``. Every method waits for it.
        """
        while self._trees is None:
            if self._ready_error is not None:
                raise self._ready_error
            if self._readying is not None:
                await self._readying.wait()
                continue
            self._readying = done = anyio.Event()
            try:
                trees = await anyio.to_thread.run_sync(self._open_run)
                await self._end_dead_run(trees)
                self._trees = trees
            except BackendError as exc:
                self._ready_error = exc
                raise
            finally:
                self._readying = None
                done.set()
        return self._trees

    def _open_run(self) -> Trees:
        self._run_mark = os.path.realpath(self._run_dir)
        self._env = dict(os.environ)
        return Trees(self._run_mark, subreaper=self._subreaper)

    async def _end_dead_run(self, trees: Trees) -> None:
        pid_files = await anyio.to_thread.run_sync(_pid_files, self._pids)
        procs = await anyio.to_thread.run_sync(trees.leftovers, pid_files)
        if procs:
            await anyio.to_thread.run_sync(Trees.kill, procs, signal.SIGTERM)
            with anyio.move_on_after(self._options.kill_grace_s):
                while procs:
                    await anyio.sleep(_POLL_S)
                    procs = await anyio.to_thread.run_sync(Trees.alive, procs)
            for _ in range(_KILL_ROUNDS):  # bounded: SIGKILL is not refused, but D state waits
                # Looked for again: a dying process may have started others meanwhile.
                procs = await anyio.to_thread.run_sync(trees.leftovers, pid_files)
                if not procs:
                    break
                await anyio.to_thread.run_sync(Trees.kill, procs, signal.SIGKILL)
                await anyio.sleep(_POLL_S)
            else:
                pids = ", ".join(str(p.pid) for p in procs[:10])
                msg = (
                    f"{len(procs)} processes of an earlier bulk on {self._run_dir} are still "
                    f"alive after SIGKILL (pids {pids}); wait for them to end, then run again"
                )
                raise RunRefusedError(msg)
        await anyio.to_thread.run_sync(_remove_files, pid_files)

    async def submit(self, submission: Submission) -> Receipt:
        """Start the job's process; a job of that name already running is adopted."""
        if self._closed:
            msg = "cannot submit: backend has been closed"
            raise PermanentBackendError(msg, job_name=submission.name)
        await self._ready()
        name = submission.name
        if name in self._jobs:
            return Receipt(name, name)
        try:
            body = orjson.loads(submission.body)
            command = body["command"]
            if isinstance(command, str):
                argv = [self._options.shell, "-c", command]
            else:
                argv = [to_text(a) for a in command]
            # The job's own variables, then the marks by which bulk finds its processes (these
            # win: a job cannot hide from bulk by setting them).
            env = {**self._env, **{k: to_text(v) for k, v in (body.get("env") or {}).items()}}
            env[RUN_VAR] = self._run_mark
            env[JOB_VAR] = name
            cwd = self._options.base / body["cwd"] if body.get("cwd") else self._options.base
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"not a local job body ({type(exc).__name__}: {exc}); nothing was started"
            raise PermanentBackendError(msg, job_name=name) from None
        try:
            process, start, pid_error = await anyio.to_thread.run_sync(
                self._start, name, argv, cwd, env
            )
        except OSError as exc:
            error = await _start_error(exc, argv[0], cwd, name, shell=isinstance(command, str))
            raise error from None
        except ValueError as exc:
            # What execve() cannot carry (a NUL byte: "embedded null byte", an "=" in an
            # environment name) fails here, before any process exists: this job cannot be
            # sent as it is, and the run goes on. Validation catches these before the run.
            msg = (
                f"cannot start the job: {exc} (a process cannot be given a NUL byte, nor an "
                "environment name with '='); nothing was started"
            )
            raise PermanentBackendError(msg, job_name=name) from None
        now = anyio.current_time()
        timeout = body.get("timeout_s")
        job = _Job(process, now + timeout if timeout else None, start)
        job.pid_file = self._pids / name
        self._jobs[name] = job  # before a refusal below: aclose ends what runs
        if pid_error is not None:
            # The run folder again: without pid files a later bulk could miss this run's
            # processes after a crash. Stop, rows kept; this job is ended with the others.
            reason = pid_error.strerror or pid_error
            msg = f"cannot write the job's pid file in {self._pids}: {reason}"
            raise RunRefusedError(msg, job_name=name)
        return Receipt(name, name)

    def _start(
        self, name: str, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], str | None, OSError | None]:
        """Open the job's logs, start its leader and write its pid file (a worker thread).

        The leader is started with :class:`subprocess.Popen`, not the event loop's
        subprocess support, so that every loop starts jobs alike and fast: uvloop forks the
        whole bulk process for each (6.7 ms per job measured, page tables copied), while
        CPython's ``_posixsubprocess`` uses ``vfork`` as long as no ``preexec_fn``, ``user``,
        ``group`` or ``extra_groups`` is given (``start_new_session``, ``cwd`` and ``env``
        keep it; ``strace -f`` shows ``vfork``). It runs in a worker thread: ``Popen`` waits
        for the child's ``exec`` (reading its error pipe), which the loop must not. Its exit
        is learnt without the loop's child watcher either: :meth:`status` polls it
        (``Popen.poll``, one ``waitpid(WNOHANG)`` per running job), as the tracker asks often;
        a pidfd would make the exit an event, but the engine learns of ends only by asking.
        Measured (``python -m benchmarks.bench_engine local``, 2 cores under load): on uvloop
        2.5x the jobs/s of its fork, and above asyncio's earlier path and GNU parallel -j4.

        Returns:
            The leader, its start time, and the error that stopped its pid file being
            written (None if it was).

        Raises:
            RunRefusedError: the log files cannot be created (nothing was started).
            OSError: the leader cannot start (see :func:`_start_error`).
            ValueError: what ``execve`` cannot carry.
        """
        try:
            out, err = self._open_logs(name)
        except OSError as exc:
            # The run folder, not the job: every job would fail alike. Stop, rows kept.
            msg = f"cannot create the job's log files in {self._logs}: {exc.strerror or exc}"
            raise RunRefusedError(msg, job_name=name) from None
        try:
            process = subprocess.Popen(  # noqa: S603 - running the user's own job is the point
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(out)
            os.close(err)
        try:
            return process, _write_pid_file(self._pids / name, process.pid), None
        except OSError as exc:
            proc = stat(process.pid)  # its identity still, for the sweeps that end it
            return process, proc.start if proc is not None else None, exc

    def _open_logs(self, name: str) -> tuple[int, int]:
        # Owner-only, like the run folder: job output may hold anything the job printed.
        self._logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pids.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out = os.open(self._logs / f"{name}.out", flags, 0o600)
        err = os.open(self._logs / f"{name}.err", flags, 0o600)
        return out, err

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        """Each job's state. A job whose leader has exited is running until nothing of its
        tree is left (SIGTERM, then SIGKILL after ``kill_grace_s``); then it is reaped.
        """
        now = anyio.current_time()
        out: dict[str, JobStatus] = {}
        signals: dict[str, signal.Signals | None] = {}
        exited: list[str] = []
        for receipt in jobs:
            name = receipt.remote_id
            job = self._jobs.get(name)
            if job is None:
                out[name] = JobStatus(Phase.MISSING)
                continue
            if not job.exited():
                sig = self._due(job, now)
                if sig is not None:
                    _signal_group(job.process.pid, sig)  # at once, while the group is sure
                    signals[name] = sig  # and the rest of the tree in the sweep
                out[name] = JobStatus(Phase.RUNNING)
                continue
            # The leader has exited: whatever it left behind is ended before the job is.
            exited.append(name)
            if job.kill_at is None:
                signals[name] = signal.SIGTERM
            elif now >= job.kill_at:
                signals[name] = signal.SIGKILL
            else:
                signals[name] = None
        left = await self._sweep(signals, now, exited)
        for name in exited:
            job = self._jobs[name]
            if left.get(name):
                if job.kill_at is None:
                    job.kill_at = now + self._options.kill_grace_s
                out[name] = JobStatus(Phase.RUNNING)
                continue
            del self._jobs[name]  # its pid file went in the sweep
            code = job.process.returncode
            assert code is not None  # noqa: S101 - a type guard: it has exited
            out[name] = _ended(job, code)
        return out

    def _due(self, job: _Job, now: float) -> signal.Signals | None:
        """The signal a running job is due now: SIGTERM at its deadline, SIGKILL after."""
        if job.kill_at is not None and now >= job.kill_at:
            return signal.SIGKILL
        if job.deadline is not None and now >= job.deadline and not job.timed_out:
            job.timed_out = True
            job.kill_at = now + self._options.kill_grace_s
            return signal.SIGTERM
        return None

    async def _sweep(
        self,
        signals: Mapping[str, signal.Signals | None],
        now: float,
        exited: Sequence[str] = (),
    ) -> Mapping[str, int]:
        """Signal the trees in ``signals`` and count what is left of each (see Trees.sweep);
        remove the pid files of the ``exited`` jobs with nothing left (they have ended).

        With nothing to signal, orphans are still reaped now and then (once a second).
        """
        trees = self._trees
        if trees is None or not (signals or now - self._last_sweep >= _REAP_EVERY_S):
            return {}
        if not signals and not (self._subreaper and self._jobs):
            return {}
        self._last_sweep = now
        leaders = {name: job.leader(name) for name, job in self._jobs.items()}
        pid_files = {name: self._jobs[name].pid_file for name in exited}

        def sweep() -> Mapping[str, int]:
            left = trees.sweep(leaders, signals)
            _remove_files([path for name, path in pid_files.items() if not left.get(name)])
            return left

        return await anyio.to_thread.run_sync(sweep)

    async def stop(self, job: Receipt) -> None:
        """End the job's whole tree: SIGTERM now, SIGKILL after ``kill_grace_s`` to whatever
        is left. Returns once nothing of it is left: the caller may record it ended.

        A job of an earlier bulk on this run (``bulk stop`` after a run that died) has been
        ended before this backend did anything (see ``_ready``).
        """
        await self._ready()
        running = self._jobs.get(job.remote_id)
        if running is None:
            return
        if not running.exited():
            running.stopped = True  # its end is bulk's doing (else its exit code tells)
        await self._end_trees({job.remote_id: running}, self._jobs)

    async def lookup(self, submission: Submission) -> Receipt | None:
        """A job of this bulk process by name; a dead bulk's job is never adopted.

        Local jobs cannot be re-attached after bulk died (their exit status is lost with
        their parent): they have been ended (see ``_ready``) and are run again.
        """
        await self._ready()
        name = submission.name
        return Receipt(name, name) if name in self._jobs else None

    async def aclose(self) -> None:
        """End every job's whole tree (they are run again on resume): SIGTERM, then SIGKILL
        after ``kill_grace_s`` to whatever is left, whether or not its leader still lives.
        """
        if self._closed:
            return
        self._closed = True
        jobs, self._jobs = self._jobs, {}
        try:
            with anyio.CancelScope(shield=True):
                await self._end_trees(jobs, jobs)  # which reaped every leader it could
                await anyio.to_thread.run_sync(_remove_files, [j.pid_file for j in jobs.values()])
        finally:
            if self._subreaper:
                release_subreaper()

    async def _end_trees(self, ending: Mapping[str, _Job], tracked: Mapping[str, _Job]) -> None:
        """SIGTERM the whole trees of ``ending``, SIGKILL what is left after ``kill_grace_s``
        (leader alive or not); return once nothing of them is left.

        ``tracked`` is every job of this backend (a sweep tells their processes apart).
        """
        trees = self._trees
        if not ending or trees is None:
            return

        async def sweep(sig: signal.Signals | None) -> int:
            for job in ending.values():
                if sig is not None and not job.exited():
                    _signal_group(job.process.pid, sig)
            leaders = {name: job.leader(name) for name, job in tracked.items()}
            signals = dict.fromkeys(ending, sig)
            left = await anyio.to_thread.run_sync(trees.sweep, leaders, signals)
            running = sum(not job.exited() for job in ending.values())
            return running + sum(left.values())

        await sweep(signal.SIGTERM)
        with anyio.move_on_after(self._options.kill_grace_s):
            # /proc offers no event for the exit of a process that is not our child, and
            # the leaders are not watched by the loop (see _start): look every _POLL_S.
            while await sweep(None):  # noqa: ASYNC110
                await anyio.sleep(_POLL_S)
        for _ in range(_KILL_ROUNDS):  # bounded: a process in D state may take its time
            if not await sweep(signal.SIGKILL):
                break
            await anyio.sleep(_POLL_S)


async def _start_error(
    exc: OSError, program: str, cwd: Path, name: str, *, shell: bool
) -> PermanentBackendError:
    """What stopped a job from starting, named for what it is: the cwd, the shell, the program.

    Python's ``subprocess`` sets the error's ``filename`` to the cwd when ``chdir`` failed,
    and to the program when ``exec`` did.
    """
    reason = exc.strerror or str(exc)
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return PermanentBackendError(f"cannot start in cwd {str(cwd)!r}: {reason}", job_name=name)
    if exc.errno == errno.ENOENT:
        what = "no such program" + ("" if "/" in program else " on PATH")
    elif exc.errno == errno.EACCES:
        path = anyio.Path(cwd) / program
        is_dir = "/" in program and await path.is_dir()
        what = "is a directory, not a program" if is_dir else f"is not executable ({reason})"
    elif exc.errno == errno.ENOEXEC:
        what = "is not a program this system can run (a script needs a #! line)"
    else:
        what = reason
    if shell:
        # Every string command runs in the shell: no job of this run can start.
        msg = f"cannot start string commands: [backend] shell {program!r}: {what}"
        return RunRefusedError(msg, job_name=name)
    return PermanentBackendError(f"cannot start {short_repr(program, 120)}: {what}", job_name=name)


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


def _write_pid_file(path: Path, pid: int) -> str | None:
    """Record the leader's pid and start time (for a later bulk, if this one dies)."""
    proc = stat(pid)
    start = proc.start if proc is not None else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {start or ''}\n")
    return start


def _pid_files(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _remove_files(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


_check: type[Backend] = LocalBackend  # mypy: LocalBackend implements the Backend protocol
