"""`bulk plan` over 10⁴, 10⁵ and 10⁶ CSV rows × a 3-point grid: points/s and peak RSS.

Peer, in the same run: a plain loop that streams the same CSV with ``csv.reader`` and
serialises each row with orjson — the floor any CSV-driven tool pays. Targets: peak RSS at
10⁶ rows ≤ 1.3 × the 10⁴ figure, and ≥ 100,000 points/s expanded + rendered + validated.

Whole commands timed (start-up included), each size ``rounds`` times.

    python -m benchmarks.bench_plan [--sizes 10000,100000,1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import textwrap

from benchmarks._util import WORK, Cell, Options, Ratio, Table, merge, print_table, run_child

PEER = textwrap.dedent(
    """
    import csv, sys, orjson
    n = 0
    with open(sys.argv[1], newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        for row in reader:
            for seed in (1, 2, 3):
                orjson.dumps({**dict(zip(header, row)), "seed": seed})
                n += 1
    print(n)
    """
)


def make_inputs(rows: int) -> str:
    folder = WORK / f"plan-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "sweep.csv"
    if not csv_path.exists():
        rng = random.Random(rows)
        with csv_path.open("w") as f:
            f.write("id,lr,batch,dropout,name\n")
            for i in range(rows):
                f.write(
                    f"{i},{rng.uniform(1e-5, 1e-1):.6g},{rng.choice([16, 32, 64])},"
                    f"{rng.random():.3f},model-{i % 97}\n"
                )
    (folder / "run.toml").write_text(
        textwrap.dedent(
            f"""
        [run]
        name = "bench-plan"

        [sweep]
        files = ["sweep.csv"]
        grid.seed = [1, 2, 3]
        max_jobs = {rows * 3}

        [job]
        command = ["python3", "train.py", "--lr", "{{lr}}", "--batch", "{{batch}}",
                   "--dropout", "{{dropout}}", "--seed", "{{seed}}", "--name", "{{name}}-{{_key}}"]
        env = {{RUN = "{{_run}}", JOB = "{{_name}}"}}
        timeout_s = 3600
        """
        )
    )
    return str(folder)


def measure(n: int) -> tuple[list[Cell], float]:
    """One size: the row (without the RSS ratio) and bulk's peak RSS."""
    folder = make_inputs(n)
    points = n * 3
    bulk = run_child(
        [sys.executable, "-m", "bulk", "plan", f"{folder}/run.toml", "--limit", "0"],
        stdout=subprocess.DEVNULL,
    )
    assert bulk.returncode == 0, "bulk plan failed"
    peer = run_child([sys.executable, "-c", PEER, f"{folder}/sweep.csv"], stdout=subprocess.DEVNULL)
    assert peer.returncode == 0, "the peer failed"
    row: list[Cell] = [f"{n:,} × 3", points, points / bulk.wall_s, bulk.max_rss_mb]
    return [*row, points / peer.wall_s, peer.max_rss_mb], bulk.max_rss_mb


def tables(opts: Options, sizes: list[int] | None = None) -> list[Table]:
    sizes = sizes or ([100, 300] if opts.quick else [10_000, 100_000, 1_000_000])
    table = Table(
        "plan.csv",
        "bulk plan: expand + dedup + render + validate (peer: csv.reader + orjson.dumps)",
        [
            "rows × grid",
            "points",
            "bulk points/s",
            "bulk peak RSS MB",
            "RSS vs smallest",
            "peer points/s",
            "peer peak RSS MB",
        ],
        rounds=opts.rounds,
    )
    first: float | None = None
    for n in sizes:
        results = [measure(n) for _ in range(opts.rounds)]
        first = first or min(rss for _, rss in results)
        for row, rss in results:
            row.insert(4, Ratio(rss / first))
        (row,) = merge([[r] for r, _ in results])
        table.rows.append(row)
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for table in tables(Options(rounds=args.rounds), sizes):
        print_table(table)


if __name__ == "__main__":
    main()
