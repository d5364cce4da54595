"""Run every benchmark (or some), print their tables and write them to JSON.

    python -m benchmarks [--quick] [--scale] [--only NAME[.SECTION][,...]] [--rounds 3]
        [--out benchmarks/results.json]

``--only engine.local`` runs one section of a benchmark that has them (its ``SECTIONS``);
its tables replace those of the same key in the file, the others are kept.

A benchmark is a module ``benchmarks/bench_NAME.py`` with ``tables(opts) -> list[Table]``
(see ``benchmarks/_util.py``); a new one is found without being listed here. Each is run
in turn in this process (they start their own children: ``bulk`` and the peers); its
tables, the time it took and the machine's state go to the JSON, merged into the file's
earlier content so that ``--only`` refreshes some benchmarks and keeps the others (each
says when and on which commit it was measured). ``python -m benchmarks.readme`` then
rewrites the README's tables from the file.

The default run takes ~30 minutes on an idle 2-core machine (more with Ray installed: the
real-head section); ``--scale`` adds the 10⁶-job row of the scale table (~12 more);
``--quick`` runs tiny sizes in a few minutes, for checking the harness (its figures mean
nothing, and it writes to ``benchmarks/results-quick.json``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import time
from pathlib import Path

import benchmarks
from benchmarks._util import Options, Table, print_table

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
QUICK_RESULTS = HERE / "results-quick.json"


def names() -> list[str]:
    """Every benchmark's name (``bench_NAME.py``), in a fixed order."""
    modules = pkgutil.iter_modules(benchmarks.__path__)
    return sorted(m.name.removeprefix("bench_") for m in modules if m.name.startswith("bench_"))


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "system": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def git_rev() -> str:
    """The commit measured, ``-dirty`` if the code differs from it (the results files the
    harness itself writes do not count: every run after the first would say dirty)."""
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    own = {f"benchmarks/{p.name}" for p in (RESULTS, QUICK_RESULTS)}
    dirty = any(line[3:] not in own for line in changed)
    return f"{rev}-dirty" if dirty else rev


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run_one(name: str, opts: Options, sections: frozenset[str] = frozenset()) -> dict[str, object]:
    """One benchmark's tables (``sections``: some of its ``SECTIONS``, else all), printed as
    they come, with when and where it ran."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started = datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()
    wall = time.perf_counter()
    tables: list[Table] = module.tables(opts, sections) if sections else module.tables(opts)
    wall = time.perf_counter() - wall
    for table in tables:
        print_table(table)
    print(f"\n[{name}: {wall:.0f} s]", flush=True)
    return {
        "date": started.isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "machine": {**machine(), "load_average_before": load},
        "options": {"quick": opts.quick, "scale": opts.scale, "rounds": opts.rounds},
        "seconds": round(wall, 1),
        "tables": [t.to_json() for t in tables],
    }


# What says when and where a benchmark ran (each table keeps its own once tables of one
# benchmark come from different runs: see merged).
MEASURED = ("date", "git_rev", "machine", "options", "seconds")


def merged(old: dict[str, object] | None, new: dict[str, object]) -> dict[str, object]:
    """``new`` (some sections of a benchmark) with the tables of ``old`` it does not hold.

    A kept table carries its own ``measured`` (when, where, on which commit it ran), so that
    it is not said to come from the new run.
    """
    if not old:
        return new
    keys = {t["key"] for t in new["tables"]}  # type: ignore[attr-defined]
    own = {k: old[k] for k in MEASURED if k in old}
    kept = [
        t if "measured" in t or not own else {**t, "measured": own}
        for t in old["tables"]  # type: ignore[attr-defined]
        if t["key"] not in keys
    ]
    return {**new, "tables": kept + new["tables"]}  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    known = names()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the harness")
    parser.add_argument("--scale", action="store_true", help="add the 10⁶-job scale row")
    parser.add_argument(
        "--only",
        help=f"NAME or NAME.SECTION, comma-separated; names: {', '.join(known)} (default: all)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per measurement (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, help="the JSON file (merged into)")
    args = parser.parse_args(argv)
    chosen: dict[str, set[str]] = {}
    items = [] if args.only is None else [n.strip() for n in args.only.split(",")]
    for item in items:
        name, dot, section = item.partition(".")
        if not name or (dot and not section):
            parser.error(f"--only: {args.only!r} names an empty benchmark or section")
        if name not in known:
            parser.error(f"--only: no benchmark {name}; there are {', '.join(known)}")
        sections = getattr(importlib.import_module(f"benchmarks.bench_{name}"), "SECTIONS", ())
        if section and section not in sections:
            have = ", ".join(sections) or "none"
            parser.error(f"--only: {name} has no section {section}; its sections: {have}")
        chosen.setdefault(name, set()).update([section] if section else [])
    chosen = chosen or {n: set() for n in known}
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    opts = Options(quick=args.quick, scale=args.scale, rounds=args.rounds)
    out: Path = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if not out.parent.is_dir():  # found out now, not after the run has taken its minutes
        parser.error(f"--out: {out}: no such folder")
    try:
        results = json.loads(out.read_text())
    except (OSError, ValueError):
        results = {}
    results.setdefault("benchmarks", {})
    for name, sections in chosen.items():
        result = run_one(name, opts, frozenset(sections))
        if sections:
            result = merged(results["benchmarks"].get(name), result)
        results["benchmarks"][name] = result
        results["updated"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")  # after each
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
