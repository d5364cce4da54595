"""Submissions per second over HTTP, and the rate limiter's accuracy.

1. throughput: ``bulk run`` of N jobs against ``bulk sim stub`` (limits far above what the
   machine can do), beside a plain aiohttp loop POSTing the same bodies to the same stub
   with the same concurrency and nothing else (no journal, metrics, limiter or tracking).
   Both on uvloop; the stub runs in its own process. Target: bulk ≥ 0.8 × the plain loop.
2. limiter: the production limiter (aiolimiter) at 200/s for 10 s with 32 eager callers:
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

from benchmarks._util import print_table, run_child
from bulk._ratelimit import aiolimiter_factory
from bulk.testing import simulator

CONCURRENCY = 32


def create_rate(url: str) -> float:
    """Creates per second over the submit phase, as the stub saw it."""
    with urllib.request.urlopen(f"{url}/ledger", timeout=10) as response:
        ledger = json.load(response)
    span = float(ledger["last_create"]) - float(ledger["first_create"])
    return (len(ledger["creates"]) - 1) / span


def bulk_run(url: str, jobs: int) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="bulk-submit-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # keys, configs, journals
    config = folder / "run.toml"
    config.write_text(
        textwrap.dedent(
            f"""
        [run]
        name = "submit"
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
    assert child.returncode == 0
    return child.wall_s, child.cpu_s


PLAIN = """
import asyncio, sys, time, uvloop, aiohttp
url, jobs, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    queue = iter(range(jobs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def worker():
            for i in queue:
                body = b'{"name":"plain-%d","spec":{"command":"python train.py --i %d"}}' % (i, i)
                async with s.post(url + "/jobs", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
                    await r.read()
        await asyncio.gather(*(worker() for _ in range(conc)))
uvloop.run(main())
"""


def limiter_windows(rate: float = 200.0, seconds: float = 10.0) -> list[list[object]]:
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

    rows = []
    for name, fn in (
        ("aiolimiter (production), burst 1, 32 callers", measure),
        ("aiolimiter (production), burst 10, 32 callers", measure_burst),
        ("peer: one loop of asyncio.sleep(1/rate)", sleep_paced),
    ):
        stamps = anyio.run(fn, backend_options={"use_uvloop": True})
        stamps = [t for t in stamps if t <= stamps[0] + seconds]
        worst = max(bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))
        average = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        rows.append([name, rate, worst, average, f"{average / rate:.1%}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    jobs = parser.parse_args().jobs

    rates = {}
    for what in ("bulk", "plain"):
        with simulator("stub") as url:  # a fresh service each, so each ledger is its own
            if what == "bulk":
                wall, cpu = bulk_run(url, jobs)
            else:
                child = run_child([sys.executable, "-c", PLAIN, url, str(jobs), str(CONCURRENCY)])
                wall, cpu = child.wall_s, child.cpu_s
            rates[what] = (create_rate(url), wall, cpu)
    plain_rate = rates["plain"][0]
    print_table(
        f"submissions over HTTP to bulk sim stub, {CONCURRENCY} in flight",
        [
            "what",
            "jobs",
            "submits/s (submit phase)",
            "vs plain",
            "whole command s",
            "client CPU µs per job",
        ],
        [
            [
                "bulk run (journal, metrics, limiter; tracks every job to its end)",
                jobs,
                rates["bulk"][0],
                f"{rates['bulk'][0] / plain_rate:.2f}×",
                rates["bulk"][1],
                rates["bulk"][2] / jobs * 1e6,
            ],
            [
                "peer: plain aiohttp POST loop",
                jobs,
                plain_rate,
                "1.00×",
                rates["plain"][1],
                rates["plain"][2] / jobs * 1e6,
            ],
        ],
    )
    print_table(
        "rate limiter accuracy (1 s sliding windows)",
        ["what", "rate/s", "most in any 1 s", "average/s", "of rate"],
        limiter_windows(),
    )


if __name__ == "__main__":
    main()
