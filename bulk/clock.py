"""Time, injected: everything in bulk that waits or reads the time goes through a ``Clock``.

Production uses :class:`AnyioClock`. Tests use :class:`bulk.testing.FakeClock`, or run the
engine under trio's ``MockClock`` (virtual time that jumps when every task is blocked).
"""

from __future__ import annotations

import time
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

    def now(self) -> float:
        return anyio.current_time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


_check: type[Clock] = AnyioClock
