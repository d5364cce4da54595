"""Engine benchmarks, each against a peer measured in the same run.

1. overhead: 10⁵ jobs through the whole engine (journal, metrics, aiolimiter, tracker) with a
   no-op backend; beside it, a floor (not a peer: it does not do the same work): a bare
   loop that renders and calls the same backend with no journal and no concurrency;
2. journal: records committed per second by the group-committing writer (8 concurrent
   writers), beside raw SQLite doing the same work: the same UPDATE statement and values,
   WAL with ``synchronous=FULL`` as the journal, in as many transactions as the writer
   committed;
3. resume: from ``bulk run`` on a 10⁶-row journal with half the rows done to the first new
   job starting (target ≤ 3 s), beside ``bulk status`` on the same journal;
4. local: 2,000 trivial jobs (``true``) on the local backend, on uvloop and on asyncio,
   beside GNU parallel with the same ``-j`` and a ``--joblog`` (one line per job, written
   without fsync; bulk's journal commits each job's records with fsync);
5. lost: resuming a 10⁶-row Gongji journal (half done) against ``bulk sim gongji``, with the
   backend's default limits, after a session that ended cleanly (the peer) and after one
   that did not: then the first pending rows are looked up by name until a window of 8
   misses (Gongji's default ``max_in_flight``), in case a lost ``-wal`` forgot them.

Each is measured ``rounds`` times (min/median/max); ``python -m benchmarks`` runs them all.

    python -m benchmarks.bench_engine [overhead journal resume local lost]
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from benchmarks._util import WORK, Cell, Options, Ratio, Table, print_table, rounds
from bulk._engine import Engine
from bulk._journal import Journal, JournalWriter, Record, State
from bulk._journal._store import _UPDATE
from bulk._naming import Point, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._template import compile_template
from bulk.backends.base import JobStatus, Phase, Receipt, Submission


class NoopBackend:
    """Accepts everything at once; every job is finished by its first poll."""

    async def submit(self, submission: Submission) -> Receipt:
        return Receipt(submission.name, submission.name)

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        done = JobStatus(Phase.SUCCEEDED)
        return {job.remote_id: done for job in jobs}

    async def stop(self, job: Receipt) -> None:
        return None

    async def lookup(self, submission: Submission) -> Receipt | None:
        return None

    async def aclose(self) -> None:
        return None


def _journal(path: Path, n: int) -> Journal:
    journal = Journal.create(path, {"run": "bench"})
    points = (Point(i, point_key({"i": i}), f"sweep:{i}", {"i": i}) for i in range(n))
    for _ in journal.fill(points):
        pass
    journal.finish()
    return journal


def bench_overhead(n: int = 100_000) -> list[list[Cell]]:
    template = compile_template({"command": "echo {i}", "name": "{_name}"})
    policy = Policy(
        LimitsConfig(
            submit_rate_per_s=1e9,
            status_rate_per_s=1e9,
            burst=1000,
            max_in_flight=64,
            max_active=100_000,
        ),
        RetryConfig(),
        TrackConfig(first_s=0.05, factor=1.0, max_s=0.05, batch=5000),
    )
    with tempfile.TemporaryDirectory() as tmp:
        journal = _journal(Path(tmp) / "j.sqlite", n)
        engine = Engine(NoopBackend(), journal, template=template, run="bench", policy=policy)

        async def run_engine() -> None:
            await engine.run()

        cpu, wall = time.process_time(), time.perf_counter()
        anyio.run(run_engine, backend_options={"use_uvloop": True})
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert engine.stats.succeeded == n, engine.stats
        journal.close()

    async def bare() -> None:
        backend = NoopBackend()
        for i in range(n):
            body = template.render_bytes({"i": i, "_name": f"bench-{i}"})
            await backend.submit(Submission(f"bench-{i}", body))
        receipts = [Receipt(f"bench-{i}", f"bench-{i}") for i in range(n)]
        for start in range(0, n, 5000):
            await backend.status(receipts[start : start + 5000])

    peer_cpu, peer_wall = time.process_time(), time.perf_counter()
    anyio.run(bare, backend_options={"use_uvloop": True})
    peer_cpu, peer_wall = time.process_time() - peer_cpu, time.perf_counter() - peer_wall
    return [
        ["bulk engine (journal, metrics, limiter, tracker)", n, n / wall, cpu / n * 1e6],
        [
            "floor, not a peer: render + backend call, no journal, one at a time",
            n,
            n / peer_wall,
            peer_cpu / n * 1e6,
        ],
    ]


def bench_journal(n: int = 100_000) -> list[list[Cell]]:
    with tempfile.TemporaryDirectory() as tmp:
        journal = _journal(Path(tmp) / "j.sqlite", n)
        writer = JournalWriter(journal)

        async def write_all() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run)

                async def one_writer(k: int) -> None:
                    for i in range(k, n, 8):
                        await writer.write(Record(i, State.SUBMITTED, attempt=1, remote_id="r"))

                async with anyio.create_task_group() as writers:
                    for k in range(8):
                        writers.start_soon(one_writer, k)
                await writer.aclose()

        wall = time.perf_counter()
        anyio.run(write_all, backend_options={"use_uvloop": True})
        wall = time.perf_counter() - wall
        journal.close()

        # The same work, raw: the journal's statement and values, WAL + synchronous=FULL,
        # in as many transactions (each fsynced) as the writer committed.
        conn = sqlite3.connect(Path(tmp) / "j.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        params = [Record(i, State.RUNNING, attempt=1, remote_id="r").params() for i in range(n)]
        per = -(-n // max(writer.commits, 1))
        peer = time.perf_counter()
        for start in range(0, n, per):
            conn.execute("BEGIN")
            conn.executemany(_UPDATE, params[start : start + per])
            conn.execute("COMMIT")
        peer = time.perf_counter() - peer
        conn.close()
    return [
        ["JournalWriter, 8 writers each awaiting its commit", n, writer.commits, n / wall],
        [
            "peer: raw executemany, same statement, FULL, same number of commits",
            n,
            writer.commits,
            n / peer,
        ],
    ]


def bench_resume(rows: int = 1_000_000) -> list[list[Cell]]:
    folder = WORK / f"resume-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "run.toml"
    config.write_text(
        textwrap.dedent(
            f"""
        [run]
        name = "resume"
        [sweep]
        files = ["sweep.csv"]
        max_jobs = {rows}
        [limits]
        max_active = 1
        [job]
        command = "date +%s.%N > first-start; sleep 60"
        """
        )
    )
    csv_path = folder / "sweep.csv"
    if not csv_path.exists():
        with csv_path.open("w") as f:
            f.write("i,name\n")
            for i in range(rows):
                f.write(f"{i},point-{i}\n")
    journal_path = folder / ".bulk" / "resume" / "journal.sqlite"
    if not journal_path.exists():
        import bulk._config as config_module
        import bulk._runs as runs

        cfg = config_module.load(config)
        journal, _ = runs.open_run(cfg)
        journal.apply([Record(i, State.SUCCEEDED) for i in range(rows // 2)])
        journal.close()
    with Journal.open(journal_path) as journal:  # back to half done after an earlier bench
        journal.apply([Record(i, State.PENDING) for i in range(rows // 2, rows // 2 + 10)])
    marker = folder / "first-start"
    marker.unlink(missing_ok=True)

    start = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulk", "run", str(config)],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text().strip():
        if time.monotonic() > deadline:
            proc.kill()
            msg = "resume benchmark: no job started within 60 s"
            raise SystemExit(msg)
        time.sleep(0.005)
    first = float(marker.read_text()) - start
    proc.terminate()
    proc.wait()

    peer = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bulk", "status", str(config)], check=True, stdout=subprocess.DEVNULL
    )
    peer = time.perf_counter() - peer
    return [
        [f"bulk run: resume {rows:,} rows (half done) to the first new job", first],
        ["peer: bulk status on the same journal", peer],
    ]


def bench_lost(rows: int = 1_000_000, creates: int = 10) -> list[list[Cell]]:
    import json

    import bulk._config as config_module
    import bulk._runs as runs
    from benchmarks.bench_gongji import keys, ledger, start_sim

    folder = WORK / f"lost-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.pem").exists():
        keys(folder)
    service = {
        "service_name": "main",
        "service_image": "ubuntu:22.04",
        "env": [{"name": "I", "value": "{i}"}],
        "resource_weight": {"cpu_weight": 1, "mem_weight": 1, "gpu_weight": 1},
    }
    (folder / "job.json").write_text(
        json.dumps(
            {
                "task_name": "{_name}",
                "points": 1,
                "resources": [{"mark": "bench-mark"}],
                "job_support": {"timeout_sec": 3600, "parallelism": 1, "mod_param": {}},
                "services": [service],
            }
        )
    )
    config = folder / "run.toml"

    def write_config(url: str) -> None:  # the URL may change between runs; the run may not
        config.write_text(
            textwrap.dedent(f"""
            [run]
            name = "lost"
            [sweep]
            files = ["sweep.csv"]
            max_jobs = {rows}
            [backend]
            kind = "gongji"
            url = "{url}"
            private_key_file = "key.pem"
            [job]
            template_file = "job.json"
            """)
        )

    csv_path = folder / "sweep.csv"  # a file: a 10⁶-value grid axis costs seconds to load
    if not csv_path.exists():
        with csv_path.open("w") as f:
            f.write("i\n")
            f.writelines(f"{i}\n" for i in range(rows))
    journal_path = folder / ".bulk" / "lost" / "journal.sqlite"
    if not journal_path.exists():
        write_config("http://127.0.0.1:9")
        journal, _ = runs.open_run(config_module.load(config))
        journal.apply([Record(i, State.SUCCEEDED) for i in range(rows // 2)])
        journal.close()
    table: list[list[Cell]] = []
    for label, unclean in (
        (f"bulk run: resume {rows:,} rows (half done) after an unclean end (window 8)", "8"),
        ("peer: the same resume after a clean end (no look-ups)", "0"),
    ):
        with Journal.open(journal_path) as journal:  # half done, as the last session left it
            journal.apply([Record(i, State.PENDING) for i in range(rows // 2, rows // 2 + 100)])
            journal.set_meta({"unclean_workers": unclean})
        _forget_sent_mark(folder / ".bulk" / "lost" / "run.json")
        with start_sim(folder / "key.pub.pem") as url:
            write_config(url)
            start = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "bulk", "run", str(config)],
                stderr=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "GONGJI_TOKEN": "bench-token"},
            )
            deadline = start + 120
            while _creates(data := ledger(url)) < creates:
                if time.monotonic() > deadline:
                    proc.kill()
                    msg = f"lost-history benchmark: fewer than {creates} creates in 120 s"
                    raise SystemExit(msg)
                time.sleep(0.005)
            nth = time.monotonic() - start
            proc.terminate()
            proc.wait()
            first = float(str(data["first_create"])) - start
            requests = data["requests"]
            assert isinstance(requests, dict)
            lookups = requests.get("/api/task/job/search", 0)
        table.append([label, first, nth, lookups])
    return table


def _forget_sent_mark(marker: Path) -> None:
    """No sent mark (a run from before it): the window is what bounds the look-ups. The
    previous round's clean end left one at 0, which would say "nothing to look up"."""
    import json

    if marker.exists():
        kept = {k: v for k, v in json.loads(marker.read_text()).items() if k != "sent_below"}
        marker.write_text(json.dumps(kept))


