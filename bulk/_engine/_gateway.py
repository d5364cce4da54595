"""How each request to the service is judged: its outcome label in the metrics."""

from __future__ import annotations

from bulk.errors import (
    AmbiguousBackendError,
    BackendError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

__all__ = ["outcome_of"]


def outcome_of(exc: BackendError) -> str:
    if isinstance(exc, ThrottledError):
        return "throttled"
    if isinstance(exc, AmbiguousBackendError):
        return "ambiguous"
    if isinstance(exc, UnreachableError):
        return "unreachable"
    if isinstance(exc, TransientBackendError):
        return "transient"
    return "permanent"
