"""The journal's single writer in async code: group commit through a worker thread.

One task batches the engine's state changes and commits them through a worker thread, so the
event loop never blocks on disk and many state changes share one commit (group commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from bulk._journal._store import Journal, Record
from bulk.errors import JournalError

__all__ = ["JournalWriter", "Offload"]

# How blocking journal work is run from async code: anyio.to_thread.run_sync in production.
Offload = Callable[..., Awaitable[Any]]


class JournalWriter:
    """The single writer of a journal in async code: batches records, commits in a thread.

    ``await writer.write(record)`` returns once the record is durable (committed); records
    written while a commit is under way all go into the next one, and their writers wake on
    one event (group commit). ``record_nowait`` queues a change whose durability nobody waits
    for (it is committed with the next batch).

    Commits run through ``offload`` (a worker thread by default; tests on virtual time pass
    one that runs inline, so that time cannot jump while a commit is under way).

    Example::

        async with anyio.create_task_group() as tg:
            writer = JournalWriter(journal)
            tg.start_soon(writer.run)
            await writer.write(Record(0, State.SUBMITTING, attempt=1))
            ...
            await writer.aclose()
    """

    def __init__(self, journal: Journal, offload: Offload | None = None):
        self._journal = journal
        self._offload = offload or anyio.to_thread.run_sync
        self._pending: list[Record] = []
        self._next_commit = anyio.Event()  # set once the records now pending are committed
        self._wake = anyio.Event()
        self._closed = False
        self._done = anyio.Event()
        self._failure: BaseException | None = None
        self.commits = 0
        self.records = 0

    async def write(self, record: Record) -> None:
        """Queue a record and wait until it is committed."""
        self._check()
        self._pending.append(record)
        committed = self._next_commit
        self._wake.set()
        await committed.wait()
        self._check()

    def record_nowait(self, record: Record) -> None:
        """Queue a record without waiting for its commit."""
        self._check()
        self._pending.append(record)
        self._wake.set()

    def queued_commit(self) -> anyio.Event:
        """The event set once every record queued so far is committed (or the writer
        failed: see :attr:`failed`). Take it right after queueing, before any await."""
        return self._next_commit

    @property
    def failed(self) -> bool:
        """Whether a commit failed (nothing queued since is committed)."""
        return self._failure is not None

    def _check(self) -> None:
        if self._failure is not None:
            if isinstance(self._failure, JournalError):
                msg = str(self._failure)  # already says which journal and what went wrong
            else:
                msg = f"cannot write the journal: {self._failure}"
            raise JournalError(msg) from self._failure
        if self._closed:
            msg = "cannot write: the journal writer has been closed"
            raise JournalError(msg)

    async def run(self) -> None:
        """The writer task: commit whatever is queued until closed and drained."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._pending:
                    await self._commit_pending()
                if self._closed:
                    return
        except BaseException as exc:
            self._failure = exc
            self._next_commit.set()  # the waiters wake to the failure (see _check)
            raise
        finally:
            self._done.set()

    async def _commit_pending(self) -> None:
        batch, self._pending = self._pending, []
        committed, self._next_commit = self._next_commit, anyio.Event()
        # Shielded: once a batch is handed to SQLite it is committed whole; cancelling the
        # wait could not stop the thread anyway, and the waiters must learn the outcome.
        with anyio.CancelScope(shield=True):
            try:
                await self._offload(self._journal.apply, batch)
            except BaseException:
                committed.set()  # its waiters wake to the failure, set before they run
                raise
        self.commits += 1
        self.records += len(batch)
        committed.set()

    async def aclose(self) -> None:
        """Commit everything queued, then stop the writer task."""
        if not self._closed:
            self._closed = True
            self._wake.set()
        with anyio.CancelScope(shield=True):
            await self._done.wait()
