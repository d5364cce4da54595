"""Expand, render and validate every sweep point before anything is sent.

One pass over the sweep: each point is stored in a journal (whose unique key index, built at
the end, catches duplicate points), rendered through the template with bulk's own variables
added, and checked against the backend's schema. ``bulk plan`` runs it into a throw-away
journal, ``bulk run`` into the run's new journal; either way every problem is found before the
first request.

Template variables bulk adds to every point:

=============  ==============================================================
``_key``       the point's stable key (16 hex digits)
``_index``     the point's position in the expansion, from 0
``_run``       the run's name
``_attempt``   1, then 2, 3... after ``bulk retry`` or ``bulk run --restart``
``_name``      the job's deterministic name: ``<run>-<key>`` (``-<attempt>`` past attempt 1)
=============  ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bulk._plan._sources as sweep
from bulk._config import Config, SweepConfig
from bulk._journal import Journal
from bulk._naming import Point, render_context
from bulk._problems import Problem, Problems
from bulk._template import has_placeholder, to_json
from bulk._text import preview
from bulk.backends import get_kind
from bulk.backends.base import body_validator
from bulk.errors import ConfigError, InputErrors

__all__ = [
    "PlanErrors",
    "PlanResult",
    "check",
    "origin_where",
    "preview",
]

MAX_ERRORS = 20  # problem lines shown in all
GROUP_SHOWN = 3  # exact lines shown of each kind of per-row problem, before "and N more"


class PlanErrors(InputErrors):
    """The problems of one planning pass, with the lines that report them.

    Attributes:
        report: the lines to print: each template problem once, per-row problems grouped,
            and the count line when the whole sweep was read.
    """

    def __init__(self, errors: Sequence[ConfigError], total: int, report: Sequence[str]):
        super().__init__(errors, total)
        self.report = list(report)

    def lines(self) -> list[str]:
        """The report's lines."""
        return list(self.report)


@dataclass(slots=True)
class _Group:
    """Per-row problems of one kind: the first few kept exactly, the rest counted."""

    shown: list[ConfigError] = field(default_factory=list)
    more: int = 0


@dataclass(slots=True)
class PlanResult:
    """What a planning pass found.

    Problems are kept in two kinds. A *template* problem does not depend on any row's values
    (an unknown key, a missing required key, a constant of the wrong type): it is reported
    once, against the config. Every other problem is a row's: those of one kind (the same
    field, the same message but for its values) are grouped, the first ``GROUP_SHOWN`` kept
    exactly and the rest counted.

    Attributes:
        total: how many points (jobs) the sweep has (so far, if ``complete`` is false).
        samples: the first points with their rendered bodies.
        error_count: how many problems there were in all (a template problem counts once).
        complete: whether the pass read the whole sweep (``total`` is then its size).
        heading: the count line: ``N jobs in run R (backend K) from CONFIG``.
    """

    total: int = 0
    samples: list[tuple[Point, Any]] = field(default_factory=list)
    error_count: int = 0
    complete: bool = False
    heading: str = ""
    _template: dict[tuple[str | None, str], ConfigError] = field(default_factory=dict)
    _groups: dict[tuple[str | None, str], _Group] = field(default_factory=dict)

    @property
    def errors(self) -> list[ConfigError]:
        """The problems kept to be shown, in report order (template problems first)."""
        out = list(self._template.values())
        for group in self._groups.values():
            out.extend(group.shown)
        return out[:MAX_ERRORS]

    def add_error(self, error: ConfigError) -> None:
        """Record a row's problem (or one of the sweep's), grouped with others like it."""
        self.error_count += 1
        group = self._groups.get(kind := (error.field, _shape(error.problem)))
        if group is None:
            group = self._groups[kind] = _Group()
        if len(group.shown) < GROUP_SHOWN:
            group.shown.append(error)
        else:
            group.more += 1

    def add_template_error(self, error: ConfigError) -> None:
        """Record a problem of the template itself; the same one again is not counted."""
        if (error.field, error.problem) not in self._template:
            self._template[error.field, error.problem] = error
            self.error_count += 1

    def lines(self) -> list[str]:
        """The report: at most ``MAX_ERRORS`` problem lines, ``and N more`` lines, the count."""
        out = [str(e) for e in self._template.values()][:MAX_ERRORS]
        shown = len(out)  # problems reported so far, by their own line or an "and N more"
        for group in self._groups.values():
            if len(out) >= MAX_ERRORS:
                break
            out.extend(str(e) for e in group.shown)
            shown += len(group.shown)
            if group.more:
                what = f" ({group.shown[0].field})" if group.shown[0].field else ""
                out.append(f"... and {group.more:,} more rows like this{what}")
                shown += group.more
        if shown < self.error_count:
            out.append(f"... and {self.error_count - shown:,} more problems")
        if self.complete and self.heading:
            problems = "1 problem" if self.error_count == 1 else f"{self.error_count:,} problems"
            out.append(f"{self.heading}: {problems}; nothing was sent")
        return out

    def raise_if_errors(self) -> None:
        """Raise :class:`PlanErrors` when any problem was found."""
        if self.error_count:
            raise PlanErrors(self.errors, self.error_count, self.lines())


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
        result.add_template_error(ConfigError(problem, where=where, field="job"))
    cfg = config.sweep
    size = sweep.static_axis_size(cfg)
    if size > cfg.max_jobs:
        result.add_error(sweep.guard_error(size, cfg.max_jobs))
        return result

    rows = _RowCheck(config, body_validator(kind, config.backend.options), result)
    try:
        for point in journal.fill(_guarded(sweep.points(cfg), cfg)):
            result.total += 1
            body = rows.body(point)
            if body is None:
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
        result.add_error(ConfigError(msg, where=origin_where(config, origin)))
    if result.total == 0:
        result.add_error(ConfigError("the sweep has no rows", where=_sources(config)))
    result.complete = True
    result.heading = (
        f"{result.total:,} jobs in run {config.run.name} (backend {config.backend.kind}) "
        f"from {config.path}"
    )
    return result


