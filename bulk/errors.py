"""Every exception ``bulk`` raises on purpose.

::

    BulkError
      ConfigError                  bad config, sweep or template input; never retried (exit 2)
        InputErrors                several input problems found in one pass (plan/run validation)
      BackendError(job_name=...)   raised by backends only
        TransientBackendError(retry_after=...)   worth retrying; nothing is known to have happened
          ThrottledError           the service asked us to slow down; never a job failure
          AmbiguousBackendError    the request may have been applied: look the job up first
        PermanentBackendError      retrying the same request cannot help (4xx, bad body)
          RunRefusedError          no job of this run can succeed: the run stops, rows kept
            AuthenticationError    the service refused the credentials
      JournalError                 the journal is unreadable, or refuses a resume
        RunLockedError             another ``bulk`` process holds the run

The engine decides what to do from an exception's *type*, never from its text.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AmbiguousBackendError",
    "AuthenticationError",
    "BackendError",
    "BulkError",
    "ConfigError",
    "InputErrors",
    "JournalError",
    "PermanentBackendError",
    "RunLockedError",
    "RunRefusedError",
    "ThrottledError",
    "TransientBackendError",
]


class BulkError(Exception):
    """Base of every exception ``bulk`` raises on purpose."""


class ConfigError(BulkError):
    """Bad config, sweep or template input.

    The message is one line in compiler style: ``where: field: what is wrong; what is allowed``.

    Attributes:
        where: ``file`` or ``file:line`` the problem comes from, if known.
        field: the key path or column (``limits.rate_per_s``, ``job.command``), if known.
        problem: the bare description of what is wrong.
    """

    def __init__(self, problem: str, *, where: str | None = None, field: str | None = None):
        self.where = where
        self.field = field
        self.problem = problem
        parts = [p for p in (where, field, problem) if p]
        super().__init__(": ".join(parts))


class InputErrors(ConfigError):
    """Several input problems, each a :class:`ConfigError`, found by one validation pass.

    Attributes:
        errors: the first problems found (at most ``shown``).
        total: how many problems there were in all.
    """

    def __init__(self, errors: Sequence[ConfigError], total: int):
        self.errors = list(errors)
        self.total = total
        first = str(self.errors[0]) if self.errors else "invalid input"
        more = f" (and {total - 1} more)" if total > 1 else ""
        super().__init__(first + more)

    def lines(self) -> list[str]:
        """One line per problem kept, plus an ``and N more`` line when some were not kept."""
        out = [str(e) for e in self.errors]
        if self.total > len(self.errors):
            out.append(f"and {self.total - len(self.errors)} more")
        return out


class BackendError(BulkError):
    """Raised by backends only, at their boundary with the service.

    Attributes:
        job_name: the deterministic name of the job concerned, when there is one.
    """

    def __init__(self, message: str, *, job_name: str | None = None):
        self.job_name = job_name
        super().__init__(message)


class TransientBackendError(BackendError):
    """Worth retrying: the request is known not to have been applied.

    Attributes:
        retry_after: seconds the service asked us to wait (``Retry-After``), if it said.
    """

    def __init__(
        self, message: str, *, job_name: str | None = None, retry_after: float | None = None
    ):
        self.retry_after = retry_after
        super().__init__(message, job_name=job_name)


class ThrottledError(TransientBackendError):
    """The service asked us to slow down (HTTP 429 or a throttle code); never a job failure."""


class AmbiguousBackendError(TransientBackendError):
    """The request may or may not have been applied (timeout, reset, 5xx after sending).

    Before anything is sent again, the job must be looked up by its name.
    """


class PermanentBackendError(BackendError):
    """Retrying the same request cannot help: bad credentials, a refused body, a 4xx."""


class RunRefusedError(PermanentBackendError):
    """Nothing in this run can succeed as configured (credentials, an unknown device).

    Not a job's failure: the engine puts the job back and stops the run, so that once the
    cause is fixed the same command carries on.
    """


class AuthenticationError(RunRefusedError):
    """The service refused the credentials (token, key, signature, clock)."""


class JournalError(BulkError):
    """The journal is unreadable, inconsistent, or refuses to resume a changed run."""


class RunLockedError(JournalError):
    """Another ``bulk`` process is running this run (its journal is locked)."""
