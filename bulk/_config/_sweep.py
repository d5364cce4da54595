"""The ``[sweep]`` grammar: files, grid and zip axes (lists, ranges, linspaces), random draws.

Axes are checked and counted before anything is built, so a sweep past the ``max_jobs`` guard
is refused by arithmetic; a range or linspace axis stays a lazy sequence.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import orjson

import bulk._template as spec
from bulk._table import Table

__all__ = ["DEFAULT_MAX_JOBS", "Distribution", "SweepConfig", "is_variable_name", "load_sweep"]

# Patterns validate with fullmatch, never match + "$": "$" also matches before a final "\n".
_VAR_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VARIABLE_NAMES = "variable names are letters, digits and '_', starting with a letter"
DEFAULT_MAX_JOBS = 100_000


@dataclass(frozen=True, slots=True)
class Distribution:
    """One ``[sweep.random.params]`` entry.

    Attributes:
        kind: ``uniform``, ``loguniform``, ``randint`` (inclusive) or ``choice``.
        args: ``(low, high)`` for the numeric kinds, the options for ``choice``.
    """

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """``[sweep]``: where rows come from and how they are expanded.

    Attributes:
        files: CSV/JSONL sources (optionally ``.gz``), read in order; empty for a pure grid.
        strings: CSV columns kept as strings instead of being typed.
        grid: axes of the cartesian product, in declaration order. A range or linspace axis
            is a lazy sequence (``range``, or one computing each value from its index): its
            values are never all held in memory.
        zip: lists advanced in lockstep (equal lengths).
        random_samples: how many random points to draw (0: no random axis).
        random_seed: the seed that makes random draws identical across reruns.
        random_params: the distributions drawn from, in declaration order.
        max_jobs: the guard: a sweep expanding past it is refused.
        allow_duplicates: keep two identical points as two jobs instead of refusing.
    """

    files: tuple[Path, ...] = ()
    strings: frozenset[str] = frozenset()
    grid: tuple[tuple[str, Sequence[Any]], ...] = ()
    zip: tuple[tuple[str, Sequence[Any]], ...] = ()
    random_samples: int = 0
    random_seed: int = 0
    random_params: tuple[tuple[str, Distribution], ...] = ()
    max_jobs: int = DEFAULT_MAX_JOBS
    allow_duplicates: bool = False


def is_variable_name(name: str) -> bool:
    """Whether ``name`` can be a sweep variable (a template writes it as ``{name}``)."""
    return _VAR_RE.fullmatch(name) is not None


def load_sweep(t: Table, base: Path) -> SweepConfig:
    files = _files(t)
    strings = t.get("strings", list, [])
    max_jobs = t.positive("max_jobs", int, DEFAULT_MAX_JOBS)
    allow_duplicates = t.get("allow_duplicates", bool, False)
    grid_t, zip_t = t.table("grid"), t.table("zip")
    grid = _axes(grid_t)
    zipped = _zip_axes(t, zip_t)
    samples, seed, params = _random(t.table("random"))
    t.finish()
    _check_declared_once(t, grid, zipped, params)
    if not files and not grid and not zipped and not samples:
        t.fail("files", "the sweep is empty; give files, grid, zip or random")
    # Count before expanding: ranges are counted by arithmetic, and nothing is built until
    # the static part of the sweep (grid × zip × random) is known to fit under the guard.
    static = math.prod(axis.count for axis in grid)
    static *= zipped[0].count if zipped else 1
    static *= samples if params else 1
    if static > max_jobs:
        t.fail("max_jobs", _guard_problem(static, max_jobs, per_row=bool(files)))
    return SweepConfig(
        files=tuple(base / f for f in files),
        strings=frozenset(strings),
        grid=tuple((axis.name, _expand(grid_t, axis)) for axis in grid),
        zip=tuple((axis.name, _expand(zip_t, axis)) for axis in zipped),
        random_samples=samples if params else 0,
        random_seed=seed,
        random_params=params,
        max_jobs=max_jobs,
        allow_duplicates=allow_duplicates,
    )


def _files(t: Table) -> list[str]:
    """``files``: a file name or an array of them."""
    files = t.get("files", (str, list), [])
    if isinstance(files, str):
        files = [files]
    if not all(isinstance(f, str) for f in files):
        t.fail("files", "expected a file name or an array of file names")
    return files


def _zip_axes(t: Table, zip_t: Table) -> list[_Axis]:
    """``[sweep.zip]``'s axes, which must have equal lengths."""
    zipped = _axes(zip_t)
    lengths = {axis.name: axis.count for axis in zipped}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
        t.fail("zip", f"lists must have equal lengths; {shown}")
    return zipped


