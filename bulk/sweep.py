"""Read sweep files row by row and expand them into sweep points.

A *row* is one record of a sweep file (a CSV line or a JSONL object) with its origin
``file:line``. A *point* is one fully expanded set of variables: a row × one grid combination ×
one zip position × one random sample. Every point becomes exactly one job.

Files are streamed, never loaded whole: memory does not grow with the number of rows. The
static axes (grid, zip, random) are small and held in memory; their product is iterated lazily.
Pure and synchronous: this module reads its input files and nothing else.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from bulk.config import Distribution, SweepConfig
from bulk.errors import ConfigError

__all__ = [
    "Point",
    "Row",
    "count_points",
    "guard_error",
    "point_key",
    "points",
    "read_rows",
    "static_axis_size",
]

_BOM = b"\xef\xbb\xbf"
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a sweep file (or the single empty row of a file-less sweep)."""

    origin: str
    variables: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Point:
    """One expanded sweep point: what one job is made from.

    Attributes:
        index: position in the expansion, from 0; stable across reruns of the same sweep.
        key: a short hash of the variables, independent of their order and of the point's
            position; the job's identity.
        origin: ``file:line`` of the row it came from, or ``sweep`` for a file-less sweep.
        variables: the sweep's own variables (no ``_``-prefixed ones).
    """

    index: int
    key: str
    origin: str
    variables: dict[str, Any]


def point_key(variables: dict[str, Any], occurrence: int = 0) -> str:
    """The stable key of a set of variables: 16 hex digits of BLAKE2b over canonical JSON.

    64 bits keep the chance of any collision in a 10⁷-point sweep below one in 10⁵; a
    collision is still caught (the journal's key is unique) and reported as a duplicate.

    Args:
        variables: the point's variables.
        occurrence: 0 for the first point with these variables; n for the n-th repeat when
            duplicates are allowed.
    """
    data = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    if occurrence:
        data += b"#%d" % occurrence
    return hashlib.blake2b(data, digest_size=8).hexdigest()


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
    """How many points the sweep expands to, reading its files once without expanding."""
    rows = sum(1 for _ in _rows(cfg))
    return rows * static_axis_size(cfg)


def _rows(cfg: SweepConfig) -> Iterator[Row]:
    if not cfg.files:
        yield Row("sweep", {})
        return
    for path in cfg.files:
        yield from read_rows(path, cfg.strings)


