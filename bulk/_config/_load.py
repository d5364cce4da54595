"""Load a run's TOML config into frozen dataclasses.

A config has these tables; every one but ``[run]`` and ``[job]`` may be left out::

    [run]      name, dir
    [sweep]    files, strings, max_jobs, allow_duplicates, grid, zip, random
    [backend]  kind plus the backend's own keys (credentials by reference only)
    [limits]   request rates per endpoint, requests in flight, active jobs
    [retry]    attempts, total budget, back-off
    [track]    polling back-off, client-side job timeout
    [job]      the request body template (or ``template_file``)

Unknown keys, wrong types and missing required keys raise :class:`ConfigError` naming the file,
the key path and what is allowed. Relative paths resolve against the config file's folder.
This module reads files and never awaits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, overload

import orjson

import bulk._template as spec
from bulk._policy import LimitsConfig, RetryConfig, TrackConfig
from bulk._table import Table
from bulk.backends import AnyKind, get_kind
from bulk.errors import ConfigError

__all__ = [
    "BackendConfig",
    "Config",
    "Distribution",
    "JSONValueError",
    "RunConfig",
    "SweepConfig",
    "fingerprint_of",
    "is_variable_name",
    "json_nesting_column",
    "load",
    "loads_exact_json",
    "number_problem",
    "open_regular",
]

# Patterns validate with fullmatch, never match + "$": "$" also matches before a final "\n",
# which let a run name "abc\n" through into directory and job names.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_VAR_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VARIABLE_NAMES = "variable names are letters, digits and '_', starting with a letter"
# Keys that would hold a secret inline. Each backend reads its secrets by reference instead
# (``token_env``, ``private_key_file``); these names are refused wherever they appear in
# ``[backend]`` so a pasted token never reaches the journal, a log or an error message.
_INLINE_SECRET_KEYS = frozenset(
    {"token", "private_key", "password", "secret", "api_key", "key", "auth", "authorization"}
)
DEFAULT_MAX_JOBS = 100_000
# A config or template file larger than this is not one (bulk plan /dev/zero once grew without
# end); long lists of values belong in a sweep file, which is streamed.
MAX_CONFIG_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class RunConfig:
    """``[run]``: the run's name (part of every job's name) and the folder of its files."""

    name: str
    dir: Path


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


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """``[backend]``: which service, and its options as its backend parsed them."""

    kind: str
    options: Any  # the backend kind's own frozen options object


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded run config.

    Attributes:
        path: the config file.
        template: the compiled ``[job]`` request body template.
        template_where: where the template came from, for error messages.
    """

    path: Path
    run: RunConfig
    sweep: SweepConfig
    backend: BackendConfig
    limits: LimitsConfig
    retry: RetryConfig
    track: TrackConfig
    template: spec.Template
    template_where: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def journal_path(self) -> Path:
        """The run's SQLite journal."""
        return self.run.dir / "journal.sqlite"


