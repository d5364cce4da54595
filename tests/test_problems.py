"""Problems: the checks backends run on a rendered body, what they record and what they say."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from bulk._problems import SHOWN_CHARS, Problem, Problems, short_repr


def test_problems_count_in_order_and_are_falsy_when_none() -> None:
    p = Problems()
    assert not p

    p.add("job.a", "first")
    p.add("job.b", "second", key=True)

    assert p
    assert [Problem("job.a", "first"), Problem("job.b", "second", key=True)] == p.items


def test_each_check_returns_the_usable_value_and_records_nothing() -> None:
    p = Problems()
    body = {"name": "ok", "n": 3, "x": 1.5, "flag": True, "t": {"k": 1}}

    assert "ok" == p.string(body, "name", "job")
    assert 3.0 == p.number(body, "n", "job", integer=True, minimum=1, maximum=3)
    assert 1.5 == p.number(body, "x", "job", minimum=1.5)
    assert p.kind(body, "flag", "job", (bool,)) is True
    assert {"k": 1} == p.table(body["t"], "job.t")
    p.only(body, body.keys(), "job")

    assert [] == p.items


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda p, b: p.string(b, "missing", "job"), "job.missing: is required"),
        (lambda p, b: p.string(b, "n", "job"), "job.n: expected a non-empty string, got 3"),
        (lambda p, b: p.string(b, "empty", "job"), "job.empty: expected a non-empty string"),
        (
            lambda p, b: p.string(b, "name", "job", max_len=3),
            "job.name: is 5 characters long; at most 3 are allowed",
        ),
        (
            lambda p, b: p.string(b, "name", "job", pattern=re.compile("[0-9]+"), allowed="digits"),
            "job.name: 'hello' is not allowed; digits",
        ),
        (
            lambda p, b: p.number(b, "flag", "job"),
            "job.flag: expected a number, got true",
        ),
        (
            lambda p, b: p.number(b, "x", "job", integer=True),
            "job.x: expected an integer, got 1.5",
        ),
        (
            lambda p, b: p.number(b, "n", "job", minimum=5),
            "job.n: 3 is below the minimum 5",
        ),
        (
            lambda p, b: p.number(b, "n", "job", minimum=3, exclusive_minimum=True),
            "job.n: 3 must be greater than 3",
        ),
        (
            lambda p, b: p.number(b, "n", "job", maximum=2),
            "job.n: 3 is above the maximum 2",
        ),
        (
            lambda p, b: p.kind(b, "flag", "job", (int, float)),
            "job.flag: expected an integer or a number, got true",
        ),
        (
            lambda p, b: p.kind(b, "list", "job", (str, dict)),
            "job.list: expected a string or an object, got an array",
        ),
        (lambda p, b: p.table(b["list"], "job.list"), "job.list: expected an object, got an array"),
        (lambda p, b: p.table(None, "job.t"), "job.t: expected an object, got null"),
    ],
)
def test_each_check_says_what_is_wrong_and_what_is_allowed(
    check: Callable[[Problems, dict[str, Any]], object], message: str
) -> None:
    p = Problems()
    body = {"name": "hello", "n": 3, "x": 1.5, "flag": True, "empty": "", "list": [1]}

    assert check(p, body) is None
    (problem,) = p.items
    assert f"{problem.field}: {problem.message}".startswith(message)
    assert not problem.key


def test_optional_fields_may_be_missing() -> None:
    p = Problems()

    assert p.number({}, "n", "job", required=False) is None
    assert p.string({"s": None}, "s", "job", required=False) is None
    assert [] == p.items


def test_unknown_keys_are_problems_of_the_key() -> None:
    p = Problems()

    p.only({"command": [], "comand": [], "zz": 1}, {"command", "env"}, "job")

    assert [
        Problem("job.comand", "unknown key; allowed: command, env", key=True),
        Problem("job.zz", "unknown key; allowed: command, env", key=True),
    ] == p.items


def test_depending_on_groups_the_problems_found_inside_and_nests() -> None:
    p = Problems()

    p.add("job.a", "outside")
    with p.depending_on("job.kind"):
        p.add("job.b", "inside")
        with p.depending_on("job.size", "job.unit"):
            p.add("job.c", "deeper")
        p.add("job.d", "inside again")
    p.add("job.e", "outside again")

    assert [(i.field, i.depends) for i in p.items] == [
        ("job.a", ()),
        ("job.b", ("job.kind",)),
        ("job.c", ("job.kind", "job.size", "job.unit")),
        ("job.d", ("job.kind",)),
        ("job.e", ()),
    ]


def test_depending_on_is_undone_by_an_exception() -> None:
    p = Problems()

    with pytest.raises(ValueError, match="boom"), p.depending_on("job.kind"):
        raise ValueError("boom")
    p.add("job.a", "after")

    assert () == p.items[0].depends


def test_values_in_messages_are_cut_to_a_bounded_length() -> None:
    huge = "x" * 50_000_000
    p = Problems()

    p.string({"s": huge}, "s", "job", pattern=re.compile("[0-9]+"), allowed="digits")

    (problem,) = p.items
    assert len(problem.message) < SHOWN_CHARS + 40
    assert problem.message.startswith(repr("x" * SHOWN_CHARS) + "…")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("short", "'short'"),
        (True, "True"),
        (None, "None"),
        (2.5, "2.5"),
        (2**300, "an integer of 301 bits"),
        (-(2**300), "an integer of 301 bits"),
    ],
)
def test_short_repr(value: object, shown: str) -> None:
    assert shown == short_repr(value)


def test_short_repr_cuts_containers() -> None:
    shown = short_repr(list(range(10_000)))

    assert len(shown) < 2 * SHOWN_CHARS
    assert shown.startswith("[0, 1, 2")
    assert shown.endswith("...]")
