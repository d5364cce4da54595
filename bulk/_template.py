"""Render a sweep point's variables through the ``[job]`` template into a request body.

Template rules:

- any string may hold ``{var}`` or ``{var:format_spec}`` placeholders;
- a string that is exactly ``"{var}"`` takes the variable's own type (number, bool, list, ...);
- ``{{`` and ``}}`` are literal braces;
- tables and arrays are rendered recursively; keys are literal;
- in the fields a backend quotes (``quoted``: the local backend's string ``command``), each
  value substituted into a longer string is escaped (shell-quoted there); ``{var!raw}``
  substitutes it as it is.

The template is compiled once into a tree of small closures, so rendering a row does no parsing.
Pure and synchronous: no I/O, no awaiting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulk._text import cut, short_repr
from bulk.errors import ConfigError

__all__ = [
    "MAX_NESTING",
    "Template",
    "compile_template",
    "has_placeholder",
    "int_too_big",
    "to_json",
    "to_text",
    "value_problem",
]

# How deep tables and arrays may nest, in a template and in a sweep value alike. A value
# rendered into a template nests up to twice this deep, well inside orjson's limit of 254
# (past which it refuses to write the body, or the point's key), and inside Python's
# recursion limit for the code that walks a body.
MAX_NESTING = 64
_INT_MIN, _INT_END = -(2**63), 2**64  # JSON numbers orjson writes: 64-bit integers
# Integers of more bits than this are described, not printed: ``str()`` of a huge integer is
# slow, and refused past 4,300 digits.
_SHOWN_INT_BITS = 1000

_Render = Callable[[Mapping[str, Any]], Any]
_Escape = Callable[[str], str]
_PLACEHOLDER = re.compile(
    r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)(?:!([A-Za-z]*))?(?::([^{}]*))?\}|\{|\}"
)
_Part = str | tuple[str, str | None, bool]  # a literal, or (name, format spec, raw)


def value_problem(value: Any) -> str | None:
    """What makes ``value`` impossible to send as JSON exactly, or None when nothing does.

    JSON (as bulk writes it) has no NaN or infinity and no integers beyond 64 bits, and bulk
    caps nesting at :data:`MAX_NESTING`. The walk is iterative: a value nested deeper than
    Python's recursion limit is reported, not crashed on.
    """
    found = value_problem_at(value, "")
    return None if found is None else found[1]


def value_problem_at(value: Any, path: str) -> tuple[str, str] | None:
    """As :func:`value_problem`, with the key path (below ``path``) of the part at fault.

    Too deep a nesting is blamed on the outermost key below ``path`` (the full path would
    be as long as the nesting).
    """
    stack: list[tuple[Any, str, str, int]] = [(value, path, path, 0)]
    while stack:
        node, where, top, depth = stack.pop()
        if isinstance(node, Mapping | list | tuple):
            if depth >= MAX_NESTING:
                limit = MAX_NESTING
                return top, f"nested more than {limit} levels deep; the limit is {limit}"
            if isinstance(node, Mapping):
                keys = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
            else:
                keys = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
            stack.extend((v, key, key if depth == 0 else top, depth + 1) for key, v in keys)
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int) and not _INT_MIN <= node < _INT_END:
            shown = cut(str(node), 32) if node.bit_length() < _SHOWN_INT_BITS else "an integer"
            return where, int_too_big(shown)
        elif isinstance(node, float) and not math.isfinite(node):
            return where, f"{node} is not a finite number; JSON has no NaN or infinity"
    return None


def int_too_big(shown: str) -> str:
    """The problem with an integer (written ``shown``) beyond what JSON carries exactly."""
    return (
        f"{shown} does not fit in 64 bits; JSON integers are 64-bit (quote it to keep it as text)"
    )


class _MissingVariableError(Exception):
    """Internal: raised deep in a render, turned into a :class:`ConfigError` at the top."""

    def __init__(self, field: str, name: str):
        self.field = field
        self.name = name


class _FormatError(Exception):
    """Internal: a ``{var:spec}`` that does not fit the row's value."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled job template.

    Example::

        t = compile_template({"command": "python train.py --lr {lr}", "retries": "{n}"})
        t.render_bytes({"lr": 0.1, "n": 3})
        # b'{"command":"python train.py --lr 0.1","retries":3}'

    Attributes:
        source: the template as written (for fingerprints and display).
        variables: every variable name the template uses.
    """

    source: Any
    variables: frozenset[str]
    _render: _Render
    _fast: _Render | None = None

    def render(self, variables: Mapping[str, Any]) -> Any:
        """The rendered body as Python objects.

        Raises:
            ConfigError: a placeholder names a variable the row does not have (``field`` is
                the template key path; the message lists the variables the row has).
        """
        if self._fast is not None:
            try:
                return self._fast(variables)
            except (KeyError, ValueError, TypeError):
                pass  # the closure renderer below says exactly what and where
        try:
            return self._render(variables)
        except _MissingVariableError as exc:
            has = ", ".join(sorted(k for k in variables if not k.startswith("_"))) or "none"
            msg = f"variable {exc.name!r} is not defined; the row has: {has}"
            raise ConfigError(msg, field=exc.field) from None
        except _FormatError as exc:
            raise ConfigError(exc.problem, field=exc.field) from None

    def render_bytes(self, variables: Mapping[str, Any]) -> bytes:
        """The rendered body as compact JSON bytes (orjson).

        Raises:
            ConfigError: as :meth:`render`, or the body cannot be JSON (see :func:`to_json`).
        """
        return to_json(self.render(variables))

    def uses(self, name: str) -> bool:
        """Whether any string of the template contains ``{name}``."""
        return name in self.variables


def to_json(body: Any) -> bytes:
    """A rendered body as the compact JSON bytes that are sent.

    orjson escapes every string (quotes, newlines, NUL as ``\\u0000``), so no value can break
    the JSON; what it refuses is what JSON cannot hold (see :func:`value_problem`).

    Raises:
        ConfigError: the body cannot be written as JSON; ``field`` is the part at fault.
    """
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        field, msg = value_problem_at(body, "job") or ("job", f"cannot be written as JSON: {exc}")
        raise ConfigError(msg, field=field) from None


def compile_template(body: Any, quoted: Mapping[str, _Escape] | None = None) -> Template:
    """Compile a template once.

    Args:
        body: the template.
        quoted: field paths (``job.command``) whose substituted values are escaped with the
            given function, unless the placeholder says ``!raw``. A string that is one
            placeholder alone is the whole value, never escaped.

    Raises:
        ConfigError: a string has a bad placeholder or an unescaped brace, or a value cannot
            be JSON (a TOML date, NaN, an integer beyond 64 bits, nesting past
            :data:`MAX_NESTING`); ``field`` is the key path (``job.x.y``), or ``job``.
    """
    found = value_problem_at(body, "job")
    if found is not None:
        raise ConfigError(found[1], field=found[0])
    names: set[str] = set()
    quoted = quoted or {}
    render = _compile(body, "job", names, quoted)
    return Template(
        source=body,
        variables=frozenset(names),
        _render=render,
        _fast=_generate(body, render, quoted),
    )


def _generate(body: Any, render: _Render, quoted: Mapping[str, _Escape]) -> _Render | None:
    """The template as one generated Python expression: a row then costs one call.

    The closure tree (``render``) stays the reference: it is what reports a missing variable
    or a bad format with its field path, and the generated code only runs where it agrees
    (its constant subtrees are the very objects the closures render, shared the same way).
    Literals are never written into the source: they are bound by reference (``C[i]``).
    """
    code = _Codegen(quoted)
    try:
        source = f"def fast(v):\n    return {code.expr(body, 'job')}\n"
        namespace: dict[str, Any] = {"C": code.constants, "T": to_text, "F": format}
        exec(compile(source, "<bulk template>", "exec"), namespace)  # noqa: S102 - our own code
    except (RecursionError, SyntaxError, MemoryError):  # a pathological template: closures
        return None
    fast: _Render = namespace["fast"]
    return fast


class _Codegen:
    """Writes a template node as a Python expression of the row ``v``, for :func:`_generate`."""

    def __init__(self, quoted: Mapping[str, _Escape]):
        self.quoted = quoted
        self.constants: list[Any] = []  # what the expression's ``C[i]`` are

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"C[{len(self.constants) - 1}]"

    def expr(self, node: Any, path: str) -> str:
        if isinstance(node, str):
            return self.string(node, path)
        if isinstance(node, Mapping | list | tuple) and not has_placeholder(node):
            return self.const(_compile(node, "job", set(), {})({}))
        if isinstance(node, Mapping):
            items = (
                f"{self.const(str(k))}: {self.expr(v, f'{path}.{k}')}" for k, v in node.items()
            )
            return "{" + ", ".join(items) + "}"
        if isinstance(node, list | tuple):
            return "[" + ", ".join(self.expr(v, f"{path}[{i}]") for i, v in enumerate(node)) + "]"
        return self.const(node)

    def string(self, node: str, path: str) -> str:
        if "{" not in node and "}" not in node:
            return self.const(node)
        parts = _merge_literals(_split(node, path))  # already checked by _compile
        if len(parts) == 1 and isinstance(parts[0], tuple) and parts[0][1] is None:
            return f"v[{parts[0][0]!r}]"  # names are identifiers: their repr is safe
        escape = _escape_for(parts, self.quoted.get(path))
        pieces = []
        for part in parts:
            if isinstance(part, str):
                pieces.append(self.const(part))
                continue
            name, spec, raw = part
            text = f"T(v[{name!r}])" if spec is None else f"F(v[{name!r}], {self.const(spec)})"
            pieces.append(text if raw or escape is None else f"{self.const(escape)}({text})")
        return "(" + " + ".join(pieces) + ")"


def has_placeholder(node: Any) -> bool:
    """Whether a template node holds a placeholder (``{{``/``}}`` count too: the safe side)."""
    if isinstance(node, str):
        return "{" in node or "}" in node
    if isinstance(node, Mapping):
        return any(has_placeholder(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(has_placeholder(v) for v in node)
    return False


def _split(text: str, path: str) -> list[_Part]:
    """A string as literal parts and ``(name, spec, raw)`` placeholders.

    Raises:
        ConfigError: an unmatched brace, an unknown ``!conversion``, or a format spec no
            value could take.
    """
    parts: list[_Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal = text[pos : m.start()]
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(literal + token[0])
        elif m.group(1) is not None:
            parts.append(literal)
            conversion, spec = m.group(2), m.group(3)
            if conversion is not None and conversion != "raw":
                problem = (
                    f"unknown conversion !{conversion} in {token!r}; the only one is !raw "
                    "(substitute the value unquoted)"
                )
                raise ConfigError(problem, field=path)
            if spec is not None:
                _check_format_spec(spec, path)
            parts.append((m.group(1), spec, conversion is not None))
        else:
            col = m.start() + 1
            problem = (
                f"unmatched {token!r} at character {col} of {text!r}; "
                "placeholders are {name} or {name:format}, and {{ }} write literal braces"
            )
            raise ConfigError(problem, field=path)
    parts.append(text[pos:])
    return parts


def to_text(value: Any) -> str:
    """How a non-string value is written inside a longer string.

    Booleans are ``true``/``false`` (as in the CSV and TOML they came from), lists and tables
    compact JSON, floats their shortest round-trip form.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def _compile(node: Any, path: str, names: set[str], quoted: Mapping[str, _Escape]) -> _Render:
    render, _ = _compile_node(node, path, names, quoted)
    return render


