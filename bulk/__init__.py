"""bulk: submit very large batches of jobs to batch-job services — politely, exactly once,
and resumably.

The command line is the main interface (``bulk --help``); this package exposes the pieces a
program or a test needs: loading a config, the backend interface and its test double.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from bulk._config import Config, load
from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    BulkError,
    ConfigError,
    InputErrors,
    JournalError,
    OutageError,
    PermanentBackendError,
    RetryableBackendError,
    RunLockedError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

try:
    __version__ = _version("bulk")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AmbiguousBackendError",
    "AuthenticationError",
    "Backend",
    "BackendError",
    "BulkError",
    "Config",
    "ConfigError",
    "InputErrors",
    "JobStatus",
    "JournalError",
    "OutageError",
    "PermanentBackendError",
    "Phase",
    "Receipt",
    "RetryableBackendError",
    "RunLockedError",
    "RunRefusedError",
    "Submission",
    "ThrottledError",
    "TransientBackendError",
    "UnreachableError",
    "__version__",
    "load",
]
