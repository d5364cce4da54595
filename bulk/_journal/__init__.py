"""The run's journal: a SQLite store, its group-commit writer and the run lock (private)."""

from bulk._journal._store import (
    SCHEMA_VERSION,
    Journal,
    JournalWriter,
    Offload,
    Record,
    RunLock,
    State,
    StoredJob,
)

__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalWriter",
    "Offload",
    "Record",
    "RunLock",
    "State",
    "StoredJob",
]