def _static_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The grid × zip × random combinations (small: bounded by ``max_jobs``)."""
    axes: list[list[dict[str, Any]]] = [[{name: v} for v in values] for name, values in cfg.grid]
    if cfg.zip:
        names = [name for name, _ in cfg.zip]
        columns = [values for _, values in cfg.zip]
        axes.append([dict(zip(names, combo, strict=True)) for combo in zip(*columns, strict=True)])
    if cfg.random_samples:
        rng = random.Random(cfg.random_seed)
        axes.append(
            [
                {name: _draw(rng, dist) for name, dist in cfg.random_params}
                for _ in range(cfg.random_samples)
            ]
        )
    size = static_axis_size(cfg)
    if size > cfg.max_jobs:
        raise guard_error(size, cfg.max_jobs)  # before building a huge list
    out = []
    for combo in itertools.product(*axes):
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        out.append(merged)
    return out


def guard_error(total: int, max_jobs: int) -> ConfigError:
    """The error for a sweep that expands past ``sweep.max_jobs``."""
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


def read_rows(path: Path, strings: Iterable[str] = ()) -> Iterator[Row]:
    """Stream the rows of one CSV or JSONL file (``.gz`` allowed), with their origins.

    The format comes from the suffix before any ``.gz``: ``.jsonl``/``.ndjson`` is JSONL,
    anything else CSV.

    Raises:
        ConfigError: the file is missing, not UTF-8, or has a malformed row.
    """
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    is_jsonl = bool(suffixes) and suffixes[-1] in (".jsonl", ".ndjson")
    lines = _lines(path)
    if is_jsonl:
        yield from _read_jsonl(path, lines)
    else:
        yield from _read_csv(path, lines, frozenset(strings))


def _open(path: Path) -> IO[bytes]:
    try:
        if path.suffix.lower() == ".gz":
            return cast("IO[bytes]", gzip.open(path, "rb"))
        return path.open("rb")
    except FileNotFoundError:
        msg = "no such sweep file"
        raise ConfigError(msg, where=str(path)) from None
    except OSError as exc:
        msg = f"cannot read sweep file: {exc.strerror}"
        raise ConfigError(msg, where=str(path)) from None


def _lines(path: Path) -> Iterator[str]:
    """Decoded lines, each checked as UTF-8 on its own so an error names its line."""
    with _open(path) as f:
        try:
            for number, raw in enumerate(f, 1):
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


def _read_jsonl(path: Path, lines: Iterator[str]) -> Iterator[Row]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            # Our own words: orjson's message text changes between versions.
            msg = f"invalid JSON at column {exc.colno}; each line must be one JSON object"
            raise ConfigError(msg, where=where) from None
        if not isinstance(obj, dict):
            kind = "an array" if isinstance(obj, list) else type(obj).__name__
            msg = f"expected a JSON object, got {kind}"
            raise ConfigError(msg, where=where)
        for name in obj:
            if name.startswith("_"):
                msg = "names starting with '_' are reserved for bulk (_key, _index, _run, ...)"
                raise ConfigError(msg, where=where, field=name)
        yield Row(where, obj)


def _read_csv(path: Path, lines: Iterator[str], strings: frozenset[str]) -> Iterator[Row]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            msg = "empty file; a CSV sweep starts with a header row"
            raise ConfigError(msg, where=str(path))
        _check_header(path, header)
        width = len(header)
        typed = [name not in strings for name in header]
        last = reader.line_num
        for record in reader:
            first_line = last + 1
            last = reader.line_num
            if not record:
                continue
            if len(record) != width:
                msg = f"expected {width} columns (from header), got {len(record)}"
                raise ConfigError(msg, where=f"{path}:{first_line}")
            variables: dict[str, Any] = {}
            for name, cell, convert in zip(header, record, typed, strict=True):
                if not cell:
                    continue  # an empty cell is a missing variable
                variables[name] = _typed(cell) if convert else cell
            yield Row(f"{path}:{first_line}", variables)
    except csv.Error as exc:
        msg = f"malformed CSV: {exc}"
        raise ConfigError(msg, where=f"{path}:{reader.line_num}") from None


def _check_header(path: Path, header: list[str]) -> None:
    where = f"{path}:1"
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if not name.strip():
            msg = f"column {i} has an empty name"
            raise ConfigError(msg, where=where)
        if name.startswith("_"):
            msg = "names starting with '_' are reserved for bulk (_key, _index, _run, ...)"
            raise ConfigError(msg, where=where, field=name)
        if name in seen:
            msg = f"duplicate column {name!r} in header"
            raise ConfigError(msg, where=where)
        seen.add(name)


def _typed(cell: str) -> Any:
    """A CSV cell as int, float or bool when it reads as one exactly, else the string.

    Strings that would lose information as numbers stay strings: leading zeros (``007``),
    digit separators (``1_000``), surrounding spaces, integers beyond 64 bits, and non-finite
    values.
    """
    first = cell[0]
    if first.isdigit() or first in "+-.":
        if "_" in cell or cell != cell.strip():
            return cell
        digits = cell.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            return cell
        try:
            number = int(cell)
        except ValueError:
            pass
        else:
            # JSON consumers (and orjson) take 64-bit integers; a longer one is an id: keep it.
            return number if -(2**63) <= number < 2**64 else cell
        try:
            value = float(cell)
        except ValueError:
            return cell
        return value if math.isfinite(value) else cell
    lower = cell.lower()
    if lower == "true":
        return True
    if lower == "false":
        return False
    return cell
