"""Time, injected: the engine and the rate limiters wait and read the time through a ``Clock``.

Production uses :class:`AnyioClock`. Tests use :class:`bulk.testing.FakeClock`, or run the
engine under trio's ``MockClock`` (virtual time that jumps when every task is blocked).
Code outside them reads the event loop's or the system's clock itself: the local backend's
process polling, the CLI's progress display and run summary, the simulators.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import anyio

__all__ = ["AnyioClock", "Clock"]


class Clock(Protocol):
    """Monotonic time for scheduling, wall time for records, and sleeping."""

    def now(self) -> float:
        """Monotonic seconds (only differences mean anything)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for the journal's timestamps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (0 or less: just yield)."""
        ...


class AnyioClock:
    """The event loop's clock (``anyio.current_time``), so it agrees with aiolimiter and
    with timeouts, and follows a mock clock when a test runner installs one."""

    def __init__(self) -> None:
        self._current_time: Callable[[], float] | None = None

    def now(self) -> float:
        # anyio.current_time() looks up the running async library on every call; the engine
        # reads the clock several times per job, so resolve the function once. On asyncio the
        # loop's clock *is* time.monotonic (uvloop reads the same clock, to the millisecond),
        # so read it directly; elsewhere (trio, a test's mock clock) keep asking anyio, through
        # its public API (its per-call look-up only costs the tests that run on trio).
        if self._current_time is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # not asyncio: trio, or a test runner's mock clock
                self._current_time = anyio.current_time
            else:
                self._current_time = time.monotonic
        return self._current_time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


_check: type[Clock] = AnyioClock
