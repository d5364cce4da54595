"""Job templates: placeholders, typed substitution, escapes, nesting, and errors."""

from __future__ import annotations

import shlex
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk._template import compile_template
from bulk.errors import ConfigError

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


QUOTED = {"job.command": shlex.quote}


class TestQuotedFields:
    """Fields a backend quotes (the local shell command): values pasted in are escaped."""

    def test_values_are_quoted_in_the_quoted_field_only(self) -> None:
        """Inside `job.command` each value is escaped; other fields are left alone."""
        t = compile_template({"command": "echo {a} {n:03d}-{b}", "env": {"A": "{a} x"}}, QUOTED)
        row = {"a": "a; echo INJECTED", "n": 7, "b": "it's"}

        body = t.render(row)

        assert "echo 'a; echo INJECTED' 007-'it'\"'\"'s'" == body["command"]
        assert "a; echo INJECTED x" == body["env"]["A"]
        assert t._fast is not None
        assert t._render(row) == t._fast(row) == body

    def test_raw_opts_out_per_placeholder(self) -> None:
        """`{var!raw}` pastes the value as it is, with or without a format spec."""
        t = compile_template({"command": "run {flags!raw} {x!raw:.1f} {x}"}, QUOTED)
        row = {"flags": "--a 1 --b 'two words'", "x": 0.25}

        assert "run --a 1 --b 'two words' 0.2 0.25" == t.render(row)["command"]
        assert t._fast is not None
        assert t._render(row) == t._fast(row)

    def test_a_lone_placeholder_is_the_whole_value(self) -> None:
        """`command = "{cmd}"` takes the whole command line from the row, unquoted."""
        t = compile_template({"command": "{cmd}"}, QUOTED)

        assert {"command": "echo a | wc -c"} == t.render({"cmd": "echo a | wc -c"})

    def test_argv_items_are_not_quoted(self) -> None:
        """Only the string itself is quoted: argv list items never meet a shell."""
        t = compile_template({"command": ["echo", "{a} b"]}, QUOTED)

        assert {"command": ["echo", "it's b"]} == t.render({"a": "it's"})

    def test_raw_elsewhere_is_refused(self) -> None:
        """`!raw` where nothing is quoted would be a silent no-op: an error says so."""
        with pytest.raises(ConfigError, match=r"!raw only applies") as info:
            compile_template({"env": {"A": "x {a!raw}"}}, QUOTED)

        assert "job.env.A" == info.value.field

    @pytest.mark.parametrize(
        ("spec", "what"),
        [(">1001", "width 1001"), ("0>+,.1001f", "precision 1001"), (">" + "9" * 5000, "width 9")],
        ids=["width", "precision", "5000-digits"],
    )
    def test_a_huge_width_or_precision_is_refused(self, spec: str, what: str) -> None:
        """`{x:>999999999}` would build a gigabyte per row: refused above 1,000, at once."""
        with pytest.raises(ConfigError, match=f"{what}.* is too large; .* up to 1,000") as info:
            compile_template({"command": f"echo {{x:{spec}}}"}, QUOTED)

        assert "job.command" == info.value.field

    def test_a_width_of_1000_is_fine(self) -> None:
        """The cap itself is allowed, fill digits and all."""
        t = compile_template({"command": "echo {x:0>1000}"}, QUOTED)

        assert "echo " + "0" * 999 + "7" == t.render({"x": 7})["command"]

    @pytest.mark.parametrize(
        ("command", "where"),
        [
            pytest.param("printf '%s|' \"{v}\" > out", "is inside double quotes", id="double"),
            pytest.param("echo '{v}'", "is inside single quotes", id="single"),
            pytest.param("echo $'{v}'", r"is inside \$'...' quotes", id="ansi-c"),
            pytest.param("echo `cat {v}`", "is inside backticks", id="backticks"),
            pytest.param('echo "x `cat {v}`"', "is inside backticks", id="backticks-in-double"),
            pytest.param("echo x # {v}", "is inside a shell comment", id="comment"),
            pytest.param("echo \\{v}", "follows a backslash", id="backslash"),
            pytest.param("echo ${v}", r"follows a \$", id="dollar"),
            pytest.param('echo "a\\"{v}"', "is inside double quotes", id="escaped-quote"),
            pytest.param("echo '\\' \"{v:>3}\"", "is inside double quotes", id="spec"),
        ],
    )
    def test_a_placeholder_its_quoting_cannot_protect_is_refused(
        self, command: str, where: str
    ) -> None:
        """Inside quotes, backticks or a comment, or after `\\` or `$`, a shell-quoted value
        is not one word (`$(...)` in "..." still expands; `'` ends '...'): refused."""
        with pytest.raises(ConfigError, match=where) as info:
            compile_template({"command": command}, QUOTED)

        assert "job.command" == info.value.field
        assert "bulk's quoting cannot protect it" in str(info.value)
        assert "!raw" in str(info.value)

    @pytest.mark.parametrize(
        "command",
        [
            pytest.param("echo \"a b\" {v} 'c d' `date` {v}", id="after-closed-quotes"),
            pytest.param('echo "\\"" {v}', id="escaped-quote-in-double"),
            pytest.param("echo 'a\\' {v}", id="backslash-in-single"),
            pytest.param('echo "$(cat {v})"', id="substitution-in-double"),
            pytest.param('echo "$(echo ")" (x))" {v}', id="nested-substitution"),
            pytest.param("echo a#b {v}", id="hash-in-word"),
            pytest.param("true # it's\necho {v}", id="after-a-comment"),
            pytest.param("echo \"{v!raw}\" '{v!raw}'", id="raw"),
        ],
    )
    def test_placeholders_at_the_top_level_are_accepted(self, command: str) -> None:
        """Quotes that closed before the placeholder, and `$(...)` in "...", are fine."""
        t = compile_template({"command": command}, QUOTED)

        assert "v" in t.variables

    def test_an_unknown_conversion_is_refused(self) -> None:
        """`{a!r}` is not Python's repr here: the only conversion is named."""
        with pytest.raises(ConfigError, match=r"unknown conversion !r .* the only one is !raw"):
            compile_template({"command": "echo {a!r}"}, QUOTED)


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"x": float("nan")}, "job.x: nan is not a finite number", id="nan"),
        pytest.param({"x": [1, float("-inf")]}, "job.x[1]: -inf is not a finite number", id="inf"),
        pytest.param({"x": 2**64}, "job.x: 18446744073709551616 does not fit in 64 bits", id="int"),
        pytest.param(
            {"x": -(2**63) - 1}, "job.x: -9223372036854775809 does not fit in 64 bits", id="neg-int"
        ),
        pytest.param({"x": nested(64)}, "job.x: nested more than 64 levels deep", id="deep"),
        pytest.param({"x": nested(100_000)}, "job.x: nested more than 64", id="past-recursion"),
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
