"""Rewrite the README's benchmark tables from ``benchmarks/results.json``.

    python -m benchmarks.readme [--results benchmarks/results.json] [--readme README.md]
        [--check]

Each table sits between two markers naming its key (``Table.key``)::

    <!-- bench:submit.http -->
    ...generated: the table and a line saying when, where and on which commit...
    <!-- /bench:submit.http -->

Only what is between markers changes; the prose around them is written by hand. A marker
whose table is not in the JSON is an error (exit 1), as is, with ``--check``, a README that
is not what the JSON gives (for CI: the tables are never hand-edited).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks._util import Table, markdown

HERE = Path(__file__).parent
MARKER = re.compile(
    r"(<!-- bench:(?P<key>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=key) -->)", re.DOTALL
)


def tables(results: dict[str, object]) -> dict[str, tuple[Table, str]]:
    """Every table in ``results`` by key, with a line saying where it was measured."""
    out: dict[str, tuple[Table, str]] = {}
    benches = results.get("benchmarks", {})
    assert isinstance(benches, dict)
    for bench in benches.values():
        machine = bench["machine"]
        load = machine.get("load_average_before") or machine.get("load_average")
        where = (
            f"{bench['date'][:10]}, {machine['cpus']} × {machine['cpu']}, Python "
            f"{machine['python']}, load average {load[0]:.1f} at the start, commit "
            f"{bench['git_rev']}"
        )
        for t in bench["tables"]:
            table = Table(t["key"], t["title"], t["headers"], t["rows"], t["rounds"])
            spread = (
                f"median (min–max) of {table.rounds} rounds" if table.rounds > 1 else "one round"
            )
            out[table.key] = (table, f"{spread}; {where}")
    return out


def render(readme: str, results: dict[str, object]) -> str:
    """``readme`` with every marked table replaced by what ``results`` holds."""
    known = tables(results)
    missing = [m["key"] for m in MARKER.finditer(readme) if m["key"] not in known]
    if missing:
        msg = f"no table {', '.join(missing)} in the results; run python -m benchmarks first"
        raise SystemExit(msg)

    def replace(m: re.Match[str]) -> str:
        table, where = known[m["key"]]
        return f"{m[1]}{markdown(table)}\n\n<sub>{where}</sub>\n{m[4]}"

    return MARKER.sub(replace, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    old = args.readme.read_text()
    new = render(old, results)
    if args.check:
        if new != old:
            print(f"{args.readme}: tables differ from {args.results}", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    print(f"{args.readme}: {len(MARKER.findall(new))} tables from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
