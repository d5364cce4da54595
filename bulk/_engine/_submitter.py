"""Delivering pending rows: which to look up first after a session that may have lost records."""

from __future__ import annotations

from collections import deque

import anyio

from bulk._engine._context import Job
from bulk.errors import BulkError

__all__ = ["PAGE", "Scan", "UnexpectedError"]

PAGE = 1000  # pending rows read from the journal at a time


class UnexpectedError(BulkError):
    """Internal: a backend's submit or look-up raised something that is not a bulk error."""


class Scan:
    """Which pending rows to look up before sending, after a session that may have lost
    records: rows in index order until ``window`` consecutive ones are not on the service.

    Up to ``concurrency`` look-ups run at once; answers are counted in index order, so the
    scan ends at the same row as one look-up at a time would, having started at most
    ``concurrency - 1`` more.
    """

    def __init__(self, window: int, concurrency: int):
        self._window = window
        self._concurrency = max(1, concurrency)
        self._misses = 0  # consecutive misses among the answered rows, in index order
        self._waiting: deque[tuple[Job, anyio.Event]] = deque()  # not counted yet, in order

    async def needs_lookup(self, job: Job) -> bool:
        """Whether ``job`` must be looked up (if so, it is counted once answered)."""
        while True:
            while self._waiting and self._waiting[0][1].is_set():
                answered, _ = self._waiting.popleft()
                # Not looked up (it failed, or the look-up gave up): no evidence, go on.
                self._misses = self._misses + 1 if answered.found is False else 0
            if self._misses >= self._window:
                return False
            if len(self._waiting) < self._concurrency:
                break
            await self._waiting[0][1].wait()
        job.looked_up = anyio.Event()
        self._waiting.append((job, job.looked_up))
        return True
