"""bulk.testing's polling helper: it returns what the probe saw, and its loop is bounded."""

from __future__ import annotations

import pytest

from bulk.testing import wait_until, wait_until_sync


class Counter:
    """A probe that counts its calls and returns their number."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls

    async def probe(self) -> int:
        return self()


async def test_wait_until_returns_the_first_value_done_accepts() -> None:
    probe = Counter()

    value = await wait_until(probe.probe, lambda n: n >= 3, what="three", interval_s=0)

    assert (3, 3) == (value, probe.calls)


async def test_wait_until_accepts_a_truthy_value_by_default() -> None:
    probe = Counter()

    assert 1 == await wait_until(probe.probe, what="anything", interval_s=0)


async def test_wait_until_gives_up_after_its_polls_and_says_what() -> None:
    probe = Counter()

    with pytest.raises(AssertionError, match=r"the job ends: not after 5 polls .*last seen: 5"):
        await wait_until(probe.probe, lambda n: n > 99, what="the job ends", polls=5, interval_s=0)

    assert 5 == probe.calls


def test_wait_until_sync_returns_and_gives_up_the_same_way() -> None:
    probe = Counter()
    assert 2 == wait_until_sync(probe, lambda n: n == 2, what="two", interval_s=0)

    with pytest.raises(AssertionError, match=r"never: not after 4 polls .*last seen: 6"):
        wait_until_sync(probe, lambda n: n < 0, what="never", polls=4, interval_s=0)
    assert 6 == probe.calls


def test_a_long_last_value_is_shortened() -> None:
    with pytest.raises(AssertionError) as caught:
        wait_until_sync(lambda: "x" * 10_000, lambda _: False, what="w", polls=1, interval_s=0)

    assert len(str(caught.value)) < 300
