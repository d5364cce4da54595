"""bulk's metrics read by a real Prometheus: scraped from ``--metrics-port``, and pushed to a
real Pushgateway with ``--pushgateway``.

Debian's ``prometheus`` and ``prometheus-pushgateway`` run on 127.0.0.1 on free ports, each
with its own data in the test's folder, and are stopped by their process at the end. Without
them (a developer's machine) the tests skip, saying so; with ``CI`` set they fail instead
(``.ci/run`` installs the packages).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from bulk._version import __version__
from bulk.testing import wait_until_sync

pytestmark = pytest.mark.slow

PROMETHEUS, PUSHGATEWAY = "prometheus", "prometheus-pushgateway"
BULK = [sys.executable, "-m", "bulk"]
ROWS = 5
# Every bounded wait below: 600 polls 0.05 s apart, half a minute on a loaded machine.
POLLS, POLL_S = 600, 0.05


def free_port() -> int:
    """A port nothing listens on now (the OS's choice, closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def get(url: str) -> bytes | None:
    """The body of a GET, or None while the server is not (yet) answering."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


@dataclass
class Stack:
    """A running Prometheus and Pushgateway, and the port Prometheus scrapes for bulk."""

    prometheus: str
    pushgateway: str
    bulk_port: int

    def query(self, promql: str) -> float | None:
        """The value of an instant query with one series in its answer (None: no series)."""
        body = get(f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if body is None:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def wait_for(self, promql: str, value: float) -> None:
        """Poll the query until Prometheus answers ``value`` (bounded)."""
        wait_until_sync(
            lambda: self.query(promql),
            lambda answer: answer == value,
            what=f"{promql} == {value}",
            polls=POLLS,
            interval_s=POLL_S,
        )


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started, by its pid: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    missing = [name for name in (PROMETHEUS, PUSHGATEWAY) if shutil.which(name) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}: the real-Prometheus tests must run")
        pytest.skip(reason)
    bulk_port, gateway_port, prometheus_port = free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: bulk-run\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{bulk_port}']}}]\n"
        "  - job_name: pushgateway\n"
        "    honor_labels: true\n"  # keep the job and run labels bulk pushed
        f"    static_configs: [{{targets: ['127.0.0.1:{gateway_port}']}}]\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            start(
                [
                    PUSHGATEWAY,
                    f"--web.listen-address=127.0.0.1:{gateway_port}",
                    f"--persistence.file={tmp_path / 'pushgateway.data'}",
                ],
                tmp_path / "pushgateway.log",
            )
        )
        processes.append(
            start(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        found = Stack(
            f"http://127.0.0.1:{prometheus_port}", f"http://127.0.0.1:{gateway_port}", bulk_port
        )
        for url in (f"{found.prometheus}/-/ready", f"{found.pushgateway}/-/ready"):
            wait_until_sync(partial(get, url), what=url, polls=POLLS, interval_s=POLL_S)
        yield found
    finally:
        for process in processes:
            stop(process)


def test_prometheus_scrapes_a_live_run(stack: Stack, tmp_path: Path) -> None:
    """A run's --metrics-port, scraped by Prometheus while its jobs wait: once the ROWS jobs
    are let go, Prometheus reads ROWS succeeded (one more job holds the run open until then)."""
    go, end = tmp_path / "go", tmp_path / "end"
    config = tmp_path / "run.toml"
    gate = f"if [ {{i}} -lt {ROWS} ]; then g={go}; else g={end}; fi"
    wait = f"{gate}; while [ ! -e $g ]; do sleep 0.05; done"  # the job's wait, not the test's
    config.write_text(
        f'[run]\nname = "scraped"\n[sweep]\ngrid.i = {{range = [0, {ROWS + 1}]}}\n'
        f'[backend]\nkind = "local"\n[limits]\nmax_active = {ROWS + 1}\n'
        f"[job]\ncommand = {json.dumps(['sh', '-c', wait])}\n"
    )
    run = subprocess.Popen(
        [
            *BULK,
            "run",
            str(config),
            "--metrics-port",
            str(stack.bulk_port),
            "--progress-interval",
            "0",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        stack.wait_for('bulk_rows_total{job="bulk-run"}', ROWS + 1)  # scraped once at least
        stack.wait_for('bulk_jobs_active{job="bulk-run"}', ROWS + 1)
        go.touch()
        stack.wait_for('bulk_jobs_total{job="bulk-run",state="succeeded"}', ROWS)
        info = f'bulk_info{{job="bulk-run",backend="local",version="{__version__}"}}'
        assert 1 == stack.query(info)
        assert (stack.query('bulk_run_start_time_seconds{job="bulk-run"}') or 0) > 0
        end.touch()
        _, err = run.communicate(timeout=60)
    finally:
        end.touch()
        stop(run)
    assert 0 == run.returncode, err.decode()


def test_prometheus_reads_a_pushed_run(stack: Stack, tmp_path: Path) -> None:
    """A run too short to be scraped pushes to the Pushgateway: Prometheus reads its final
    counts there, labelled with the run."""
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nname = "pushed"\n[sweep]\ngrid.i = {{range = [0, {ROWS}]}}\n'
        '[backend]\nkind = "local"\n[job]\ncommand = ["true"]\n'
    )

    run = subprocess.run(
        [*BULK, "run", str(config), "--pushgateway", stack.pushgateway],
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert 0 == run.returncode, run.stderr.decode()
    assert b"Pushgateway" not in run.stderr  # no warning: every push went through
    stack.wait_for('bulk_jobs_total{job="bulk",run="pushed",state="succeeded"}', ROWS)
    assert 1 == stack.query('bulk_info{job="bulk",run="pushed",backend="local"}')
