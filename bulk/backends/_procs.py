"""A local job's whole process tree, found and ended on Linux without cgroups.

How bulk tells which processes belong to a job:

- **The environment.** Every job starts with ``BULK_RUN_DIR`` (the run's folder, absolute)
  and ``BULK_JOB`` (its name). Descendants inherit them, across ``setsid``, double forks and
  ``exec``, and ``/proc/PID/environ`` shows them to the same user.
- **Its session and process group.** The job's first process (its *leader*) starts a new
  session; whatever stays in that session or group is the job's, even with a cleared
  environment.
- **Ancestry.** While bulk runs local jobs it is a *child subreaper*
  (``prctl(PR_SET_CHILD_SUBREAPER)``): a job's process whose parent exits is re-parented to
  bulk instead of to init, so everything a job leaves behind stays below bulk, and the
  descendants of a job's process are the job's whatever their environment.

What bulk cannot reach: a process that clears its environment *and* leaves the job's session
and process group *and* is no longer below one of the job's processes (a daemon that
double-forks with ``env -i setsid ...``, or any process that does so after bulk was killed
with ``kill -9``, when no subreaper holds it). Only a cgroup (``systemd-run --scope``) holds
such a process.

Everything here reads ``/proc``: call it from a worker thread, never on the event loop. On
systems without ``/proc`` the functions find nothing, and bulk falls back to signalling the
leader's process group while the leader lives.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "JOB_VAR",
    "RUN_VAR",
    "Leader",
    "Proc",
    "Trees",
    "hold_subreaper",
    "release_subreaper",
    "stat",
]

RUN_VAR = "BULK_RUN_DIR"
JOB_VAR = "BULK_JOB"
_MAX_TREE = 100_000  # a bound on any walk: a fork bomb must not hang bulk
_SETTLE_ROUNDS = 100  # 1 ms reads of an environment that is empty mid-exec

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@dataclass(frozen=True, slots=True)
class Proc:
    """One process as ``/proc/PID/stat`` shows it.

    Attributes:
        pid: its id.
        state: ``R``, ``S``, ``D``, ``Z`` (exited, not yet reaped), ...
        pgrp: its process group.
        session: its session.
        start: its start time in clock ticks since boot: with ``pid``, a process's identity
            (a pid alone may be reused).
    """

    pid: int
    state: str
    pgrp: int
    session: int
    start: str

    @property
    def alive(self) -> bool:
        """Whether it still runs (a zombie has ended; only its exit status is left)."""
        return self.state not in ("Z", "X")


@dataclass(frozen=True, slots=True)
class Leader:
    """A job's first process, as the backend knows it.

    Attributes:
        name: the job's name.
        pid: the leader's pid, which is also its session and process group id.
        start: the leader's start time (``Proc.start``), when it was read.
        running: whether the leader has not exited yet (as far as the backend knows: it
            has not reaped it).
    """

    name: str
    pid: int
    start: str | None
    running: bool


def stat(pid: int) -> Proc | None:
    """The process ``pid``, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text.rpartition(b")")[2].split()
    try:
        return Proc(pid, fields[0].decode(), int(fields[2]), int(fields[3]), fields[19].decode())
    except (IndexError, ValueError):
        return None


def _environ(pid: int, *, settle: bool = False) -> bytes:
    """The environment of ``pid`` (NUL-separated, with a leading NUL), or b"" if unreadable.

    While a process is in the middle of ``exec`` its environment reads empty for a moment.
    ``settle`` (for our own children, which cannot be recycled under us) reads again for up
    to :data:`_SETTLE_ROUNDS` milliseconds until it is not: an orphan that is exec'ing
    just as its job's leader exits (``setsid prog &``) would otherwise go unrecognised.
    """
    for _ in range(_SETTLE_ROUNDS if settle else 1):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            return b""  # gone, or not ours to read
        if env or not settle:
            return b"\0" + env
        time.sleep(0.001)
    return b"\0"


def _thread_children(pid: int, tid: int | str) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid``."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    if len(tasks) == 1:
        return _thread_children(pid, tasks[0])
    return [child for tid in tasks for child in _thread_children(pid, tid)]


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _descendants(roots: Iterable[int], limit: int = _MAX_TREE) -> list[int]:
    """``roots`` and everything below them (breadth first, each once, at most ``limit``)."""
    seen: dict[int, None] = {}
    queue = list(roots)
    while queue and len(seen) < limit:
        pid = queue.pop()
        if pid in seen:
            continue
        seen[pid] = None
        queue.extend(_children(pid))
    return list(seen)


