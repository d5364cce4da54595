"""When to try again: exponential back-off with full jitter, bounded in attempts and in time.

This is stamina's model: the n-th wait is uniform in ``[0, min(max_s, base_s * 2**(n-1))]``
("full jitter", which spreads many clients' retries out best), a server's ``Retry-After``
wins over the computed wait, and both a number of attempts and a total time budget end the
retries, whichever comes first. Throttling answers are not attempts (see the engine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bulk.config import RetryConfig

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """The retry state of one request.

    Example::

        backoff = Backoff(RetryConfig(attempts=5, budget_s=60), started=clock.now())
        delay = backoff.next_delay(now=clock.now(), retry_after=None)
        if delay is None:
            ...  # give up
        await clock.sleep(delay)

    Attributes:
        policy: the retry policy.
        started: when the first attempt began (clock time).
        failures: how many attempts have failed so far.
    """

    policy: RetryConfig
    started: float
    rng: random.Random = random.Random()  # noqa: RUF009 - one shared generator is the point
    failures: int = 0

    def next_delay(self, now: float, retry_after: float | None = None) -> float | None:
        """Count one failed attempt; the wait before the next, or None to give up."""
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        cap = min(self.policy.max_s, self.policy.base_s * 2 ** (self.failures - 1))
        delay = retry_after if retry_after is not None else self.rng.uniform(0, cap)
        if now + delay - self.started > self.policy.budget_s:
            return None
        return delay
