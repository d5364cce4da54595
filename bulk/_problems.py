"""Small helpers that backends use to check a rendered body before anything is sent.

A backend's ``validate(body, problems)`` walks the body and calls these; each problem is a
:class:`Problem` such as ``Problem("job.entrypoint_num_cpus", "32 is above the maximum 16")``.
A problem also says what it depends on (its field's value, or only its key, and any other
fields named with :meth:`Problems.depending_on`), so that the planner can tell a problem of the
template itself, reported once, from one of a row's values. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from bulk._text import short_repr

__all__ = ["Problem", "Problems"]

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return short_repr(value)


class Problem(NamedTuple):
    """One problem of one rendered body.

    Attributes:
        field: the key path (``job.command[2]``).
        message: what is wrong and what is allowed.
        key: the problem is the key itself (unknown, or not a valid name), whatever its value.
        depends: other key paths the verdict depends on (a check that compares two fields).
    """

    field: str
    message: str
    key: bool = False
    depends: tuple[str, ...] = ()


class Problems:
    """Collects the problems of one body. Every check returns the value when it is usable.

    Example::

        p = Problems()
        body = p.table(raw, "job")
        if body is not None:
            p.number(body, "timeout_s", "job", minimum=0, required=False)
            p.only(body, {"command", "env", "cwd", "timeout_s"}, "job")
        p.items  # [Problem("job.timeout_s", "-1 is below the minimum 0")]
    """

    __slots__ = ("_depends", "items")

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self._depends: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, field: str, message: str, *, key: bool = False) -> None:
        """Record one problem (``key``: it is about the key ``field`` names, not its value)."""
        self.items.append(Problem(field, message, key, self._depends))

    @contextlib.contextmanager
    def depending_on(self, *fields: str) -> Iterator[None]:
        """Problems found inside depend on ``fields`` too (a check that compares fields).

        Example::

            with problems.depending_on("job.sub_type"):
                if body.get("sub_type") == "Spot":
                    problems.number(support, "estimated_exec_sec", "job.job_support")
        """
        before = self._depends
        self._depends = (*before, *fields)
        try:
            yield
        finally:
            self._depends = before

    def table(self, value: Any, field: str) -> dict[str, Any] | None:
        """``value`` must be an object."""
        if isinstance(value, dict):
            return value
        self.add(field, f"expected an object, got {_describe(value)}")
        return None

    def get(
        self, obj: dict[str, Any], key: str, parent: str, *, required: bool = True
    ) -> tuple[Any, str] | None:
        """The value at ``key`` and its field path, or None (a problem if it was required)."""
        value = obj.get(key)
        if value is None:
            if required:
                self.add(f"{parent}.{key}", "is required")
            return None
        return value, f"{parent}.{key}"

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        parent: str,
        *,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
        allowed: str = "",
        max_len: int | None = None,
    ) -> str | None:
        """A non-empty string, optionally matching ``pattern`` (``allowed`` explains it)."""
        got = self.get(obj, key, parent, required=required)
        if got is None:
            return None
        value, field = got
        if not isinstance(value, str) or not value:
            self.add(field, f"expected a non-empty string, got {_describe(value)}")
            return None
        if max_len is not None and len(value) > max_len:
            self.add(field, f"is {len(value)} characters long; at most {max_len} are allowed")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.add(field, f"{short_repr(value)} is not allowed; {allowed or pattern.pattern}")
            return None
        return value

    def number(
        self,
        obj: dict[str, Any],
        key: str,
        parent: str,
        *,
        required: bool = True,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float | None:
        """A number (an integer if asked) within ``[minimum, maximum]``."""
        got = self.get(obj, key, parent, required=required)
        if got is None:
            return None
        raw, field = got
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or (integer and not isinstance(raw, int))
        ):
            want = "an integer" if integer else "a number"
            self.add(field, f"expected {want}, got {_describe(raw)}")
            return None
        value: float = raw
        if minimum is not None:
            if exclusive_minimum and value <= minimum:
                self.add(field, f"{short_repr(value)} must be greater than {minimum:g}")
                return None
            if value < minimum:
                self.add(field, f"{short_repr(value)} is below the minimum {minimum:g}")
                return None
        if maximum is not None and value > maximum:
            self.add(field, f"{short_repr(value)} is above the maximum {maximum:g}")
            return None
        return float(value)

    def kind(
        self,
        obj: dict[str, Any],
        key: str,
        parent: str,
        kinds: tuple[type, ...],
        *,
        required: bool = True,
    ) -> Any:
        """A value of one of ``kinds`` (booleans never count as numbers)."""
        got = self.get(obj, key, parent, required=required)
        if got is None:
            return None
        value, field = got
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return value
        want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        self.add(field, f"expected {want}, got {_describe(value)}")
        return None

    def only(self, obj: dict[str, Any], allowed: Iterable[str], parent: str) -> None:
        """Every key of ``obj`` must be one of ``allowed``."""
        allowed = sorted(allowed)
        for key in obj:
            if key not in allowed:
                self.add(f"{parent}.{key}", f"unknown key; allowed: {', '.join(allowed)}", key=True)
