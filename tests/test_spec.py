"""Job templates: placeholders, typed substitution, escapes, nesting, and errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk.errors import ConfigError
from bulk.spec import compile_template

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


class TestRender:
    def test_exact_placeholder_keeps_type(self) -> None:
        """A string that is exactly "{var}" becomes the variable's own value."""
        t = compile_template({"n": "{n}", "flag": "{f}", "xs": "{xs}", "s": "{n}!"})

        assert {"n": 3, "flag": True, "xs": [1, 2], "s": "3!"} == t.render(
            {"n": 3, "f": True, "xs": [1, 2]}
        )

    def test_escapes_and_format_specs(self) -> None:
        """{{ and }} are literal braces; {x:.2f} formats."""
        t = compile_template("awk '{{print $1}}' {x:.2f} {{x}}")

        assert "awk '{print $1}' 0.50 {x}" == t.render({"x": 0.5})

    def test_nested_tables_and_arrays(self) -> None:
        """Templates are rendered recursively; keys stay literal."""
        t = compile_template({"a": [{"b": "{x}-{y}"}, "{x}"], "{k}": 1})

        assert {"a": [{"b": "1-z"}, 1], "{k}": 1} == t.render({"x": 1, "y": "z"})
        assert {"x", "y"} == t.variables

    def test_text_forms(self) -> None:
        """Inside a longer string, bools are lower-case and floats shortest."""
        t = compile_template("{b} {f} {n} {l}")

        assert "false 0.1 7 [1,2]" == t.render({"b": False, "f": 0.1, "n": 7, "l": [1, 2]})

    def test_missing_variable_lists_what_the_row_has(self) -> None:
        """A missing variable names the template field and the row's variables."""
        t = compile_template({"cmd": ["run", "{seed}"]})

        with pytest.raises(ConfigError) as info:
            t.render({"lr": 1, "batch": 2, "_key": "k"})

        assert "job.cmd[1]" == info.value.field
        assert "variable 'seed' is not defined; the row has: batch, lr" == info.value.problem

    @pytest.mark.parametrize("text", ["{", "}", "a {b", "a }b", "{1x}", "{x"])
    def test_bad_braces_are_refused_at_compile_time(self, text: str) -> None:
        """An unmatched brace is an error that says how to write a literal one."""
        with pytest.raises(ConfigError, match="unmatched"):
            compile_template({"c": text})


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, list):
        return [_escape(x) for x in value]
    if isinstance(value, dict):
        return {k: _escape(x) for k, x in value.items()}
    return value


@given(json_values)
def test_literal_templates_round_trip(value: Any) -> None:
    """A template of escaped literals renders back to the original value, types intact."""
    t = compile_template(_escape(value))

    assert value == orjson.loads(t.render_bytes({}))


@given(json_values)
def test_typed_placeholder_round_trips_any_value(value: Any) -> None:
    """ "{v}" substitutes any JSON value with its type intact."""
    t = compile_template({"v": "{v}", "in": ["{v}"]})

    assert {"v": value, "in": [value]} == orjson.loads(t.render_bytes({"v": value}))


def test_generated_renderer_agrees_with_the_reference() -> None:
    """The one-expression renderer is built, and renders what the closure tree renders."""
    t = compile_template(
        {
            "cmd": ["run", "{lr}", "--seed={seed:03d}", "{{x}} {b}", {"deep": "{xs}"}],
            "env": {"A": "{lr:.1e}", "B": "const"},
            "fixed": {"x": [1, 2, {"y": None}]},
            "n": 3,
        }
    )
    row = {"lr": 0.001, "seed": 7, "b": True, "xs": [1, "a"]}

    assert t._fast is not None
    assert t._render(row) == t._fast(row) == t.render(row)
    assert "--seed=007" == t.render(row)["cmd"][2]
    assert t.render(row)["fixed"] is t.render(row)["fixed"]  # constants are shared


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"x": float("nan")}, "job: nan is not a finite number", id="nan"),
        pytest.param({"x": [1, float("-inf")]}, "job: -inf is not a finite number", id="inf"),
        pytest.param({"x": 2**64}, "job: 18446744073709551616 does not fit in 64 bits", id="int"),
        pytest.param(
            {"x": -(2**63) - 1}, "job: -9223372036854775809 does not fit in 64 bits", id="neg-int"
        ),
        pytest.param({"x": nested(64)}, "job: nested more than 64 levels deep", id="deep"),
        pytest.param({"x": nested(100_000)}, "job: nested more than 64", id="past-recursion"),
    ],
)
def test_values_json_cannot_carry_are_refused(body: Any, expected: str) -> None:
    """NaN, infinity, integers past 64 bits and deep nesting are refused at compile time."""
    with pytest.raises(ConfigError) as info:
        compile_template(body)

    assert str(info.value).startswith(expected)


def test_values_at_the_limits_are_kept() -> None:
    """The 64-bit integer bounds and nesting up to the limit compile and render exactly."""
    body = {"lo": -(2**63), "hi": 2**64 - 1, "deep": nested(63), "s": "{s}"}

    rendered = compile_template(body).render_bytes({"s": "x"})

    assert {**body, "s": "x"} == orjson.loads(rendered)
