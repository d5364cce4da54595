"""Read sweep files row by row and expand them into sweep points.

A *row* is one record of a sweep file (a CSV line or a JSONL object) with its origin
``file:line``. A *point* is one fully expanded set of variables: a row × one grid combination ×
one zip position × one random sample. Every point becomes exactly one job.

Files are streamed, never loaded whole: memory does not grow with the number of rows. The
static axes (grid, zip, random) are small and held in memory; their product is iterated lazily.
Pure and synchronous: this module reads its input files and nothing else.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from bulk._config import (
    DEFAULT_MAX_JOBS,
    Distribution,
    JSONValueError,
    SweepConfig,
    is_variable_name,
    loads_exact_json,
    open_regular,
)
from bulk._naming import Point, point_key
from bulk._template import MAX_NESTING
from bulk._text import cut
from bulk.errors import ConfigError

__all__ = [
    "COUNT_FACTOR",
    "MAX_LINE_BYTES",
    "MAX_VALUE_CHARS",
    "Row",
    "count_points",
    "guard_error",
    "open_sweep_file",
    "points",
    "read_rows",
    "static_axis_size",
]

_BOM = b"\xef\xbb\xbf"
_MISSING = object()

# Bounds on what one row may hold, so that reading stays bounded whatever the file (a gzip
# bomb, a file of zeros without a newline, a quoted CSV cell that never closes).
MAX_LINE_BYTES = 1 << 20  # a line, and a CSV row with its quoted newlines (in characters)
# A CSV cell or a JSON string. The csv module's own field limit (which enforces it for CSV),
# and the longest single argument Linux passes to a program (MAX_ARG_STRLEN): data larger
# than this belongs in a file whose path is the value.
MAX_VALUE_CHARS = 128 * 1024
# Past the guard, the error counts the whole sweep for its message, but only this many times
# the guard: a huge file (or a bomb) is not read to its end to say how far past it is.
COUNT_FACTOR = 10
_RESERVED = "names starting with '_' are reserved for bulk (_key, _index, _run, ...)"
_NAMES = "names are letters, digits and '_', starting with a letter (a template writes {name})"


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a sweep file (or the single empty row of a file-less sweep)."""

    origin: str
    variables: dict[str, Any]


def static_axis_size(cfg: SweepConfig) -> int:
    """How many points each file row expands to (grid × zip × random)."""
    size = math.prod(len(values) for _, values in cfg.grid)
    if cfg.zip:
        size *= len(cfg.zip[0][1])
    if cfg.random_samples:
        size *= cfg.random_samples
    return size


def points(cfg: SweepConfig) -> Iterator[Point]:
    """Every point of the sweep, in a deterministic order, with index, key and origin.

    File rows are the outer loop, then grid (last axis fastest), zip, random.

    Raises:
        ConfigError: a file cannot be read or holds a malformed row, or a variable is
            defined both in a file and in ``[sweep]``.
    """
    statics = _static_points(cfg)
    static_names = {name for name, _ in cfg.grid} | {name for name, _ in cfg.zip}
    static_names |= {name for name, _ in cfg.random_params}
    index = 0
    for row in _rows(cfg):
        clash = static_names.intersection(row.variables)
        if clash:
            name = min(clash)
            msg = "is defined both in the file and in [sweep]; rename one of them"
            raise ConfigError(msg, where=row.origin, field=name)
        for extra in statics:
            variables = {**row.variables, **extra} if extra else row.variables
            yield Point(index, point_key(variables), row.origin, variables)
            index += 1


