"""What the simulators share: a token bucket for their request rate limits (a service's own,
or one per token), and the argument types of their ``bulk sim KIND`` options."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["TokenBucket", "per_second", "seconds", "share"]


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
