"""The run's per-second time series: sampled from the metrics once a second, off the hot path.

Requests are already counted (``bulk_requests_total`` by endpoint and outcome,
``bulk_retries_total``) and the adaptive rates kept by the gateway; once a second the sampler
reads those counters, takes the difference from its previous reading and hands the rows to
the journal writer, whose next group commit stores them (table ``series``, read back with
:meth:`Journal.series <bulk._journal.Journal.series>`). A request costs nothing more than the
counter bump it already made.
"""

from __future__ import annotations

import contextlib

from bulk._clock import Clock
from bulk._engine._gateway import Gateway
from bulk._journal import SERIES_OUTCOMES, JournalWriter, SeriesRow
from bulk._metrics import Metrics
from bulk._policy import Policy
from bulk.errors import JournalError

__all__ = ["SeriesSampler"]

# The endpoints whose adaptive rate a row carries: look-ups are paced as status.
_RATE_OF = {"submit": "submit", "status": "status", "stop": "stop", "lookup": "status"}


class SeriesSampler:
    """Turns the run's counters into one :class:`SeriesRow` per endpoint and second.

    A row is made only for an endpoint that saw requests in that second or whose adaptive
    rate changed since its last row (``run``: retries); ``rate`` and ``ceiling`` are written
    on an endpoint's first row and whenever the rate changes.

    Example::

        sampler = SeriesSampler(metrics, gateway, policy, clock)
        tg.start_soon(sampler.run, writer)   # until cancelled
        writer.record_series(sampler.sample())  # the last, partial second
    """

    def __init__(self, metrics: Metrics, gateway: Gateway, policy: Policy, clock: Clock):
        self._metrics = metrics
        self._gateway = gateway
        self._clock = clock
        limits = policy.limits
        self._ceilings: dict[str, float] = {
            "submit": limits.submit_rate_per_s,
            "status": limits.status_rate_per_s,
            "stop": limits.stop_rate_per_s,
        }
        if limits.service_rate_per_s is not None:
            self._ceilings["service"] = limits.service_rate_per_s
        self._seen: dict[tuple[str, str], float] = self._requests()
        self._retries = self._retry_total()
        self._rates: dict[str, float] = {}

    def _requests(self) -> dict[tuple[str, str], float]:
        out = {}
        for family in self._metrics.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["endpoint"], sample.labels["outcome"]] = sample.value
        return out

    def _retry_total(self) -> float:
        return sum(
            sample.value
            for family in self._metrics.retries.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )

    def sample(self) -> list[SeriesRow]:
        """The rows of what happened since the previous sample, stamped with this second."""
        t = int(self._clock.wall())
        now = self._requests()
        counts: dict[str, dict[str, int]] = {}
        for (endpoint, outcome), value in now.items():
            delta = int(value - self._seen.get((endpoint, outcome), 0.0))
            if delta and outcome in SERIES_OUTCOMES:
                counts.setdefault(endpoint, {})[outcome] = delta
        self._seen = now
        rates = self._gateway.rates
        rows = []
        for endpoint in sorted({*counts, *_RATE_OF}):
            rate_class = _RATE_OF.get(endpoint, endpoint)
            rate = rates[rate_class].rate_per_s if rate_class in rates else None
            changed = rate is not None and self._rates.get(endpoint) != rate
            if endpoint not in counts and not changed:
                continue
            if changed and rate is not None:
                self._rates[endpoint] = rate
            if changed:
                ceiling = self._ceilings.get(rate_class)
                rows.append(
                    SeriesRow(t, endpoint, **counts.get(endpoint, {}), rate=rate, ceiling=ceiling)
                )
            else:
                rows.append(SeriesRow(t, endpoint, **counts.get(endpoint, {})))
        service = rates.get("service")
        if service is not None and self._rates.get("service") != service.rate_per_s:
            self._rates["service"] = service.rate_per_s
            ceiling = self._ceilings["service"]
            rows.append(SeriesRow(t, "service", rate=service.rate_per_s, ceiling=ceiling))
        retries = self._retry_total()
        if retries > self._retries:
            rows.append(SeriesRow(t, "run", retries=int(retries - self._retries)))
        self._retries = retries
        return rows

    async def run(self, writer: JournalWriter) -> None:
        """Sample into ``writer`` now (the starting rates), then once a second until
        cancelled, and once more then (the last, partial second)."""
        try:
            while True:
                rows = self.sample()
                if rows:
                    writer.record_series(rows)
                await self._clock.sleep(1.0)
        finally:
            with contextlib.suppress(JournalError):  # the writer failed (it says so itself)
                writer.record_series(self.sample())
