"""Request rates: hard ceilings, and adaptive rates below them that throttling answers cut.

Layers, acquired one after the other before every request:

- per endpoint class (submit, status, stop): the **ceiling**, a :class:`RateLimiter` at the
  configured rate (``aiolimiter.AsyncLimiter`` in production, built inside the running loop,
  as it is bound to one), never exceeded, and an **adaptive rate** (:class:`AdaptiveRate`)
  below it;
- for the whole service, when ``[limits] service_rate_per_s`` is set: one more ceiling and
  adaptive rate, shared by every endpoint. A service that limits requests per token (Gongji's
  throttle codes name no endpoint) does not say which endpoint overflowed it, so throttles
  then cut the shared rate, and no endpoint's own.

A backend call may make several HTTP requests (a Gongji status: search pages, then details).
The engine paces the first before the call; the HTTP client calls :func:`pace_request` before
every request, which makes each one after the first wait its turn too (:func:`pacing`).

**How the adaptive rate decides.** It judges answers by the window (at least
:attr:`AdaptiveRate.WINDOW_S` and :attr:`AdaptiveRate.MIN_ANSWERS` answers), not one by one:

- more throttled answers than chance and the *background* explain (two binomial standard
  deviations) mean the service is over a limit: the rate is cut by the share it refused, and
  further down to what it took in that window (the limit, as measured) if that is lower and
  the window held at least :attr:`AdaptiveRate.STEADY` excess throttles (a throttle or two on
  an endpoint short of demand say nothing of a limit). That measure is low when every worker
  was waiting out a Retry-After at once, so the estimate of the limit falls by 5 % at a time;
- a cut is a question to the service. A real limit throttles less once the rate is below
  it; throttles that come at random, whatever the rate, do not (their share stays what it
  was: the recent share, if the window that set the cut off was a spike). Each answer after
  a cut adds its log-likelihood ratio between the two (Wald's sequential test) until the
  odds are 19:1 either way. A limit: the cut stands. Random: one more cut to what the service
  took since (a limit's first window is swollen by its burst allowance) and the same
  question; if the answer is random again, the rate goes straight back to where it was before
  the cuts, and that share becomes the background, the throttles expected at any rate (then a
  slow average of the windows judged clean). A probe still undecided after 100 answers made
  no clear difference: it counts as random;
- a window without excess throttles raises the rate: halfway (geometrically) towards the
  estimated limit when below it; past it, or with no limit known, by 5 % doubling each clean
  window in a row (slow start) up to the ceiling, but past a known limit only after three
  windows of 5 % (a service's burst allowance hides an excess for a while: clean windows
  there prove little);
- a throttled request always waits its own ``Retry-After`` (the engine does that); every
  request is held for it only when at least half of a window's answers were throttles: an
  overloaded service, not a random refusal.

While the rate is at the ceiling and no hold is due, acquiring it costs nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Protocol

from aiolimiter import AsyncLimiter

from bulk._clock import Clock

__all__ = [
    "AdaptiveRate",
    "CallPacer",
    "RateLimiter",
    "aiolimiter_factory",
    "pace_request",
    "pacing",
]


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
    """Pacing below a ceiling, cut only as far as the evidence of throttling says.

    Example::

        rate = AdaptiveRate(ceiling_per_s=100, clock=clock)
        await rate.acquire()            # free while nothing has been throttled
        rate.succeeded()                # an answer that was not a throttle
        rate.throttled(retry_after=2)   # one that was; judged with the others of its window

    Attributes:
        rate_per_s: the current rate (the metric ``bulk_rate_limit`` shows it).
        background: the share of answers throttled whatever the rate, as far as seen.
        throttles: throttling answers seen in all.
    """

    # A window of answers is judged once it spans this long and holds this many answers,
    # or once it spans the longer time with any answer (a slow endpoint is judged too).
    WINDOW_S = 1.0
    MIN_ANSWERS = 20
    MAX_WINDOW_S = 10.0
    # The rate never goes below this fraction of the ceiling.
    FLOOR = 1 / 64
    # Growth after a clean window with no limit known: this fraction of the rate, doubling
    # with each clean window in a row (slow start). Near a known limit: at least this much.
    GROWTH = 0.05
    # Odds a probe needs before it decides (19:1 either way). After this many answers
    # without them, the cut did not make a clear difference: taken as random throttles.
    EVIDENCE = math.log(19)
    PROBE_ANSWERS = 100
    # A share of throttles at or above this is an overloaded service: every request is held
    # for the Retry-After, and such a share is never taken for background.
    OVERLOAD = 0.5
    # A window judged clean moves a known background this far towards its share of throttles.
    DECAY = 0.05
    # Each time the service is over its limit, the limit's estimate keeps this much of the
    # last one at least.
    FORGET = 0.95
    # Clean windows past a known limit that add 5 % each before growth doubles again.
    CAREFUL = 3
    # The recent share of throttles: each window moves it this far towards its own.
    RECENT = 0.25
    # Throttles beyond the background a window needs for what the service took in it to
    # count as a measure of its limit.
    STEADY = 3

    def __init__(self, ceiling_per_s: float, clock: Clock):
        if ceiling_per_s <= 0:
            msg = "ceiling_per_s must be > 0"
            raise ValueError(msg)
        self.ceiling_per_s = ceiling_per_s
        self.rate_per_s = ceiling_per_s
        self.background = 0.0
        self.throttles = 0
        self._clock = clock
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._free = True  # at the ceiling and past every hold: acquire() returns at once
        self._limit: float | None = None  # the lowest rate found over the service's limit
        self._clean = 0  # clean windows in a row
        # The current window of answers.
        self._start = clock.now()
        self._ok = 0
        self._throttled = 0
        self._release = 0.0  # the latest time a throttle asked to wait until
        self._probe: _Probe | None = None
        self._recent = 0.0  # the share of throttles in recent windows (an average)

    async def acquire(self) -> None:
        """Wait for this request's slot: after any hold, spaced at the rate."""
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

    def throttled(self, retry_after: float | None = None) -> bool:
        """The service asked to slow down (once, for one request).

        Returns:
            Whether the rate changed.
        """
        now = self._clock.now()
        self.throttles += 1
        if retry_after:
            self._release = max(self._release, now + retry_after)
        if self._probe is not None:
            return self._probe_answer(self._probe, now, 0, 1)
        self._throttled += 1
        return self._judge(now)

    def succeeded(self, count: int = 1) -> bool:
        """``count`` requests were answered without a throttle.

        Returns:
            Whether the rate changed.
        """
        if self._probe is not None:
            return self._probe_answer(self._probe, self._clock.now(), count, 0)
        self._ok += count
        return self._judge(self._clock.now())

    # -- windows ------------------------------------------------------------------------------

    def _judge(self, now: float) -> bool:
        elapsed = now - self._start
        answers = self._ok + self._throttled
        if elapsed < self.WINDOW_S or (
            answers < self.MIN_ANSWERS and (elapsed < self.MAX_WINDOW_S or not answers)
        ):
            return False
        throttled, release = self._throttled, self._release
        self._new_window(now)
        share = throttled / answers
        self._recent += (share - self._recent) * self.RECENT
        if not throttled and self._free and self.background == 0.0:
            return False  # the common case: at the ceiling, nothing to judge
        before = self.rate_per_s
        background = self.background
        excess = throttled - answers * background
        chance = 2 * math.sqrt(answers * background * (1 - background))
        if excess >= 1 and excess > chance:  # more throttles than chance explains: over
            # What the service took while refusing the rest is its limit, as measured; less
            # when every worker was waiting out a Retry-After at once, so an estimate only
            # falls by 5 % at a time (a limit that really fell is found by the probe). A
            # throttle or two say little about it (a bursty endpoint, short of demand,
            # takes little in a window): then the cut is the share refused, no more.
            if excess >= self.STEADY:
                taken = (answers - throttled) / elapsed / (1 - background)
                self._limit = max(taken, (self._limit or 0.0) * self.FORGET)
            elif self._limit is None:
                self._limit = before * (1 - share)
            self._cut(share, self._limit)
            # What a random share would look like: this window's, unless recent windows
            # say it is a spike (a probe would then mistake the return to normal for a
            # limit's answer), but never less than half its excess.
            expected = max(min(share, self._recent), (background + share) / 2)
            self._probe = _Probe(before, share, expected, background, now)
            if share >= self.OVERLOAD and release > now:
                self._hold_until = max(self._hold_until, release)
        else:
            if background:  # within chance of it: a slow average, up or down
                self.background = min(self.OVERLOAD, background + (share - background) * self.DECAY)
            self._grow()
        return self.rate_per_s != before

    def _new_window(self, now: float) -> None:
        self._start, self._ok, self._throttled, self._release = now, 0, 0, 0.0

    def _cut(self, share: float, limit_per_s: float) -> None:
        """Cut by the share the service refused, and down to the limit if that is lower."""
        refused = max(0.0, share - self.background) / (1 - self.background)
        target = min(self.rate_per_s * (1 - refused), limit_per_s)
        self.rate_per_s = max(self.ceiling_per_s * self.FLOOR, target)
        self._free = False
        self._clean = 0

    def _grow(self) -> None:
        """A clean window: towards the estimated limit fast; past it (or with none known)
        5 % of the rate, doubling with each clean window in a row (slow start), after three
        such windows past a known limit (its burst allowance hides an excess for a while)."""
        rate, limit = self.rate_per_s, self._limit
        if rate >= self.ceiling_per_s:
            return
        if limit is not None and rate < limit:
            rate = max(rate * (1 + self.GROWTH), math.sqrt(rate * limit))
        else:
            self._clean += 1
            doublings = self._clean - (self.CAREFUL if limit is not None else 1)
            rate += rate * self.GROWTH * 2 ** min(max(0, doublings), 10)
        self.rate_per_s = min(self.ceiling_per_s, rate)

    # -- probes -------------------------------------------------------------------------------

    def _probe_answer(self, probe: _Probe, now: float, ok: int, throttled: int) -> bool:
        """Weigh one more answer to ``probe`` (the open one) after a cut: does the share of
        throttles follow the rate?"""
        probe.ok += ok
        probe.throttled += throttled
        probe.odds += ok * probe.ok_weight + throttled * probe.throttle_weight
        answers = probe.ok + probe.throttled
        if abs(probe.odds) < self.EVIDENCE and answers < self.PROBE_ANSWERS:
            return False
        before = self.rate_per_s
        share = probe.throttled / answers
        self._probe = None
        self._new_window(now)
        limited = probe.odds <= -self.EVIDENCE
        if limited or share >= self.OVERLOAD or probe.first_share >= self.OVERLOAD:
            return False  # fewer throttles once slower: a real limit, and the cut stands
        if not probe.cut_again:
            # The share did not fall; but the first window of a limit is swollen by the
            # service's burst allowance. Cut once more to what it took since, and ask again.
            elapsed = max(now - probe.since, 1e-9)
            self._cut(share, probe.ok / elapsed / (1 - self.background))
            again = _Probe(
                probe.rate_before, probe.first_share, probe.expected, probe.background, now
            )
            again.cut_again = True
            self._probe = again
            return self.rate_per_s != before
        # Twice slower, as many throttles: they do not depend on the rate. Back to the rate
        # before the cuts; their share (the lower of the two, the surer) is background now.
        seen = min(share, probe.first_share)
        self.background = min(self.OVERLOAD, max(self.background, seen))
        self.rate_per_s = max(self.rate_per_s, probe.rate_before)
        self._limit = None
        return self.rate_per_s != before


