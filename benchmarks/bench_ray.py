"""The ``ray`` backend against Ray's own ways of submitting, each measure min / median / max
over ``--runs`` runs, bulk and its peer in the same run:

1. ``sim``: creates per second against ``bulk sim ray`` (jobs "run an hour": only creates
   count): ``bulk run`` beside Ray's ``JobSubmissionClient`` on 16 threads, the fastest way a
   Ray user submits from Python (target: ≥ 10×). Rates from the simulator's ledger.
2. ``head``, against a real loopback Ray head (:mod:`bulk._rayhead`; skipped without Ray):
   jobs accepted per second, ``bulk run`` beside a plain aiohttp loop, the head's ceiling
   (same concurrency, the same body; target ≥ 0.9×), each measured where the client saw the
   answers (bulk: the journal's ``submitted_at``); and the time from starting to submit to
   the last job's end (Ray's own ``end_time``) for ``--head-jobs`` trivial jobs, ``bulk run``
   beside ``ray job submit --no-wait`` in a shell loop. Between runs every job is left to end
   and deleted, so each run starts on an empty head.
3. ``status``: status requests per finished job for ``--status-jobs`` jobs of ~1 s on the
   simulator, with the backend choosing list or per-job GETs by count (as shipped), always
   per-job, always the list.

    python -m benchmarks.bench_ray [--runs 3] [--sim-jobs 2000] [--head-jobs 50]
        [--status-jobs 1000] [--sections sim,head,status]

:func:`tables` returns the tables instead of printing them (for a harness).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._util import WORK, Options, Table, print_table
from bulk._journal import Journal
from bulk._rayhead import RayHead, RayUnavailableError, ray_cli, ray_head
from bulk.testing import simulator

CONCURRENCY = 8  # requests in flight: the ray kind's default max_in_flight, for bulk and peers
SECTIONS = ("sim", "head", "status")


def spread(values: Sequence[float], fmt: str = "{:,.1f}") -> str:
    """``min / median / max`` of the runs."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def ledger(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sim/ledger", timeout=30) as response:
        data: dict[str, Any] = json.load(response)
    return data


def ledger_rate(data: dict[str, Any]) -> float:
    """Creates per second between the simulator's first and last create."""
    return (len(data["creates"]) - 1) / float(data["last_create"] - data["first_create"])


def config(folder: Path, url: str, jobs: int, *, track_s: float, extra: str = "") -> Path:
    """A sweep of ``jobs`` trivial Ray jobs, limits far above the service's."""
    path = folder / "run.toml"
    path.write_text(
        textwrap.dedent(f"""
        [run]
        name = "bench"
        [sweep]
        grid.i = {{range = [0, {jobs}]}}
        max_jobs = {jobs}
        [backend]
        kind = "ray"
        url = "{url}"
        {extra}
        [limits]
        submit_rate_per_s = 1000000
        status_rate_per_s = 1000
        burst = 100
        max_in_flight = {CONCURRENCY}
        max_active = {jobs}
        [track]
        first_s = {track_s}
        factor = 1.5
        max_s = {max(track_s, 2.0)}
        [job]
        entrypoint = "true"
        """)
    )
    return path


def bulk_argv(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "bulk", "run", str(cfg), "--progress-interval", "0"]


# A plain aiohttp loop: the service's ceiling (prints the times its answers came back).
PLAIN = """
import asyncio, json, sys, time, aiohttp
url, prefix, jobs, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
async def main():
    queue, accepted = iter(range(jobs)), []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def worker():
            for i in queue:
                body = json.dumps({"entrypoint": "true", "submission_id": f"{prefix}-{i}"})
                async with s.post(url + "/api/jobs/", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 200, await r.text()
                accepted.append(time.time())
        await asyncio.gather(*(worker() for _ in range(conc)))
    print(json.dumps(accepted))
asyncio.run(main())
"""