def _compile_node(
    node: Any, path: str, names: set[str], quoted: Mapping[str, _Escape]
) -> tuple[_Render, bool]:
    """A renderer for ``node`` and whether its output is constant.

    Constant subtrees are rendered once and shared: a row's body then costs only its
    placeholders. (Rendered bodies are never mutated, so sharing is safe.)
    """
    if isinstance(node, str):
        render = _compile_string(node, path, names, quoted.get(path))
        return render, "{" not in node and "}" not in node
    if isinstance(node, Mapping):
        items = [(str(k), *_compile_node(v, f"{path}.{k}", names, quoted)) for k, v in node.items()]
        return _compile_map(items)
    if isinstance(node, list | tuple):
        parts = [_compile_node(v, f"{path}[{i}]", names, quoted) for i, v in enumerate(node)]
        return _compile_list(parts)
    if node is None or isinstance(node, bool | int | float):
        return lambda _vs: node, True
    msg = f"{type(node).__name__} values cannot be sent as JSON; write it as a string"
    raise ConfigError(msg, field=path)


def _compile_map(items: list[tuple[str, _Render, bool]]) -> tuple[_Render, bool]:
    """A table's renderer from its ``(key, renderer, constant)`` items, as :func:`_compile_node`."""
    if all(const for _, _, const in items):
        value = {k: f({}) for k, f, _ in items}
        return lambda _vs: value, True
    base = {k: f({}) if const else None for k, f, const in items}
    slots = [(k, f) for k, f, const in items if not const]

    def render_map(vs: Mapping[str, Any]) -> dict[str, Any]:
        out = base.copy()  # keeps the key order of the template
        for k, f in slots:
            out[k] = f(vs)
        return out

    return render_map, False


