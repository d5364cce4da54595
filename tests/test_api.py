"""The library entry points: ``bulk.plan()`` and ``bulk.run()`` do what ``bulk plan`` and
``bulk run`` do, return values instead of printing, and ``import bulk`` stays light."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bulk
from bulk._journal import Journal


def write_config(folder: Path, rows: int, command: str, name: str = "api") -> Path:
    config = folder / "run.toml"
    config.write_text(
        f'[run]\nname = "{name}"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        f"[limits]\nmax_active = 2\n[job]\ncommand = {json.dumps(command)}\n"
    )
    return config


def journal_rows(config: Path, name: str = "api") -> list[tuple[int, str, int]]:
    with Journal.open(config.parent / ".bulk" / name / "journal.sqlite") as journal:
        return [(j.index, j.state.value, j.attempt) for j in journal.iter_jobs()]


class TestPlan:
    def test_returns_the_count_and_the_first_rendered_jobs(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, 7, "echo {i}")

        plan = bulk.plan(config, samples=2)

        assert 7 == plan.total
        assert [(0, {"i": 0}), (1, {"i": 1})] == [(p.index, p.variables) for p, _ in plan.samples]
        assert [{"command": "echo 0"}, {"command": "echo 1"}] == [b for _, b in plan.samples]
        assert config == plan.config.path
        assert not (tmp_path / ".bulk").exists()  # planning sends and creates nothing

    def test_accepts_a_loaded_config_and_streams_every_job(self, tmp_path: Path) -> None:
        cfg = bulk.load(write_config(tmp_path, 5, "echo {i}"))
        seen: list[tuple[int, Any]] = []

        plan = bulk.plan(cfg, on_job=lambda point, body: seen.append((point.index, body)))

        assert cfg is plan.config
        assert [(i, {"command": f"echo {i}"}) for i in range(5)] == seen

    def test_raises_with_every_problem_of_the_sweep(self, tmp_path: Path) -> None:
        config = tmp_path / "run.toml"
        config.write_text(
            '[run]\nname = "bad"\n[sweep]\ngrid.t = [-1, 1, -2]\n'
            '[job]\ncommand = "true"\ntimeout_s = "{t}"\n'
        )

        with pytest.raises(bulk.InputErrors) as caught:
            bulk.plan(config)

        assert [
            f"{config}: sweep: job.timeout_s: -1 must be greater than 0",
            f"{config}: sweep: job.timeout_s: -2 must be greater than 0",
            f"3 jobs in run bad (backend local) from {config}: 2 problems; nothing was sent",
        ] == caught.value.lines()


class TestRun:
    def test_runs_a_local_sweep_to_the_end(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, 6, "echo {i} > out-{i}.txt")

        summary = bulk.run(config)

        assert summary.ok
        assert ("api", {"succeeded": 6}, 6) == (summary.run, summary.counts, summary.total)
        assert [f"{i}\n" for i in range(6)] == [
            (tmp_path / f"out-{i}.txt").read_text() for i in range(6)
        ]

    def test_reports_failed_jobs_without_raising(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, 4, "test {i} -lt 3")

        summary = bulk.run(config)

        assert not summary.ok
        assert {"succeeded": 3, "failed": 1} == summary.counts

    def test_a_bad_config_raises_and_creates_nothing(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, 2, "echo {nope}")

        with pytest.raises(bulk.InputErrors):
            bulk.run(config)

        assert [] == list((tmp_path / ".bulk").glob("*/journal.sqlite"))

    def test_registers_its_metrics_where_asked(self, tmp_path: Path) -> None:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        bulk.run(write_config(tmp_path, 3, "true"), registry=registry)

        names = {metric.name for metric in registry.collect()}
        assert any(name.startswith("bulk_") for name in names), names

    def test_resumes_a_run_interrupted_in_another_process(self, tmp_path: Path) -> None:
        """Ctrl-C stops a bulk.run() in a program; the next bulk.run() finishes the same run
        (attempt 1: resumed, not restarted) and every job ends succeeded once."""
        rows = 60  # 2 at a time, 0.1 s each: seconds left to interrupt it in
        config = write_config(tmp_path, rows, "sleep 0.1; echo {i} >> done.log")
        done = tmp_path / "done.log"
        program = f"import bulk\nbulk.run({str(config)!r})\n"
        proc = subprocess.Popen(
            [sys.executable, "-c", program], cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        try:
            for _ in range(3000):  # bounded: the first jobs end well within a minute
                if done.exists() and len(done.read_text().splitlines()) >= 4:
                    break
                assert proc.poll() is None, "the run ended before it was interrupted"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        interrupted = journal_rows(config)

        summary = bulk.run(config)

        assert proc.returncode == -signal.SIGINT, err  # KeyboardInterrupt, as Python does
        assert 0 < sum(state == "succeeded" for _, state, _ in interrupted) < rows
        assert summary.ok
        assert {"succeeded": rows} == summary.counts
        assert [(i, "succeeded", 1) for i in range(rows)] == journal_rows(config)
        assert set(range(rows)) == {int(line) for line in done.read_text().split()}


def test_import_bulk_loads_no_http_rsa_or_terminal_module() -> None:
    """``import bulk`` (and a program that only loads and plans) loads neither aiohttp, the
    RSA signing, rich, the event loop nor the metrics: a local run does not need them."""
    code = "import sys, bulk\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    loaded = set(out.stdout.split())

    heavy = {"aiohttp", "yarl", "multidict", "cryptography", "rich", "anyio", "prometheus_client"}
    assert set() == heavy & loaded
