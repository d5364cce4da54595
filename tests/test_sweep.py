"""Sweep reading and expansion: typing, origins, streaming, counts, determinism, keys, and
the bounds on what a sweep file may hold."""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bulk._plan._sources as sweep
from bulk._config import Distribution, SweepConfig
from bulk._naming import point_key
from bulk._plan._sources import (
    COUNT_FACTOR,
    MAX_LINE_BYTES,
    MAX_VALUE_CHARS,
    count_points,
    guard_error,
    points,
    read_rows,
)
from bulk.errors import ConfigError


class TestReadCsv:
    def test_cells_are_typed(self, tmp_path: Path) -> None:
        """Ints, floats and bools are typed; ids with leading zeros and blanks are kept."""
        f = tmp_path / "s.csv"
        f.write_text("i,f,b,s,z,e,u,h\n3,0.5,TRUE,abc,007,,1_000,123456789012345678901234\n")

        (row,) = read_rows(f)

        expected = {
            "i": 3,
            "f": 0.5,
            "b": True,
            "s": "abc",
            "z": "007",
            "u": "1_000",
            "h": "123456789012345678901234",
        }
        assert expected == row.variables
        assert f"{f}:2" == row.origin

    def test_strings_columns_stay_strings(self, tmp_path: Path) -> None:
        """Columns named in `strings` are not typed."""
        f = tmp_path / "s.csv"
        f.write_text("id,n\n42,42\n")

        (row,) = read_rows(f, strings=["id"])

        assert {"id": "42", "n": 42} == row.variables

    def test_quoted_newlines_keep_the_first_line_as_origin(self, tmp_path: Path) -> None:
        """A quoted cell spanning lines does not shift the origins after it."""
        f = tmp_path / "s.csv"
        f.write_text('a,b\n1,"x\ny"\n2,z\n')

        rows = list(read_rows(f))

        assert [f"{f}:2", f"{f}:4"] == [r.origin for r in rows]
        assert "x\ny" == rows[0].variables["b"]

    def test_bom_and_gzip(self, tmp_path: Path) -> None:
        """A UTF-8 BOM is dropped from the header; .gz files are read transparently."""
        f = tmp_path / "s.csv.gz"
        with gzip.open(f, "wb") as out:
            out.write("\ufeffname,n\nÅsa,1\n".encode())

        (row,) = read_rows(f)

        assert {"name": "Åsa", "n": 1} == row.variables

    def test_reading_is_lazy(self, tmp_path: Path) -> None:
        """Rows come one at a time: an error far down is not raised before it is reached."""
        f = tmp_path / "s.csv"
        f.write_text("a\n1\n2\n" + "x,y\n")

        rows = read_rows(f)

        assert 1 == next(rows).variables["a"]
        assert 2 == next(rows).variables["a"]
        with pytest.raises(ConfigError, match=r"s\.csv:4: expected 1 columns"):
            next(rows)


class TestReadJsonl:
    def test_objects_with_origins(self, tmp_path: Path) -> None:
        """Each JSONL object is a row; blank lines are skipped but still counted."""
        f = tmp_path / "s.jsonl"
        f.write_text('{"a": [1, 2]}\n\n{"a": null}\n')

        rows = list(read_rows(f))

        assert [{"a": [1, 2]}, {"a": None}] == [r.variables for r in rows]
        assert [f"{f}:1", f"{f}:3"] == [r.origin for r in rows]

    def test_reserved_names_are_refused(self, tmp_path: Path) -> None:
        """Variables may not start with '_' (bulk's own)."""
        f = tmp_path / "s.jsonl"
        f.write_text('{"_key": 1}\n')

        with pytest.raises(ConfigError, match="reserved"):
            list(read_rows(f))


