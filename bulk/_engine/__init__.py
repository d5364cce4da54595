"""The engine: submit every pending job politely, exactly once, and track each to its end.

Private: :func:`bulk.run` is the public entry point.
"""

from bulk._engine._context import INTERRUPTED, LimiterFactory, SentMark, Stats
from bulk._engine._engine import Engine
from bulk._engine._gateway import Gateway
from bulk._engine._options import Delivery, Runtime
from bulk._engine._stop import stop_run

__all__ = [
    "INTERRUPTED",
    "Delivery",
    "Engine",
    "Gateway",
    "LimiterFactory",
    "Runtime",
    "SentMark",
    "Stats",
    "stop_run",
]
