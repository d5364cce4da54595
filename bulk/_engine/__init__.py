"""The engine: submit every pending job politely, exactly once, and track each to its end (private)."""

from bulk._engine._engine import (
    INTERRUPTED,
    Engine,
    LimiterFactory,
    SentMark,
    Stats,
    stop_run,
)

__all__ = [
    "INTERRUPTED",
    "Engine",
    "LimiterFactory",
    "SentMark",
    "Stats",
    "stop_run",
]
