"""The strict reader of one TOML table: typed getters, unknown keys refused at the end.

Every table of a config is read through it, and so is each backend's ``[backend]`` table, so
all their errors read the same: ``file: key.path: what is wrong; what is allowed``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar, overload

from bulk._template import value_problem
from bulk.errors import ConfigError

__all__ = ["Table"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_.-]+")  # dotted: callers pass key paths too

_T = TypeVar("_T")
_U = TypeVar("_U")
_D = TypeVar("_D")
_N = TypeVar("_N", int, float)
_REQUIRED: Any = object()


class Table:
    """Strict reader of one TOML table: typed getters, and unknown keys refused at the end.

    Backends read their own ``[backend]`` keys through it, so their errors look the same.
    """

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str):
        self.data = data
        self.where = where
        self.prefix = prefix
        self.known: list[str] = []

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(problem, where=self.where, field=f"{self.prefix}{_key_text(key)}")

    # ``get(key, str)`` is a str; with a default it is a str or the default's type; with a
    # pair of types, either. The checks below make the overloads true.
    @overload
    def get(self, key: str, kind: type[_T]) -> _T: ...
    @overload
    def get(self, key: str, kind: type[_T], default: _D) -> _T | _D: ...
    @overload
    def get(self, key: str, kind: tuple[type[_T], type[_U]]) -> _T | _U: ...
    @overload
    def get(self, key: str, kind: tuple[type[_T], type[_U]], default: _D) -> _T | _U | _D: ...
    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        """The value of ``key``, checked to be of ``kind``; ``default`` if absent, else an error."""
        self.known.append(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(key, "missing required key")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; TOML's true is not a number in a config.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            names = " or ".join(_type_name(k) for k in kinds)
            self.fail(key, f"expected {names}, got {_type_name(type(value))} {value!r}")
        # TOML takes integers JSON cannot carry. A table is checked key by key, as it is read
        # (so that the message names the key).
        problem = None if isinstance(value, dict) else value_problem(value)
        if problem is not None:
            self.fail(key, problem)
        return value

    @overload
    def positive(self, key: str, kind: type[_N], default: _N) -> _N: ...
    @overload
    def positive(self, key: str, kind: type[_N], default: None) -> _N | None: ...
    def positive(self, key: str, kind: type, default: Any) -> Any:
        """Like :meth:`get`, and the value (unless it is the ``None`` default) is above 0."""
        value = self.get(key, kind, default)
        if value is not None and not value > 0:
            self.fail(key, f"{value!r} must be greater than 0")
        return value

    def table(self, key: str) -> Table:
        raw = self.get(key, dict, {})
        return Table(raw, self.where, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.known]
        if unknown:
            valid = ", ".join(sorted(self.known))
            self.fail(unknown[0], f"unknown key; valid keys here: {valid}")


def _key_text(key: str) -> str:
    """A TOML key as a message shows it: bare, or quoted as TOML would (``grid."a b"``).

    Quoting escapes control characters, so a key holding a newline never splits the one-line
    error in two.
    """
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }.get(kind, kind.__name__)
