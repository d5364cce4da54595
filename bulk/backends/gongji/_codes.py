"""The Gongji envelope's error codes: which :mod:`bulk.errors` type each one raises, and why.

The API lists its codes without saying what they mean; each choice is written down next to its
code, and a code not listed is permanent, so that an unknown answer is never retried blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bulk._text import excerpt
from bulk.backends._http import Response
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)

__all__ = ["CODES", "code_error"]


@dataclass(frozen=True, slots=True)
class _Code:
    family: str
    on_write: type[BackendError]  # for a create (not idempotent)
    on_read: type[BackendError]  # for reads, look-ups and stop (idempotent)
    why: str


_AUTH = (
    "check the key's mode (simple keys send no signature, RSA keys must), that the private "
    "key matches the public key uploaded in the console, and the machine's clock (timestamps "
    "are checked against the server's)"
)

# The API lists the codes 0000, C001-C010 (no C003), C999 and Z001 without saying what they
# mean (§1.4 of docs/api/gongji.md). Each choice below, with its
# reason; a code not listed is permanent, so an unknown answer is never retried blindly.
CODES: dict[str, _Code] = {
    **{
        code: _Code(
            "auth",
            AuthenticationError,
            AuthenticationError,
            "auth/signature family in public clients; same credentials cannot succeed",
        )
        for code in ("C001", "C002", "C004", "C005", "C006", "C007", "C003", "A003")
    },
    **{
        code: _Code(
            "throttle",
            ThrottledError,
            ThrottledError,
            "mapped to 'rate limited, retryable' by a public adapter: slow down",
        )
        for code in ("C008", "C009")
    },
    "C010": _Code(
        "conflict",
        PermanentBackendError,
        PermanentBackendError,
        "operation conflict (e.g. stopping an ended task): retrying cannot help",
    ),
    "C999": _Code(
        "system",
        AmbiguousBackendError,
        TransientBackendError,
        "a generic server error may come after the task was created: look it up",
    ),
    "Z001": _Code(
        "unknown",
        AmbiguousBackendError,
        TransientBackendError,
        "meaning unknown: treated like a server error, the safe side",
    ),
}


def code_error(code: str, message: Any, response: Response) -> BackendError:
    """The error for an envelope whose ``code`` is not ``0000`` (see :data:`CODES`).

    The error carries the code (cut to 20 characters) and the answer's HTTP status, for
    callers to decide by (a stop answered C010 is a task that has already ended).
    """
    shown = excerpt(code, 20)
    rule = CODES.get(code)
    said = excerpt(message) if message else "no message"
    text = f"{response.method} {response.path}: code {shown}: {said}"
    job_name, status = response.job_name, response.status
    if rule is None:
        text += " (an undocumented code)"
        return PermanentBackendError(text, job_name=job_name, code=shown, status=status)
    if rule.family == "auth":
        text += f"; {_AUTH}"
    kind = rule.on_read if response.idempotent else rule.on_write
    if kind is ThrottledError:
        return ThrottledError(text, job_name=job_name, code=shown, status=status, retry_after=1.0)
    return kind(text, job_name=job_name, code=shown, status=status)
