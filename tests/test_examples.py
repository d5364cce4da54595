"""Every example config in configs/ loads and plans cleanly: a broken example is a failing test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bulk._cli import main

CONFIGS = Path(__file__).parent.parent / "configs"
EXAMPLES = sorted(CONFIGS.glob("*.toml"))


def test_there_are_examples() -> None:
    """At least a local sweep and a grid-by-file example ship."""
    names = {p.name for p in EXAMPLES}

    assert {"local-pi.toml", "local-grid-file.toml"} <= names


def test_readme_lists_every_example() -> None:
    """The README's list of examples names exactly the configs in configs/, each once."""
    readme = (CONFIGS.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("Examples, each loaded and planned by the test suite:")
    paragraph = readme[start : readme.index("\n\n", start)]

    listed = re.findall(r"`configs/([^`/]+\.toml)`", paragraph)

    assert sorted(p.name for p in EXAMPLES) == sorted(listed)


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_example_plans(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bulk plan` exits 0 on the example and prints its job count."""
    code = main(["plan", str(config)])
    out, err = capsys.readouterr()

    assert 0 == code, err
    assert " jobs in run " in out