def count_points(cfg: SweepConfig) -> int:
    """How many points the sweep expands to, reading its files once without expanding.

    Counting stops once past ``COUNT_FACTOR × max_jobs`` (a sweep that large is not read to
    its end only to be refused): any result above that bound means "more than the bound".
    """
    static = static_axis_size(cfg)
    bound = cfg.max_jobs * COUNT_FACTOR
    if not cfg.files:
        return static
    total = 0
    for path in cfg.files:
        # Rows only, neither parsed nor typed: a third of the cost of reading them. A row
        # that would not read is reported once the sweep fits under the guard.
        blank = 0
        lines = _lines(path)
        reader = None if _is_jsonl(path) else csv.reader(lines, strict=True)
        records: Iterator[Any] = (line.strip() for line in lines) if reader is None else reader
        try:
            if reader is not None:
                next(reader, None)  # the header
            for number, record in enumerate(records, 1):
                if record:
                    total += static
                    if total > bound:
                        return total
                else:
                    blank += 1
                    if blank > cfg.max_jobs:
                        line = number if reader is None else reader.line_num
                        raise _blank_lines_error(path, line, cfg.max_jobs)
        except csv.Error:
            return total  # reported as such once the sweep fits under the guard
    return total


def _rows(cfg: SweepConfig) -> Iterator[Row]:
    if not cfg.files:
        yield Row("sweep", {})
        return
    for path in cfg.files:
        yield from read_rows(path, cfg.strings, max_blank_lines=cfg.max_jobs)


# Up to this many grid × zip × random combinations are built once and shared by every file
# row (the common case: a few dozen). Past it they are generated afresh for each row, in
# memory independent of their number: a grid of 10⁶ points no longer holds 10⁶ dicts.
_SHARED_COMBINATIONS = 10_000


def _static_points(cfg: SweepConfig) -> Iterable[dict[str, Any]]:
    """The grid × zip × random combinations, each a dict of their variables, in order."""
    size = static_axis_size(cfg)
    if size > cfg.max_jobs:
        raise guard_error(size, cfg.max_jobs)  # before anything is built
    combinations = _Combinations(cfg)
    return list(combinations) if size <= _SHARED_COMBINATIONS else combinations


class _Combinations:
    """grid × zip × random (last fastest), generated afresh by each iteration.

    Random draws restart from the seed for every grid × zip combination, so each sees the
    same samples, as when they were drawn once and shared.
    """

    __slots__ = ("cfg",)

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        axes: list[tuple[tuple[str, ...], tuple[Sequence[Any], ...]]] = [
            ((name,), (values,)) for name, values in cfg.grid
        ]
        if cfg.zip:
            axes.append((tuple(n for n, _ in cfg.zip), tuple(v for _, v in cfg.zip)))
        for index in _odometer([len(columns[0]) for _, columns in axes]):
            merged: dict[str, Any] = {}
            for (names, columns), i in zip(axes, index, strict=True):
                for name, column in zip(names, columns, strict=True):
                    merged[name] = column[i]
            if not cfg.random_samples:
                yield merged
                continue
            rng = random.Random(cfg.random_seed)  # noqa: S311 - seeded, reproducible sampling
            for _ in range(cfg.random_samples):
                yield {**merged, **{name: _draw(rng, dist) for name, dist in cfg.random_params}}


def _odometer(sizes: list[int]) -> Iterator[tuple[int, ...]]:
    """Every index tuple over ``sizes``, last fastest: ``itertools.product`` of ranges,
    without it building each range as a tuple first."""
    if 0 in sizes:
        return
    index = [0] * len(sizes)
    while True:
        yield tuple(index)
        pos = len(sizes) - 1
        while pos >= 0:
            index[pos] += 1
            if index[pos] < sizes[pos]:
                break
            index[pos] = 0
            pos -= 1
        if pos < 0:
            return


def guard_error(total: int, max_jobs: int) -> ConfigError:
    """The error for a sweep that expands past ``sweep.max_jobs``.

    A ``total`` past ``COUNT_FACTOR × max_jobs`` is where :func:`count_points` stopped
    counting: the message then says "more than" that bound.
    """
    bound = max_jobs * COUNT_FACTOR
    if total > bound:
        msg = (
            f"the sweep expands to more than {bound:,} jobs (counting stopped there), above "
            f"the guard of {max_jobs:,}; if that is intended, raise max_jobs in [sweep]"
        )
    else:
        msg = (
            f"the sweep expands to {total:,} jobs, above the guard of {max_jobs:,}; "
            f"if that is intended, raise it: max_jobs = {total} in [sweep]"
        )
    return ConfigError(msg, field="sweep.max_jobs")