class _RowCheck:
    """Renders and validates one point at a time, adding its problems to a result."""

    def __init__(
        self, config: Config, validate: Callable[[Any, Problems], None], result: PlanResult
    ):
        self._config = config
        self._run = config.run.name
        self._render = config.template.render
        self._validate = validate
        self._static = _StaticFields(config.template.source)
        self._result = result

    def body(self, point: Point) -> Any:
        """The point's rendered body, or None when it has a problem (each one is added).

        (A body is never None itself: the ``[job]`` template is a table.)
        """
        try:
            body = self._render(render_context(point, self._run))
        except ConfigError as exc:
            origin = origin_where(self._config, point.origin)
            self._result.add_error(ConfigError(exc.problem, where=origin, field=exc.field))
            return None
        problems = Problems()
        self._validate(body, problems)
        if not problems:
            try:
                to_json(body)  # what the engine sends: a body JSON cannot carry is a problem
            except ConfigError as exc:
                problems.add(exc.field or "job", exc.problem)
        for item in problems.items:
            if self._static(item):
                where = self._config.template_where
                self._result.add_template_error(
                    ConfigError(item.message, where=where, field=item.field)
                )
            else:
                origin = origin_where(self._config, point.origin)
                self._result.add_error(ConfigError(item.message, where=origin, field=item.field))
        return None if problems else body


# Values inside a problem's message: quoted text and numbers. Masked, they leave its kind.
_VALUES = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[-+]?\d[\d_.,]*(?:e[-+]?\d+)?""")


def _shape(problem: str) -> str:
    """A problem's message without its values: problems of one kind share it."""
    return _VALUES.sub("_", problem)


class _StaticFields:
    """Which problems hold for every row: those that depend only on the template's constants.

    A problem depends on its field's value (or, for an unknown or invalid key, only on the
    key) and on any fields it names as ``depends``. A field is constant when the template
    spells it out with no placeholder at it, inside it or above it; a field the template
    does not have is constant too (absent from every body). Anything unclear (a path that
    matches two keys) counts as varying: the problem is then reported per row, never wrongly
    blamed on the template. Answers are cached: a template problem recurs on every row.
    """

    def __init__(self, source: Any):
        self._source = source
        self._cache: dict[tuple[str, bool, tuple[str, ...]], bool] = {}

    def __call__(self, problem: Problem) -> bool:
        cache_key = (problem.field, problem.key, problem.depends)
        known = self._cache.get(cache_key)
        if known is None:
            known = self._constant(problem.field, key=problem.key) and all(
                self._constant(f, key=False) for f in problem.depends
            )
            self._cache[cache_key] = known
        return known

    def _constant(self, path: str, *, key: bool) -> bool:
        if not path.startswith("job"):
            return False
        node, rest = self._source, path[3:]
        while rest:
            step = _descend(node, rest, key=key)
            if isinstance(step, bool):
                return step
            node, rest = step
        return not has_placeholder(node)


def _descend(node: Any, rest: str, *, key: bool) -> bool | tuple[Any, str]:
    """One step down the path ``rest`` from the template node ``node``: the child and the
    path left, or, where the walk ends, whether the field is constant."""
    if isinstance(node, Mapping):
        return _descend_key(node, rest, key=key)
    if isinstance(node, list | tuple):
        return _descend_index(node, rest)
    return not has_placeholder(node)


def _descend_key(node: Mapping[Any, Any], rest: str, *, key: bool) -> bool | tuple[Any, str]:
    if not rest.startswith("."):
        return False
    matches = [
        k
        for k in node
        if rest.startswith(str(k), 1) and rest[1 + len(str(k)) :][:1] in ("", ".", "[")
    ]
    if len(matches) != 1:
        return not matches  # absent from the template: absent from every body
    name = matches[0]
    child, rest = node[name], rest[1 + len(str(name)) :]
    if key and not rest:
        return True  # the key itself is spelled out in the template
    return child, rest


def _descend_index(node: Sequence[Any], rest: str) -> bool | tuple[Any, str]:
    index = _INDEX.match(rest)
    if index is None:
        return False
    if int(index[1]) >= len(node):
        return True
    return node[int(index[1])], rest[index.end() :]


_INDEX = re.compile(r"\[(\d+)\]")


def _guarded(points: Iterator[Point], cfg: SweepConfig) -> Iterator[Point]:
    """Pass points through, stopping with the guard's error past ``max_jobs``."""
    for n, point in enumerate(points, 1):
        if n > cfg.max_jobs:
            raise sweep.guard_error(sweep.count_points(cfg), cfg.max_jobs)
        yield point


def origin_where(config: Config, origin: str) -> str:
    """Where a point's problem is reported: its row's ``file:line``, or, for a point of a
    sweep without files (origin ``sweep``: grid, zip and random only), the config that
    declares that sweep, so that every line starts with a file."""
    return f"{config.path}: {origin}" if origin == "sweep" else origin


def _sources(config: Config) -> str:
    return ", ".join(str(f) for f in config.sweep.files) or str(config.path)
