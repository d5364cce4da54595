"""The run's journal: a SQLite store, its group-commit writer and the run lock (private)."""

from bulk._journal._lock import RunLock
from bulk._journal._store import (
    SCHEMA_VERSION,
    SERIES_OUTCOMES,
    Journal,
    Record,
    SeriesRow,
    State,
    StoredJob,
)
from bulk._journal._writer import JournalWriter, Offload

__all__ = [
    "SCHEMA_VERSION",
    "SERIES_OUTCOMES",
    "Journal",
    "JournalWriter",
    "Offload",
    "Record",
    "RunLock",
    "SeriesRow",
    "State",
    "StoredJob",
]
