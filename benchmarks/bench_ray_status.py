"""Where one list call beats per-job GETs, for the ``ray`` backend's status (``LIST_FROM``).

Against ``bulk sim ray`` (its list call costs what Ray 2.60's does: ~0.25 ms per job the
head holds), with H jobs held and running: the median time of ``status`` of k jobs by k
per-job GETs (8 in flight, as the backend sends them) beside one list call, and the
smallest k from which the list is no slower. Both in the same run, so the ratio holds on a
loaded machine.

    python -m benchmarks.bench_ray_status [--held 100 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
import orjson

from benchmarks._util import print_table
from bulk.backends.base import Receipt
from bulk.backends.ray import RayBackend, RayOptions
from bulk.testing import simulator

KS = (1, 2, 4, 8, 16, 32, 64)
ROUNDS = 5


async def measure(url: str, held: int) -> list[tuple[int, float, float]]:
    backend = RayBackend(RayOptions(url=url, delete_finished=False))
    try:
        body = orjson.dumps({"entrypoint": "sleep 100000"})
        for i in range(held):
            await backend._http.request(
                "POST",
                "/api/jobs/",
                body=body[:-1] + f',"submission_id":"b-{held}-{i}"}}'.encode(),
                idempotent=False,
            )
        rows = []
        for k in KS:
            receipts = [Receipt(f"b-{held}-{i}", f"b-{held}-{i}") for i in range(k)]
            per_job, listed = [], []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                await backend._status_per_job(receipts)
                per_job.append(time.perf_counter() - start)
                start = time.perf_counter()
                await backend._status_from_list(receipts)
                listed.append(time.perf_counter() - start)
            rows.append((k, statistics.median(per_job), statistics.median(listed)))
        return rows
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--held", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    table = []
    for held in args.held:
        with simulator("ray", "--pending-s", "0") as url:
            rows = anyio.run(measure, url, held)
        crossover = next((k for k, per, lst in rows if lst <= per), None)
        for k, per, lst in rows:
            table.append(
                [held, k, f"{per * 1000:.1f}", f"{lst * 1000:.1f}", "←" if k == crossover else ""]
            )
    print_table(
        "ray status: k per-job GETs vs one list call",
        ["jobs held", "k asked", "k GETs ms", "1 list ms", "crossover"],
        table,
    )


if __name__ == "__main__":
    main()
