"""Backoff: full jitter under a doubling cap, bounded by attempts and by a time budget."""

from __future__ import annotations

import random

import pytest

from bulk._policy import RetryConfig
from bulk._retry import Backoff


def backoff(
    attempts: int = 100, budget_s: float = 1e9, base_s: float = 0.5, max_s: float = 60.0
) -> Backoff:
    policy = RetryConfig(attempts=attempts, budget_s=budget_s, base_s=base_s, max_s=max_s)
    return Backoff(policy, started=0.0, rng=random.Random(7))


def test_attempts_bound_the_retries() -> None:
    """``attempts`` counts the first try: 3 attempts give 2 waits, then the end."""
    b = backoff(attempts=3)

    delays = [b.next_delay(now=0.0) for _ in range(3)]

    assert [d is not None for d in delays] == [True, True, False]
    assert 3 == b.failures


def test_one_attempt_never_retries() -> None:
    assert backoff(attempts=1).next_delay(now=0.0) is None


def test_the_budget_ends_retries_before_a_wait_that_would_pass_it() -> None:
    """A wait that would end past ``started + budget_s`` is not taken, whatever attempts say."""
    b = backoff(budget_s=10.0)

    assert b.next_delay(now=9.0, retry_after=1.0) == 1.0  # ends at 10: inside the budget
    assert b.next_delay(now=9.0, retry_after=1.5) is None  # would end at 10.5
    assert b.next_delay(now=10.5, retry_after=0.0) is None  # already past it


def test_full_jitter_spans_zero_to_the_doubling_cap() -> None:
    """The n-th wait is uniform in [0, min(max_s, base_s * 2**(n-1))]."""
    caps = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    seen: list[list[float]] = [[] for _ in caps]
    for seed in range(400):
        b = Backoff(RetryConfig(attempts=100, budget_s=1e9, base_s=0.5, max_s=10.0), 0.0)
        b.rng = random.Random(seed)
        for n in range(len(caps)):
            delay = b.next_delay(now=0.0)
            assert delay is not None
            seen[n].append(delay)

    for cap, delays in zip(caps, seen, strict=True):
        assert 0.0 <= min(delays)
        assert max(delays) <= cap
        # spread over the whole range, not bunched near the cap ("equal jitter") or at 0
        assert min(delays) < 0.05 * cap
        assert max(delays) > 0.95 * cap


def test_a_seeded_rng_gives_the_same_waits() -> None:
    first, second = backoff(), backoff()

    assert [first.next_delay(0.0) for _ in range(5)] == [second.next_delay(0.0) for _ in range(5)]


@pytest.mark.parametrize("retry_after", [0.0, 0.25, 300.0])
def test_retry_after_wins_over_the_computed_wait(retry_after: float) -> None:
    """The server's wait is taken as given, even above max_s (the budget still bounds it)."""
    b = backoff(max_s=1.0)

    assert retry_after == b.next_delay(now=0.0, retry_after=retry_after)


def test_retry_after_still_counts_as_an_attempt() -> None:
    b = backoff(attempts=2)

    assert b.next_delay(now=0.0, retry_after=1.0) == 1.0
    assert b.next_delay(now=1.0, retry_after=1.0) is None


def test_outage_waits_grow_never_end_and_spare_the_budget() -> None:
    """Waiting out an unreachable service: jittered waits under the same doubling cap, never
    None, not attempts, and the time spent waiting is added back to the budget."""
    b = backoff(attempts=2, budget_s=5.0, base_s=1.0, max_s=8.0)

    waits = [b.outage_delay() for _ in range(50)]

    assert 50 == b.outages
    assert 0 == b.failures
    caps = [min(8.0, 2.0**i) for i in range(50)]
    assert all(0.0 <= w <= cap for w, cap in zip(waits, caps, strict=True))
    assert sum(waits) == pytest.approx(b.started)
    # the whole budget is still there for the answers that follow the outage
    now = b.started + 4.0
    assert b.next_delay(now=now, retry_after=1.0) == 1.0
