"""The Gongji backend: signing cost, signed creates per second, status requests per job.

1. signing: RSA-2048 PKCS#1 v1.5 / SHA-256 signatures per second on one thread and on two
   (cryptography releases the GIL while it signs);
2. creates: ``bulk run`` against ``bulk sim gongji`` (RSA token, limits far above the machine)
   signing inline and with ``sign_threads = 2``, beside a plain aiohttp loop that signs the
   same way and POSTs the same bodies with the same concurrency (design target: ≥ 0.85×);
3. a real limit: the simulator allows 50 requests/s per token, bulk 200 creates/s: the rate
   the adaptive rate achieves (target: ~the limit);
4. random throttles: Gongji's default limits with and without 5 % C008 + 5 % HTTP 429 at
   random (target: less than twice the time);
5. a service-wide limit of 40 requests/s per token: per-endpoint limits alone against the
   shared budget (target: never above it in any second, ≥ 90 % of it used);
6. tracking: 10,000 jobs (each running ~1 s, 500 active at a time) through ``bulk run``,
   the service listing newest or oldest first: search + detail requests per finished job
   (target ≤ 0.2).

    python -m benchmarks.bench_gongji [--jobs 5000] [--track-jobs 10000] [--random-jobs 500]
        [--budget-jobs 600] [--sections signing,creates,limit,random,budget,tracking]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import orjson

from benchmarks._util import Cell, Options, Ratio, Table, merge, print_table, run_child
from bulk.backends.gongji import Signer, string_to_sign
from bulk.testing import simulator

CONCURRENCY = 16
TOKEN = "bench-token"


def keys(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = folder / "key.pem", folder / "key.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def signing_rates(private: Path, seconds: float = 2.0) -> list[list[Cell]]:
    signer = Signer(private.read_bytes())
    message = string_to_sign("/api/task/job/create", "1724222524375", TOKEN, b"x" * 600)

    def count(deadline: float) -> int:
        n = 0
        while time.perf_counter() < deadline:
            signer.sign(message)
            n += 1
        return n

    one = count(time.perf_counter() + seconds) / seconds
    with ThreadPoolExecutor(2) as pool:
        deadline = time.perf_counter() + seconds
        two = sum(pool.map(count, [deadline, deadline])) / seconds
    return [
        ["RSA-2048 sign, 1 thread", one, 1e6 / one],
        ["RSA-2048 sign, 2 threads", two, 2e6 / two],
    ]


def start_sim(public: Path, *extra: str) -> AbstractContextManager[str]:
    """``bulk sim gongji`` with the benchmark's RSA token."""
    return simulator("gongji", "--rsa-token", f"{TOKEN}={public}", "--pending-s", "0", *extra)