def _compile_list(parts: list[tuple[_Render, bool]]) -> tuple[_Render, bool]:
    """An array's renderer from its ``(renderer, constant)`` parts, as :func:`_compile_node`."""
    if all(const for _, const in parts):
        constant = [f({}) for f, _ in parts]
        return lambda _vs: constant, True
    template = [f({}) if const else None for f, const in parts]
    positions = [(i, f) for i, (f, const) in enumerate(parts) if not const]

    def render_list(vs: Mapping[str, Any]) -> list[Any]:
        out = template.copy()
        for i, f in positions:
            out[i] = f(vs)
        return out

    return render_list, False


def _compile_string(
    text: str, path: str, names: set[str], escape: _Escape | None = None
) -> _Render:
    if "{" not in text and "}" not in text:
        return lambda _vs: text
    parts = _split(text, path)
    names.update(part[0] for part in parts if isinstance(part, tuple))
    if escape is None:
        _refuse_raw(parts, path)
    merged = _merge_literals(parts)
    escape = _escape_for(merged, escape)
    if escape is not None:
        _check_shell_context(merged, path)
    if len(merged) == 1 and isinstance(merged[0], tuple) and merged[0][1] is None:
        return _typed_render(merged[0][0], path)
    return _format_render(merged, path, escape)


