"""bulk: submit very large batches of jobs to batch-job services — politely, exactly once,
and resumably.

The command line is the main interface (``bulk --help``); a program uses the same steps:
:func:`load` a config, :func:`plan` it (expand and validate, send nothing), :func:`run` it
(submit and track to the end; resumes). ``bulk.errors``, ``bulk.backends`` (the backend
interface and registry) and ``bulk.testing`` are public too; every ``_`` module is private.

Example::

    import bulk

    plan = bulk.plan("configs/local-pi.toml")  # raises on a bad config or sweep
    summary = bulk.run(plan.config)  # a second call resumes an interrupted run
    print(summary.counts)  # {'succeeded': 24}
"""

from __future__ import annotations

from bulk._api import Plan, Summary, plan, run
from bulk._config import Config, load
from bulk._naming import Point
from bulk._version import __version__
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
    "Plan",
    "Point",
    "Receipt",
    "RetryableBackendError",
    "RunLockedError",
    "RunRefusedError",
    "Submission",
    "Summary",
    "ThrottledError",
    "TransientBackendError",
    "UnreachableError",
    "__version__",
    "load",
    "plan",
    "run",
]
