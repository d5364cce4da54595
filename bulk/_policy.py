"""A run's policy: how fast to send, how long to retry, how to track. Pure data, no I/O.

Read from ``[limits]``, ``[retry]`` and ``[track]`` by :func:`bulk.load`; used by the engine,
the retry back-off and the backends (which may choose their own defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LimitsConfig", "Policy", "RetryConfig", "TrackConfig"]


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: politeness. Rates are requests per second per endpoint class.

    ``service_rate_per_s`` is a budget shared by every endpoint (every HTTP request counts),
    for services that limit a token across endpoints; None: no such budget.
    """

    submit_rate_per_s: float = 10.0
    status_rate_per_s: float = 5.0
    stop_rate_per_s: float = 5.0
    service_rate_per_s: float | None = None
    burst: int = (
        10  # measured: burst 1 reaches ~95 % of the rate (timer overshoot), 10 reaches 100 %
    )
    max_in_flight: int = 8
    max_active: int = 64

    def over_budget(self) -> list[str]:
        """The endpoint rates above the service-wide budget, which then caps them (a note
        for the user: a faster endpoint needs a bigger budget)."""
        budget = self.service_rate_per_s
        if budget is None:
            return []
        rates = {
            "submit_rate_per_s": self.submit_rate_per_s,
            "status_rate_per_s": self.status_rate_per_s,
            "stop_rate_per_s": self.stop_rate_per_s,
        }
        return [
            f"limits.{key} ({rate:g}/s) is above limits.service_rate_per_s ({budget:g}/s), "
            "which every request counts against: raise service_rate_per_s (0: no shared "
            "budget) to go faster"
            for key, rate in rates.items()
            if rate > budget
        ]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """``[retry]``: exponential back-off with full jitter, bounded in attempts and in time."""

    attempts: int = 6
    budget_s: float = 600.0
    base_s: float = 0.5
    max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """``[track]``: per-job polling back-off and the client-side job timeout."""

    first_s: float = 1.0
    factor: float = 1.5
    max_s: float = 30.0
    timeout_s: float | None = None
    batch: int = 100


@dataclass(frozen=True, slots=True)
class Policy:
    """The run's limits, retry and tracking policy (from its config)."""

    limits: LimitsConfig = field(default_factory=LimitsConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
