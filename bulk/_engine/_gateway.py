"""The gateway: the one path every request to the service takes.

Before a request: the endpoint class's adaptive rate, then its ceiling, then (with
``[limits] service_rate_per_s``) the service-wide adaptive rate and ceiling; then the cap on
requests in flight. After it: the metrics (``bulk_requests_total``, the duration histogram,
``bulk_throttled_total``, ``bulk_rate_limit``), the answer as evidence for the adaptive rate,
and whether the service was reached (an outage begins or ends).

:meth:`Gateway.request` is one attempt (the engine's submitter and tracker decide what an
error means for their job); :meth:`Gateway.send` also retries (the :class:`~bulk.backends.base.Send`
protocol): ``bulk stop`` and a backend's one-off commands use it. The CLI builds one with
:meth:`Gateway.for_command`.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bulk._clock import Clock
from bulk._engine._context import LimiterFactory, Stats
from bulk._engine._slots import Slots
from bulk._logs import event
from bulk._metrics import ENDPOINTS, OUTCOMES, Metrics
from bulk._policy import Policy
from bulk._ratelimit import AdaptiveRate, RateLimiter, aiolimiter_factory, pacing
from bulk._retry import Backoff
from bulk.backends.base import Endpoint
from bulk.errors import (
    AmbiguousBackendError,
    BackendError,
    PermanentBackendError,
    RetryableBackendError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

_log = logging.getLogger("bulk")
_WHOLE_SECONDS = 10  # waits this long or longer are said in whole seconds

__all__ = ["Gateway", "outcome_of"]

_T = TypeVar("_T")

# The endpoint classes that have their own rate and ceiling: a look-up is paced as a status.
_RATE_CLASS: dict[Endpoint, Endpoint] = {
    "submit": "submit",
    "status": "status",
    "stop": "stop",
    "lookup": "status",
}


class Gateway:
    """Paces, caps, measures and judges every request to one service.

    Example::

        gateway = Gateway(policy, clock=clock, metrics=metrics)
        found = await gateway.send("lookup", backend.lookup, submission)

    Build it inside the running event loop (the limiter factory's ceilings are bound to
    it). Every engine run builds its own; a one-off command builds one with
    :meth:`for_command`.

    Attributes:
        rates: the adaptive rate of each endpoint class ("submit", "status", "stop") and,
            with a service-wide budget, "service".
        unreachable_since: clock time since which no request has reached the service
            (None: the last one did).
        went_through_at: clock time of the last call the service carried out (None: none yet).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Clock,
        metrics: Metrics,
        limiter_factory: LimiterFactory = aiolimiter_factory,
        rng: random.Random | None = None,
        stats: Stats | None = None,
    ):
        limits = policy.limits
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - back-off jitter, not a secret
        self._stats = stats or Stats()
        # The same gate as the active-job cap: no checkpoint while a slot is free (one
        # request per job goes through it), FIFO hand-off when the cap is reached.
        self._in_flight = Slots(limits.max_in_flight)
        per_s: dict[Endpoint, float] = {
            "submit": limits.submit_rate_per_s,
            "status": limits.status_rate_per_s,
            "stop": limits.stop_rate_per_s,
        }
        self._ceilings: dict[str, RateLimiter] = {
            c: limiter_factory(r, limits.burst) for c, r in per_s.items()
        }
        self.rates: dict[str, AdaptiveRate] = {c: AdaptiveRate(r, clock) for c, r in per_s.items()}
        # The service-wide budget, shared by every endpoint (``[limits] service_rate_per_s``).
        # With it, throttles cut the shared rate: they say the service is over its limit,
        # not which endpoint is (see bulk._ratelimit).
        self._service: tuple[AdaptiveRate, RateLimiter] | None = None
        if limits.service_rate_per_s is not None:
            self._service = (
                AdaptiveRate(limits.service_rate_per_s, clock),
                limiter_factory(limits.service_rate_per_s, limits.burst),
            )
            self.rates["service"] = self._service[0]
        for name, rate in self.rates.items():
            metrics.rate_limit.labels(endpoint=name).set(rate.rate_per_s)
            metrics.rate_ceiling.labels(endpoint=name).set(rate.ceiling_per_s)
        self._pace_extra = {c: functools.partial(self.pace, c) for c in per_s}
        self.unreachable_since: float | None = None
        self.went_through_at: float | None = None
        # Labelled metric children, looked up once: .labels() is a dict walk under a lock.
        self._m_requests = {
            (e, o): metrics.requests.labels(endpoint=e, outcome=o)
            for e in ENDPOINTS
            for o in OUTCOMES
        }
        self._m_duration = {e: metrics.request_duration.labels(endpoint=e) for e in ENDPOINTS}

    @classmethod
    def for_command(
        cls,
        policy: Policy,
        metrics: Metrics,
        clock: Clock,
        limiter_factory: LimiterFactory = aiolimiter_factory,
    ) -> Gateway:
        """The gateway of a one-off command (``bulk stop``, ``bulk gongji resources``).

        Call it inside the running loop; pass ``gateway.send`` where a
        :class:`~bulk.backends.base.Send` is asked for.
        """
        return cls(policy, clock=clock, metrics=metrics, limiter_factory=limiter_factory)

    async def pace(self, rate_class: Endpoint) -> None:
        """Wait for the turn of one request of ``rate_class`` ("submit", "status", "stop")."""
        await self.rates[rate_class].acquire()
        await self._ceilings[rate_class].acquire()
        if self._service is not None:
            await self._service[0].acquire()
            await self._service[1].acquire()

    async def request(
        self,
        endpoint: Endpoint,
        call: Callable[..., Awaitable[_T]],
        *args: Any,
        paced: bool = False,
    ) -> _T:
        """One backend call, not retried: paced (look-ups as status), capped in flight,
        measured, and its answer taken as evidence for the adaptive rate.

        The call's first HTTP request is paced here unless the caller did (``paced``: the
        submitter paces a submit before its journal write); any further one waits its turn in
        ``pace_request`` (a Gongji status reads several pages). Every answer is evidence for
        the adaptive rate: the service's when there is a service-wide budget, else the
        endpoint's.
        """
        rate_class = _RATE_CLASS[endpoint]
        if not paced:
            await self.pace(rate_class)
        judged = "service" if self._service is not None else rate_class
        rate = self.rates[judged]
        started = self._clock.now()
        outcome = "ok"
        with pacing(self._pace_extra[rate_class]) as pacer:
            try:
                await self._in_flight.acquire()
                try:
                    result = await call(*args)
                finally:
                    self._in_flight.release()
            except BackendError as exc:
                outcome = outcome_of(exc)
                self._failed(exc, started, judged, pacer.requests)
                raise
            else:
                self._reached()
                if rate.succeeded(max(1, pacer.requests)):
                    self._metrics.rate_limit.labels(endpoint=judged).set(rate.rate_per_s)
                return result
            finally:
                ended = self._clock.now()  # one clock read on the hot path, for both uses
                if outcome == "ok":
                    self.went_through_at = ended
                self._m_requests[endpoint, outcome].inc()
                self._m_duration[endpoint].observe(max(0.0, ended - started))

    async def send(self, endpoint: Endpoint, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """One backend call through :meth:`request`, retried until it is answered.

        A throttle waits its ``Retry-After`` (the adaptive rate has slowed down already) and is sent
        again, never counted as an attempt, for as long as the service carries out other requests:
        only when nothing has gone through for ``retry.budget_s`` does the call end (the last
        throttle is raised, saying so), so that a one-off command against a service that throttles
        everything is bounded. A service that cannot be reached is waited for until no request has
        reached it for ``retry.budget_s``; other retryable errors are retried within
        ``retry.attempts``/``retry.budget_s`` with back-off (``Retry-After`` wins). The last error
        is raised when they run out; a permanent one at once. So ``call`` must be safe to repeat (a
        stop, a status, a look-up, a read): a submit is not, and goes through the engine's
        submitter.
        """
        clock = self._clock
        retry = self._policy.retry
        started = clock.now()
        backoff = Backoff(retry, started=started, rng=self._rng)
        waiting = False
        while True:
            try:
                return await self.request(endpoint, call, *args)
            except ThrottledError as exc:
                reason, delay = "throttled", exc.retry_after or 0.0
                since = max(started, self.went_through_at or started)
                if clock.now() + delay - since > retry.budget_s:
                    raise _throttled_out(exc, retry.budget_s) from exc
            except UnreachableError as exc:
                left = self.outage_left()
                if left <= 0:
                    raise
                if not waiting:  # a one-off command is otherwise silent while it waits
                    waiting = True
                    seconds = f"{left:.0f}" if left >= _WHOLE_SECONDS else f"{left:.1f}"
                    _log.warning(
                        "bulk: %s; waiting up to %s s for the service (retry.budget_s), "
                        "Ctrl-C stops",
                        exc,
                        seconds,
                    )
                reason, delay = "unreachable", min(backoff.outage_delay(), left)
            except RetryableBackendError as exc:
                next_delay = backoff.next_delay(clock.now(), exc.retry_after)
                if next_delay is None:
                    raise
                reason = "ambiguous" if isinstance(exc, AmbiguousBackendError) else "transient"
                delay = next_delay
            self._stats.retries += 1
            self._metrics.retries.labels(reason=reason).inc()
            event(
                "retry",
                f"{endpoint} again in {delay:.3g} s ({reason})",
                endpoint=endpoint,
                reason=reason,
                delay_s=round(delay, 3),
            )
            await clock.sleep(delay)

    def _failed(self, exc: BackendError, started: float, judged: str, requests: int) -> None:
        """Take what a failed call (``requests`` HTTP requests, the first at ``started``)
        tells: whether the service answered, and to the adaptive rate ``judged``, that the
        requests before the last went through and whether the last was throttled."""
        rate = self.rates[judged]
        if isinstance(exc, UnreachableError):
            if self.unreachable_since is None:
                self.unreachable_since = started
                self._stats.unreachable = True
        elif isinstance(exc, ThrottledError | PermanentBackendError):
            # The service answered. (A reset or a timeout proves nothing either way.)
            self._reached()
        if requests > 1:  # the requests before the failed one went through
            rate.succeeded(requests - 1)
        if isinstance(exc, ThrottledError):
            self._stats.throttled += 1
            self._metrics.throttled.inc()
            if rate.throttled(exc.retry_after):
                self._metrics.rate_limit.labels(endpoint=judged).set(rate.rate_per_s)
            event(
                "throttled",
                f"throttled: {exc}",
                level=logging.WARNING,
                rate=judged,
                retry_after_s=exc.retry_after,
                rate_per_s=round(rate.rate_per_s, 3),
            )

    def outage_left(self) -> float:
        """Seconds of the outage budget left (all of it if the service was just reached)."""
        since = self.unreachable_since
        if since is None:
            return self._policy.retry.budget_s
        return max(0.0, since + self._policy.retry.budget_s - self._clock.now())

    def _reached(self) -> None:
        """The service answered (whatever it said): any outage is over."""
        if self.unreachable_since is not None:
            self.unreachable_since = None
            self._stats.unreachable = False


def outcome_of(exc: BackendError) -> str:
    """The ``outcome`` label of a failed request in ``bulk_requests_total``."""
    if isinstance(exc, ThrottledError):
        return "throttled"
    if isinstance(exc, AmbiguousBackendError):
        return "ambiguous"
    if isinstance(exc, UnreachableError):
        return "unreachable"
    if isinstance(exc, TransientBackendError):
        return "transient"
    return "permanent"


def _throttled_out(exc: ThrottledError, budget_s: float) -> ThrottledError:
    """``exc``, saying that the service throttled one call for the whole retry budget."""
    msg = f"{exc}; nothing went through for {budget_s:g} s (retry.budget_s)"
    return ThrottledError(
        msg, job_name=exc.job_name, code=exc.code, status=exc.status, retry_after=exc.retry_after
    )