def _creates(ledger: dict[str, object]) -> int:
    made = ledger["creates"]
    assert isinstance(made, dict)
    return len(made)


# The loops the CLI may run on; where uvloop cannot be imported it runs on asyncio (_loop.py).
LOOPS = {"uvloop": "", "asyncio": "sys.modules['uvloop'] = None\n"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_local(n: int = 2000, jobs: int = 4) -> list[list[Cell]]:
    """Each bulk row runs the CLI in a fresh process on one of :data:`LOOPS`; CPU is that of
    the whole run (bulk and its jobs: the jobs cost the same on every row)."""
    if shutil.which("parallel") is None:
        msg = "GNU parallel is not installed (apt-get install parallel)"
        raise SystemExit(msg)
    folder = Path(tempfile.mkdtemp(prefix="bulk-local-"))
    config = folder / "run.toml"
    config.write_text(
        textwrap.dedent(
            f"""
        [run]
        name = "local"
        [sweep]
        grid.i = {{range = [0, {n}]}}
        [limits]
        max_active = {jobs}
        [job]
        command = "true"
        """
        )
    )
    cpu = _children_cpu()
    peer = time.perf_counter()
    subprocess.run(  # noqa: S602 - the peer is a shell pipeline of fixed programs and integers
        f"seq 0 {n - 1} | parallel -j{jobs} --joblog {folder / 'joblog'} true",
        shell=True,
        check=True,
        env={**os.environ, "PARALLEL_HOME": str(folder / ".parallel")},
    )
    peer, cpu = time.perf_counter() - peer, _children_cpu() - cpu
    rows: list[list[Cell]] = []
    for loop, prelude in LOOPS.items():
        shutil.rmtree(folder / ".bulk", ignore_errors=True)
        code = f"import sys\n{prelude}from bulk._cli import main\nsys.exit(main(sys.argv[1:]))"
        bulk_cpu, wall = _children_cpu(), time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, "run", str(config)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        bulk_cpu, wall = _children_cpu() - bulk_cpu, time.perf_counter() - wall
        rows.append(
            [
                f"bulk run, local backend, {jobs} at a time, {loop}",
                n,
                n / wall,
                Ratio(peer / wall),
                bulk_cpu / n * 1e3,
            ]
        )
    shutil.rmtree(folder)
    peer_row: list[Cell] = [f"peer: GNU parallel -j{jobs} --joblog", n, n / peer, Ratio(1.0)]
    return [*rows, [*peer_row, cpu / n * 1e3]]


SECTIONS = ("overhead", "journal", "resume", "local", "lost")


def tables(opts: Options, which: frozenset[str] = frozenset(SECTIONS)) -> list[Table]:
    """The chosen sections' tables, each measured ``opts.rounds`` times."""
    q = opts.quick
    specs: dict[str, tuple[str, list[str], Callable[[], list[list[Cell]]]]] = {
        "overhead": (
            "engine overhead with a no-op backend",
            ["what", "jobs", "jobs/s", "CPU µs per job"],
            lambda: bench_overhead(500 if q else 100_000),
        ),
        "journal": (
            "journal commit rate (WAL, synchronous=FULL on both)",
            ["what", "records", "commits", "records/s"],
            lambda: bench_journal(500 if q else 100_000),
        ),
        "resume": (
            "resume to the first new job",
            ["what", "seconds"],
            lambda: bench_resume(10_000 if q else 1_000_000),
        ),
        "local": (
            "local backend vs GNU parallel, the same trivial command (true)",
            ["what", "jobs", "jobs/s", "vs GNU parallel", "CPU ms per job"],
            lambda: bench_local(50 if q else 2000),
        ),
        "lost": (
            "resume on a service without unique names (Gongji simulator, default limits)",
            ["what", "s to the first create", "s to the 10th create", "search requests"],
            lambda: bench_lost(10_000 if q else 1_000_000),
        ),
    }
    out = []
    for name in SECTIONS:
        if name in which:
            title, headers, measure = specs[name]
            table = Table(f"engine.{name}", title, headers)
            table.rows, table.rounds = rounds(opts.rounds, measure)
            out.append(table)
    return out


def main() -> None:
    which = frozenset(sys.argv[1:]) or frozenset(SECTIONS)
    for table in tables(Options(), which):
        print_table(table)


if __name__ == "__main__":
    main()
