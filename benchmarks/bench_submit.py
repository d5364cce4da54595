"""Submissions per second over HTTP, and the rate limiter's accuracy.

1. throughput: ``bulk run`` of N jobs against ``bulk sim stub`` (limits far above what the
   machine can do), beside a plain aiohttp loop POSTing the same bodies, byte for byte
   (the same names, from the same point keys, and the same rendered spec), to the same stub
   with the same concurrency and nothing else (no journal, metrics, limiter or tracking).
   Both on uvloop (bulk's loop where it is installed); the stub runs in its own process.
   Target: bulk ≥ 0.8 × the plain loop. Timed twice: the submit phase (the stub's first to
   last create) and the whole command (start-up, planning and tracking included).
2. limiter: the production limiter (aiolimiter) at 200/s for 5 s with 32 eager callers:
   the most acquisitions in any 1 s window (allowed: rate + burst) and the average rate
   (target ≥ 97 % of the configured rate), beside ``asyncio.sleep``-paced calls.

    python -m benchmarks.bench_submit [--jobs 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

import anyio

from benchmarks._util import Cell, ChildRun, Options, Ratio, Table, print_table, rounds, run_child
from bulk._ratelimit import aiolimiter_factory
from bulk.testing import simulator

CONCURRENCY = 32
RUN = "submit"


def create_rate(url: str) -> float:
    """Creates per second over the submit phase, as the stub saw it."""
    with urllib.request.urlopen(f"{url}/ledger", timeout=10) as response:
        ledger = json.load(response)
    span = float(ledger["last_create"]) - float(ledger["first_create"])
    return (len(ledger["creates"]) - 1) / span


def bulk_run(url: str, jobs: int) -> ChildRun:
    """``bulk run`` of ``jobs`` to the end (every job tracked until the stub ends it)."""
    folder = Path(tempfile.mkdtemp(prefix="bulk-submit-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # configs, journals
    config = folder / "run.toml"
    config.write_text(
        textwrap.dedent(
            f"""
        [run]
        name = "{RUN}"
        [sweep]
        grid.i = {{range = [0, {jobs}]}}
        max_jobs = {jobs}
        [backend]
        kind = "stub"
        url = "{url}"
        [limits]
        submit_rate_per_s = 1000000
        status_rate_per_s = 1000000
        burst = 1000
        max_in_flight = {CONCURRENCY}
        max_active = {jobs}
        [track]
        first_s = 1
        batch = 5000
        [job]
        command = "python train.py --i {{i}}"
        """
        )
    )
    child = run_child(
        [sys.executable, "-m", "bulk", "run", str(config), "--progress-interval", "1000"],
        stderr=subprocess.DEVNULL,
    )
    assert child.returncode == 0, "bulk run failed"
    shutil.rmtree(folder, ignore_errors=True)
    return child


# The same bytes as bulk's stub backend sends: {"name": "<run>-<point key>", "spec": <the
# rendered job>}, the key computed as bulk computes it (so the peer pays for it too).
BODY_CODE = """
import orjson
from bulk._naming import point_key
def BODY(run, i):
    spec = orjson.dumps({"command": f"python train.py --i {i}"})
    return orjson.dumps({"name": f"{run}-{point_key({'i': i})}", "spec": orjson.Fragment(spec)})
"""


def same_body() -> None:
    """The plain loop's body is the one bulk's stub backend sends, checked each round."""
    import orjson

    from bulk._naming import job_name, point_key
    from bulk._template import compile_template

    space: dict[str, object] = {}
    exec(BODY_CODE, space)  # noqa: S102 - the benchmark's own code, run as the peer runs it
    template = compile_template({"command": "python train.py --i {i}"})
    for i in (0, 7, 19_999):
        spec = orjson.Fragment(template.render_bytes({"i": i}))
        bulk = orjson.dumps({"name": job_name(RUN, point_key({"i": i})), "spec": spec})
        assert bulk == space["BODY"](RUN, i), "peer body differs"  # type: ignore[operator]


PLAIN = (
    BODY_CODE
    + """