def _random(rt: Table) -> tuple[int, int, tuple[tuple[str, Distribution], ...]]:
    """``[sweep.random]``: how many samples, the seed, and the distributions drawn from."""
    samples = rt.get("samples", int, 0)
    if samples < 0:
        rt.fail("samples", f"{samples} must be 0 or more")
    seed = rt.get("seed", int, 0)
    params = _distributions(rt.table("params"))
    rt.finish()
    if samples and not params:
        rt.fail("params", "random.samples is set but no random.params are declared")
    return samples, seed, params


def _check_declared_once(
    t: Table,
    grid: Sequence[_Axis],
    zipped: Sequence[_Axis],
    params: Sequence[tuple[str, Distribution]],
) -> None:
    """Refuse a variable declared twice (in grid, zip or random.params)."""
    names: dict[str, str] = {}
    for axis_kind, entries in (
        ("grid", [a.name for a in grid]),
        ("zip", [a.name for a in zipped]),
        ("random.params", [name for name, _ in params]),
    ):
        for name in entries:
            if name in names:
                t.fail(
                    f"{axis_kind}.{name}", f"variable is already declared in sweep.{names[name]}"
                )
            names[name] = axis_kind


def _guard_problem(static: int, max_jobs: int, *, per_row: bool) -> str:
    if per_row:
        return (
            f"each row of the sweep files expands to {static:,} jobs (grid × zip × random), "
            f"above the guard of {max_jobs:,}; if that is intended, raise max_jobs in [sweep]"
        )
    return (
        f"the sweep expands to {static:,} jobs, above the guard of {max_jobs:,}; "
        f"if that is intended, raise it: max_jobs = {static} in [sweep]"
    )


@dataclass(frozen=True, slots=True)
class _Axis:
    """A grid or zip axis as declared: checked and counted, its values not built yet.

    Attributes:
        name: the variable.
        kind: ``list`` (``values`` holds them), ``range`` or ``linspace`` (``args``).
        count: how many values the axis has.
    """

    name: str
    kind: str
    count: int
    values: tuple[Any, ...] = ()
    args: tuple[Any, ...] = ()


def _axes(t: Table) -> list[_Axis]:
    axes = []
    for name in list(t.data):
        if not _VAR_RE.fullmatch(name):
            t.fail(name, _VARIABLE_NAMES)
        value = t.get(name, (list, dict))
        if isinstance(value, dict):
            axis = _range(t, name, value)
        else:
            axis = _Axis(name, "list", len(value), values=tuple(value))
        if not axis.count:
            t.fail(name, "an axis needs at least one value")
        axes.append(axis)
    return axes


def _range(t: Table, name: str, spec_: Mapping[str, Any]) -> _Axis:
    """``{range = [start, stop, step]}`` (stop excluded) or ``{linspace = [a, b, n]}``, counted."""
    allowed = "use {range = [start, stop, step]} or {linspace = [first, last, count]}"
    if len(spec_) != 1:
        t.fail(name, f"a numeric range has exactly one key; {allowed}")
    ((kind, args),) = spec_.items()
    if kind not in ("range", "linspace") or not isinstance(args, list):
        t.fail(name, f"unknown range {kind!r}; {allowed}")
    if not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
        t.fail(name, f"{kind} takes numbers; {allowed}")
    return _range_axis(t, name, args) if kind == "range" else _linspace_axis(t, name, args)


