"""The run lock: one ``bulk run`` at a time works on a run's folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Self

from bulk._journal._store import _reason
from bulk.errors import JournalError, RunLockedError

__all__ = ["RunLock"]


class RunLock:
    """An exclusive lock on a run's folder, held for as long as a ``bulk run`` works on it.

    ``flock`` is released by the kernel when the process dies, even by ``kill -9``, so a
    crashed run never leaves a stale lock behind.
    """

    def __init__(self, run_dir: Path):
        self._path = run_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunLockedError: another process holds it.
        """
        try:
            # Owner-only: the folder holds the journal, job logs and pid files.
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            msg = (
                f"{self._path.parent}: cannot use this run folder: {_reason(exc)}; "
                f"make it writable, or give the run another folder ([run] dir)"
            )
            raise JournalError(msg) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            with contextlib.suppress(OSError):
                holder = self._path.read_text().strip()
            msg = (
                f"{self._path.parent}: this run is in use by another bulk process"
                f"{f' (pid {holder})' if holder else ''}; wait for it to end, or interrupt "
                "it (Ctrl-C) first"
            )
            raise RunLockedError(msg) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            os.close(fd)
            msg = f"{self._path}: cannot write the run's lock file: {_reason(exc)}"
            raise JournalError(msg) from None
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