import asyncio, sys, uvloop, aiohttp
url, jobs, conc, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
async def main():
    queue = iter(range(jobs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def worker():
            for i in queue:
                async with s.post(url + "/jobs", data=BODY(run, i),
                                  headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 201, r.status
                    await r.read()
        await asyncio.gather(*(worker() for _ in range(conc)))
uvloop.run(main())
"""
)


def plain_run(url: str, jobs: int) -> ChildRun:
    """The plain loop's whole command, to its end."""
    child = run_child([sys.executable, "-c", PLAIN, url, str(jobs), str(CONCURRENCY), RUN])
    assert child.returncode == 0, "the plain loop failed"
    return child


def one_round(jobs: int) -> tuple[tuple[float, ChildRun], tuple[float, ChildRun]]:
    """bulk, then the plain loop, each against a fresh stub (each ledger its own):
    (submit-phase creates/s, the whole command) for each."""
    same_body()
    with simulator("stub") as url:
        bulk = bulk_run(url, jobs)
        bulk_rate = create_rate(url)
    with simulator("stub") as url:
        plain = plain_run(url, jobs)
        plain_rate = create_rate(url)
    return (bulk_rate, bulk), (plain_rate, plain)


def http_rows(jobs: int) -> list[list[Cell]]:
    (bulk_rate, bulk), (plain_rate, plain) = one_round(jobs)
    return [
        [
            "bulk run (journal, metrics, limiter; tracks every job to its end)",
            jobs,
            bulk_rate,
            Ratio(bulk_rate / plain_rate),
            bulk.wall_s,
            Ratio(plain.wall_s / bulk.wall_s),
            bulk.cpu_s / jobs * 1e6,
        ],
        [
            "peer: plain aiohttp POST loop, same bodies",
            jobs,
            plain_rate,
            Ratio(1.0),
            plain.wall_s,
            Ratio(1.0),
            plain.cpu_s / jobs * 1e6,
        ],
    ]


def limiter_windows(rate: float = 200.0, seconds: float = 5.0) -> list[list[Cell]]:
    async def measure(burst: int = 1) -> list[float]:
        limiter = aiolimiter_factory(rate, burst)
        stamps: list[float] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        async def caller() -> None:
            while loop.time() < end:
                await limiter.acquire()
                stamps.append(loop.time())

        async with anyio.create_task_group() as tg:
            for _ in range(32):
                tg.start_soon(caller)
        return stamps

    async def measure_burst() -> list[float]:
        return await measure(10)

    async def sleep_paced() -> list[float]:
        loop = asyncio.get_running_loop()
        stamps, end = [], loop.time() + seconds
        while loop.time() < end:
            await asyncio.sleep(1 / rate)
            stamps.append(loop.time())
        return stamps

    rows: list[list[Cell]] = []
    for name, fn in (
        ("aiolimiter (production), burst 1, 32 callers", measure),
        ("aiolimiter (production), burst 10, 32 callers", measure_burst),
        ("peer: one loop of asyncio.sleep(1/rate)", sleep_paced),
    ):
        stamps = anyio.run(fn, backend_options={"use_uvloop": True})
        stamps = [t for t in stamps if t <= stamps[0] + seconds]
        worst = max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))
        average = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        rows.append([name, rate, worst, average, Ratio(average / rate)])
    return rows


def tables(opts: Options, jobs: int | None = None) -> list[Table]:
    """The HTTP throughput table and the limiter's."""
    jobs = jobs or (300 if opts.quick else 20_000)
    http = Table(
        "submit.http",
        f"submissions over HTTP to bulk sim stub, {CONCURRENCY} in flight, uvloop on both",
        [
            "what",
            "jobs",
            "submits/s (submit phase)",
            "vs plain",
            "whole command s",
            "vs plain (whole)",
            "client CPU µs per job (whole)",
        ],
    )
    http.rows, http.rounds = rounds(opts.rounds, lambda: http_rows(jobs))
    seconds = 1.0 if opts.quick else 5.0
    limiter = Table(
        "submit.limiter",
        "rate limiter accuracy (1 s sliding windows)",
        ["what", "rate/s", "most in any 1 s", "average/s", "of rate"],
    )
    limiter.rows, limiter.rounds = rounds(opts.rounds, lambda: limiter_windows(seconds=seconds))
    return [http, limiter]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for table in tables(Options(rounds=args.rounds), args.jobs):
        print_table(table)


if __name__ == "__main__":
    main()
