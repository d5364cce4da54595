"""Backends: where rendered jobs go. ``get_kind(name)`` is the registry.

To add one, write a module (or package) with a :class:`~bulk.backends.base.BackendKind`
named ``KIND`` and list it in ``_MODULES`` below, or, from another package, register it in
the ``bulk.backends`` entry-point group; nothing else in bulk needs to know about it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bulk._policy import LimitsConfig, TrackConfig
from bulk._problems import Problems
from bulk._table import Table
from bulk._text import one_line
from bulk.backends.base import (
    NO_QUOTING,
    AnyKind,
    Backend,
    BackendKind,
    Command,
    Endpoint,
    JobStatus,
    Phase,
    Receipt,
    Send,
    Simulator,
    Submission,
    Testbed,
)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_QUOTING",
    "AnyKind",
    "Backend",
    "BackendKind",
    "Command",
    "Endpoint",
    "JobStatus",
    "LimitsConfig",
    "Phase",
    "Problems",
    "Receipt",
    "Send",
    "Simulator",
    "Submission",
    "Table",
    "Testbed",
    "TrackConfig",
    "get_kind",
    "kind_names",
]


# The built-in kinds: each module's ``KIND``, imported only when a config names it (a local
# run never loads the HTTP client or the RSA library). A built-in name wins over an entry
# point of the same name: a package cannot take ``local`` over.
_MODULES = {
    "gongji": "bulk.backends.gongji",
    "ray": "bulk.backends.ray",
    "local": "bulk.backends.local",
    "stub": "bulk.backends.stub",
}

ENTRY_POINT_GROUP = "bulk.backends"
"""Installed packages add kinds here: ``toy = "toy_pkg:KIND"`` (or the module alone)."""

# What a kind must have for bulk to use it (checked when an entry point is loaded).
_KIND_MEMBERS = (
    "name",
    "default_limits",
    "default_track",
    "quoted_fields",
    "jobs_outlive_bulk",
    "unique_names",
    "parse_options",
    "validate",
    "check_template",
    "create",
    "testbed",
    "commands",
    "simulator",
)


def _entry_points() -> dict[str, EntryPoint]:
    """The installed ``bulk.backends`` entry points other than the built-in names."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: ep for name, ep in found.items() if name not in _MODULES}


def kind_names() -> list[str]:
    """The names a config may give as ``[backend] kind``: built in, then installed."""
    return sorted(_MODULES.keys() | _entry_points().keys())


def get_kind(name: str) -> AnyKind:
    """The backend kind called ``name``: a built-in one, or one of an installed package.

    Raises:
        KeyError: with a one-line message: the valid names, or why an installed kind
            cannot be loaded.
    """
    if name in _MODULES:
        kind: AnyKind = importlib.import_module(_MODULES[name]).KIND
        return kind
    ep = _entry_points().get(name)
    if ep is None:
        msg = f"unknown backend {name!r}; valid kinds: {', '.join(kind_names())}"
        raise KeyError(msg)
    return _load(ep)


def _load(ep: EntryPoint) -> AnyKind:
    where = f"backend {ep.name!r} (entry point {ep.value!r}"
    where += f" of {ep.dist.name} {ep.dist.version})" if ep.dist is not None else ")"
    try:
        loaded = ep.load()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of a plug-in's import
        msg = f"{where} cannot be loaded: {one_line(exc)}"
        raise KeyError(msg) from None
    kind = getattr(loaded, "KIND", loaded) if isinstance(loaded, ModuleType) else loaded
    missing = [m for m in _KIND_MEMBERS if not hasattr(kind, m)]
    if missing:
        msg = f"{where} is not a backend kind: it has no {', '.join(missing)}"
        raise KeyError(msg)
    wrong = [m for m, kinds in _KIND_TYPES.items() if not isinstance(getattr(kind, m), kinds)]
    if wrong or kind.name != ep.name:
        what = (
            ", ".join(wrong) if wrong else f"name {kind.name!r} (the entry point's is {ep.name!r})"
        )
        msg = f"{where} is not a backend kind: wrong {what}"
        raise KeyError(msg)
    result: AnyKind = _Guarded(kind, where)
    return result


# The types of a kind's values (its methods are checked by name above).
_KIND_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "default_limits": LimitsConfig,
    "default_track": TrackConfig,
    "quoted_fields": Mapping,
    "jobs_outlive_bulk": bool,
    "unique_names": bool,
}

# A kind's hooks that bulk calls directly; what they raise that is not a bulk error is a
# plug-in's bug, reported in one line naming the kind and the hook (never a traceback).
_HOOKS = frozenset(
    {"parse_options", "validate", "check_template", "create", "testbed", "commands", "simulator"}
)


class _Guarded:
    """A kind from another package, its hooks' failures turned into one-line ConfigErrors."""

    def __init__(self, kind: Any, where: str):
        self._kind = kind
        self._where = where

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._kind, name)
        if name in _HOOKS and callable(value):
            return functools.partial(self._call, name, value)
        return value

    def _call(self, hook: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from bulk.errors import BulkError, ConfigError

        try:
            return function(*args, **kwargs)
        except BulkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug, said in one line
            msg = f"{self._where}: {hook}() failed: {one_line(exc)}"
            raise ConfigError(msg) from None