def _refuse_raw(parts: list[_Part], path: str) -> None:
    """Refuse ``{var!raw}`` in a field bulk does not quote (where it would mean nothing)."""
    for part in parts:
        if isinstance(part, tuple) and part[2]:
            problem = (
                f"{{{part[0]}!raw}}: !raw only applies where bulk quotes substituted "
                "values (a local job's string command)"
            )
            raise ConfigError(problem, field=path)


def _typed_render(name: str, path: str) -> _Render:
    """The renderer of a string that is one placeholder alone: the variable's own value."""

    def typed(vs: Mapping[str, Any]) -> Any:
        try:
            return vs[name]
        except KeyError:
            raise _MissingVariableError(path, name) from None

    return typed


def _format_render(merged: list[_Part], path: str, escape: _Escape | None) -> _Render:
    """The renderer of a string with placeholders in it: literals and escaped values."""

    def fmt(vs: Mapping[str, Any]) -> str:
        out = []
        for part in merged:
            if isinstance(part, str):
                out.append(part)
                continue
            name, spec, raw = part
            try:
                value = vs[name]
            except KeyError:
                raise _MissingVariableError(path, name) from None
            piece = to_text(value) if spec is None else _format_value(name, value, spec, path)
            out.append(piece if raw or escape is None else escape(piece))
        return "".join(out)

    return fmt