class TestExactRows:
    """What a sweep file says is what the jobs get: anything JSON (or a 64-bit float) would
    change on the way is refused at its line, or, in a CSV, kept as the text it is."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            pytest.param(
                '{"a": 1, "a": 2}',
                "key 'a' appears twice in one object; each key appears once",
                id="repeated-key",
            ),
            pytest.param(
                '{"a": {"b": 1, "b": 2}}',
                "key 'b' appears twice in one object; each key appears once",
                id="repeated-nested-key",
            ),
            pytest.param(
                '{"a": "http://x", "a": "12:30"}',
                "key 'a' appears twice in one object; each key appears once",
                id="repeated-key-colons-in-strings",
            ),
            pytest.param(
                '{"a": NaN}', "NaN is not a finite number; JSON has no NaN or infinity", id="nan"
            ),
            pytest.param(
                '{"a": -Infinity}',
                "-Infinity is not a finite number; JSON has no NaN or infinity",
                id="infinity",
            ),
            pytest.param(
                '{"a": 1e400}',
                "1e400 is too large for a 64-bit float (it would be infinity)",
                id="1e400",
            ),
            pytest.param(
                '{"a": [1, 1e-400]}',
                "1e-400 is too small for a 64-bit float (it would be 0.0); the smallest is "
                "about 5e-324",
                id="1e-400",
            ),
            pytest.param(
                '{"a": 0.' + "0" * 330 + "1}",
                "0.00000000000000000000000000000… is too small for a 64-bit float",
                id="long-zeros",
            ),
            pytest.param(
                '{"a": 18446744073709551616}',
                "18446744073709551616 does not fit in 64 bits; JSON integers are 64-bit (quote "
                "it to keep it as text)",
                id="integer-past-64-bits",
            ),
            pytest.param(
                '{"a": -9223372036854775809}',
                "-9223372036854775809 does not fit in 64 bits",
                id="negative-integer-past-64-bits",
            ),
            pytest.param(
                '{"a": ' + "[" * 999 + "]" * 999 + "}",
                "nested more than 64 levels deep at column 70; the limit is 64",
                id="nested-1000-deep",
            ),
            pytest.param(
                '{"a": ' + "[" * 2000 + "]" * 2000 + "}",
                "nested more than 64 levels deep at column 70; the limit is 64",
                id="nested-past-orjson-limit",
            ),
            pytest.param(
                '{"learning rate": 1}',
                "'learning rate' is not a valid variable name; names are letters, digits and "
                "'_', starting with a letter (a template writes {name})",
                id="name-with-space",
            ),
            pytest.param('{"a.b": 1}', "'a.b' is not a valid variable name", id="dotted-name"),
            pytest.param('{"1a": 1}', "'1a' is not a valid variable name", id="leading-digit"),
            pytest.param('{"a\\n": 1}', "'a\\n' is not a valid variable name", id="newline"),
        ],
    )
    def test_jsonl_refusals(self, tmp_path: Path, line: str, expected: str) -> None:
        """Each is refused at its file:line with one line saying what and what is allowed."""
        f = tmp_path / "s.jsonl"
        f.write_text('{"a": 0}\n' + line + "\n")

        with pytest.raises(ConfigError) as info:
            list(read_rows(f))

        assert str(info.value).startswith(f"{f}:2: {expected}")
        assert "\n" not in str(info.value)

    def test_exact_jsonl_rows_are_read(self, tmp_path: Path) -> None:
        """What the exact reader would also accept passes: colons and brackets in strings,
        nested objects, zeros, 64-bit extremes, nesting up to the limit."""
        rows = [
            {"url": "http://x/{a}", "t": "12:30", "b": "[[{"},
            {"a": {"b": {"c": [1, 2, {"d": 0.0}]}}, "z": 0, "f": 0.0, "e": 1e-320},
            {"lo": -(2**63), "hi": 2**64 - 1, "big": 1.5e300},
            {"deep": nested(63)},
        ]
        f = tmp_path / "s.jsonl"
        f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))

        assert rows == [r.variables for r in read_rows(f)]

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            pytest.param("a,learning rate", "column 2: 'learning rate' is not a valid", id="space"),
            pytest.param("a.b,c", "column 1: 'a.b' is not a valid variable name", id="dot"),
            pytest.param("a, b", "column 2: ' b' is not a valid variable name", id="padded"),
            pytest.param(
                "a,_key", "column 2: '_key': names starting with '_' are reserved", id="_"
            ),
            pytest.param('a,"b\nc"', "column 2: 'b\\nc' is not a valid variable name", id="nl"),
        ],
    )
    def test_csv_header_names_must_be_variables(
        self, tmp_path: Path, header: str, expected: str
    ) -> None:
        """A column a template could not name is refused at the header, saying what is allowed."""
        f = tmp_path / "s.csv"
        f.write_text(header + "\n1,2\n")

        with pytest.raises(ConfigError) as info:
            list(read_rows(f))

        assert str(info.value).startswith(f"{f}:1: {expected}")
        assert "\n" not in str(info.value)

    def test_csv_numbers_a_float_cannot_hold_stay_text(self, tmp_path: Path) -> None:
        """nan, inf, 1e400 and 1e-400 are kept as written; 1e-320 (a subnormal) is a number."""
        f = tmp_path / "s.csv"
        f.write_text("a,b,c,d,e,f,g\nnan,-inf,1e400,1e-400,-0.0e-999,0e-400,1e-320\n")

        (row,) = read_rows(f)

        expected = {
            "a": "nan",
            "b": "-inf",
            "c": "1e400",
            "d": "1e-400",
            "e": -0.0,
            "f": 0.0,
            "g": 1e-320,
        }
        assert expected == row.variables


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class TestExpand:
    def test_file_rows_times_grid_times_zip_times_random(self, tmp_path: Path) -> None:
        """All four sources compose, file rows outermost."""
        f = tmp_path / "s.csv"
        f.write_text("r\n1\n2\n")
        cfg = SweepConfig(
            files=(f,),
            grid=(("g", (1, 2, 3)),),
            zip=(("a", (1, 2)), ("b", (3, 4))),
            random_samples=2,
            random_seed=7,
            random_params=(("c", Distribution("choice", ("x", "y"))),),
        )

        pts = list(points(cfg))

        assert 2 * 3 * 2 * 2 == len(pts) == count_points(cfg)
        assert list(range(len(pts))) == [p.index for p in pts]
        assert {"r", "g", "a", "b", "c"} == set(pts[0].variables)
        assert [(1, 3), (2, 4)] == sorted({(p.variables["a"], p.variables["b"]) for p in pts})

    def test_random_draws_are_seeded(self) -> None:
        """The same seed draws the same points; another seed draws others."""
        params = (
            ("lr", Distribution("loguniform", (1e-5, 1e-1))),
            ("n", Distribution("randint", (1, 8))),
            ("u", Distribution("uniform", (0, 1))),
        )
        cfg = SweepConfig(random_samples=20, random_seed=1, random_params=params)
        other = SweepConfig(random_samples=20, random_seed=2, random_params=params)

        first = [p.variables for p in points(cfg)]

        assert first == [p.variables for p in points(cfg)]
        assert first != [p.variables for p in points(other)]
        assert all(1e-5 <= v["lr"] <= 1e-1 and 1 <= v["n"] <= 8 for v in first)

    def test_file_variable_clashing_with_grid_is_refused(self, tmp_path: Path) -> None:
        """A variable from both a file and [sweep] is an error at its row."""
        f = tmp_path / "s.csv"
        f.write_text("g\n1\n")

        with pytest.raises(ConfigError, match=r"s\.csv:2: g: is defined both"):
            list(points(SweepConfig(files=(f,), grid=(("g", (1, 2)),))))


class TestCombinations:
    def test_generated_combinations_equal_shared_ones(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the sharing threshold, each row regenerates the same points, in order."""
        f = tmp_path / "s.csv"
        f.write_text("r\n1\n2\n")
        cfg = SweepConfig(
            files=(f,),
            grid=(("g", (1, 2, 3)), ("h", ("x", "y"))),
            zip=(("a", (1, 2)), ("b", (3, 4))),
            random_samples=3,
            random_seed=7,
            random_params=(("u", Distribution("uniform", (0, 1))),),
        )
        shared = list(points(cfg))

        monkeypatch.setattr(sweep, "_SHARED_COMBINATIONS", 0)
        generated = list(points(cfg))

        assert 2 * 6 * 2 * 3 == len(shared)
        assert shared == generated

    def test_a_large_grid_is_not_held_in_memory(self, tmp_path: Path, bounded_python: Any) -> None:
        """A grid of 1.5 million points streams in a process capped at 256 MB (the list of
        every combination it once built took more than that)."""
        code = (
            "import itertools\n"
            "from bulk._config import SweepConfig\n"
            "from bulk._plan._sources import points\n"
            "cfg = SweepConfig(grid=(('a', tuple(range(1_500_000))),), max_jobs=1_500_000)\n"
            "last = None\n"
            "for last in itertools.islice(points(cfg), 100_000, 100_003): pass\n"
            "print(last.index, last.variables)\n"
        )

        result = bounded_python(code, tmp_path)

        assert 0 == result.returncode, result.stderr[-2000:]
        assert "100002 {'a': 100002}" == result.stdout.strip()