def _draw(rng: random.Random, dist: Distribution) -> Any:
    if dist.kind == "uniform":
        return rng.uniform(*dist.args)
    if dist.kind == "loguniform":
        low, high = dist.args
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if dist.kind == "randint":
        return rng.randint(*dist.args)
    return rng.choice(dist.args)


def read_rows(
    path: Path, strings: Iterable[str] = (), *, max_blank_lines: int = DEFAULT_MAX_JOBS
) -> Iterator[Row]:
    """Stream the rows of one CSV or JSONL file (``.gz`` allowed), with their origins.

    The format comes from the suffix before any ``.gz``: ``.jsonl``/``.ndjson`` is JSONL,
    anything else CSV. Reading is bounded: a line holds at most ``MAX_LINE_BYTES``, a value
    ``MAX_VALUE_CHARS``, and a file at most ``max_blank_lines`` blank lines (they make no
    job, so the guard alone would not stop a file of nothing but newlines).

    Raises:
        ConfigError: the file is missing, not a regular file, not UTF-8, or has a malformed
            or oversized row.
    """
    lines = _lines(path)
    if _is_jsonl(path):
        yield from _read_jsonl(path, lines, max_blank_lines)
    else:
        yield from _read_csv(path, lines, frozenset(strings), max_blank_lines)


def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".ndjson")


def open_sweep_file(path: Path) -> IO[bytes]:
    """A sweep file's raw bytes (still compressed if it is ``.gz``), if it is a regular file.

    Raises:
        ConfigError: the file is missing, unreadable, or not a regular file (a FIFO, a
            device such as ``/dev/zero``, a directory).
    """
    try:
        return open_regular(path)
    except FileNotFoundError:
        msg = "no such sweep file"
        raise ConfigError(msg, where=str(path)) from None
    except OSError as exc:
        msg = f"cannot read sweep file: {exc.strerror}"
        raise ConfigError(msg, where=str(path)) from None