class _Probe:
    """A cut under test: the evidence, as log-odds, that throttles came at random.

    Two hypotheses for the share of throttles after the cut: unchanged (random throttles:
    ``expected``, the share before the cut, from recent windows if the last one was a spike),
    or the background plus a quarter of the excess (a real limit the cut went below). Each
    answer adds its log-likelihood ratio (Wald's sequential test).
    """

    __slots__ = (
        "background",
        "cut_again",
        "expected",
        "first_share",
        "odds",
        "ok",
        "ok_weight",
        "rate_before",
        "since",
        "throttle_weight",
        "throttled",
    )

    def __init__(
        self,
        rate_before: float,
        first_share: float,
        expected: float,
        background: float,
        since: float,
    ):
        self.rate_before = rate_before
        self.first_share = first_share
        self.expected = expected
        self.background = background
        self.since = since
        self.cut_again = False
        self.ok = 0
        self.throttled = 0
        self.odds = 0.0
        randomly = min(expected, 0.99)
        limited = background + (randomly - background) / 4
        self.throttle_weight = math.log(randomly / limited)
        self.ok_weight = math.log((1 - randomly) / (1 - limited))


class CallPacer:
    """Paces the HTTP requests of one backend call (see :func:`pacing`).

    Attributes:
        requests: HTTP requests the call has started so far.
    """

    __slots__ = ("_pace", "requests")

    def __init__(self, pace: Callable[[], Awaitable[None]]):
        self._pace = pace
        self.requests = 0

    async def next_request(self) -> None:
        """Wait for the next request's turn; the first one was paid for before the call."""
        self.requests += 1
        if self.requests > 1:
            await self._pace()


# The pacer of the backend call running in this task, if the engine is making one.
_pacer: ContextVar[CallPacer | None] = ContextVar("bulk_call_pacer", default=None)


@contextlib.contextmanager
def pacing(pace: Callable[[], Awaitable[None]]) -> Iterator[CallPacer]:
    """Within the block (one backend call, already paced once), every HTTP request after
    the first awaits ``pace()``. A context variable carries it to the HTTP client, so that
    backends need no knowledge of the engine's limits.
    """
    pacer = CallPacer(pace)
    token = _pacer.set(pacer)
    try:
        yield pacer
    finally:
        _pacer.reset(token)


async def pace_request() -> None:
    """Called by HTTP clients before every request: waits its turn inside a paced call."""
    pacer = _pacer.get()
    if pacer is not None:
        await pacer.next_request()