def _range_axis(t: Table, name: str, args: Sequence[float]) -> _Axis:
    """``range = [start, stop]`` or ``[start, stop, step]`` (numbers), counted."""
    match args:
        case [start, stop]:
            step: float = 1
        case [start, stop, step]:
            pass
        case _:
            t.fail(name, "range takes [start, stop] or [start, stop, step]")
    if step == 0:
        t.fail(name, "range step must not be 0")
    if all(isinstance(a, int) for a in (start, stop, step)):
        count = max(0, -((start - stop) // step))  # ceil((stop - start) / step), exactly
    else:
        steps = (stop - start) / step
        if not math.isfinite(steps):
            t.fail(name, f"range [{start}, {stop}, {step}] has too many values to count")
        count = max(0, math.ceil(steps - 1e-9))
    return _Axis(name, "range", int(count), args=(start, stop, step))


def _linspace_axis(t: Table, name: str, args: Sequence[float]) -> _Axis:
    """``linspace = [first, last, count]`` (numbers, an integer count >= 1), counted."""
    match args:
        case [first, last, int(n)] if n >= 1:
            pass
        case _:
            t.fail(name, "linspace takes [first, last, count] with an integer count >= 1")
    if not math.isfinite(last - first):
        t.fail(name, "linspace: last - first is beyond the range of a 64-bit float")
    return _Axis(name, "linspace", n, args=(first, last, n))


class _Steps(Sequence[float]):
    """A float range or linspace as a lazy sequence: value ``i`` is computed when asked for,
    rounded as :func:`_round` does, so an axis of 10⁹ values costs no memory."""

    __slots__ = ("_count", "_first", "_value")

    def __init__(self, count: int, first: float, value: Callable[[int], float]):
        self._count, self._first, self._value = count, first, value

    @classmethod
    def range(cls, start: float, step: float, count: int) -> _Steps:
        return cls(count, start, lambda i: _round(start + i * step))

    @classmethod
    def linspace(cls, first: float, last: float, n: int) -> _Steps:
        if n == 1:
            return cls(1, first, lambda _i: first)
        return cls(n, first, lambda i: _round(first + (last - first) * i / (n - 1)))

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[float]: ...
    def __getitem__(self, index: int | slice) -> float | Sequence[float]:
        if isinstance(index, slice):
            return [self[i] for i in range(self._count)[index]]
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            msg = "axis index out of range"
            raise IndexError(msg)
        return self._value(i)

    def __iter__(self) -> Iterator[float]:
        return map(self._value, range(self._count))


def _expand(t: Table, axis: _Axis) -> Sequence[Any]:
    """An axis's values (called once the sweep fits under the guard), checked for repeats.

    A range or linspace stays lazy (a ``range``, or :class:`_Steps`): memory does not grow
    with it. The repeat check holds a 16-byte digest per listed value; a range's values are
    ordered, so its repeats (floats rounded together) are neighbours and need no memory:
    integers never repeat, and floats are only walked when their step is below the 12th
    significant digit of their largest value (else no two can round together).
    """
    if axis.kind == "list":
        values = axis.values
        seen = {
            hashlib.blake2b(orjson.dumps(v, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
            for v in values
        }
        if len(seen) < len(values):
            t.fail(axis.name, "an axis repeats a value, which would make identical jobs")
        return values
    ranged: Sequence[Any]
    if axis.kind == "range":
        start, stop, step = axis.args
        if all(isinstance(a, int) for a in axis.args):
            ranged = range(start, stop, step)
        else:
            ranged = _Steps.range(start, step, axis.count)
    else:
        first, last, n = axis.args
        ranged = _Steps.linspace(first, last, n)
        step = (last - first) / (n - 1) if n > 1 else 0
    problem = spec.value_problem([ranged[0], ranged[-1]])  # the extremes of an ordered axis
    if problem is not None:
        t.fail(axis.name, problem)
    if isinstance(ranged, _Steps) and len(ranged) > 1:
        largest = max(abs(ranged[0]), abs(ranged[-1]))
        unit = 10.0 ** (math.floor(math.log10(largest)) - 11) if largest else 0.0
        could_repeat = abs(step) <= 1.01 * unit
        if could_repeat and any(a == b for a, b in itertools.pairwise(ranged)):
            t.fail(axis.name, f"{axis.kind} values repeat once rounded to 12 significant digits")
    return ranged


def _round(x: float) -> float:
    # 0.1 * 3 is 0.30000000000000004; 12 significant digits keep sweeps readable and stable.
    return float(f"{x:.12g}")


_DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
_ALLOWED_DISTRIBUTIONS = (
    "uniform = [low, high], loguniform = [low, high], randint = [low, high], choice = [...]"
)


def _distributions(t: Table) -> tuple[tuple[str, Distribution], ...]:
    out = []
    for name in list(t.data):
        if not _VAR_RE.fullmatch(name):
            t.fail(name, _VARIABLE_NAMES)
        out.append((name, _distribution(t, name)))
    return tuple(out)


def _distribution(t: Table, name: str) -> Distribution:
    """One ``[sweep.random.params]`` entry, checked."""
    value = t.get(name, dict)
    if len(value) != 1:
        t.fail(name, f"give exactly one distribution; one of {_ALLOWED_DISTRIBUTIONS}")
    ((kind, args),) = value.items()
    if kind not in _DISTRIBUTIONS or not isinstance(args, list):
        t.fail(name, f"unknown distribution {kind!r}; one of {_ALLOWED_DISTRIBUTIONS}")
    problem = spec.value_problem(args)
    if problem is None:
        problem = _options_problem(args) if kind == "choice" else _bounds_problem(kind, args)
    if problem is not None:
        t.fail(name, problem)
    return Distribution(kind, tuple(args))


def _options_problem(args: Sequence[Any]) -> str | None:
    return None if args else "choice needs at least one option"


def _bounds_problem(kind: str, args: Sequence[Any]) -> str | None:
    """What is wrong with a numeric distribution's ``[low, high]``, or None."""
    match args:
        case [int() | float() as low, int() | float() as high] if (
            not isinstance(low, bool) and not isinstance(high, bool) and low < high
        ):
            pass
        case _:
            return f"{kind} takes [low, high] with low < high"
    if kind == "uniform" and not math.isfinite(high - low):
        return "uniform: high - low is beyond the range of a 64-bit float"
    if kind == "loguniform" and low <= 0:
        return "loguniform needs low > 0"
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        return "randint takes integer bounds"
    return None