def fingerprint_of(value: Any) -> str:
    """A short, stable hash of a config value (key order does not matter)."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


def is_variable_name(name: str) -> bool:
    """Whether ``name`` can be a sweep variable (a template writes it as ``{name}``)."""
    return _VAR_RE.fullmatch(name) is not None


class JSONValueError(ValueError):
    """JSON that parses but would not come out as it went in: NaN, a number beyond 64 bits
    (integer) or a 64-bit float, a key repeated in one object, nesting past the limit.

    Attributes:
        problem: what is wrong and what is allowed, for a one-line message.
    """

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


def number_problem(text: str) -> str | None:
    """What is wrong with a number written as ``text`` (TOML or JSON float syntax), if bulk
    could not send it as JSON exactly: NaN or infinity, or a value a 64-bit float turns into
    infinity (``1e400``) or zero (``1e-400``).
    """
    value = float(text)
    shown = spec.shorten(text)
    if not math.isfinite(value):
        if any(c.isdigit() for c in text):
            return f"{shown} is too large for a 64-bit float (it would be infinity)"
        return f"{shown} is not a finite number; JSON has no NaN or infinity"
    if value == 0.0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        return (
            f"{shown} is too small for a 64-bit float (it would be 0.0); "
            "the smallest is about 5e-324"
        )
    return None


def _int_problem(text: str) -> str | None:
    # More than 20 digits is past 2**64 whatever they are: no int() of a huge text.
    if len(text.lstrip("+-")) <= 20 and -(2**63) <= int(text) < 2**64:
        return None
    return spec.int_too_big(spec.shorten(text))


class _NumberError(Exception):
    def __init__(self, text: str, problem: str):
        self.text = text
        self.problem = problem


def _exact_float(text: str) -> float:
    problem = number_problem(text)
    if problem is not None:
        raise _NumberError(text, problem)
    return float(text)


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """TOML, with every float exact and finite (TOML itself allows nan, inf and 1e400)."""
    try:
        return tomllib.loads(text, parse_float=_exact_float)
    except tomllib.TOMLDecodeError as exc:
        msg = f"invalid TOML: {exc}"
    except _NumberError as exc:
        raise ConfigError(exc.problem, where=_line_of(text, exc.text, where)) from None
    except RecursionError:
        msg = f"invalid TOML: nested too deeply (the limit is {spec.MAX_NESTING} levels)"
    except ValueError:  # tomllib's int() of an integer past Python's 4,300-digit limit
        msg = "invalid TOML: an integer too long to read; JSON integers are 64-bit"
    raise ConfigError(msg, where=where) from None


def _line_of(text: str, token: str, where: str) -> str:
    """``where:line`` of the first place ``token`` stands alone in ``text`` (``where`` if none)."""
    found = re.search(rf"(?<![\w.+-]){re.escape(token)}(?![\w.])", text)
    return f"{where}:{text.count(chr(10), 0, found.start()) + 1}" if found else where


_JSON_SIGNIFICANT = re.compile(r'["\[\]{}]')
_JSON_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*+"')


def json_nesting_column(text: str) -> int | None:
    """The column where JSON ``text`` nests past :data:`spec.MAX_NESTING`, or None.

    Read from the text, strings skipped, in one pass (linear even on malformed input), so it
    is safe on input too deep to parse.
    """
    depth = 0
    pos = 0
    while (m := _JSON_SIGNIFICANT.search(text, pos)) is not None:
        token = m.group()
        pos = m.end()
        if token == '"':
            rest = _JSON_STRING_REST.match(text, pos)
            if rest is None:
                return None  # an unterminated string: the rest of the text is inside it
            pos = rest.end()
        elif token in "[{":
            depth += 1
            if depth > spec.MAX_NESTING:
                return m.start() + 1
        else:
            depth -= 1
    return None


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                problem = f"key {key!r} appears twice in one object; each key appears once"
                raise JSONValueError(problem)
            seen.add(key)
    return out


def _json_constant(text: str) -> float:
    problem = f"{text} is not a finite number; JSON has no NaN or infinity"
    raise JSONValueError(problem)


def _json_float(text: str) -> float:
    problem = number_problem(text)
    if problem is not None:
        raise JSONValueError(problem)
    return float(text)


def _json_int(text: str) -> int:
    problem = _int_problem(text)
    if problem is not None:
        raise JSONValueError(problem)
    return int(text)


def loads_exact_json(text: str) -> Any:
    """Parse JSON, refusing what would not come out as it went in.

    Slower than orjson (it is Python's ``json`` with hooks): for input that must be exact
    and is small or rare, such as a template file or a suspect sweep line.

    Raises:
        JSONValueError: NaN or Infinity, a number beyond 64 bits, a repeated key, or nesting
            past :data:`spec.MAX_NESTING`.
        ValueError: the text is not JSON.
    """
    column = json_nesting_column(text)
    if column is not None:
        problem = (
            f"nested more than {spec.MAX_NESTING} levels deep at column {column}; "
            f"the limit is {spec.MAX_NESTING}"
        )
        raise JSONValueError(problem)
    return json.loads(
        text,
        object_pairs_hook=_json_pairs,
        parse_constant=_json_constant,
        parse_float=_json_float,
        parse_int=_json_int,
    )


def _parse_json(text: str, where: str) -> Any:
    try:
        return loads_exact_json(text)
    except JSONValueError as exc:
        raise ConfigError(exc.problem, where=where) from None
    except ValueError as exc:
        msg = f"cannot read template: {exc}"
        raise ConfigError(msg, where=where) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened to read its bytes, if it is a regular file.

    Anything else is refused before a byte is read: a device such as ``/dev/zero`` never
    ends, a FIFO or a terminal may never answer (the open itself does not wait: it is
    non-blocking), and a resumed run must read the same bytes again.

    Raises:
        ConfigError: the path is not a regular file.
        OSError: it cannot be opened (``FileNotFoundError`` when it does not exist).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
            msg = f"not a regular file ({kind}); bulk reads regular files only"
            raise ConfigError(msg, where=str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_text(path: Path) -> str:
    """A config or template file's text: a regular file of at most ``MAX_CONFIG_BYTES``.

    Raises:
        ConfigError: not a regular file, too large, or not UTF-8.
        OSError: it cannot be read.
    """
    with open_regular(path) as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        msg = f"the file is too large; the limit is {MAX_CONFIG_BYTES:,} bytes"
        raise ConfigError(msg, where=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"cannot read: {exc}"
        raise ConfigError(msg, where=str(path)) from None


def load(path: str | Path) -> Config:
    """Read and check a run config.

    Args:
        path: the TOML file.

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: the file cannot be read or anything in it is wrong.
    """
    path = Path(path)
    where = str(path)
    try:
        text = _read_text(path)
    except FileNotFoundError:
        msg = "no such file"
        raise ConfigError(msg, where=where) from None
    except OSError as exc:
        msg = f"cannot read: {exc}"
        raise ConfigError(msg, where=where) from None
    raw = _parse_toml(text, where)
    # Not resolved: origins in messages then read as the user wrote them (configs/data.csv).
    base = path.parent

    top = Table(raw, where, "")
    run = _load_run(top.table("run"), base)
    sweep = _load_sweep(top.table("sweep"), base)
    backend, kind = _load_backend(top.table("backend"), base)
    limits = _load_limits(top.table("limits"), kind.default_limits)
    retry = _load_retry(top.table("retry"))
    track = _load_track(top.table("track"), kind.default_track)
    template, template_where = _load_template(top, base, kind.quoted_fields)
    top.finish()
    return Config(
        path=path,
        run=run,
        sweep=sweep,
        backend=backend,
        limits=limits,
        retry=retry,
        track=track,
        template=template,
        template_where=template_where,
        raw=raw,
    )


def _load_run(t: Table, base: Path) -> RunConfig:
    if not t.data:
        t.fail("name", "missing required key (the [run] table needs a name)")
    name = t.get("name", str)
    if not _NAME_RE.fullmatch(name):
        t.fail(
            "name",
            f"{name!r} is not a valid run name; use 1-40 lower-case letters, digits and '-', "
            "starting with a letter or digit",
        )
    run_dir = t.get("dir", str, None)
    t.finish()
    folder = base / run_dir if run_dir else base / ".bulk" / name
    return RunConfig(name=name, dir=folder)


def _load_sweep(t: Table, base: Path) -> SweepConfig:
    files = t.get("files", (str, list), [])
    if isinstance(files, str):
        files = [files]
    if not all(isinstance(f, str) for f in files):
        t.fail("files", "expected a file name or an array of file names")
    strings = t.get("strings", list, [])
    max_jobs = t.positive("max_jobs", int, DEFAULT_MAX_JOBS)
    allow_duplicates = t.get("allow_duplicates", bool, False)
    grid_t, zip_t = t.table("grid"), t.table("zip")
    grid = _axes(grid_t)
    zipped = _axes(zip_t)
    if zipped:
        lengths = {axis.name: axis.count for axis in zipped}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            t.fail("zip", f"lists must have equal lengths; {shown}")
    rt = t.table("random")
    samples = rt.get("samples", int, 0)
    if samples < 0:
        rt.fail("samples", f"{samples} must be 0 or more")
    seed = rt.get("seed", int, 0)
    params = _distributions(rt.table("params"))
    rt.finish()
    if samples and not params:
        rt.fail("params", "random.samples is set but no random.params are declared")
    t.finish()

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
    if kind == "range":
        if len(args) not in (2, 3):
            t.fail(name, "range takes [start, stop] or [start, stop, step]")
        start, stop, step = (*args, 1) if len(args) == 2 else args
        if step == 0:
            t.fail(name, "range step must not be 0")
        if all(isinstance(a, int) for a in (start, stop, step)):
            count = max(0, -((start - stop) // step))  # ceil((stop - start) / step), exactly
        else:
            steps = (stop - start) / step
            if not math.isfinite(steps):
                t.fail(name, f"range [{start}, {stop}, {step}] has too many values to count")
            count = max(0, math.ceil(steps - 1e-9))
        return _Axis(name, kind, count, args=(start, stop, step))
    if len(args) != 3 or not isinstance(args[2], int) or args[2] < 1:
        t.fail(name, "linspace takes [first, last, count] with an integer count >= 1")
    first, last, n = args
    if not math.isfinite(last - first):
        t.fail(name, "linspace: last - first is beyond the range of a 64-bit float")
    return _Axis(name, kind, n, args=(first, last, n))


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


_DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "randint": 2, "choice": -1}


def _distributions(t: Table) -> tuple[tuple[str, Distribution], ...]:
    allowed = (
        "uniform = [low, high], loguniform = [low, high], randint = [low, high], choice = [...]"
    )
    out = []
    for name in list(t.data):
        if not _VAR_RE.fullmatch(name):
            t.fail(name, _VARIABLE_NAMES)
        value = t.get(name, dict)
        if len(value) != 1:
            t.fail(name, f"give exactly one distribution; one of {allowed}")
        ((kind, args),) = value.items()
        if kind not in _DISTRIBUTIONS or not isinstance(args, list):
            t.fail(name, f"unknown distribution {kind!r}; one of {allowed}")
        problem = spec.value_problem(args)
        if problem is not None:
            t.fail(name, problem)
        if kind == "choice":
            if not args:
                t.fail(name, "choice needs at least one option")
        else:
            nums = all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
            if len(args) != 2 or not nums or not args[0] < args[1]:
                t.fail(name, f"{kind} takes [low, high] with low < high")
            if kind == "uniform" and not math.isfinite(args[1] - args[0]):
                t.fail(name, "uniform: high - low is beyond the range of a 64-bit float")
            if kind == "loguniform" and args[0] <= 0:
                t.fail(name, "loguniform needs low > 0")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                t.fail(name, "randint takes integer bounds")
        out.append((name, Distribution(kind, tuple(args))))
    return tuple(out)


def _load_backend(t: Table, base: Path) -> tuple[BackendConfig, AnyKind]:

    for key in t.data:
        if key.lower() in _INLINE_SECRET_KEYS:
            t.fail(
                key,
                "secrets are never written in a config; reference them instead "
                f'({key}_env = "ENV_VAR" or {key}_file = "path")',
            )
    kind_name = t.get("kind", str, "local")
    try:
        kind = get_kind(kind_name)
    except KeyError as exc:
        t.fail("kind", str(exc.args[0]))
    options = kind.parse_options(t, base)
    t.finish()
    return BackendConfig(kind=kind_name, options=options), kind


def _load_limits(t: Table, d: LimitsConfig) -> LimitsConfig:
    out = LimitsConfig(
        submit_rate_per_s=_rate(t, "submit_rate_per_s", d.submit_rate_per_s),
        status_rate_per_s=_rate(t, "status_rate_per_s", d.status_rate_per_s),
        stop_rate_per_s=_rate(t, "stop_rate_per_s", d.stop_rate_per_s),
        service_rate_per_s=_service_rate(t, d.service_rate_per_s),
        burst=t.positive("burst", int, d.burst),
        max_in_flight=t.positive("max_in_flight", int, d.max_in_flight),
        max_active=t.positive("max_active", int, d.max_active),
    )
    t.finish()
    return out


def _rate(t: Table, key: str, default: float) -> float:
    """A request rate: above 0 and finite (``inf`` would make the limiter divide by zero)."""
    value: float = t.positive(key, float, default)
    if not math.isfinite(value):
        t.fail(key, f"{value!r} must be a finite number of requests per second")
    return value


def _service_rate(t: Table, default: float | None) -> float | None:
    """``service_rate_per_s``: a positive rate, or 0 for no service-wide budget."""
    value = t.get("service_rate_per_s", float, default)
    if value is None:
        return None
    if not (value >= 0 and math.isfinite(value)):
        t.fail(
            "service_rate_per_s",
            f"{value!r} must be a rate above 0 (requests per second), or 0 for no shared budget",
        )
    return value or None


def _load_retry(t: Table) -> RetryConfig:
    d = RetryConfig()
    out = RetryConfig(
        attempts=t.positive("attempts", int, d.attempts),
        budget_s=t.positive("budget_s", float, d.budget_s),
        base_s=t.positive("base_s", float, d.base_s),
        max_s=t.positive("max_s", float, d.max_s),
    )
    t.finish()
    return out


def _load_track(t: Table, d: TrackConfig) -> TrackConfig:
    factor = t.get("factor", float, d.factor)
    if factor < 1:
        t.fail("factor", f"{factor} must be 1 or more")
    out = TrackConfig(
        first_s=t.positive("first_s", float, d.first_s),
        factor=factor,
        max_s=t.positive("max_s", float, d.max_s),
        timeout_s=t.positive("timeout_s", float, None),
        batch=t.positive("batch", int, d.batch),
    )
    t.finish()
    return out


def _load_template(
    top: Table, base: Path, quoted: Mapping[str, Callable[[str], str]]
) -> tuple[spec.Template, str]:
    job = top.get("job", dict)
    where = top.where
    if "template_file" in job:
        if len(job) != 1:
            top.fail("job", "template_file must be the only key of [job] when it is used")
        name = job["template_file"]
        if not isinstance(name, str):
            top.fail("job.template_file", "expected a file name")
        file = base / name
        where = str(file)
        try:
            text = _read_text(file)
        except FileNotFoundError:
            top.fail("job.template_file", f"{str(file)!r} does not exist")
        except OSError as exc:
            msg = f"cannot read template: {exc}"
            raise ConfigError(msg, where=where) from None
        body = _parse_json(text, where) if file.suffix == ".json" else _parse_toml(text, where)
    else:
        body = job
    if not body:
        top.fail("job", "the job template is empty")
    try:
        return spec.compile_template(body, quoted), where
    except ConfigError as exc:
        raise ConfigError(exc.problem, where=where, field=exc.field) from None
