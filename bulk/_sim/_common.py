"""A token bucket: the simulators' request rate limits (a service's own, or one per token)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` requests a second, up to ``rate_per_s`` saved up (one second's worth)."""

    rate_per_s: float
    _tokens: float = field(init=False)
    _last: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._tokens = self.rate_per_s

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (the request is over the limit)."""
        now = time.monotonic()
        self._tokens = min(self.rate_per_s, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
