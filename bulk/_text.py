"""Text cut to fit a message, a table cell or a journal row: one convention everywhere.

A cut keeps the start and ends in ``…`` (one character), and what :func:`cut` returns is at
most ``limit`` characters, the ``…`` included. Each variant makes its text the way its callers
need, then cuts it so; none costs more for a 50 MB value than for a short one:

- :func:`cut`: any text;
- :func:`short_repr`: a value as Python writes it (``'text'``, ``[1, 2]``), for a problem in
  the user's input (a string is cut before it is quoted, and the ``…`` follows the quote);
- :func:`preview`: a value as compact JSON, for ``bulk plan``'s rows and tables;
- :func:`excerpt`: one line of what a service sent, for an error message.

Containers inside a :func:`short_repr` are cut by :mod:`reprlib`, which writes ``...``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = [
    "ELLIPSIS",
    "EXCERPT_LIMIT",
    "PREVIEW_CHARS",
    "SHOWN_CHARS",
    "cut",
    "excerpt",
    "one_line",
    "preview",
    "short_repr",
]

ELLIPSIS = "…"
SHOWN_CHARS = 60  # characters of a value quoted in a message about the user's input
PREVIEW_CHARS = 120  # characters of a value shown in a human-readable line or table cell
EXCERPT_LIMIT = 300  # characters of a service's answer quoted in a message
# An integer wider than this (about SHOWN_CHARS decimal digits) is described by its size, not
# written out (writing a huge int costs quadratic time, and past 4,300 digits Python refuses).
_SHOWN_INT_BITS = 200
# The widest integer JSON readers (orjson among them) hold; a wider one is shown by its size.
_JSON_INT_BITS = 64


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and ``…``: at most ``limit`` in all."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def short_repr(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters.

    The cost does not grow with the value: a 50 MB string is cut before it is quoted.
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + ELLIPSIS
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value.bit_length() > _SHOWN_INT_BITS
    ):
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlong = 80


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """Compact JSON of ``value``, cut to ``limit`` characters.

    The cost depends on ``limit``, not on the value: only what is shown is serialised (a
    50 MB string costs the same as a short one).
    """
    parts: list[str] = []
    size = 0
    for token in _tokens(value, limit):
        parts.append(token)
        size += len(token)
        if size > limit:
            return cut("".join(parts), limit)
    return "".join(parts)


def _tokens(value: Any, limit: int) -> Iterator[str]:
    """``value`` as compact JSON, piece by piece; strings are cut past ``limit``."""
    if isinstance(value, str):
        yield orjson.dumps(value[: limit + 1]).decode()
    elif isinstance(value, Mapping):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield ("," if i else "") + orjson.dumps(str(k)[: limit + 1]).decode() + ":"
            yield from _tokens(v, limit)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, v in enumerate(value):
            if i:
                yield ","
            yield from _tokens(v, limit)
        yield "]"
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value.bit_length() > _JSON_INT_BITS
    ):
        yield f"<an integer of {value.bit_length()} bits>"
    else:
        try:
            yield orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            yield f"<{type(value).__name__}>"


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """A one-line quote of something a service sent, at most ``limit`` characters.

    ``value`` is bytes or text (or any value, shown as JSON) that already had its secrets
    taken out (every answer of :class:`bulk.backends._http.HttpClient` has).
    """
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: limit * 4]
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = repr(value)
    text = " ".join(text.split())
    return cut(text, limit) if text else "(empty)"


def one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line (a message's newlines would split a log line)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