def _format_value(name: str, value: Any, spec: str, path: str) -> str:
    """``format(value, spec)``, or a :class:`_FormatError` saying which placeholder failed."""
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        shown = short_repr(value)
        problem = f"{name} = {shown} cannot be formatted with {{{name}:{spec}}}"
        raise _FormatError(path, problem) from None


def _escape_for(merged: list[_Part], escape: _Escape | None) -> _Escape | None:
    """The escape for a string's placeholders: none when the string is one placeholder alone
    (it is then the whole value, e.g. a whole shell command taken from the sweep)."""
    if len(merged) == 1 and isinstance(merged[0], tuple):
        return None
    return escape


# Shell quoting contexts the lexer of :func:`_check_shell_context` tracks.
_QUOTES_FIX = "remove the quotes (bulk quotes every value)"
_CONTEXTS = {  # context: (where a placeholder would be, how to get it out)
    "'": ("is inside single quotes", _QUOTES_FIX),
    "$'": ("is inside $'...' quotes", _QUOTES_FIX),
    '"': ("is inside double quotes", _QUOTES_FIX),
    "`": ("is inside backticks", "write $(...) instead of `...`"),
    "#": ("is inside a shell comment", "move it out of the comment"),
}
_WORD_BREAKS = frozenset(" \t\n;&|()<>")


def _check_shell_context(parts: list[_Part], path: str) -> None:
    """Refuse a quoted placeholder that its shell quoting cannot protect.

    A value is shell-quoted for the top level of a command line: ``'...'`` with every ``'``
    written ``'"'"'``. Inside double quotes those single quotes are literal and ``$(...)``
    still expands; inside single quotes the quote's own ``'`` ends them; inside backticks the
    first backtick of the value ends the substitution; in a comment a newline in the value
    ends the comment; after a backslash or a ``$`` the quote's first character is escaped or
    expanded. So the literal text is lexed (backslash escapes, ``'...'``, ``$'...'``,
    ``"..."`` with ``$(...)`` inside it, backticks, comments) and a placeholder in any of
    those places is refused. A ``$(...)`` inside double quotes starts afresh: a placeholder
    there is at the top level of its own command line and is protected. ``{var!raw}`` is
    never refused (its value is shell text: the lexer assumes it leaves the context as it was).

    Raises:
        ConfigError: naming the placeholder, where it sits, and the two ways out.
    """
    lexer = _ShellLexer(path)
    for part in parts:
        if isinstance(part, tuple):
            lexer.placeholder(part)
        else:
            lexer.feed(part)


_CLOSERS = {"'": "'", "$'": "'", "`": "`", "#": "\n"}  # contexts that end at one character