def _kill(procs: Iterable[Proc], sig: signal.Signals) -> None:
    """Signal each process that is still the one seen (same pid and start time)."""
    for proc in procs:
        now = stat(proc.pid)
        if now is None or now.start != proc.start or not now.alive:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


class Trees:
    """The process trees of one run's jobs.

    Args:
        run_dir: the run's folder, as jobs see it in ``BULK_RUN_DIR`` (absolute).
        subreaper: whether this process is a child subreaper (see :func:`hold_subreaper`).
    """

    def __init__(self, run_dir: str, *, subreaper: bool):
        self.run_dir = run_dir
        self._run_mark = f"\0{RUN_VAR}={run_dir}\0".encode()
        self._job_prefix = f"\0{JOB_VAR}=".encode()
        self._subreaper = subreaper
        self._self = os.getpid()
        self._owners: dict[int, str] = {}  # our orphans (children of ours) -> their job
        # Children of ours that are no job's of this run (another backend's in the same
        # process, a child the process started itself) -> their start time: no_orphans
        # passes over them.
        self._foreign: dict[int, str] = {}
        self._lock = threading.Lock()  # sweeps run in worker threads, maybe two at once

    def job_of(self, pid: int, *, settle: bool = False) -> str | None:
        """The job named in the environment of ``pid``, if it is one of this run's
        (``settle``: see :func:`_environ`)."""
        env = _environ(pid, settle=settle)
        if self._run_mark not in env:
            return None
        start = env.find(self._job_prefix)
        if start < 0:
            return None
        start += len(self._job_prefix)
        return env[start : env.index(b"\0", start)].decode(errors="replace")

    def sweep(
        self,
        leaders: Mapping[str, Leader],
        signals: Mapping[str, signal.Signals | None],
    ) -> dict[str, int]:
        """Signal whole trees, reap the run's exited orphans, and count what is left.

        Args:
            leaders: every job of the run this process tracks, by name.
            signals: the jobs to look at, each with the signal to send to its whole tree
                (or None to only count).

        Returns:
            For each job in ``signals``, how many of its processes are alive besides a
            running leader: after the leader has exited, anything above zero is left over.
        """
        with self._lock:
            orphans = self._orphans(leaders)
            counts: dict[str, int] = {}
            for name, sig in signals.items():
                leader = leaders[name]
                roots = [pid for pid, owner in orphans.items() if owner == name]
                if leader.running:
                    proc = stat(leader.pid)
                    if proc is not None and proc.start == leader.start and proc.alive:
                        roots.append(leader.pid)
                procs = [p for p in map(stat, _descendants(roots)) if p is not None and p.alive]
                if sig is not None:
                    _kill(procs, sig)
                counts[name] = sum(1 for p in procs if p.pid != leader.pid)
            return counts

    def no_orphans(self, leader_pids: Collection[int]) -> bool:
        """Whether no process has been re-parented to this one, a subreaper: its main
        thread has no child but the running leaders ``leader_pids``. Then no exited job
        left anything behind (a leader's children are re-parented before it can be
        reaped). One read of ``/proc``, no environment read and no sleep: cheap enough for
        the event loop. Always False without a subreaper (orphans may be anywhere).
        """
        if not self._subreaper:
            return False
        for pid in _thread_children(self._self, self._self):
            if pid in leader_pids:
                continue
            start = self._foreign.get(pid)
            if start is None:
                return False
            proc = stat(pid)  # still that child of another's (a pid of ours is not reused
            if proc is None or proc.start != start:  # until we reap it; checked all the same)
                return False
        return True

    def _orphans(self, leaders: Mapping[str, Leader]) -> dict[int, str]:
        """This run's processes re-parented to bulk (or, without a subreaper, anywhere),
        by job; exited ones are reaped.
        """
        leader_pids = {leader.pid for leader in leaders.values() if leader.running}
        by_session = {leader.pid: leader.name for leader in leaders.values()}
        if self._subreaper:
            # Orphans are re-parented to the subreaper's first live thread: the main one.
            candidates = _thread_children(self._self, self._self)
        else:
            candidates = _all_pids()
        found: dict[int, str] = {}
        for pid in candidates:
            if pid == self._self or pid in leader_pids:
                continue
            proc = stat(pid)
            if proc is None:
                self._owners.pop(pid, None)
                self._foreign.pop(pid, None)
                continue
            owner = self._owner(proc, by_session)
            if owner is None and self._subreaper:
                self._foreign[pid] = proc.start
            if owner is None or owner not in leaders:
                continue  # not this run's, or a job being started right now
            if not proc.alive:
                if self._subreaper:
                    self._reap(pid)
                continue
            if self._subreaper:
                self._owners[pid] = owner
            found[pid] = owner
        return found

    def _owner(self, proc: Proc, by_session: Mapping[int, str]) -> str | None:
        """The job ``proc`` belongs to, if it tells (``by_session``: job names by leader pid)."""
        pid = proc.pid
        owner = self._owners.get(pid) if self._subreaper else None
        if owner is None:
            owner = self.job_of(pid, settle=self._subreaper)
        if owner is None and self._subreaper and proc.session != pid:
            # A cleared environment: the job's session or group still tells. (Only for
            # our own children: elsewhere a session id may belong to a recycled pid.
            # And never a session leader: that may be a job being started right now.)
            owner = by_session.get(proc.session) or by_session.get(proc.pgrp)
        return owner

    def _reap(self, pid: int) -> None:
        # Only ever a child that is ours and no one else waits for: an orphan of a job,
        # never a job's leader (the local backend reaps those, with Popen.poll).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self._owners.pop(pid, None)

    def leftovers(self, pid_files: Collection[Path]) -> list[Proc]:
        """Every live process of this run on the machine, from a bulk that is gone.

        A process is the run's if its environment names the run, if it is in the session
        or group of a leader named by a pid file (unless that pid now belongs to another
        process: a recycled pid), or if it descends from one of those.
        """
        sessions: set[int] = set()
        for path in pid_files:
            try:
                pid_text, _, start = path.read_text().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            proc = stat(pid)
            if proc is None or proc.start == start.strip():
                sessions.add(pid)  # the leader is gone (its group may live on) or is it
        roots = []
        for pid in _all_pids():
            if pid == self._self:
                continue
            proc = stat(pid)
            if proc is None or not proc.alive:
                continue
            if proc.session in sessions or proc.pgrp in sessions or self.job_of(pid):
                roots.append(pid)
        ancestors = _ancestors(self._self)
        procs = (stat(pid) for pid in _descendants(roots) if pid not in ancestors)
        return [p for p in procs if p is not None and p.alive]

    @staticmethod
    def kill(procs: Iterable[Proc], sig: signal.Signals) -> None:
        """Signal each of ``procs`` that is still the same process."""
        _kill(procs, sig)

    @staticmethod
    def alive(procs: Iterable[Proc]) -> list[Proc]:
        """Those of ``procs`` that still run (the same process, not exited)."""
        out = []
        for proc in procs:
            now = stat(proc.pid)
            if now is not None and now.start == proc.start and now.alive:
                out.append(proc)
        return out


def _ancestors(pid: int) -> set[int]:
    """``pid`` and its parents up to init: never to be killed as a leftover."""
    out: set[int] = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rpartition(b")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return out


_holders = 0
_previous = 0
_holders_lock = threading.Lock()


def _prctl(option: int, arg: int | ctypes._Pointer[ctypes.c_int]) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except (OSError, AttributeError):  # not Linux, or no prctl
        return False


def hold_subreaper() -> bool:
    """Make this process a child subreaper, once per holder; whether it is one now.

    Call :func:`release_subreaper` once for each call that returned True.
    """
    global _holders, _previous
    with _holders_lock:
        if _holders == 0:
            previous = ctypes.c_int(0)
            if not _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.pointer(previous)):
                return False
            if not previous.value and not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
                return False
            _previous = previous.value
        _holders += 1
        return True


def release_subreaper() -> None:
    """Undo one :func:`hold_subreaper`; the last one restores the earlier setting."""
    global _holders
    with _holders_lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and not _previous:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)
