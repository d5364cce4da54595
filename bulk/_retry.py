"""When to try again: exponential back-off with full jitter, bounded in attempts and in time.

The n-th wait is uniform in ``[0, min(max_s, base_s * 2**(n-1))]``: "full jitter" as AWS's
"Exponential Backoff And Jitter" (Marc Brooker, 2015) names it, the variant that post found to
spread competing clients' retries out with the least work. A server's ``Retry-After`` wins
over the computed wait. A number of attempts and a total time budget both end the retries,
whichever comes first, and the budget is checked before a wait: a wait that would end past it
is not taken. Throttling answers are not attempts (see the engine), and neither is a service
that could not be reached: :meth:`Backoff.outage_delay` spaces those tries out the same way
without ever giving up (the engine bounds an outage as a whole).

This is not stamina's formula, though it shares its shape (attempts *and* a time budget, a
server-given wait overriding the computed one). stamina (hynek/stamina, 25.2) waits
``min(wait_max, wait_initial * wait_exp_base**(n-1) + uniform(0, wait_jitter))``: the full
exponential wait plus at most ``wait_jitter`` (1 s by default) of additive jitter, and its
``timeout`` is checked only once an attempt has failed, not before a wait.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bulk._policy import RetryConfig

__all__ = ["Backoff"]

# 2**60 * base_s is beyond any max_s: a larger exponent only risks a float overflow.
_MAX_DOUBLINGS = 60


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
        started: when the first attempt began (clock time), moved on by outage waits.
        failures: how many attempts have failed so far.
        outages: how many tries found the service unreachable.
    """

    policy: RetryConfig
    started: float
    rng: random.Random = random.Random()  # noqa: RUF009, S311 - one shared jitter source
    failures: int = 0
    outages: int = 0

    def next_delay(self, now: float, retry_after: float | None = None) -> float | None:
        """Count one failed attempt; the wait before the next, or None to give up."""
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        cap = self._cap(self.failures)
        delay = retry_after if retry_after is not None else self.rng.uniform(0, cap)
        if now + delay - self.started > self.policy.budget_s:
            return None
        return delay

    def outage_delay(self) -> float:
        """The wait before trying again a service that could not be reached.

        Not an attempt, and never the end of the retries: the caller decides when an outage
        has lasted too long. The wait grows as attempts' waits do (full jitter), and is not
        counted against this request's time budget: a request that waited out an outage
        still has its whole budget for the failures the service answers.
        """
        self.outages += 1
        delay = self.rng.uniform(0, self._cap(self.outages))
        self.started += delay
        return delay

    def _cap(self, tries: int) -> float:
        return min(self.policy.max_s, self.policy.base_s * 2.0 ** min(tries - 1, _MAX_DOUBLINGS))
