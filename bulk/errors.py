"""Every exception ``bulk`` raises on purpose.

::

    BulkError
      ConfigError                  bad config, sweep or template input; never retried (exit 2)
        InputErrors                several input problems found in one pass (plan/run validation)
      BackendError(job_name, code, status)   raised by backends only
        RetryableBackendError(retry_after)    worth trying again later
          TransientBackendError    the request is known not to have been applied
            UnreachableError       the service could not be reached: nothing was sent
          AmbiguousBackendError    the request may have been applied: look the job up first
          ThrottledError           the service asked us to slow down; never a job failure
        PermanentBackendError      retrying the same request cannot help (4xx, bad body)
          RunRefusedError          no job of this run can succeed: the run stops, rows kept
            AuthenticationError    the service refused the credentials
      OutageError                  the service stayed unreachable past retry.budget_s (exit 3)
      JournalError                 the journal is unreadable, or refuses a resume
        RunLockedError             another ``bulk`` process holds the run

The engine decides what to do from an exception's *type*, never from its text; a backend
decides which type to raise from the service's structured answer (its ``code``, the HTTP
``status``), which it keeps on the exception. The three retryable kinds are siblings, so no
``except`` order can mistake an ambiguous request (look it up) for one known not to have
been applied (send it again).
"""

from __future__ import annotations

from collections.abc import Sequence

from bulk._text import cut

__all__ = [
    "AmbiguousBackendError",
    "AuthenticationError",
    "BackendError",
    "BulkError",
    "ConfigError",
    "InputErrors",
    "JournalError",
    "OutageError",
    "PermanentBackendError",
    "RetryableBackendError",
    "RunLockedError",
    "RunRefusedError",
    "ThrottledError",
    "TransientBackendError",
    "UnreachableError",
]

# Longest message a BackendError keeps. Messages quote what the service said (each backend
# cuts a quote to a few hundred characters where it builds the message, see
# bulk._text.excerpt); this is the backstop, so that nothing a service sends can make
# a journal row, a log line or a terminal screen arbitrarily long.
_MESSAGE_LIMIT = 1000


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
        code: the service's own error code (Gongji ``C010``), when it gave one.
        status: the HTTP status of the answer, when there was an answer.
    """

    def __init__(
        self,
        message: str,
        *,
        job_name: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ):
        self.job_name = job_name
        self.code = code
        self.status = status
        super().__init__(cut(message, _MESSAGE_LIMIT))


class RetryableBackendError(BackendError):
    """Worth trying again later; which of its kinds says what to do before that.

    Attributes:
        retry_after: seconds the service asked us to wait (``Retry-After``), if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        job_name: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        self.retry_after = retry_after
        super().__init__(message, job_name=job_name, code=code, status=status)


class TransientBackendError(RetryableBackendError):
    """The request is known not to have been applied: sending it again is safe."""


class ThrottledError(RetryableBackendError):
    """The service asked us to slow down (HTTP 429 or a throttle code); never a job failure."""


class AmbiguousBackendError(RetryableBackendError):
    """The request may or may not have been applied (timeout, reset, 5xx after sending).

    Before anything is sent again, the job must be looked up by its name.
    """


class UnreachableError(TransientBackendError):
    """The service could not be reached, so nothing was sent: connection refused, a connect
    that timed out, a name that does not resolve.

    Not a failure of any job, and not an attempt: the engine waits the outage out within
    ``retry.budget_s`` and then stops the run with every row kept (:class:`OutageError`).
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


class OutageError(BulkError):
    """The service could not be reached for ``retry.budget_s``: the run stopped sending.

    No row failed for it: rows never sent stay pending, rows being sent stay to be looked up,
    accepted jobs stay to be tracked. Running the same command again resumes (exit code 3).
    """


class JournalError(BulkError):
    """The journal is unreadable, inconsistent, or refuses to resume a changed run."""


class RunLockedError(JournalError):
    """Another ``bulk`` process is running this run (its journal is locked)."""
