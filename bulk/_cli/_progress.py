"""Showing a run's progress: a rich progress bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from bulk._engine import Stats

__all__ = ["describe", "show"]


def describe(stats: Stats) -> str:
    """One line: how far the run is."""
    parts = [f"{stats.done:,}/{stats.total:,} done"]
    parts.append(f"{stats.succeeded:,} succeeded")
    if stats.failed:
        parts.append(f"{stats.failed:,} failed")
    if stats.stopped:
        parts.append(f"{stats.stopped:,} stopped")
    parts.append(f"{stats.active:,} active")
    if stats.throttled:
        parts.append(f"{stats.throttled:,} throttled")
    if stats.unreachable:
        parts.append("service unreachable: waiting")
    return ", ".join(parts)


async def show(stats: Stats, run: str, *, interval_s: float, stream: TextIO | None = None) -> None:
    """Update the display until cancelled (the caller cancels it when the run ends).

    Args:
        stats: the engine's live counters.
        run: the run's name.
        interval_s: seconds between plain lines when ``stream`` is not a terminal; 0 for
            none (a terminal always gets the bar).
        stream: where to show it (``sys.stderr`` when None).
    """
    stream = stream or sys.stderr
    if stream.isatty():
        await _bar(stats, run, stream)
    elif interval_s > 0:
        while True:
            await anyio.sleep(interval_s)
            try:
                print(f"bulk: {run}: {describe(stats)}", file=stream, flush=True)
            except (OSError, ValueError):
                return  # nobody is reading any more: progress is not worth failing the run


async def _bar(stats: Stats, run: str, stream: TextIO) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        task = bar.add_task(run, total=stats.total or None, detail="")

        def update() -> None:
            detail = f"{stats.succeeded:,} ok · {stats.failed:,} failed · {stats.active:,} active"
            if stats.unreachable:
                detail += " · service unreachable: waiting"
            bar.update(task, completed=stats.done, total=stats.total or None, detail=detail)

        try:
            while True:
                update()
                await anyio.sleep(0.2)
        finally:
            update()  # the last state, not the one from up to 0.2 s before the end
