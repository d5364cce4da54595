"""Rewrite the README's benchmark tables from ``benchmarks/results.json``.

    python -m benchmarks.readme [--results benchmarks/results.json] [--readme README.md]
        [--check]

Each table sits between two markers naming its key (``Table.key``)::

    <!-- bench:submit.http -->
    ...generated: the table and a line saying when, where and on which commit...
    <!-- /bench:submit.http -->

Only what is between markers changes; the prose around them is written by hand. A marker
whose table is not in the JSON (a benchmark not run yet: ``--only`` runs some) is left as it
is, and named on stderr; with ``--check``, that or a README that is not what the JSON gives
fails (exit 1: the tables are never hand-edited).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

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
        for t in bench["tables"]:
            where = _where(t.get("measured", bench))  # a table kept from an earlier run: its own
            table = Table(t["key"], t["title"], t["headers"], t["rows"], t["rounds"])
            spread = (
                f"median (min–max) of {table.rounds} rounds" if table.rounds > 1 else "one round"
            )
            out[table.key] = (table, f"{spread}; {where}")
    return out


def _where(run: dict[str, Any]) -> str:
    machine = run["machine"]
    load = machine.get("load_average_before") or machine.get("load_average")
    return (
        f"{run['date'][:10]}, {machine['cpus']} × {machine['cpu']}, Python "
        f"{machine['python']}, load average {load[0]:.1f} at the start, commit {run['git_rev']}"
    )


def _reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"not JSON ({exc})"


def render(readme: str, results: dict[str, object]) -> tuple[str, list[str]]:
    """``readme`` with every marked table that ``results`` holds replaced; the keys of the
    marked tables it does not hold."""
    known = tables(results)
    missing = [m["key"] for m in MARKER.finditer(readme) if m["key"] not in known]

    def replace(m: re.Match[str]) -> str:
        if m["key"] not in known:
            return m[0]
        table, where = known[m["key"]]
        return f"{m[1]}{markdown(table)}\n\n<sub>{where}</sub>\n{m[4]}"

    return MARKER.sub(replace, readme), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--readme", type=Path, default=HERE.parent / "README.md")
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        old = args.readme.read_text()
    except (OSError, ValueError) as exc:
        parser.error(f"{getattr(exc, 'filename', None) or args.results}: {_reason(exc)}")
    quick = [
        name
        for name, bench in results.get("benchmarks", {}).items()
        if bench.get("options", {}).get("quick")
    ]
    if quick:  # tiny sizes that check the harness: their figures mean nothing
        parser.error(
            f"{args.results}: measured with --quick ({', '.join(quick)}); not for the README"
        )
    new, missing = render(old, results)
    if missing:
        print(f"not in {args.results} (left as they were): {', '.join(missing)}", file=sys.stderr)
    if args.check:
        if new != old or missing:
            print(f"{args.readme}: tables differ from {args.results}", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    done = len(MARKER.findall(new)) - len(missing)
    print(f"{args.readme}: {done} tables from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