def ledger(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/_sim/ledger", timeout=30) as response:
        data: dict[str, object] = json.load(response)
    return data


def create_rate(data: dict[str, object]) -> float:
    creates = data["creates"]
    assert isinstance(creates, dict)
    span = float(str(data["last_create"])) - float(str(data["first_create"]))
    return (len(creates) - 1) / span


def config(
    folder: Path,
    url: str,
    private: Path,
    jobs: int,
    *,
    sign_threads: int,
    run_s: float,
    max_active: int,
    first_s: float,
) -> Path:
    (folder / "job.json").write_text(
        json.dumps(
            {
                "task_name": "{_name}",
                "points": 1,
                "resources": [{"mark": "bench-mark", "region_name": "河北六区"}],
                "job_support": {
                    "timeout_sec": 3600,
                    "parallelism": 1,
                    "mod_param": {"default": {"backoff_limit": 3}},
                },
                "services": [
                    {
                        "service_name": "main",
                        "service_image": "ubuntu:22.04",
                        "env": [
                            {"name": "I", "value": "{i}"},
                            {"name": "SIM_RUN_S", "value": str(run_s)},
                        ],
                        "resource_weight": {"cpu_weight": 1, "mem_weight": 1, "gpu_weight": 1},
                    }
                ],
            }
        )
    )
    path = folder / "run.toml"
    path.write_text(
        textwrap.dedent(f"""
        [run]
        name = "bench"
        [sweep]
        grid.i = {{range = [0, {jobs}]}}
        max_jobs = {jobs}
        [backend]
        kind = "gongji"
        url = "{url}"
        private_key_file = "{private}"
        sign_threads = {sign_threads}
        page_size = 500
        [limits]
        submit_rate_per_s = 1000000
        status_rate_per_s = 1000
        service_rate_per_s = 0
        burst = 100
        max_in_flight = {CONCURRENCY}
        max_active = {max_active}
        [track]
        first_s = {first_s}
        factor = 1.5
        max_s = {max(first_s, 2.0)}
        batch = 5000
        [job]
        template_file = "job.json"
        """)
    )
    return path


# How the plain loop makes a create's body: bulk's rendering of the run's job.json, byte
# for byte (checked against bulk's own in every round: same_body), without bulk's template
# engine: the compact JSON with "{_name}" and the whole-value "{i}" (a number) filled in.
BODY_CODE = """
from bulk._naming import point_key
def BODY(template, i):
    name = ('"bench-' + point_key({"i": i}) + '"').encode()
    return template.replace(b'"{_name}"', name).replace(b'"{i}"', str(i).encode())
"""


def same_body(job_json: Path) -> None:
    """The plain loop's body is the one bulk renders (a peer posting less is no peer)."""
    from bulk._naming import job_name, point_key
    from bulk._template import compile_template

    space: dict[str, object] = {}
    exec(BODY_CODE, space)  # noqa: S102 - the benchmark's own code, run as the peer runs it
    template = orjson.dumps(orjson.loads(job_json.read_bytes()))
    rendered = compile_template(orjson.loads(job_json.read_bytes()))
    for i in (0, 7, 4999):
        name = job_name("bench", point_key({"i": i}))
        theirs = space["BODY"](template, i)  # type: ignore[operator]
        assert rendered.render_bytes({"i": i, "_name": name}) == theirs, "peer body differs"


PLAIN = (
    BODY_CODE
    + """
import asyncio, sys, time, uvloop, aiohttp, orjson
from concurrent.futures import ThreadPoolExecutor
from bulk.backends.gongji import Signer, string_to_sign
from bulk.testing import simulator
from bulk._naming import point_key
url, key = sys.argv[1], sys.argv[4]
jobs, conc, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
# bulk's body, byte for byte: the run's job.json as compact JSON (as bulk renders it), its
# placeholders filled with the same values (the name from the same point key).
template = orjson.dumps(orjson.loads(open(sys.argv[6], "rb").read()))
signer = Signer(open(key, "rb").read())
pool = ThreadPoolExecutor(threads) if threads else None
async def main():
    loop = asyncio.get_running_loop()
    queue = iter(range(jobs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def worker():
            for i in queue:
                body = BODY(template, i)
                ts = str(time.time_ns() // 1000000)
                msg = string_to_sign("/api/task/job/create", ts, "bench-token", body)
                sig = (
                    await loop.run_in_executor(pool, signer.sign, msg) if pool else signer.sign(msg)
                )
                headers = {"token": "bench-token", "timestamp": ts, "version": "1.0.0",
                           "sign_str": sig, "Content-Type": "application/json"}
                async with s.post(url + "/api/task/job/create", data=body, headers=headers) as r:
                    assert orjson.loads(await r.read())["code"] == "0000"
        await asyncio.gather(*(worker() for _ in range(conc)))
uvloop.run(main())
"""
)


def small_config(folder: Path, url: str, private: Path, jobs: int, limits: str) -> Path:
    """A run of ``jobs`` with the Gongji defaults but for the ``[limits]`` lines given."""
    path = config(
        folder, url, private, jobs, sign_threads=0, run_s=2.0, max_active=jobs, first_s=1.0
    )
    text = path.read_text()
    start, end = text.index("[limits]"), text.index("[track]")
    path.write_text(text[:start] + "[limits]\n" + limits + "\n" + text[end:])
    return path


def timed_run(cfg: Path) -> tuple[float, int, str]:
    """``bulk run`` to the end: wall seconds, exit code, last line of stderr."""
    env = {**os.environ, "GONGJI_TOKEN": TOKEN}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bulk", "run", str(cfg)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return time.perf_counter() - started, done.returncode, last


def random_throttles(folder: Path, private: Path, public: Path, jobs: int) -> Table:
    """Gongji's default limits, with and without 5 % C008 + 5 % HTTP 429 at random."""
    rows = []
    for label, faults in (
        ("no throttling", ()),
        ("5 % C008 + 5 % 429 at random", ("--throttle-rate", "0.05", "--http-429-rate", "0.05")),
    ):
        with start_sim(public, "--run-s", "2", *faults) as url:
            cfg = small_config(Path(tempfile.mkdtemp(dir=folder)), url, private, jobs, "")
            wall, code, _ = timed_run(cfg)
            data = ledger(url)
        rows.append([label, jobs, create_rate(data), data["throttled"], wall, code])
    base, throttled = rows[0][4], rows[1][4]
    assert isinstance(base, float)
    assert isinstance(throttled, float)
    rows[1].append(f"{throttled / base:.2f}×")
    rows[0].append("1.00×")
    return Table(
        "gongji.random",
        "random throttles, Gongji's default limits (5 creates/s, 2 status/s, 10/s shared)",
        ["what", "jobs", "creates/s", "throttled", "wall s", "exit", "time vs none"],
        rows,
    )


def real_limit(folder: Path, private: Path, public: Path) -> Table:
    """A simulator limit of 50 requests/s per token under a 200 creates/s ceiling."""
    limit = 50
    with start_sim(public, "--run-s", "0.2", "--rate-limit", str(limit)) as url:
        cfg = config(
            Path(tempfile.mkdtemp(dir=folder)),
            url,
            private,
            1500,
            sign_threads=0,
            run_s=0.2,
            max_active=1500,
            first_s=2.0,
        )
        text = cfg.read_text().replace("submit_rate_per_s = 1000000", "submit_rate_per_s = 200")
        cfg.write_text(text.replace("status_rate_per_s = 1000", "status_rate_per_s = 5"))
        _, code, last = timed_run(cfg)
        data = ledger(url)
        throttled_rate = create_rate(data)
    return Table(
        "gongji.limit",
        f"throttling: the simulator allows {limit} requests/s per token, bulk is configured "
        "for 200 creates/s",
        ["what", "jobs", "achieved creates/s", "of the service's limit", "throttled", "exit"],
        [
            [
                "bulk run (adaptive rate under the 200/s ceiling)",
                1500,
                throttled_rate,
                f"{throttled_rate / limit:.0%}",
                data["throttled"],
                code,
            ],
            ["peer: the service's limit", 1500, float(limit), "100%", "-", "-"],
        ],
    )
    print(f"last line: {last}")


def shared_budget(folder: Path, private: Path, public: Path, jobs: int) -> Table:
    """A stand-in limiting 40 requests/s per token across endpoints; each endpoint 40/s."""
    limit = 40
    rows = []
    for label, shared in (("per endpoint only (service_rate_per_s = 0)", 0), ("shared", limit)):
        with start_sim(public, "--run-s", "5", "--rate-limit", str(limit)) as url:
            cfg = small_config(
                Path(tempfile.mkdtemp(dir=folder)),
                url,
                private,
                jobs,
                f"submit_rate_per_s = {limit}\nstatus_rate_per_s = {limit}\n"
                f"service_rate_per_s = {shared}\nburst = 4\nmax_active = {jobs}",
            )
            cfg.write_text(cfg.read_text().replace("page_size = 500", "page_size = 50"))
            wall, code, _ = timed_run(cfg)
            data = ledger(url)
        requests = data["requests"]
        assert isinstance(requests, dict)
        served = float(str(data["served_per_s_while_creating"]))
        rows.append(
            [
                f"bulk run, {label}",
                jobs,
                sum(requests.values()),
                data["throttled"],
                data["busiest_second"],
                served,
                f"{served / limit:.0%}",
                wall,
                code,
            ]
        )
    return Table(
        "gongji.budget",
        f"a service-wide limit of {limit} requests/s per token (creates, searches and details "
        f"together); bulk allows each endpoint {limit}/s; 50 tasks a search page",
        [
            "what",
            "jobs",
            "requests",
            "throttled",
            "busiest second",
            "served/s while creating",
            "of the limit",
            "wall s",
            "exit",
        ],
        rows,
    )


def tracking(folder: Path, private: Path, public: Path, jobs: int) -> Table:
    """Status requests per finished job, the service listing newest or oldest first."""
    rows = []
    for order in ("newest", "oldest"):
        with start_sim(public, "--run-s", "1", "--list-order", order) as url:
            cfg = config(
                Path(tempfile.mkdtemp(dir=folder)),
                url,
                private,
                jobs,
                sign_threads=0,
                run_s=1.0,
                max_active=500,
                first_s=1.0,
            )
            wall, _, _ = timed_run(cfg)
            requests = ledger(url)["requests"]
            assert isinstance(requests, dict)
        search = requests.get("/api/task/job/search", 0)
        detail = requests.get("/api/task/job/detail", 0)
        rows.append(
            [
                f"bulk: batched search, detail only for the rest ({order} first)",
                jobs,
                search,
                detail,
                (search + detail) / jobs,
                wall,
            ]
        )
    rows.append(["peer: detail per job, at least once each", jobs, 0, jobs, 1.0, "-"])
    return Table(
        "gongji.tracking",
        f"tracking {jobs:,} jobs of ~1 s, 500 active (peer: one detail per job and poll)",
        ["what", "jobs", "search", "detail", "status requests per job", "wall s"],
        rows,
    )


SECTIONS = ("signing", "creates", "limit", "random", "budget", "tracking")


def tables(opts: Options, sections: frozenset[str] = frozenset(SECTIONS)) -> list[Table]:
    """The chosen sections. Signing and creates are measured ``opts.rounds`` times; the
    limit, throttling, budget and tracking sections once (what they report is counted
    behaviour, not speed, and each takes a minute or more)."""
    q = opts.quick
    folder = Path(tempfile.mkdtemp(prefix="bulk-gongji-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # keys, configs, journals
    private, public = keys(folder)
    out: list[Table] = []
    if "signing" in sections:
        table = Table(
            "gongji.signing",
            "signing (same key, same message size)",
            ["what", "signatures/s", "µs CPU each"],
            rounds=opts.rounds,
        )
        seconds = 0.2 if q else 2.0
        table.rows = merge([signing_rates(private, seconds) for _ in range(opts.rounds)])
        out.append(table)
    if "creates" in sections:
        made = [creates(folder, private, public, 100 if q else 5000) for _ in range(opts.rounds)]
        made[0].rows, made[0].rounds = merge([t.rows for t in made]), opts.rounds
        out.append(made[0])
    if q:
        return out  # the rest takes minutes whatever the size
    if "limit" in sections:
        out.append(real_limit(folder, private, public))
    if "random" in sections:
        out.append(random_throttles(folder, private, public, 500))
    if "budget" in sections:
        out.append(shared_budget(folder, private, public, 600))
    if "tracking" in sections:
        out.append(tracking(folder, private, public, 10_000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sections = frozenset(args.sections.split(","))
    for table in tables(Options(rounds=args.rounds), sections):
        print_table(table)


def creates(folder: Path, private: Path, public: Path, jobs: int) -> Table:
    """Signed creates per second, bulk against a plain signed loop, inline and threaded."""
    rows = []
    for threads in (0, 2):
        with start_sim(public, "--run-s", "3600") as url:
            cfg = config(
                Path(tempfile.mkdtemp(dir=folder)),
                url,
                private,
                jobs,
                sign_threads=threads,
                run_s=3600,
                max_active=jobs,
                first_s=3600,
            )
            same_body(cfg.parent / "job.json")
            env = {**os.environ, "GONGJI_TOKEN": TOKEN}
            child = subprocess.Popen(
                [sys.executable, "-m", "bulk", "run", str(cfg), "--progress-interval", "1000"],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 600
            while True:  # the jobs run "an hour": stop bulk once every create is in
                data = ledger(url)
                creates = data["creates"]
                assert isinstance(creates, dict)
                if len(creates) >= jobs or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            child.terminate()
            child.wait()
            bulk_rate = create_rate(data)
        with start_sim(public, "--run-s", "3600") as url:
            plain = run_child(
                [
                    sys.executable,
                    "-c",
                    PLAIN,
                    url,
                    str(jobs),
                    str(CONCURRENCY),
                    str(private),
                    str(threads),
                    str(cfg.parent / "job.json"),
                ]
            )
            assert plain.returncode == 0, "the plain signed loop failed"
            plain_rate = create_rate(ledger(url))
        label = "inline" if threads == 0 else f"{threads} threads"
        rows.append([f"bulk run, signing {label}", jobs, bulk_rate, Ratio(bulk_rate / plain_rate)])
        rows.append(
            [f"peer: plain signed aiohttp loop, signing {label}", jobs, plain_rate, Ratio(1.0)]
        )
    return Table(
        "gongji.creates",
        f"signed creates against bulk sim gongji ({CONCURRENCY} in flight)",
        ["what", "jobs", "creates/s", "vs plain"],
        rows,
    )


if __name__ == "__main__":
    main()