class _ShellLexer:
    """The state of :func:`_check_shell_context`'s lexer between a string's parts."""

    def __init__(self, path: str):
        self.path = path
        self.stack: list[str] = []  # open contexts, innermost last; "$(" is one in "..."
        self.escaped = False  # the previous character was an unescaped backslash
        self.prev = ""  # the previous character at the top level (for `#` and `$`)

    def placeholder(self, part: tuple[str, str | None, bool]) -> None:
        """Refuse the placeholder ``part`` where it sits (unless it is ``!raw``)."""
        name, spec, raw = part
        found = self._unsafe_context()
        if not raw and found is not None:
            shown = "{" + name + (f":{spec}" if spec is not None else "") + "}"
            raw_form = "{" + name + "!raw" + (f":{spec}" if spec is not None else "") + "}"
            problem = (
                f"{shown} {found[0]}, where bulk's quoting cannot protect it; {found[1]} "
                f"or write {raw_form} to paste it as shell text"
            )
            raise ConfigError(problem, field=self.path)
        self.escaped, self.prev = False, "x"

    def _unsafe_context(self) -> tuple[str, str] | None:
        """Where a placeholder here would be that quoting cannot protect, and the way out."""
        if self.escaped:
            return "follows a backslash", "remove the backslash"
        found = _CONTEXTS.get(self.stack[-1] if self.stack else "")
        if found is None and self.prev == "$":
            return "follows a $", "remove the $"
        return found

    def feed(self, text: str) -> None:
        """Lex a literal part of the string."""
        i = 0
        while i < len(text):
            i = self._step(text, i)

    def _step(self, text: str, i: int) -> int:
        """Lex the character at ``i``; the index of the next one to lex."""
        c = text[i]
        top = self.stack[-1] if self.stack else ""
        i += 1
        if self.escaped:
            self.escaped, self.prev = False, "x"
        elif c == "\\" and top not in ("'", "#"):  # no escapes in '...' or comments
            self.escaped = True
        elif top in _CLOSERS:
            if c == _CLOSERS[top]:
                self.stack.pop()
                if top == "#":
                    self.prev = c
        elif top == '"':
            i = self._in_double_quotes(c, text, i)
        else:  # the top level, or a $( ... ) inside double quotes
            i = self._at_top_level(c, top, text, i)
        return i

    def _in_double_quotes(self, c: str, text: str, i: int) -> int:
        if c == '"':
            self.stack.pop()
        elif c == "`":
            self.stack.append(c)
        elif c == "$" and text.startswith("(", i):
            self.stack.append("$(")
            i += 1
        return i

    def _at_top_level(self, c: str, top: str, text: str, i: int) -> int:
        if c == "$" and text.startswith("'", i):
            self.stack.append("$'")
            i += 1
        elif c in "'\"`":
            self.stack.append(c)
        elif c == "#" and (self.prev == "" or self.prev in _WORD_BREAKS):
            self.stack.append("#")
        elif top == "$(" and c == "(":
            self.stack.append("$(")
        elif top == "$(" and c == ")":
            self.stack.pop()
        self.prev = c
        return i


def _merge_literals(parts: list[_Part]) -> list[_Part]:
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += part
                continue
        merged.append(part)
    return merged


# The widest width or precision a format spec may ask for: `{x:>999999999}` would build a
# gigabyte per row (and the probe below the first of them).
_MAX_FORMAT_WIDTH = 1000
_MAX_WIDTH_DIGITS = 6  # more digits than this are too large, whatever they are
# Python's format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type].
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?[A-Za-z%]?", re.DOTALL)


def _check_format_spec(spec: str, path: str) -> None:
    m = _FORMAT_SPEC.fullmatch(spec)
    if m is not None:
        for what, digits in (("width", m.group(1)), ("precision", m.group(2))):
            # (compared as text first: int() refuses numbers of more than 4,300 digits)
            if digits and (len(digits) > _MAX_WIDTH_DIGITS or int(digits) > _MAX_FORMAT_WIDTH):
                msg = (
                    f"format spec {cut(spec, 32)!r}: {what} {cut(digits, 12)} is too large; "
                    f"widths and precisions go up to {_MAX_FORMAT_WIDTH:,}"
                )
                raise ConfigError(msg, field=path)
    # Try the spec on a float and an int: a spec neither accepts is a typo worth catching now.
    for probe in (1.5, 1, "s"):
        try:
            format(probe, spec)
            return
        except (ValueError, TypeError):
            continue
    msg = f"invalid format spec {spec!r}"
    raise ConfigError(msg, field=path)