axis_values = st.lists(st.integers(-5, 50), min_size=1, max_size=4, unique=True)


@settings(max_examples=50, deadline=None)
@given(st.lists(axis_values, min_size=1, max_size=4), st.integers(0, 3))
def test_count_is_the_product_of_the_axes(axes: list[list[int]], samples: int) -> None:
    """Grid × random expands to exactly the product of the axis sizes, with unique keys."""
    grid = tuple((f"v{i}", tuple(values)) for i, values in enumerate(axes))
    params = (("r", Distribution("uniform", (0, 1))),) if samples else ()
    cfg = SweepConfig(grid=grid, random_samples=samples, random_params=params)

    pts = list(points(cfg))

    assert math.prod(len(a) for a in axes) * (samples or 1) == len(pts)
    assert len(pts) == len({p.key for p in pts})
    assert [p.key for p in pts] == [p.key for p in points(cfg)]  # deterministic


variables = st.dictionaries(
    st.text(st.characters(categories=["L"]), min_size=1, max_size=6),
    st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.booleans()
    | st.floats(allow_nan=False),
    max_size=6,
)


@settings(deadline=None)  # a pure function: a deadline only measures the machine's load
@given(variables, st.randoms())
def test_key_is_independent_of_variable_order(vs: dict[str, Any], rnd: Any) -> None:
    """A point's key does not depend on the order of its variables (columns)."""
    items = list(vs.items())
    rnd.shuffle(items)

    assert point_key(vs) == point_key(dict(items))


