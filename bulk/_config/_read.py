"""Exact readers of a config's files: TOML and JSON that come out as they went in.

``open_regular`` refuses anything but a regular file before a byte is read; the TOML and
JSON readers refuse NaN, infinity, numbers a 64-bit float or integer cannot hold, repeated
keys and nesting past the limit, each as a one-line :class:`~bulk.errors.ConfigError`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import IO, Any

import bulk._template as spec
from bulk._text import cut
from bulk.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "JSONValueError",
    "json_nesting_column",
    "loads_exact_json",
    "number_problem",
    "open_regular",
    "parse_json",
    "parse_toml",
    "read_text",
]

# A config or template file larger than this is not one (bulk plan /dev/zero once grew without
# end); long lists of values belong in a sweep file, which is streamed.
MAX_CONFIG_BYTES = 4 << 20


class JSONValueError(ValueError):
    """JSON that parses but would not come out as it went in: NaN, a number beyond 64 bits
    (integer) or a 64-bit float, a key repeated in one object, nesting past the limit.

    Attributes:
        problem: what is wrong and what is allowed, for a one-line message.
    """

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


def number_problem(text: str) -> str | None:
    """What is wrong with a number written as ``text`` (TOML or JSON float syntax), if bulk
    could not send it as JSON exactly: NaN or infinity, or a value a 64-bit float turns into
    infinity (``1e400``) or zero (``1e-400``).
    """
    value = float(text)
    shown = cut(text, 32)
    if not math.isfinite(value):
        if any(c.isdigit() for c in text):
            return f"{shown} is too large for a 64-bit float (it would be infinity)"
        return f"{shown} is not a finite number; JSON has no NaN or infinity"
    if value == 0.0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        return (
            f"{shown} is too small for a 64-bit float (it would be 0.0); "
            "the smallest is about 5e-324"
        )
    return None


# 2**64 has 20 digits: a longer integer is past it whatever its digits are.
_MAX_INT_DIGITS = 20


def _int_problem(text: str) -> str | None:
    # Checked before int(), so that a huge text is never converted.
    if len(text.lstrip("+-")) <= _MAX_INT_DIGITS and -(2**63) <= int(text) < 2**64:
        return None
    return spec.int_too_big(cut(text, 32))


class _NumberError(Exception):
    def __init__(self, text: str, problem: str):
        self.text = text
        self.problem = problem


def _exact_float(text: str) -> float:
    problem = number_problem(text)
    if problem is not None:
        raise _NumberError(text, problem)
    return float(text)


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """TOML, with every float exact and finite (TOML itself allows nan, inf and 1e400)."""
    try:
        return tomllib.loads(text, parse_float=_exact_float)
    except tomllib.TOMLDecodeError as exc:
        msg = f"invalid TOML: {exc}"
    except _NumberError as exc:
        raise ConfigError(exc.problem, where=_line_of(text, exc.text, where)) from None
    except RecursionError:
        msg = f"invalid TOML: nested too deeply (the limit is {spec.MAX_NESTING} levels)"
    except ValueError:  # tomllib's int() of an integer past Python's 4,300-digit limit
        msg = "invalid TOML: an integer too long to read; JSON integers are 64-bit"
    raise ConfigError(msg, where=where) from None


def _line_of(text: str, token: str, where: str) -> str:
    """``where:line`` of the first place ``token`` stands alone in ``text`` (``where`` if none)."""
    found = re.search(rf"(?<![\w.+-]){re.escape(token)}(?![\w.])", text)
    return f"{where}:{text.count(chr(10), 0, found.start()) + 1}" if found else where


_JSON_SIGNIFICANT = re.compile(r'["\[\]{}]')
_JSON_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*+"')


def json_nesting_column(text: str) -> int | None:
    """The column where JSON ``text`` nests past :data:`spec.MAX_NESTING`, or None.

    Read from the text, strings skipped, in one pass (linear even on malformed input), so it
    is safe on input too deep to parse.
    """
    depth = 0
    pos = 0
    while (m := _JSON_SIGNIFICANT.search(text, pos)) is not None:
        char = m.group()
        pos = m.end()
        if char == '"':
            rest = _JSON_STRING_REST.match(text, pos)
            if rest is None:
                return None  # an unterminated string: the rest of the text is inside it
            pos = rest.end()
        elif char in "[{":
            depth += 1
            if depth > spec.MAX_NESTING:
                return m.start() + 1
        else:
            depth -= 1
    return None


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                problem = f"key {key!r} appears twice in one object; each key appears once"
                raise JSONValueError(problem)
            seen.add(key)
    return out


def _json_constant(text: str) -> float:
    problem = f"{text} is not a finite number; JSON has no NaN or infinity"
    raise JSONValueError(problem)


def _json_float(text: str) -> float:
    problem = number_problem(text)
    if problem is not None:
        raise JSONValueError(problem)
    return float(text)


def _json_int(text: str) -> int:
    problem = _int_problem(text)
    if problem is not None:
        raise JSONValueError(problem)
    return int(text)


def loads_exact_json(text: str) -> Any:
    """Parse JSON, refusing what would not come out as it went in.

    Slower than orjson (it is Python's ``json`` with hooks): for input that must be exact
    and is small or rare, such as a template file or a suspect sweep line.

    Raises:
        JSONValueError: NaN or Infinity, a number beyond 64 bits, a repeated key, or nesting
            past :data:`spec.MAX_NESTING`.
        ValueError: the text is not JSON.
    """
    column = json_nesting_column(text)
    if column is not None:
        problem = (
            f"nested more than {spec.MAX_NESTING} levels deep at column {column}; "
            f"the limit is {spec.MAX_NESTING}"
        )
        raise JSONValueError(problem)
    return json.loads(
        text,
        object_pairs_hook=_json_pairs,
        parse_constant=_json_constant,
        parse_float=_json_float,
        parse_int=_json_int,
    )


def parse_json(text: str, where: str) -> Any:
    try:
        return loads_exact_json(text)
    except JSONValueError as exc:
        raise ConfigError(exc.problem, where=where) from None
    except ValueError as exc:
        msg = f"cannot read template: {exc}"
        raise ConfigError(msg, where=where) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened to read its bytes, if it is a regular file.

    Anything else is refused before a byte is read: a device such as ``/dev/zero`` never
    ends, a FIFO or a terminal may never answer (the open itself does not wait: it is
    non-blocking), and a resumed run must read the same bytes again.

    Raises:
        ConfigError: the path is not a regular file.
        OSError: it cannot be opened (``FileNotFoundError`` when it does not exist).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
            msg = f"not a regular file ({kind}); bulk reads regular files only"
            raise ConfigError(msg, where=str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: Path) -> str:
    """A config or template file's text: a regular file of at most ``MAX_CONFIG_BYTES``.

    Raises:
        ConfigError: not a regular file, too large, or not UTF-8.
        OSError: it cannot be read.
    """
    with open_regular(path) as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        msg = f"the file is too large; the limit is {MAX_CONFIG_BYTES:,} bytes"
        raise ConfigError(msg, where=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"cannot read: {exc}"
        raise ConfigError(msg, where=str(path)) from None
