"""Helpers shared by the benchmarks: timing child processes and printing tables."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORK = Path(__file__).parent / ".work"


@dataclass(frozen=True)
class ChildRun:
    """What one child process cost."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int


def run_child(argv: Sequence[str], **kwargs: object) -> ChildRun:
    """Run a command to its end; its own wall time, CPU time and peak RSS (``wait4``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]  # pass-through kwargs
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
    )


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain Markdown table (pastes straight into the README)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
