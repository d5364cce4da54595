"""The bad-input corpus: each case under corpus/ exits 2 with its exact first error line.

Each folder holds ``config.toml``, its inputs, and ``expected.txt`` with the first line
``bulk plan`` must print on stderr. Nothing is sent in any of them (plan sends nothing, and
run refuses before the first request: see test_cli.py). A case about the command line holds
``args.txt`` too: the arguments to run instead of ``plan config.toml``, one per line; such a
case must not create the run's folder either (and needs no config.toml when it names none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk._cli import main

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_expected_line(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every corpus case is refused with exit 2 and its one expected first line."""
    folder = CORPUS / case
    monkeypatch.chdir(folder)
    expected = (folder / "expected.txt").read_text(encoding="utf-8").rstrip("\n")
    args_file = folder / "args.txt"
    args = (
        args_file.read_text(encoding="utf-8").splitlines()
        if args_file.exists()
        else ["plan", "config.toml"]
    )

    code = main(args)
    err = capsys.readouterr().err

    assert 2 == code
    assert expected == err.splitlines()[0]
    assert "Traceback" not in err
    assert not (folder / ".bulk").exists()


def test_corpus_covers_the_required_cases() -> None:
    """The corpus holds at least the cases the foundation issue and issue 7 name."""
    required = {
        "ragged_csv",
        "invalid_utf8",
        "bom",
        "duplicate_header",
        "invalid_jsonl",
        "jsonl_not_object",
        "empty_sweep",
        "unknown_key",
        "wrong_type",
        "missing_variable",
        "bad_escape",
        "zip_unequal",
        "guard_exceeded",
        "inline_secret",
        # issue 7: bounded, well-formed sweep input (a FIFO cannot be committed: it is
        # tested in test_sweep.py::TestBoundedInput)
        "run_name_newline",
        "range_past_guard",
        "linspace_past_guard",
        "two_axes_past_guard",
        "dev_zero",
        "gzip_bomb",
        "blank_line_bomb",
        "long_jsonl_value",
        "long_csv_value",
        "deep_jsonl",
        "csv_column_name",
        "jsonl_key_name",
        "jsonl_nan",
        "toml_nan",
        "jsonl_float_underflow",
        "toml_float_underflow",
        "jsonl_duplicate_key",
        "jsonl_integer_past_64_bits",
        "format_width_huge",
    }

    assert required <= set(CASES)
