"""The cap on active jobs (and on requests in flight): first come, first served."""

from __future__ import annotations

from collections import deque

import anyio

__all__ = ["Slots"]


class Slots:
    """The active-job cap, first come first served.

    A free slot is taken without a checkpoint (this runs once per job, and an anyio
    Semaphore's checkpoint was a measurable share of the engine's CPU); a released slot is
    handed straight to the longest waiter. Jobs adopted on resume take a slot even past the
    cap: ``free`` then goes below zero, and releases pay that debt before waking anyone.
    """

    def __init__(self, size: int):
        self._free = size
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        handed = anyio.Event()
        self._waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self.release()  # a slot was handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(handed)
            raise

    def take_now(self) -> None:
        self._free -= 1

    def release(self) -> None:
        if self._free < 0:
            self._free += 1  # paying the debt of adopted jobs: still at or over the cap
        elif self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1