def test_keys_are_unique_and_depend_on_values() -> None:
    """Distinct points get distinct keys, including int vs float and repeat occurrences."""
    vs = [{"a": a, "b": b} for a, b in itertools.product(range(30), ["x", "y", 1, 1.0])]
    keys = {point_key(v) for v in vs}

    assert len(vs) == len(keys)
    assert point_key({"a": 1}) != point_key({"a": 1}, occurrence=1)
    assert 16 == len(point_key({"a": 1}))


def gzip_bomb(path: Path, unit: bytes, megabytes: int, head: bytes = b"") -> Path:
    """A .gz of ``head`` then ``megabytes`` MB of ``unit`` repeated, built in a moment: one
    gzip member of 1 MB, concatenated (gzip readers read every member in turn)."""
    member = gzip.compress(unit * ((1 << 20) // len(unit)), compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(head))
        for _ in range(megabytes):
            f.write(member)
    return path


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "s.csv")  # no writer: opening it to read would wait forever
    return folder / "s.csv"


def jsonl_with_a_50_mb_value(folder: Path) -> Path:
    (folder / "s.jsonl").write_bytes(b'{"a": "' + b"x" * (50 << 20) + b'"}\n')
    return folder / "s.jsonl"


CONFIG = """
[run]
name = "bounded"

[sweep]
files = "{file}"
max_jobs = {max_jobs}

[job]
command = "echo {{a}}"
"""


class TestBoundedInput:
    """Hostile sweep files end in a clear error, in bounded memory and time: each once
    grew to gigabytes, hung, or took minutes. Run in a subprocess capped at 256 MB."""

    @pytest.mark.parametrize(
        ("make", "max_jobs", "expected"),
        [
            pytest.param(
                lambda d: Path("/dev/zero"),
                100_000,
                "/dev/zero: not a regular file (a character device); bulk reads regular files only",
                id="dev-zero",
            ),
            pytest.param(
                fifo,
                100_000,
                "s.csv: not a regular file (a FIFO); bulk reads regular files only",
                id="fifo-without-writer",
            ),
            pytest.param(
                lambda d: gzip_bomb(d / "s.csv.gz", b"\0", 300),
                100_000,
                "s.csv.gz:1: the line is too long; the limit is 1,048,576 bytes",
                id="gzip-bomb-one-line",
            ),
            pytest.param(
                lambda d: gzip_bomb(d / "s.csv.gz", b"\n", 50, head=b"a\n"),
                100_000,
                "s.csv.gz:100002: more than 100,000 blank lines; the limit is the guard, "
                "max_jobs = 100000 (blank lines make no jobs)",
                id="gzip-bomb-blank-lines",
            ),
            pytest.param(
                lambda d: gzip_bomb(d / "s.csv.gz", b"1\n", 50, head=b"a\n"),
                1_000,
                "sweep.max_jobs: the sweep expands to more than 10,000 jobs (counting stopped "
                "there), above the guard of 1,000; if that is intended, raise max_jobs in [sweep]",
                id="gzip-bomb-rows",
            ),
            pytest.param(
                lambda d: gzip_bomb(d / "s.csv.gz", b"\n", 50, head=b'a\n"'),
                100_000,
                "s.csv.gz:2: a value is too long; the limit is 131,072 characters",
                id="gzip-bomb-open-quote",
            ),
            pytest.param(
                jsonl_with_a_50_mb_value,
                100_000,
                "s.jsonl:1: the line is too long; the limit is 1,048,576 bytes",
                id="jsonl-50-mb-value",
            ),
        ],
    )
    @pytest.mark.parametrize("command", ["plan", "run"])
    def test_refused_in_bounded_memory_and_time(
        self,
        tmp_path: Path,
        bounded_bulk: Any,
        make: Any,
        max_jobs: int,
        expected: str,
        command: str,
    ) -> None:
        """Exit 2, the one clear first line, and no run started."""
        file = make(tmp_path)
        text = CONFIG.format(file=file.name if file.parent == tmp_path else file, max_jobs=max_jobs)
        (tmp_path / "run.toml").write_text(text)

        result = bounded_bulk(command, "run.toml", cwd=tmp_path)

        assert 2 == result.returncode, result.stderr[-2000:]
        assert expected == result.stderr.splitlines()[0]
        assert not (tmp_path / ".bulk" / "bounded" / "journal.sqlite").exists()


class TestLimits:
    def test_directory_is_not_a_sweep_file(self, tmp_path: Path) -> None:
        """Only regular files are read."""
        with pytest.raises(ConfigError, match=r"not a regular file \(a directory\)"):
            list(read_rows(tmp_path))

    def test_line_limit(self, tmp_path: Path) -> None:
        """A line past MAX_LINE_BYTES is refused at its line, with the limit."""
        f = tmp_path / "s.jsonl"
        f.write_text('{"a": 1}\n{"a": "' + "x" * MAX_LINE_BYTES + '"}\n')

        with pytest.raises(ConfigError) as info:
            list(read_rows(f))

        assert f"{f}:2: the line is too long; the limit is 1,048,576 bytes" == str(info.value)

    @pytest.mark.parametrize(
        ("name", "text", "line"),
        [
            pytest.param(
                "s.jsonl", '{"a": "' + "x" * (MAX_VALUE_CHARS + 1) + '"}\n', 1, id="jsonl"
            ),
            pytest.param(
                "s.jsonl", '{"a": [{"b": "' + "x" * (MAX_VALUE_CHARS + 1) + '"}]}\n', 1, id="nested"
            ),
            pytest.param("s.csv", "a,b\n1,2\n3," + "x" * (MAX_VALUE_CHARS + 1) + "\n", 3, id="csv"),
        ],
    )
    def test_value_limit(self, tmp_path: Path, name: str, text: str, line: int) -> None:
        """A value past MAX_VALUE_CHARS is refused at its row, with the limit."""
        f = tmp_path / name
        f.write_text(text)

        with pytest.raises(ConfigError) as info:
            list(read_rows(f))

        assert f"{f}:{line}: a value is too long; the limit is 131,072 characters" == str(
            info.value
        )

    def test_values_at_the_limit_are_read(self, tmp_path: Path) -> None:
        """A value of exactly MAX_VALUE_CHARS is fine (the csv module's own limit agrees)."""
        f = tmp_path / "s.csv"
        f.write_text("a\n" + "x" * MAX_VALUE_CHARS + "\n")

        (row,) = read_rows(f)

        assert MAX_VALUE_CHARS == len(row.variables["a"]) == csv.field_size_limit()

    def test_csv_row_limit_counts_quoted_newlines(self, tmp_path: Path) -> None:
        """A CSV row spread over many lines is bounded as a whole, named by its first line."""
        cell = '"' + ("y" * 999 + "\n") * 120 + '"'  # 120,000 characters, under the value limit
        f = tmp_path / "s.csv"
        f.write_text("a,b,c,d,e,f,g,h,i\n" + ",".join([cell] * 9) + "\n")

        with pytest.raises(ConfigError) as info:
            list(read_rows(f))

        assert f"{f}:2: the row is too long; the limit is 1,048,576 characters" == str(info.value)

    @pytest.mark.parametrize("name", ["s.csv", "s.jsonl"])
    def test_blank_lines_are_bounded(self, tmp_path: Path, name: str) -> None:
        """Blank lines make no jobs, so they have a limit of their own (the guard)."""
        f = tmp_path / name
        row = "1\n" if name == "s.csv" else '{"a": 1}\n'
        f.write_text(("a\n" if name == "s.csv" else "") + row + "\n" * 3 + row + "\n" * 4)

        assert 2 == len(list(read_rows(f, max_blank_lines=7)))
        with pytest.raises(ConfigError, match="more than 6 blank lines; the limit is the guard"):
            list(read_rows(f, max_blank_lines=6))

    def test_counting_past_the_guard_stops(self, tmp_path: Path) -> None:
        """The guard's count reads at most COUNT_FACTOR × max_jobs points, then says so."""
        f = tmp_path / "s.csv"
        f.write_text("a\n" + "".join(f"{i}\n" for i in range(1000)))
        exact = SweepConfig(files=(f,), grid=(("g", (1, 2)),), max_jobs=1000)
        cut = SweepConfig(files=(f,), grid=(("g", (1, 2)),), max_jobs=10)

        assert 2000 == count_points(exact)
        assert 10 * COUNT_FACTOR < count_points(cut) <= 10 * COUNT_FACTOR + 2
        assert "expands to more than 100 jobs (counting stopped there)" in str(
            guard_error(count_points(cut), 10)
        )