def _lines(path: Path) -> Iterator[str]:
    """Decoded lines, each checked as UTF-8 on its own so an error names its line.

    A line is read with a limit: a longer one is an error, not a line held in memory whole.
    """
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open_sweep_file(path))
        if path.suffix.lower() == ".gz":
            f = cast("IO[bytes]", stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb")))
        readline = functools.partial(f.readline, MAX_LINE_BYTES + 1)
        try:
            for number, raw in enumerate(iter(readline, b""), 1):
                if len(raw) > MAX_LINE_BYTES:
                    msg = f"the line is too long; the limit is {MAX_LINE_BYTES:,} bytes"
                    raise ConfigError(msg, where=f"{path}:{number}")
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    msg = f"invalid UTF-8 (byte {exc.start + 1} of the line); sweep files are UTF-8"
                    raise ConfigError(msg, where=f"{path}:{number}") from None
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            msg = f"cannot read sweep file: {exc}"
            raise ConfigError(msg, where=str(path)) from None


def _blank_lines_error(path: Path, line: int, limit: int) -> ConfigError:
    msg = (
        f"more than {limit:,} blank lines; the limit is the guard, max_jobs = {limit} "
        "(blank lines make no jobs)"
    )
    return ConfigError(msg, where=f"{path}:{line}")


# Floats orjson may have made of integers it could not hold: just inside -2**63 .. 2**64.
_EXACT_LOW, _EXACT_HIGH = -9.2e18, 1.8e19


def _maybe_inexact(obj: dict[str, Any]) -> bool:
    """Whether orjson may have read a number of ``obj`` inexactly, without a word.

    It reads an integer past 64 bits as a float, and a number past a 64-bit float's range
    (``1e-400``) as 0.0: a float that is 0.0 or past ±2**63 may be either, and sends the line
    to the exact (slower) reader. Most rows have neither.
    """
    stack = list(obj.values())
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            if value == 0.0 or not _EXACT_LOW < value < _EXACT_HIGH:
                return True
        elif kind is list:
            stack.extend(value)
        elif kind is dict:
            stack.extend(value.values())
    return False


def _read_jsonl(path: Path, lines: Iterator[str], max_blank: int) -> Iterator[Row]:
    names: set[str] = set()  # keys already checked: the check runs once per new key
    blank = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            blank += 1
            if blank > max_blank:
                raise _blank_lines_error(path, number, max_blank)
            continue
        where = f"{path}:{number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(_jsonl_problem(line, exc), where=where) from None
        if not isinstance(obj, dict):
            kind = "an array" if isinstance(obj, list) else type(obj).__name__
            msg = f"expected a JSON object, got {kind}"
            raise ConfigError(msg, where=where)
        for name in obj:
            if name not in names:
                problem = _name_problem(name)
                if problem is not None:
                    raise ConfigError(problem, where=where)
                names.add(name)
        # orjson takes the last of repeated keys, and some numbers inexactly, in silence.
        # Each key is followed by one colon: as many colons as top-level keys means no
        # repeated key anywhere. Anything else (nested objects, colons in strings, suspect
        # numbers, deep or long lines) is read again, exactly. The nesting test is loose
        # (brackets in strings count): it only decides who reads the line again.
        if (
            line.count(":") != len(obj)
            or line.count("[") + line.count("{") > MAX_NESTING
            or len(line) > MAX_VALUE_CHARS
            or _maybe_inexact(obj)
        ):
            _check_exact(line, obj, where)
        yield Row(where, obj)


def _jsonl_problem(line: str, exc: orjson.JSONDecodeError) -> str:
    """Why a line is not JSON bulk reads, in our own words (orjson's change between versions)."""
    try:
        loads_exact_json(line)
    except JSONValueError as named:
        return named.problem  # NaN, 1e400, nesting: the exact reader says what it is
    except ValueError:
        pass
    return f"invalid JSON at column {exc.colno}; each line must be one JSON object"


def _check_exact(line: str, obj: dict[str, Any], where: str) -> None:
    try:
        loads_exact_json(line)
    except JSONValueError as exc:
        raise ConfigError(exc.problem, where=where) from None
    except ValueError:
        pass  # orjson read it; only the exactness checks matter here
    if len(line) > MAX_VALUE_CHARS:
        stack: list[Any] = [obj]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, str) and len(node) > MAX_VALUE_CHARS:
                msg = f"a value is too long; the limit is {MAX_VALUE_CHARS:,} characters"
                raise ConfigError(msg, where=where)


def _read_csv(
    path: Path, lines: Iterator[str], strings: frozenset[str], max_blank: int
) -> Iterator[Row]:
    first_line, size = 1, 0  # the row being read: its first line, and its size so far

    def row_lines() -> Iterator[str]:
        # csv.reader pulls one line at a time, so this sees a row's lines as it reads them:
        # a quoted cell that never closes stops here, not at the end of the file.
        nonlocal size
        for line in lines:
            size += len(line)
            if size > MAX_LINE_BYTES:
                msg = f"the row is too long; the limit is {MAX_LINE_BYTES:,} characters"
                raise ConfigError(msg, where=f"{path}:{first_line}")
            yield line

    reader = csv.reader(row_lines(), strict=True)
    try:
        header = _read_header(path, reader)
        typed = [name not in strings for name in header]
        blank = 0
        first_line, size = reader.line_num + 1, 0
        for record in reader:
            where = f"{path}:{first_line}"
            first_line, size = reader.line_num + 1, 0
            if not record:
                blank += 1
                if blank > max_blank:
                    raise _blank_lines_error(path, reader.line_num, max_blank)
                continue
            yield Row(where, _cells(where, header, typed, record))
    except csv.Error as exc:
        if str(exc).startswith("field larger than field limit"):  # = MAX_VALUE_CHARS
            msg = f"a value is too long; the limit is {MAX_VALUE_CHARS:,} characters"
            raise ConfigError(msg, where=f"{path}:{first_line}") from None
        msg = f"malformed CSV: {exc}"
        raise ConfigError(msg, where=f"{path}:{reader.line_num}") from None


