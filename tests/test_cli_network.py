"""The real `bulk` command against simulators that misbehave on the network.

- A service that echoes every request (token, signature) in its error answers: nothing that
  bulk stores or shows holds a secret.
- A service that cannot be reached: within the budget the run waits (and goes on once the
  service appears); past it, the run stops with exit code 3 and every row kept for a rerun.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bulk._cli import main
from bulk._journal import Journal, Record, State
from bulk.testing import simulator

pytestmark = pytest.mark.slow

BULK = [sys.executable, "-m", "bulk"]
DATA = Path(__file__).parent / "data"
TOKEN = "a0e13fe1-5626-4c05-926b-20f586c69102-20240821144204"
SIGNATURE = re.compile(rb"[A-Za-z0-9+/]{200,}={0,2}")  # an RSA-2048 signature is 344 chars


def bulk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*BULK, *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ledger(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, object] = json.load(response)
    return data


def closed_port() -> int:
    """A port nothing listens on (the OS's choice, closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", ["gongji", "stub", "ray", "yuanrong"])
def test_an_echoing_service_leaks_no_secret(
    kind: str, tmp_path: Path, fake_pushgateway: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    """Half the answers echo the request: run (its JSON event log, the metrics it pushed),
    status, export and the run directory hold neither the token nor any signature, and the
    echoes were stored, redacted."""
    gateway, pushed = fake_pushgateway
    rows = 30
    if kind == "gongji":
        sim_args = ["--rsa-token", f"{TOKEN}={DATA / 'test-key.pub.pem'}", "--pending-s", "0"]
        sim_args += ["--run-s", "0.05"]
        backend = f'private_key_file = "{DATA / "test-key-pkcs1.pem"}"\n'
        job = 'template_file = "job.json"'
        from bulk._sim.gongji import sample_body

        (tmp_path / "job.json").write_bytes(sample_body("{_name}"))
        env = {"GONGJI_TOKEN": TOKEN + "\n"}  # as `echo $TOKEN > file` leaves it
        ledger_path = "/_sim/ledger"
    elif kind in ("ray", "yuanrong"):  # Authorization: Bearer / X-Auth
        sim_args = ["--token", TOKEN, "--pending-s", "0", "--run-s", "0.05"]
        backend = 'token_env = "JOBS_TOKEN"\n'
        job = (
            'entrypoint = "python job.py {i}"\nruntime_env = {working_dir = "gcs://_ray_pkg_0.zip"}'
        )
        env = {"JOBS_TOKEN": TOKEN}
        ledger_path = "/_sim/ledger"
    else:
        sim_args = ["--token", TOKEN, "--run-s", "0.05"]
        backend = 'token_env = "STUB_TOKEN"\n'
        job = 'work = "{i}"'
        env = {"STUB_TOKEN": TOKEN}
        ledger_path = "/ledger"
    with simulator(kind, *sim_args, "--echo-rate", "0.5", "--seed", "5") as url:
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\nname = "echo"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
            f'[backend]\nkind = "{kind}"\nurl = "{url}"\n{backend}'
            "[limits]\nsubmit_rate_per_s = 200\nstatus_rate_per_s = 50\n"
            "[retry]\nattempts = 1\nbase_s = 0.01\n"  # an echo on a create is given up at once
            "[track]\nfirst_s = 0.1\nmax_s = 0.2\n"
            f"[job]\n{job}\n"
        )
        run = bulk("run", str(config), "--log-format", "json", "--pushgateway", gateway, env=env)
        echoed = ledger(url + ledger_path)["echoed"]
    status = bulk("status", str(config), "--json")
    csv_export = bulk("export", str(config))
    jsonl_export = bulk("export", str(config), "--format", "jsonl")
    report = bulk("report", str(config))  # written into the run folder, read below
    files = [p.read_bytes() for p in (tmp_path / ".bulk").rglob("*") if p.is_file()]

    assert 1 == run.returncode, run.stderr.decode()
    assert isinstance(echoed, int)
    assert echoed > 0
    assert 0 == report.returncode, report.stderr.decode()
    html = (tmp_path / ".bulk" / "echo" / "report.html").read_bytes()
    assert b"[redacted]" in html  # the echoes it lists, and the token's variable
    outputs = [run.stderr, run.stdout, status.stdout, csv_export.stdout, jsonl_export.stdout]
    outputs += [body for _, _, body in pushed]
    assert b"bulk_jobs_total" in pushed[-1][2]
    events = [json.loads(line) for line in run.stderr.splitlines()]
    assert {"run_start", "job_unknown", "run_end"} <= {e["event"] for e in events}
    for output in [*outputs, *files]:
        assert TOKEN.encode() not in output
        assert not SIGNATURE.search(output)
    errors = [f["error"] for f in json.loads(status.stdout)["failures"]]
    assert any("[redacted]" in e for e in errors), errors
    assert all(len(e) <= 1000 for e in errors)


def write_stub_config(folder: Path, port: int, *, budget_s: float, rows: int = 6) -> Path:
    config = folder / "run.toml"
    config.write_text(
        f'[run]\nname = "outage"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        f'[backend]\nkind = "stub"\nurl = "http://127.0.0.1:{port}"\ntimeout_s = 5\n'
        f"[retry]\nattempts = 2\nbudget_s = {budget_s}\nbase_s = 0.05\nmax_s = 0.2\n"
        "[track]\nfirst_s = 0.05\nmax_s = 0.2\n"
        '[job]\nwork = "{i}"\n'
    )
    return config


def test_an_unreachable_service_exits_3_then_a_rerun_waits_for_it(tmp_path: Path) -> None:
    """Nothing listening: past the budget, exit 3 with every row pending. Rerun with a longer
    budget: bulk waits, the service appears on that port, every row is sent once."""
    port = closed_port()
    config = write_stub_config(tmp_path, port, budget_s=0.5)

    gave_up = bulk("run", str(config))
    with Journal.open(tmp_path / ".bulk" / "outage" / "journal.sqlite") as journal:
        after_outage = journal.counts()

    assert 3 == gave_up.returncode, gave_up.stderr.decode()
    err = gave_up.stderr.decode()
    assert "the service could not be reached for 0.5s (retry.budget_s)" in err
    assert "Connection refused" in err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    # Pending; a request cut off as the run stopped may leave its row to be looked up.
    assert {"pending", "submitting"} >= after_outage.keys()
    assert 6 == sum(after_outage.values())

    write_stub_config(tmp_path, port, budget_s=120)  # retry policy may change on resume
    proc = subprocess.Popen(
        [*BULK, "run", str(config), "--progress-interval", "0.05"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # ends if bulk does: the assertion below then fails
        lines.append(line)
        if "service unreachable: waiting" in line:
            break
    with simulator("stub", "--run-s", "0.05", port=port) as url:
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
        creates = ledger(url + "/ledger")["creates"]
    proc.stderr.close()

    assert any("service unreachable: waiting" in line for line in lines), lines
    assert 0 == code, rest
    assert isinstance(creates, dict)
    assert (6, {1}) == (len(creates), set(creates.values()))


def test_stop_says_when_it_cannot_reach_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bulk stop` against a service that cannot be reached: exit 3, the jobs left running
    in the journal, and a message that says so."""
    config = write_stub_config(tmp_path, closed_port(), budget_s=0.3, rows=3)
    assert 3 == main(["run", str(config)])
    with Journal.open(tmp_path / ".bulk" / "outage" / "journal.sqlite") as journal:
        journal.apply([Record(i, State.RUNNING, attempt=1, remote_id=f"job-{i}") for i in range(3)])
    capsys.readouterr()

    assert 3 == main(["stop", str(config)])

    err = capsys.readouterr().err
    assert "could not be reached for 0.3s" in err
    assert "0 jobs stopped, 3 not: run bulk stop again" in err
    with Journal.open(tmp_path / ".bulk" / "outage" / "journal.sqlite") as journal:
        assert {"running": 3} == journal.counts()


def test_gongji_resources_exits_3_when_the_service_cannot_be_reached(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-off read that cannot reach the service waits for it within retry.budget_s (as a
    run does), then says so, with exit code 3 (not 2: nothing is wrong with the config)."""
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nname = "list"\n[sweep]\ngrid.i = [1]\n[backend]\nkind = "gongji"\n'
        f'url = "http://127.0.0.1:{closed_port()}"\n'
        "[retry]\nattempts = 2\nbase_s = 0.01\nbudget_s = 0.5\n"
        '[job]\ntask_name = "{_name}"\n'
    )
    monkeypatch.setenv("GONGJI_TOKEN", "simple-token")

    assert 3 == main(["gongji", "resources", str(config)])

    err = capsys.readouterr().err
    assert "bulk: error: cannot connect to http://127.0.0.1:" in err
    assert "Connection refused" in err
    # While it waited, it said so (once), and for how long at most.
    assert 1 == caplog.text.count("waiting up to 0.5 s for the service (retry.budget_s)")
