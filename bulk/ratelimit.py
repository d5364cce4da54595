"""Request rates: a hard ceiling per endpoint class, and an adaptive rate below it.

Two layers, acquired one after the other before every request of an endpoint class:

- the **ceiling**, a :class:`RateLimiter` at the configured rate: ``aiolimiter.AsyncLimiter``
  in production (built inside the running loop, as it is bound to one), never exceeded;
- the **adaptive rate** (:class:`AdaptiveRate`), AIMD: a throttling answer (HTTP 429, a
  throttle code) halves it and holds every request until the ``Retry-After`` has passed; after
  each second free of throttling it climbs back by a twentieth of the ceiling. While it is
  at the ceiling it costs nothing.
"""

from __future__ import annotations

from typing import Protocol

from aiolimiter import AsyncLimiter

from bulk.clock import Clock

__all__ = ["AdaptiveRate", "RateLimiter", "aiolimiter_factory"]


class RateLimiter(Protocol):
    """What a rate limiter offers the engine. ``aiolimiter.AsyncLimiter`` satisfies it."""

    async def acquire(self, amount: float = 1) -> None:
        """Wait until ``amount`` more requests fit in the rate."""
        ...


def aiolimiter_factory(rate_per_s: float, burst: int) -> RateLimiter:
    """A leaky bucket of ``burst`` requests draining at ``rate_per_s`` (aiolimiter).

    At most ``burst`` requests go out back to back; over any window of ``t`` seconds at most
    ``burst + rate_per_s * t`` do.
    """
    return AsyncLimiter(max_rate=burst, time_period=burst / rate_per_s)


class AdaptiveRate:
    """AIMD pacing below a ceiling, driven by throttling answers.

    Example::

        rate = AdaptiveRate(ceiling_per_s=100, clock=clock)
        await rate.acquire()          # free while no throttling has been seen
        rate.throttled(retry_after=2)  # now 50/s, and nothing goes out for 2 s
        rate.succeeded()              # after throttle-free seconds, +5/s each

    Attributes:
        rate_per_s: the current rate (the metric ``bulk_rate_limit`` shows it).
    """

    # Decrease factor on a throttle, and the smallest fraction of the ceiling it may reach.
    DECREASE = 0.5
    FLOOR = 1 / 64
    # Additive recovery: this fraction of the ceiling per throttle-free second.
    RECOVERY = 1 / 20

    def __init__(self, ceiling_per_s: float, clock: Clock):
        if ceiling_per_s <= 0:
            msg = "ceiling_per_s must be > 0"
            raise ValueError(msg)
        self.ceiling_per_s = ceiling_per_s
        self.rate_per_s = ceiling_per_s
        self._clock = clock
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._last_change = clock.now()
        self._free = True  # no throttle seen, or fully recovered and past every hold
        self.throttles = 0

    async def acquire(self) -> None:
        """Wait for this request's slot: after any Retry-After hold, spaced at the rate."""
        if self._free:
            return
        now = self._clock.now()
        if self.rate_per_s >= self.ceiling_per_s and now >= self._hold_until:
            self._free = True
            return
        start = max(now, self._hold_until)
        if self.rate_per_s < self.ceiling_per_s:
            start = max(start, self._next_slot)
            self._next_slot = start + 1 / self.rate_per_s
        if start > now:
            await self._clock.sleep(start - now)

    def throttled(self, retry_after: float | None = None) -> None:
        """The service asked to slow down: halve the rate, and hold for ``retry_after``."""
        now = self._clock.now()
        self._free = False
        self.throttles += 1
        floor = self.ceiling_per_s * self.FLOOR
        # Several requests in flight may all be throttled by the same overload: count one
        # decrease per second, or a burst of 429s would crash the rate to its floor at once.
        if now - self._last_change >= 1.0 or self.rate_per_s == self.ceiling_per_s:
            self.rate_per_s = max(floor, self.rate_per_s * self.DECREASE)
            self._last_change = now
        if retry_after:
            self._hold_until = max(self._hold_until, now + retry_after)

    def succeeded(self) -> bool:
        """A request went through: after each throttle-free second, climb back a step.

        Returns:
            Whether the rate changed.
        """
        if self.rate_per_s >= self.ceiling_per_s:
            return False
        now = self._clock.now()
        if now - self._last_change < 1.0:
            return False
        step = self.ceiling_per_s * self.RECOVERY
        self.rate_per_s = min(self.ceiling_per_s, self.rate_per_s + step)
        self._last_change = now
        return True
