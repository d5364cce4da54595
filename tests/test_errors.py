"""The error tree tells the truth: what each kind says about the request is in its type."""

from __future__ import annotations

import pytest

from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    PermanentBackendError,
    RetryableBackendError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

RETRYABLE = (TransientBackendError, AmbiguousBackendError, ThrottledError)


@pytest.mark.parametrize("kind", RETRYABLE)
def test_retryable_kinds_are_siblings(kind: type[RetryableBackendError]) -> None:
    """No retryable kind is another: an ``except`` for one never catches the others."""
    error = kind("x")
    assert isinstance(error, RetryableBackendError)
    assert [other for other in RETRYABLE if isinstance(error, other)] == [kind]


def test_ambiguous_is_not_known_unapplied() -> None:
    """'May have been applied' must never be caught as 'known not to have been applied'."""
    caught = None
    try:
        raise AmbiguousBackendError("reset after sending")
    except TransientBackendError:  # pragma: no cover - the bug this test is for
        caught = "transient"
    except RetryableBackendError:
        caught = "retryable"
    assert caught == "retryable"


def test_unreachable_is_transient_and_permanent_chain() -> None:
    assert issubclass(UnreachableError, TransientBackendError)
    assert issubclass(AuthenticationError, RunRefusedError)
    assert issubclass(RunRefusedError, PermanentBackendError)
    assert not issubclass(PermanentBackendError, RetryableBackendError)


def test_structured_fields_are_kept() -> None:
    error = ThrottledError("slow down", job_name="r-1", code="C010", status=200, retry_after=2.0)
    assert (error.job_name, error.code, error.status, error.retry_after) == (
        "r-1",
        "C010",
        200,
        2.0,
    )
    plain = BackendError("x")
    assert (plain.code, plain.status) == (None, None)


def test_message_is_capped() -> None:
    assert len(str(BackendError("x" * 5000))) == 1000
