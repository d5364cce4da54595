"""The scale table: ``bulk run`` of 10³, 10⁴, 10⁵ (and with ``--scale`` 10⁶) jobs against
``bulk sim stub``, beside the plain aiohttp loop of ``bench_submit`` (the same bodies, the
same concurrency, uvloop on both): the whole command's wall time, CPU µs per job and peak
RSS (its own ``VmHWM``, see ``run_child``). Target: bulk's peak RSS at 10⁶ jobs within
1.3 × its 10⁴ figure and < 150 MB. The 10⁶ row is measured once (it takes minutes); the
others ``rounds`` times.

    python -m benchmarks.bench_scale [--scale] [--rounds 3]
"""

from __future__ import annotations

import argparse

from benchmarks._util import Cell, Options, Table, merge, print_table
from benchmarks.bench_submit import one_round


def row(jobs: int) -> list[Cell]:
    (_, bulk), (_, plain) = one_round(jobs)
    return [
        jobs,
        bulk.wall_s,
        bulk.cpu_s / jobs * 1e6,
        bulk.max_rss_mb,
        plain.wall_s,
        plain.cpu_s / jobs * 1e6,
        plain.max_rss_mb,
    ]


def tables(opts: Options) -> list[Table]:
    sizes = [100, 300] if opts.quick else [1_000, 10_000, 100_000]
    if opts.scale:
        sizes.append(1_000_000)
    table = Table(
        "scale.stub",
        "bulk run against bulk sim stub at growing sizes (whole command; peer: plain loop)",
        [
            "jobs",
            "bulk wall s",
            "bulk CPU µs/job",
            "bulk peak RSS MB",
            "plain wall s",
            "plain CPU µs/job",
            "plain peak RSS MB",
        ],
        rounds=opts.rounds,
    )
    for jobs in sizes:
        n = 1 if jobs >= 1_000_000 else opts.rounds
        table.rows += merge([[row(jobs)] for _ in range(n)])
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", action="store_true", help="add 10⁶ jobs (minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for table in tables(Options(scale=args.scale, rounds=args.rounds)):
        print_table(table)


if __name__ == "__main__":
    main()