# ---- 1. creates/s against bulk sim ray ------------------------------------------------------

JSC = """
import sys
from concurrent.futures import ThreadPoolExecutor
from ray.job_submission import JobSubmissionClient
url, jobs = sys.argv[1], int(sys.argv[2])
client = JobSubmissionClient(url)
def one(i):
    client.submit_job(entrypoint="true", submission_id=f"jsc-{i}")
with ThreadPoolExecutor(16) as pool:
    list(pool.map(one, range(jobs)))
"""


def sim_bulk_rate(folder: Path, jobs: int) -> float:
    with simulator("ray", "--pending-s", "0", "--run-s", "3600") as url:
        cfg = config(Path(tempfile.mkdtemp(dir=folder)), url, jobs, track_s=3600)
        child = subprocess.Popen(bulk_argv(cfg), stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while len((data := ledger(url))["creates"]) < jobs:  # then stop bulk: jobs "run"
                assert time.monotonic() < deadline, "bulk did not create every job in 600 s"
                time.sleep(0.2)
        finally:
            child.terminate()
            child.wait()
        return ledger_rate(data)


def sim_plain_rate(jobs: int) -> float:
    """The simulator's own ceiling on this machine: a plain aiohttp loop, as many in flight."""
    with simulator("ray", "--pending-s", "0", "--run-s", "3600") as url:
        argv = [sys.executable, "-c", PLAIN, url, "plain", str(jobs), str(CONCURRENCY)]
        subprocess.run(argv, capture_output=True, check=True)
        return ledger_rate(ledger(url))


def sim_jsc_rate(jobs: int) -> float:
    with simulator("ray", "--pending-s", "0", "--run-s", "3600") as url:
        subprocess.run([sys.executable, "-c", JSC, url, str(jobs)], check=True)
        return ledger_rate(ledger(url))


def sim_table(folder: Path, runs: int, jobs: int) -> Table:
    bulk = [sim_bulk_rate(folder, jobs) for _ in range(runs)]
    plain = [sim_plain_rate(jobs) for _ in range(runs)]
    rows: list[list[object]] = [["bulk run", jobs, spread(bulk), ""]]
    if ray_cli() is None:
        rows.append(["peer: JobSubmissionClient, 16 threads", jobs, "skipped: no Ray", ""])
    else:
        peer_jobs = max(100, jobs // 4)  # a TCP connection per call: the peer is slow
        peer = [sim_jsc_rate(peer_jobs) for _ in range(runs)]
        ratio = statistics.median(bulk) / statistics.median(peer)
        rows[0][3] = f"{ratio:.1f}×"
        rows.append(["peer: JobSubmissionClient, 16 threads", peer_jobs, spread(peer), "1.0×"])
    # Where bulk and the peer both come near this, the simulator is the limit, not the client.
    rows.append([f"ceiling: plain aiohttp loop, {CONCURRENCY} in flight", jobs, spread(plain), ""])
    return Table(
        "ray.sim",
        "ray: creates/s against bulk sim ray (min / median / max)",
        ["what", "jobs", "creates/s", "vs peer"],
        rows,
    )


# ---- 2. against a real head -----------------------------------------------------------------


def head_jobs(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/jobs/", timeout=120) as response:
        jobs: list[dict[str, Any]] = json.load(response)
    return jobs


def drain(url: str, prefix: str, count: int) -> float:
    """Wait until the head's ``count`` jobs of ``prefix`` have ended; delete them; the last
    one's ``end_time`` (seconds since the epoch)."""
    deadline = time.monotonic() + 1800
    while True:
        mine = [j for j in head_jobs(url) if str(j["submission_id"]).startswith(prefix)]
        if len(mine) >= count and all(
            j["status"] in {"SUCCEEDED", "FAILED", "STOPPED"} for j in mine
        ):
            break
        assert time.monotonic() < deadline, f"{prefix}: jobs did not end in 30 minutes"
        time.sleep(0.5)
    for job in mine:
        request = urllib.request.Request(f"{url}/api/jobs/{job['submission_id']}", method="DELETE")
        urllib.request.urlopen(request, timeout=60).close()
    failed = [j["submission_id"] for j in mine if j["status"] != "SUCCEEDED"]
    assert not failed, f"jobs that did not succeed: {failed}"
    return float(max(j["end_time"] for j in mine)) / 1000


def rate(times: Sequence[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def head_bulk(folder: Path, head: RayHead, jobs: int) -> tuple[float, float]:
    """``bulk run`` of ``jobs``: (accepts/s, start → last job's end in seconds)."""
    cfg = config(
        Path(tempfile.mkdtemp(dir=folder)), head.url, jobs, track_s=0.5,
        extra="delete_finished = false",
    )  # fmt: skip
    started = time.time()
    done = subprocess.run(bulk_argv(cfg), stderr=subprocess.PIPE, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with Journal.open(cfg.parent / ".bulk" / "bench" / "journal.sqlite") as journal:
        accepted = [j.submitted_at for j in journal.iter_jobs() if j.submitted_at is not None]
    assert len(accepted) == jobs
    return rate(accepted), drain(head.url, "bench-", jobs) - started


def head_plain(head: RayHead, jobs: int, prefix: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PLAIN, head.url, prefix, str(jobs), str(CONCURRENCY)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    accepted = json.loads(out.stdout)
    drain(head.url, prefix, jobs)
    return rate(accepted)


def head_cli(head: RayHead, jobs: int, prefix: str) -> float:
    """``ray job submit --no-wait`` in a shell loop: start → last job's end in seconds."""
    ray = ray_cli()
    script = (
        f'for i in $(seq {jobs}); do "{ray}" job submit --address {head.url} --no-wait '
        f"--submission-id {prefix}-$i -- true >/dev/null || exit 1; done"
    )
    started = time.time()
    subprocess.run(["bash", "-c", script], env=dict(head.env), check=True)
    return drain(head.url, prefix, jobs) - started


def head_tables(folder: Path, runs: int, jobs: int) -> list[Table]:
    try:
        with ray_head(job_start_timeout_s=900) as head:  # 50 jobs at once on 2 cores: slow
            bulk = [head_bulk(folder, head, jobs) for _ in range(runs)]
            plain = [head_plain(head, jobs, f"plain{r}") for r in range(runs)]
            cli = [head_cli(head, jobs, f"cli{r}") for r in range(runs)]
    except RayUnavailableError as e:
        skipped: list[list[object]] = [["skipped", str(e)]]
        return [Table("ray.head", "ray: against a real head", ["what", "why"], skipped)]
    bulk_rates, bulk_spans = [b[0] for b in bulk], [b[1] for b in bulk]
    return [
        Table(
            "ray.head",
            f"ray: jobs accepted/s by a real loopback head ({CONCURRENCY} in flight; "
            "min / median / max)",
            ["what", "jobs", "accepted/s", "vs ceiling"],
            [
                [
                    "bulk run",
                    jobs,
                    spread(bulk_rates),
                    f"{statistics.median(bulk_rates) / statistics.median(plain):.2f}×",
                ],
                ["ceiling: plain aiohttp loop", jobs, spread(plain), "1.00×"],
            ],
        ),
        Table(
            "ray.head_span",
            f"ray: {jobs} trivial jobs on a real head, start of submitting → last job ended "
            "(min / median / max)",
            ["what", "jobs", "seconds", "vs ray CLI"],
            [
                [
                    "bulk run",
                    jobs,
                    spread(bulk_spans),
                    f"{statistics.median(bulk_spans) / statistics.median(cli):.2f}×",
                ],
                ["peer: ray job submit --no-wait, shell loop", jobs, spread(cli), "1.00×"],
            ],
        ),
    ]


# ---- 3. status requests per finished job on the simulator -----------------------------------

# bulk run with the ray backend's status strategy forced (see LIST_FROM in its module).
FORCED = """
import sys
import bulk.backends.ray._backend as b
b.LIST_FROM, b.LIST_PER_GET = int(sys.argv[1]), int(sys.argv[2])
from bulk._cli import main
sys.exit(main(sys.argv[3:]))
"""
STRATEGIES: dict[str, Callable[[Path], list[str]]] = {
    "as shipped (by count)": bulk_argv,
    "always per-job GETs": lambda cfg: [
        sys.executable, "-c", FORCED, str(10**9), "1", *bulk_argv(cfg)[3:]
    ],
    "always the list": lambda cfg: [
        sys.executable, "-c", FORCED, "1", str(10**9), *bulk_argv(cfg)[3:]
    ],
}  # fmt: skip


def status_requests(folder: Path, jobs: int, argv: Callable[[Path], list[str]]) -> float:
    """Status requests per finished job: list calls plus per-job GETs (DELETEs taken out)."""
    with simulator("ray", "--pending-s", "0", "--run-s", "1") as url:
        cfg = config(Path(tempfile.mkdtemp(dir=folder)), url, jobs, track_s=1.0)
        text = cfg.read_text().replace(f"max_active = {jobs}", "max_active = 64")
        cfg.write_text(text)  # the ray kind's default: a real head runs ~1 job/s per 2 cores
        subprocess.run(argv(cfg), stderr=subprocess.DEVNULL, check=True)
        data = ledger(url)
    per_job = sum(
        n for path, n in data["requests"].items()
        if path.startswith("/api/jobs/") and path.count("/") == 3 and path != "/api/jobs/"
    )  # fmt: skip
    return float(data["list_calls"] + per_job - data["deletes"]) / jobs


def status_table(folder: Path, runs: int, jobs: int) -> Table:
    rows: list[list[object]] = []
    for label, argv in STRATEGIES.items():
        values = [status_requests(folder, jobs, argv) for _ in range(runs)]
        rows.append([label, jobs, spread(values, "{:.3f}")])
    return Table(
        "ray.status",
        "ray: status requests per finished job on bulk sim ray (jobs of 1 s, 64 active; "
        "min / median / max)",
        ["status strategy", "jobs", "requests per job"],
        rows,
    )


# ---- entry points ---------------------------------------------------------------------------


def tables(opts: Options, sections: Sequence[str] = SECTIONS) -> list[Table]:
    """The chosen sections' tables, for ``python -m benchmarks`` (``--quick``: tiny sizes)."""
    if opts.quick:
        return run_sections(runs=1, sim_jobs=100, head_jobs=5, status_jobs=50, sections=sections)
    return run_sections(runs=opts.rounds, sections=sections)


def run_sections(
    *,
    runs: int = 3,
    sim_jobs: int = 2000,
    head_jobs: int = 50,
    status_jobs: int = 1000,
    sections: Sequence[str] = SECTIONS,
) -> list[Table]:
    """Run the chosen sections; their tables."""
    WORK.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=WORK, prefix="ray-"))
    result: list[Table] = []
    if "sim" in sections:
        result.append(sim_table(folder, runs, sim_jobs))
    if "head" in sections:
        result.extend(head_tables(folder, runs, head_jobs))
    if "status" in sections:
        result.append(status_table(folder, runs, status_jobs))
    for table in result:
        table.rounds = runs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sim-jobs", type=int, default=2000)
    parser.add_argument("--head-jobs", type=int, default=50)
    parser.add_argument("--status-jobs", type=int, default=1000)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    for table in run_sections(
        runs=args.runs,
        sim_jobs=args.sim_jobs,
        head_jobs=args.head_jobs,
        status_jobs=args.status_jobs,
        sections=sections,
    ):
        print_table(table)


if __name__ == "__main__":
    main()
