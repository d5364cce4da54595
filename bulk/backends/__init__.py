"""Backends: where rendered jobs go. ``get_kind(name)`` is the registry.

To add one, write a module with a :class:`~bulk.backends.base.BackendKind` and list it in
``_KINDS`` below; nothing else in bulk needs to know about it.
"""

from __future__ import annotations

from bulk.backends.base import (
    Backend,
    BackendKind,
    JobStatus,
    Phase,
    Receipt,
    Submission,
)

__all__ = [
    "Backend",
    "BackendKind",
    "JobStatus",
    "Phase",
    "Receipt",
    "Submission",
    "get_kind",
    "kind_names",
]


def _kinds() -> dict[str, BackendKind]:
    # Imported on demand: a local run never loads the HTTP clients.
    from bulk.backends import gongji, local, stub

    return {"gongji": gongji.KIND, "local": local.KIND, "stub": stub.KIND}


def kind_names() -> list[str]:
    """The names a config may give as ``[backend] kind``."""
    return sorted(_kinds())


def get_kind(name: str) -> BackendKind:
    """The backend kind called ``name``.

    Raises:
        KeyError: with a message listing the valid names.
    """
    kinds = _kinds()
    try:
        return kinds[name]
    except KeyError:
        msg = f"unknown backend {name!r}; valid kinds: {', '.join(sorted(kinds))}"
        raise KeyError(msg) from None
