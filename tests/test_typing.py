"""The typed seams hold under mypy --strict: a snippet that misuses them is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
from pathlib import Path
from typing import Any, assert_type

from bulk._table import Table
from bulk.backends.base import BackendKind
from bulk.backends.local import KIND as LOCAL, LocalOptions

t = Table({}, "x.toml", "")
assert_type(t.get("a", str), str)
assert_type(t.get("a", str, None), str | None)
assert_type(t.get("a", int, 3), int)
assert_type(t.get("a", (str, list)), str | list[Any])
assert_type(t.positive("a", float, 1.0), float)

kind: BackendKind[LocalOptions] = LOCAL
assert_type(kind.parse_options(t, Path()), LocalOptions)
kind.create(3, run="r", run_dir=Path())  # E: another kind's
"""


def test_table_get_and_backend_kind_are_typed(tmp_path: Path) -> None:
    """``Table.get`` returns the asked type; ``BackendKind[O].create`` takes only an ``O``."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET.lstrip("\n"))

    out, err, _ = api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            # A cache of its own: a shared one answers for "snippet" from an earlier path.
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(snippet),
        ]
    )

    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not err
    # Exactly one error, on the marked line: every assert_type above held.
    lines = SNIPPET.lstrip("\n").splitlines()
    marked = next(n for n, line in enumerate(lines, 1) if line.endswith("# E: another kind's"))
    assert [f"{snippet}:{marked}"] == [e.split(": error:")[0] for e in errors], out


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