def _read_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """A CSV file's header row, checked."""
    header = next(reader, None)
    if header is None:
        msg = "empty file; a CSV sweep starts with a header row"
        raise ConfigError(msg, where=str(path))
    _check_header(path, header)
    return header


def _cells(where: str, header: list[str], typed: list[bool], record: list[str]) -> dict[str, Any]:
    """A CSV record's variables: its non-empty cells, typed where ``typed`` says."""
    if len(record) != len(header):
        msg = f"expected {len(header)} columns (from header), got {len(record)}"
        raise ConfigError(msg, where=where)
    variables: dict[str, Any] = {}
    for name, cell, convert in zip(header, record, typed, strict=True):
        if not cell:
            continue  # an empty cell is a missing variable
        variables[name] = _typed(cell) if convert else cell
    return variables


def _name_problem(name: str) -> str | None:
    """What is wrong with a sweep file's variable name: bulk's own, or not an identifier."""
    if name.startswith("_"):
        return f"{cut(repr(name), 32)}: {_RESERVED}"
    if not is_variable_name(name):
        return f"{cut(repr(name), 32)} is not a valid variable name; {_NAMES}"
    return None


def _check_header(path: Path, header: list[str]) -> None:
    where = f"{path}:1"
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if not name.strip():
            msg = f"column {i} has an empty name"
            raise ConfigError(msg, where=where)
        problem = _name_problem(name)
        if problem is not None:
            msg = f"column {i}: {problem}"
            raise ConfigError(msg, where=where)
        if name in seen:
            msg = f"duplicate column {name!r} in header"
            raise ConfigError(msg, where=where)
        seen.add(name)


def _typed(cell: str) -> Any:
    """A CSV cell as int, float or bool when it reads as one exactly, else the string.

    Strings that would lose information as numbers stay strings: leading zeros (``007``),
    digit separators (``1_000``), surrounding spaces, integers beyond 64 bits, and numbers a
    64-bit float cannot hold (``nan``, ``inf``, ``1e400``, and ``1e-400``, which it would read
    as 0.0).
    """
    first = cell[0]
    if (first.isdigit() or first in "+-.") and cell.isascii():  # int() reads "١" as 1
        return _number(cell)
    return _BOOLEANS.get(cell.lower(), cell)


_BOOLEANS = {"true": True, "false": False}


def _number(cell: str) -> Any:
    """A cell that may be a number: the number, unless it would lose information as one."""
    digits = cell.lstrip("+-")
    leading_zero = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()
    if "_" in cell or cell != cell.strip() or leading_zero:
        return cell
    try:
        number = int(cell)
    except ValueError:
        return _float(cell)
    # JSON consumers (and orjson) take 64-bit integers; a longer one is an id: keep it.
    return number if -(2**63) <= number < 2**64 else cell


def _float(cell: str) -> Any:
    """A cell that may be a float: the float, unless a 64-bit float cannot hold it."""
    try:
        value = float(cell)
    except ValueError:
        return cell
    if not math.isfinite(value):
        return cell  # inf, nan, 1e400: JSON has no such number
    if value == 0.0 and any(c in "123456789" for c in cell.lower().partition("e")[0]):
        return cell  # 1e-400: a 64-bit float would make it 0.0
    return value
