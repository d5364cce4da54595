"""Backends: where rendered jobs go. ``get_kind(name)`` is the registry.

To add one, write a module with a :class:`~bulk.backends.base.BackendKind` and list it in
``_KINDS`` below; nothing else in bulk needs to know about it.
"""

from __future__ import annotations

import importlib

from bulk.backends.base import (
    AnyKind,
    Backend,
    BackendKind,
    Endpoint,
    JobStatus,
    Phase,
    Receipt,
    Send,
    Submission,
)

__all__ = [
    "AnyKind",
    "Backend",
    "BackendKind",
    "Endpoint",
    "JobStatus",
    "Phase",
    "Receipt",
    "Send",
    "Submission",
    "get_kind",
    "kind_names",
]


# Each kind's module, imported only when a config names it: a local run never loads the
# HTTP client or the RSA library.
_MODULES = {
    "gongji": "bulk.backends.gongji",
    "local": "bulk.backends.local",
    "stub": "bulk.backends.stub",
}


def kind_names() -> list[str]:
    """The names a config may give as ``[backend] kind``."""
    return sorted(_MODULES)


def get_kind(name: str) -> AnyKind:
    """The backend kind called ``name``.

    Raises:
        KeyError: with a message listing the valid names.
    """
    try:
        module = _MODULES[name]
    except KeyError:
        msg = f"unknown backend {name!r}; valid kinds: {', '.join(kind_names())}"
        raise KeyError(msg) from None
    kind: AnyKind = importlib.import_module(module).KIND
    return kind
