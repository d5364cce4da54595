"""Expand, render and validate every sweep point before anything is sent.

One pass over the sweep: each point is stored in a journal (whose unique key index, built at
the end, catches duplicate points), rendered through the template with bulk's own variables added, and checked against
the backend's schema. ``bulk plan`` runs it into a throw-away journal, ``bulk run`` into the run's
new journal; either way every problem is found before the first request.

Template variables bulk adds to every point:

=============  ==============================================================
``_key``       the point's stable key (16 hex digits)
``_index``     the point's position in the expansion, from 0
``_run``       the run's name
``_attempt``   1, then 2, 3... after ``bulk retry``
``_name``      the job's deterministic name: ``<run>-<key>`` (``-<attempt>`` after a retry)
=============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bulk import sweep
from bulk.backends import get_kind
from bulk.config import Config, SweepConfig
from bulk.errors import ConfigError, InputErrors
from bulk.journal import Journal
from bulk.spec import to_json
from bulk.sweep import Point
from bulk.validate import Problems

__all__ = ["PlanResult", "check", "job_name", "render_context"]

MAX_ERRORS = 20


def job_name(run: str, key: str, attempt: int = 1) -> str:
    """The deterministic name of a point's job for one attempt."""
    return f"{run}-{key}" if attempt == 1 else f"{run}-{key}-{attempt}"


def render_context(point: Point, run: str, attempt: int = 1) -> dict[str, Any]:
    """The variables a template sees for one point and attempt."""
    return {
        **point.variables,
        "_key": point.key,
        "_index": point.index,
        "_run": run,
        "_attempt": attempt,
        "_name": job_name(run, point.key, attempt),
    }


@dataclass(slots=True)
class PlanResult:
    """What a planning pass found.

    Attributes:
        total: how many points (jobs) the sweep has.
        samples: the first points with their rendered bodies.
        errors: the first problems found (at most ``MAX_ERRORS``).
        error_count: how many problems there were in all.
    """

    total: int = 0
    samples: list[tuple[Point, Any]] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, error: ConfigError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def raise_if_errors(self) -> None:
        """Raise :class:`InputErrors` when any problem was found."""
        if self.error_count:
            raise InputErrors(self.errors, self.error_count)


def check(
    config: Config,
    journal: Journal,
    *,
    samples: int = 5,
    on_body: Callable[[Point, Any], None] | None = None,
) -> PlanResult:
    """Run the planning pass into ``journal`` (which must be new and empty).

    Args:
        config: the run's config.
        journal: where points are stored; its unique keys catch duplicate points.
        samples: how many rendered points to keep for display.
        on_body: called with every valid point and its rendered body (``plan --json``).

    Returns:
        The count, the samples and every problem found (the pass does not stop at the first).
    """
    result = PlanResult()
    kind = get_kind(config.backend.kind)
    where = config.template_where
    problem = kind.check_template(config.template)
    if problem:
        result.add_error(ConfigError(problem, where=where, field="job"))
        return result
    cfg = config.sweep
    size = sweep.static_axis_size(cfg)
    if size > cfg.max_jobs:
        result.add_error(sweep.guard_error(size, cfg.max_jobs))
        return result

    run = config.run.name
    render = config.template.render
    validate = kind.validate
    try:
        points = _guarded(sweep.points(cfg), cfg)
        for point in journal.fill(points):
            result.total += 1
            try:
                body = render(render_context(point, run))
            except ConfigError as exc:
                result.add_error(ConfigError(exc.problem, where=point.origin, field=exc.field))
                continue
            problems = Problems()
            validate(body, problems)
            if not problems:
                try:
                    to_json(body)  # what the engine sends: a body JSON cannot carry is a problem
                except ConfigError as exc:
                    problems.add(exc.field or "job", exc.problem)
            for fld, message in problems.items:
                result.add_error(ConfigError(message, where=point.origin, field=fld))
            if problems:
                continue
            if len(result.samples) < samples:
                result.samples.append((point, body))
            if on_body is not None:
                on_body(point, body)
    except ConfigError as exc:
        result.add_error(exc)
        return result
    for origin, earlier in journal.finish(cfg.allow_duplicates):
        msg = (
            f"duplicate point: the same variables as {earlier}; remove one, or set "
            "allow_duplicates = true in [sweep] to run both"
        )
        result.add_error(ConfigError(msg, where=origin))
    if result.total == 0:
        result.add_error(ConfigError("the sweep has no rows", where=_sources(config)))
    return result


def _guarded(points: Iterator[Point], cfg: SweepConfig) -> Iterator[Point]:
    """Pass points through, stopping with the guard's error past ``max_jobs``."""
    for n, point in enumerate(points, 1):
        if n > cfg.max_jobs:
            raise sweep.guard_error(sweep.count_points(cfg), cfg.max_jobs)
        yield point


def _sources(config: Config) -> str:
    return ", ".join(str(f) for f in config.sweep.files) or str(config.path)
