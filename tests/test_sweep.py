"""Sweep reading and expansion: typing, origins, streaming, counts, determinism, keys."""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk.config import Distribution, SweepConfig
from bulk.errors import ConfigError
from bulk.sweep import count_points, point_key, points, read_rows


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
