"""The benchmark harness: ``python -m benchmarks --quick`` for one small benchmark writes
its tables to JSON, and ``benchmarks.readme`` puts them between the README's markers.
(Correctness of the harness only: no speed is asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.readme import render

ROOT = Path(__file__).parent.parent


def python_m(module: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in the project's folder, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quick_run_writes_every_table_with_min_median_max(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = python_m(
        "benchmarks", "--quick", "--only", "plan", "--rounds", "2", "--out", str(out), timeout=120
    )
    assert 0 == done.returncode, done.stderr
    assert "[plan.csv]" in done.stdout
    results = json.loads(out.read_text())
    plan = results["benchmarks"]["plan"]
    assert {"date", "git_rev", "machine", "seconds", "tables"} <= plan.keys()
    (table,) = plan["tables"]
    assert "plan.csv" == table["key"]
    assert 2 == table["rounds"]
    assert ["100 × 3", "300 × 3"] == [row[0] for row in table["rows"]]
    rate = table["rows"][0][2]  # bulk points/s, measured in each round
    assert 2 == len(rate["runs"])
    assert rate["min"] <= rate["median"] <= rate["max"]

    readme = "intro\n<!-- bench:plan.csv -->\nstale\n<!-- /bench:plan.csv -->\nafter\n"
    new, missing = render(readme, results)
    assert [] == missing
    assert new.startswith("intro\n<!-- bench:plan.csv -->\n| rows × grid |")
    assert "stale" not in new
    assert new.endswith("<!-- /bench:plan.csv -->\nafter\n")
    assert (new, []) == render(new, results)  # regenerating is stable


def test_a_marker_without_results_is_left_and_named() -> None:
    readme = "<!-- bench:nowhere.x -->\nkept\n<!-- /bench:nowhere.x -->\n"
    assert (readme, ["nowhere.x"]) == render(readme, {"benchmarks": {}})


def test_unknown_benchmark_is_refused() -> None:
    done = python_m("benchmarks", "--only", "nosuch")
    assert 2 == done.returncode
    assert "--only: no benchmark nosuch" in done.stderr


def test_unknown_section_is_refused() -> None:
    done = python_m("benchmarks", "--only", "engine.nosuch")
    assert 2 == done.returncode
    assert "--only: engine has no section nosuch; its sections: overhead" in done.stderr


def test_one_section_replaces_its_table_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    earlier = {"key": "engine.local", "title": "t", "headers": ["what"], "rows": [], "rounds": 1}
    stale = {**earlier, "key": "engine.journal"}
    out.write_text(json.dumps({"benchmarks": {"engine": {"tables": [earlier, stale]}}}))
    done = python_m(
        "benchmarks",
        "--quick",
        "--only",
        "engine.journal",
        "--rounds",
        "1",
        "--out",
        str(out),
        timeout=120,
    )
    assert 0 == done.returncode, done.stderr
    tables = json.loads(out.read_text())["benchmarks"]["engine"]["tables"]
    assert ["engine.local", "engine.journal"] == [t["key"] for t in tables]
    assert earlier == tables[0]
    assert 2 == len(tables[1]["rows"])  # measured now: bulk's writer and the raw peer


def test_a_childs_peak_rss_is_its_own_not_its_parents() -> None:
    """A child of a big harness is measured by its own high-water mark: Linux starts a
    child's ``ru_maxrss`` at its parent's, which made every child of a 200 MB harness
    report at least 200 MB."""
    from benchmarks._util import run_child

    ballast = bytearray(150 * 2**20)  # this process: 150 MiB more, touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = run_child([sys.executable, "-c", "import time; time.sleep(0.3)"])
    big = run_child(
        [sys.executable, "-c", "import time; b = bytearray(80 * 2**20); time.sleep(0.3)"]
    )
    del ballast

    assert small.max_rss_mb < 60, small
    assert 80 < big.max_rss_mb < 150, big


def test_a_section_run_keeps_the_other_tables_dated_as_they_were_measured() -> None:
    """``--only engine.lost`` replaces one table of a benchmark: the others keep saying when
    and on which commit they ran (they used to take the new run's date and commit)."""
    from benchmarks.__main__ import merged
    from benchmarks.readme import tables

    machine = {"cpus": 2, "cpu": "X", "python": "3.11", "load_average_before": [0.5]}

    def run(date: str, rev: str, *keys: str) -> dict[str, object]:
        table = {"title": "t", "headers": ["a"], "rows": [[1]], "rounds": 1}
        return {
            "date": date,
            "git_rev": rev,
            "machine": machine,
            "options": {},
            "seconds": 1.0,
            "tables": [{**table, "key": k} for k in keys],
        }

    first = run("2026-01-01T00:00:00", "aaaaaaa", "engine.local", "engine.lost")
    again = merged(first, run("2026-02-02T00:00:00", "bbbbbbb", "engine.lost"))
    later = merged(again, run("2026-03-03T00:00:00", "ccccccc", "engine.overhead"))
    where = {k: w for k, (_, w) in tables({"benchmarks": {"engine": later}}).items()}

    said = {k: (w.split("; ")[1][:10], w[-7:]) for k, w in where.items()}
    assert {
        "engine.local": ("2026-01-01", "aaaaaaa"),
        "engine.lost": ("2026-02-02", "bbbbbbb"),
        "engine.overhead": ("2026-03-03", "ccccccc"),
    } == said


def test_the_results_the_harness_writes_do_not_make_the_commit_dirty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run writes benchmarks/results.json into the clone it measures: the next benchmark
    of the same run must still name the clean commit; any other change makes it dirty."""
    import benchmarks.__main__ as harness

    def git(changed: str) -> Callable[..., str]:
        return lambda *args: "abc1234" if args[0] == "rev-parse" else changed

    monkeypatch.setattr(harness, "_git", git(" M benchmarks/results.json"))
    clean = harness.git_rev()
    monkeypatch.setattr(harness, "_git", git(" M benchmarks/results.json\n M bulk/_api.py"))

    assert ("abc1234", "abc1234-dirty") == (clean, harness.git_rev())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--only", ","], "names an empty benchmark or section"),
        (["--only", "engine."], "names an empty benchmark or section"),
        (["--quick", "--only", "plan", "--out", "/nonexistent/x.json"], "no such folder"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(args: list[str], says: str) -> None:
    """An empty --only item ran everything; an --out in no folder failed with a traceback
    after the whole run: both are one-line errors (exit 2) up front."""
    done = python_m("benchmarks", *args)
    assert (2, says) == (done.returncode, says if says in done.stderr else done.stderr)
    assert "Traceback" not in done.stderr


def test_readme_refuses_quick_results_and_missing_files(tmp_path: Path) -> None:
    """Quick figures (tiny sizes) never reach the README, and a missing file is a one-line
    error, not a traceback."""
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"benchmarks": {"plan": {"options": {"quick": True}}}}))
    outcomes = []
    for results in (quick, tmp_path / "missing.json"):
        done = python_m("benchmarks.readme", "--results", str(results), "--check")
        outcomes.append((done.returncode, "Traceback" in done.stderr))

    assert [(2, False), (2, False)] == outcomes
