"""What the simulators share: a token bucket for their request rate limits (a service's own,
or one per token), the create ledger and seeded fault rolls every simulator keeps, the busiest
second of a stream of request times, and the argument types of their ``bulk sim KIND``
options. Each simulator keeps its own dialect (paths, ids, bodies, what else its ledger holds)."""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Ledger", "TokenBucket", "busiest_second", "per_second", "seconds", "share"]


def _number(text: str, allowed: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and allowed(value)):
        msg = f"expected {what}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def share(text: str) -> float:
    """An option's share of requests or jobs, from 0 to 1."""
    return _number(text, lambda v: 0 <= v <= 1, "a share from 0 to 1")


def seconds(text: str) -> float:
    """An option's seconds, 0 or more."""
    return _number(text, lambda v: v >= 0, "a number of seconds >= 0")


def per_second(text: str) -> float:
    """An option's requests per second, more than 0."""
    return _number(text, lambda v: v > 0, "a number of requests per second > 0")


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` requests a second, up to ``rate_per_s`` saved up (one second's worth)."""

    rate_per_s: float
    clock: Callable[[], float] = time.monotonic  # a test passes its event loop's (virtual) time
    _tokens: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = self.rate_per_s
        self._last = self.clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (the request is over the limit)."""
        now = self.clock()
        self._tokens = min(self.rate_per_s, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass(slots=True, kw_only=True)
class Ledger:
    """The part of a simulator's state every simulator keeps alike: how often each job was
    created (``creates``, by the key its service deduplicates on), the monotonic times of the
    first and last create, the answers that echoed the request, and the seeded random source
    of its faults. A simulator's state class extends it (keyword-only fields, so its own
    fields keep their places)."""

    creates: dict[str, int] = field(default_factory=dict)
    echoed: int = 0  # answers that echoed the request
    first_create: float | None = None  # monotonic times of the first and last create
    last_create: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (seeded)."""
        return rate > 0 and self.rng.random() < rate

    def count_create(self, key: str, now: float | None = None) -> None:
        """Count one create of ``key`` at ``now`` (default: the monotonic clock)."""
        self.creates[key] = self.creates.get(key, 0) + 1
        self.last_create = time.monotonic() if now is None else now
        if self.first_create is None:
            self.first_create = self.last_create

    def outage(
        self, request: web.Request, error_rate: float, reset_rate: float
    ) -> web.Response | None:
        """A drawn network fault, or None: a 502 at ``error_rate``, else a dropped connection
        at ``reset_rate`` (the request never took effect). Rolled in that order, so a seed
        draws the same faults as before."""
        if self.roll(error_rate):
            return web.Response(status=502, text="bad gateway")
        if self.roll(reset_rate):
            if request.transport is not None:  # None only once the client has gone
                request.transport.close()
            return web.Response(status=500)
        return None


def busiest_second(times: Sequence[float]) -> int:
    """The most of ``times`` (ascending, in seconds) in any one-second window."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
