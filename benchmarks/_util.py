"""Helpers shared by the benchmarks: timing child processes, rounds, tables.

Every benchmark module ``benchmarks/bench_NAME.py`` offers ``tables(opts) -> list[Table]``
(what ``python -m benchmarks`` runs and writes to JSON) and a ``main()`` of its own. A
table's cells are strings, numbers, or a :class:`Spread` (one figure measured in each
round: printed as its median with the min and max beside it).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORK = Path(__file__).parent / ".work"


@dataclass(frozen=True)
class ChildRun:
    """What one child process cost."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int


def run_child(argv: Sequence[str], **kwargs: object) -> ChildRun:
    """Run a command to its end; its own wall time, CPU time (``wait4``) and peak RSS.

    The peak RSS is the child's ``VmHWM`` (its own address space's high-water mark), read
    every 20 ms while it runs: ``wait4``'s ``ru_maxrss`` cannot be used, because Linux
    starts a child's count at its parent's high-water mark (the fork, or the vfork that
    ``subprocess`` uses, shares or copies the parent's memory until ``exec``), so every
    child of a harness that grew to 200 MB reported at least 200 MB. Growth in the child's
    last 20 ms is missed.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]  # pass-through kwargs
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, _high_water_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=peak_kb / 1024,
        returncode=proc.returncode,
    )


def _high_water_kb(pid: int) -> int:
    """``VmHWM`` of a running process, in KiB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Ratio(float):
    """A ratio to a peer measured in the same round; printed as ``0.85×``."""


@dataclass(frozen=True)
class Spread:
    """One figure, measured once per round."""

    runs: tuple[float, ...]
    ratio: bool = False

    @property
    def min(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def max(self) -> float:
        return max(self.runs)

    def to_json(self) -> dict[str, object]:
        return {
            "min": self.min,
            "median": self.median,
            "max": self.max,
            "runs": list(self.runs),
            "ratio": self.ratio,
        }


Cell = str | int | float | Spread | None


@dataclass
class Table:
    """One table of a benchmark.

    Attributes:
        key: stable name (``engine.local``): the README's markers name it.
        title: what it measures, one line.
        headers: column names.
        rows: the rows; the first cell says what the row is.
        rounds: how many rounds its spreads hold.
    """

    key: str
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)  # Cells (older sections: objects)
    rounds: int = 1

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "title": self.title,
            "headers": self.headers,
            "rounds": self.rounds,
            "rows": [[c.to_json() if isinstance(c, Spread) else c for c in r] for r in self.rows],
        }


@dataclass(frozen=True)
class Options:
    """What ``python -m benchmarks`` asks of every benchmark.

    Attributes:
        quick: a smoke run: tiny sizes, seconds in all (figures mean nothing).
        scale: include the slow sizes (10⁶ jobs in the scale table).
        rounds: how many times each measurement is taken (min/median/max).
    """

    quick: bool = False
    scale: bool = False
    rounds: int = 3


def rounds(n: int, measure: Callable[[], list[list[Cell]]]) -> tuple[list[list[Cell]], int]:
    """``measure`` run ``n`` times (each returns the same rows, labels first), merged cell by
    cell: numbers become a :class:`Spread`, text is kept from the first round."""
    results = [measure() for _ in range(n)]
    return merge(results), n


def merge(results: Sequence[list[list[Cell]]]) -> list[list[Cell]]:
    """Rounds of the same rows merged cell by cell (see :func:`rounds`)."""
    merged: list[list[Cell]] = []
    for cells in zip(*results, strict=True):
        row: list[Cell] = []
        for values in zip(*cells, strict=True):
            first = values[0]
            if isinstance(first, bool) or not isinstance(first, int | float):
                row.append(first)
            elif isinstance(first, int) and all(v == first for v in values):
                row.append(first)  # a size or a count that is the same in every round
            else:
                nums = tuple(float(v) for v in values if isinstance(v, int | float))
                row.append(Spread(nums, ratio=isinstance(first, Ratio)))
        merged.append(row)
    return merged


def markdown(table: Table) -> str:
    """The table in Markdown (what the README shows)."""
    lines = [
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(table.headers))) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


def print_table(table: Table) -> None:
    """A plain Markdown table on stdout, with its title."""
    spread = f" (median, min–max of {table.rounds} rounds)" if table.rounds > 1 else ""
    print(f"\n{table.title}{spread} [{table.key}]\n\n{markdown(table)}", flush=True)


def cell(value: object) -> str:
    """A cell as text: a spread as ``median (min–max)``, a ratio as ``0.85×``."""
    if isinstance(value, dict) and "median" in value:  # a spread read back from JSON
        value = Spread(tuple(value["runs"]), ratio=bool(value.get("ratio")))
    if isinstance(value, Spread):
        show = (lambda v: f"{v:.2f}×") if value.ratio else _number
        if value.min == value.max:
            return show(value.median)
        return f"{show(value.median)} ({show(value.min)}–{show(value.max)})"
    if isinstance(value, Ratio):
        return f"{value:.2f}×"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    return "-" if value is None else str(value)


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
