"""Against a real loopback Ray head (``pytest -m ray_head``): the head itself, then bulk's
``ray`` backend end to end.

The head is shared by the session (it takes ~1 GB and several seconds to start); each test
uses job names of its own and leaves no running job behind.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulk._cli import main
from bulk._rayhead import RayHead, _head_pids
from bulk.backends.ray import RayBackend
from bulk.testing import wait_until, wait_until_sync

pytestmark = [pytest.mark.ray_head, pytest.mark.timeout(300)]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


async def test_a_job_sent_with_plain_http_runs_to_its_end(ray_url: str) -> None:
    """The head works through its REST API alone: POST a job, poll it until it ends."""
    sid = f"http-{uuid.uuid4().hex[:8]}"
    body = {"entrypoint": "python -c 'print(6 * 7)'", "submission_id": sid}
    async with aiohttp.ClientSession(ray_url) as http:
        async with http.post("/api/jobs/", json=body) as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["submission_id"] == sid

        async def status() -> dict[str, object]:
            async with http.get(f"/api/jobs/{sid}") as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json()  # type: ignore[no-any-return]

        job = await wait_until(
            status, lambda j: j["status"] in TERMINAL, what=f"{sid} ends", interval_s=0.25,
            polls=240,
        )  # fmt: skip
        assert job["status"] == "SUCCEEDED", job
        async with http.get(f"/api/jobs/{sid}/logs") as answer:
            assert "42" in (await answer.json())["logs"]
        async with http.delete(f"/api/jobs/{sid}") as answer:
            assert (await answer.json()) == {"deleted": True}


def _listening(pids: set[int]) -> list[str]:
    """``address:port`` of every TCP socket the processes listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            links = [str(fd.readlink()) for fd in fds.iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr, port = fields[1].split(":")
                found.append(f"{_address(addr)}:{int(port, 16)}")
    return found


def _address(hex_addr: str) -> str:
    """/proc/net's address: 32-bit words in host (little-endian) order; ``::ffff:a.b.c.d``
    shown as ``a.b.c.d``."""
    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    ip = ipaddress.ip_address(raw)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def test_every_listener_of_the_head_is_on_loopback(real_ray_head: RayHead) -> None:
    """The recipe's point (api/ray.md §1.2): no port of any head process is reachable from
    outside this machine."""
    listening = _listening(_head_pids(real_ray_head.pid))
    assert any(a.endswith(f":{real_ray_head.url.rsplit(':', 1)[1]}") for a in listening)
    assert listening
    outside = [a for a in listening if not ipaddress.ip_address(a.rsplit(":", 1)[0]).is_loopback]
    assert not outside, f"listening beyond loopback: {outside}"


# ---- bulk's ray backend against the head ---------------------------------------------------

# A job's work: prints its row (for `bulk logs`), exits 3 on row 7 (a failure with its code).
TASK = """import sys
i = int(sys.argv[1])
print(f"row {i} ran in", __file__)
sys.exit(3 if i == 7 else 0)
"""


def _config(folder: Path, url: str, run: str, rows: int, job: str, extra: str = "") -> Path:
    config = folder / f"{run}.toml"
    config.write_text(
        f"""
[run]
name = "{run}"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "ray"
url = "{url}"
delete_finished = false  # the tests compare Ray's own job list with the journal
{extra}
[limits]
max_active = 4  # a 2-core head starts ~1 job/s: more at once only time out (api/ray.md §1.6)
[track]
first_s = 0.5
max_s = 1.0
[job]
{job}
"""
    )
    return config


def _ray_jobs(url: str, run: str) -> list[dict[str, Any]]:
    """Ray's own list of the run's jobs (``GET /api/jobs/``)."""
    with urllib.request.urlopen(f"{url}/api/jobs/", timeout=30) as answer:
        jobs: list[dict[str, Any]] = json.loads(answer.read())
    return [j for j in jobs if str(j.get("submission_id")).startswith(f"{run}-")]


def _exported(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["export", "--format", "jsonl", str(config)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _bulk(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulk", *args], cwd=cwd, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_sweep_with_a_local_working_dir_uploaded_once(
    ray_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """12 jobs run from one local folder, zipped and PUT once; row 7 fails with its exit code
    in the reason; ``bulk logs`` prints a job's output from the head."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "task.py").write_text(TASK)
    calls: list[tuple[str, str]] = []
    original = RayBackend._request

    async def spy(self: RayBackend, method: str, target: str, **kwargs: Any) -> Any:
        calls.append((method, target))
        return await original(self, method, target, **kwargs)

    monkeypatch.setattr(RayBackend, "_request", spy)
    config = _config(
        tmp_path, ray_url, "rh-sweep", 12,
        'entrypoint = "python task.py {i}"\nruntime_env = {working_dir = "work"}',
    )  # fmt: skip
    assert main(["run", str(config)]) == 1  # one job failed
    puts = [t for m, t in calls if m == "PUT"]
    assert len(puts) == 1, puts
    assert puts[0].startswith("/api/packages/gcs/_ray_pkg_")
    assert sum(m == "POST" and t == "/api/jobs/" for m, t in calls) == 12

    rows = {r["index"]: r for r in _exported(config, capsys)}
    assert {r["state"] for i, r in rows.items() if i != 7} == {"succeeded"}, [
        (i, r["error"]) for i, r in rows.items() if r["state"] != "succeeded"
    ]
    assert rows[7]["state"] == "failed"
    assert "exit code 3" in rows[7]["error"]
    ray = {j["submission_id"]: j for j in _ray_jobs(ray_url, "rh-sweep")}
    assert set(ray) == {r["name"] for r in rows.values()}
    assert {j["runtime_env"]["working_dir"] for j in ray.values()} == {
        "gcs://" + puts[0].rsplit("/", 1)[1]
    }

    assert main(["logs", str(config), "4"]) == 0
    assert "row 4 ran in" in capsys.readouterr().out


def test_a_job_sent_by_hand_under_a_rows_name_is_adopted(
    ray_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray answers a second create of an id with HTTP 500 "already exists": bulk counts the
    job already there as its own, and sends nothing else for that row."""
    config = _config(tmp_path, ray_url, "rh-dup", 2, 'entrypoint = "echo bulk {i}"')
    assert main(["plan", "--json", str(config)]) == 0
    key = json.loads(capsys.readouterr().out.splitlines()[0])["key"]
    name = f"rh-dup-{key}"
    body = json.dumps({"entrypoint": "echo by hand", "submission_id": name}).encode()
    request = urllib.request.Request(
        f"{ray_url}/api/jobs/", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.loads(answer.read())["submission_id"] == name

    assert main(["run", str(config)]) == 0
    ray = {j["submission_id"]: j for j in _ray_jobs(ray_url, "rh-dup")}
    assert len(ray) == 2
    assert ray[name]["entrypoint"] == "echo by hand"  # the hand-made job, not a new one
    assert {r["state"] for r in _exported(config, capsys)} == {"succeeded"}


def test_bulk_stop_stops_running_jobs(
    ray_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, ray_url, "rh-stop", 2, 'entrypoint = "sleep 120"')
    run = _bulk("run", str(config), cwd=tmp_path)
    try:
        wait_until_sync(
            lambda: [j["status"] for j in _ray_jobs(ray_url, "rh-stop")],
            lambda states: states == ["RUNNING", "RUNNING"],
            what="both jobs run on the head", polls=400, interval_s=0.25,
        )  # fmt: skip
        run.send_signal(signal.SIGINT)  # Ctrl-C: bulk stop refuses while a run holds the run
        assert run.wait(timeout=60) == 130
    finally:
        run.kill()
        run.wait()
        assert run.stderr is not None
        run.stderr.close()
    assert main(["stop", str(config)]) == 0  # every job the run had running is stopped
    assert {r["state"] for r in _exported(config, capsys)} == {"stopped"}
    ray = wait_until_sync(
        lambda: _ray_jobs(ray_url, "rh-stop"),
        lambda jobs: all(j["status"] == "STOPPED" for j in jobs),
        what="Ray says both stopped", polls=240, interval_s=0.25,
    )  # fmt: skip
    assert len(ray) == 2


def test_kill_9_of_bulk_run_then_resume_sends_each_name_once(
    ray_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL ``bulk run`` once the head holds some of its jobs; the same command resumes,
    and Ray's own job list then holds exactly the journal's names, one job each, all ended."""
    rows = 10
    config = _config(tmp_path, ray_url, "rh-kill", rows, 'entrypoint = "echo {i}"')
    run = _bulk("run", str(config), cwd=tmp_path)
    try:
        wait_until_sync(
            lambda: len(_ray_jobs(ray_url, "rh-kill")), lambda n: n >= 3,
            what="the head holds 3 of the run's jobs", polls=400, interval_s=0.05,
        )  # fmt: skip
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert run.stderr is not None
        run.stderr.close()
    resumed = _bulk("run", str(config), cwd=tmp_path)
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err.decode()
    assert b"resuming run rh-kill" in err

    exported = _exported(config, capsys)
    assert len(exported) == rows
    assert {r["state"] for r in exported} == {"succeeded"}
    ray = _ray_jobs(ray_url, "rh-kill")
    names = [j["submission_id"] for j in ray]
    assert sorted(names) == sorted(r["name"] for r in exported)  # one job per name
    assert {r["remote_id"] for r in exported} == set(names)
    assert {j["status"] for j in ray} == {"SUCCEEDED"}
