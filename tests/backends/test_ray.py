"""The ``ray`` backend against ``bulk sim ray``: Ray's quirks (api/ray.md), delete_finished,
working_dir packages, ``bulk logs``, and exactly-once through kill -9."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from bulk._cli import main
from bulk._journal import Journal
from bulk._problems import Problems
from bulk._sim.ray import RAY, RaySim, RaySimConfig, make_app
from bulk.backends.base import JobStatus, Phase, Receipt, Submission
from bulk.backends.ray import (
    KIND,
    LIST_FROM,
    LIST_PER_GET,
    DeletingRayBackend,
    RayBackend,
    RayOptions,
    _package,
    failure_reason,
    pack,
)
from bulk.backends.ray._jobs import last_line
from bulk.errors import AuthenticationError, PermanentBackendError, TransientBackendError
from bulk.testing import simulator, wait_until, wait_until_sync


@pytest.fixture
async def head() -> AsyncIterator[tuple[RayBackend, RaySim]]:
    app = make_app(RaySimConfig(pending_s=0.0, run_s=0.0, cpus=1.0, list_cost_s=0.0))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    backend = RayBackend(RayOptions(url=str(server.make_url("")).rstrip("/")))
    try:
        yield backend, app[RAY]
    finally:
        await backend.aclose()
        await server.close()


async def settle(backend: RayBackend, receipt: Receipt) -> JobStatus:
    async def status() -> JobStatus:
        return (await backend.status([receipt]))[receipt.remote_id]

    return await wait_until(status, lambda s: s.phase.terminal, what="the job ends", polls=100)


def sub(name: str, body: dict[str, object]) -> Submission:
    return Submission(name, orjson.dumps(body))


async def test_duplicate_id_answered_500_already_exists_is_the_job(
    head: tuple[RayBackend, RaySim],
) -> None:
    backend, sim = head
    first = await backend.submit(sub("r-dup", {"entrypoint": "sleep 5"}))
    again = await backend.submit(sub("r-dup", {"entrypoint": "sleep 5"}))
    assert first == again == Receipt("r-dup", "r-dup")
    assert {"r-dup": 1} == sim.creates


async def test_refusal_keeps_the_tracebacks_last_line(head: tuple[RayBackend, RaySim]) -> None:
    backend, _ = head
    with pytest.raises(PermanentBackendError) as caught:
        await backend.submit(sub("r-bad", {"entrypoint": "true", "foo": 1}))
    assert str(caught.value).endswith("unexpected keyword argument 'foo'")
    assert "Traceback" not in str(caught.value)


async def test_status_per_job_for_few_one_list_for_many(head: tuple[RayBackend, RaySim]) -> None:
    backend, sim = head
    receipts = [await backend.submit(sub(f"r-{i}", {"entrypoint": "true"})) for i in range(20)]
    await backend.status(receipts[: LIST_FROM - 1])
    assert 0 == sim.list_calls
    answers = await backend.status(receipts[:LIST_FROM])
    assert 1 == sim.list_calls
    assert set(answers) == {r.remote_id for r in receipts[:LIST_FROM]}


async def test_a_big_head_is_listed_only_for_many_jobs(head: tuple[RayBackend, RaySim]) -> None:
    """The list costs more the more jobs the head holds: with 120 held, 16 jobs are asked
    about one by one, and only 120 // LIST_PER_GET at once by one list call."""
    backend, sim = head
    receipts = [await backend.submit(sub(f"r-{i}", {"entrypoint": "true"})) for i in range(120)]
    await backend.status(receipts[:LIST_FROM])
    assert 0 == sim.list_calls
    await backend.status(receipts[: 120 // LIST_PER_GET])
    assert 1 == sim.list_calls


async def test_failure_reason_from_exit_code_and_error_type(
    head: tuple[RayBackend, RaySim],
) -> None:
    backend, _ = head
    receipt = await backend.submit(sub("r-fail", {"entrypoint": "exit 3"}))
    status = await settle(backend, receipt)
    assert Phase.FAILED == status.phase
    assert status.reason is not None
    assert status.reason.startswith("exit code 3 (JOB_ENTRYPOINT_COMMAND_ERROR): Job entrypoint")
    assert "exit code 127" == failure_reason({"driver_exit_code": 127})


async def test_stop_of_a_job_pending_for_resources_is_not_a_stop(
    head: tuple[RayBackend, RaySim],
) -> None:
    backend, _ = head
    await backend.submit(sub("r-hog", {"entrypoint": "sleep 60", "entrypoint_num_cpus": 1}))
    waiting = await backend.submit(
        sub("r-wait", {"entrypoint": "sleep 60", "entrypoint_num_cpus": 1})
    )
    with pytest.raises(PermanentBackendError, match="bulk keeps tracking it"):
        await backend.stop(waiting)
    assert Phase.QUEUED == (await backend.status([waiting]))["r-wait"].phase


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / ".git").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "main.py").write_text("print(1)\n")
    (tmp_path / "pkg" / ".git" / "HEAD").write_text("x")
    (tmp_path / "pkg" / "__pycache__" / "m.pyc").write_text("x")
    (tmp_path / "pkg" / "big.log").write_text("x")
    return tmp_path


def test_packages_are_deterministic(folder: Path) -> None:
    first = pack(folder / "pkg", ["*.log"])
    (folder / "pkg" / "main.py").touch()  # a new mtime: the same zip
    assert first == pack(folder / "pkg", ["*.log"])
    assert first != pack(folder / "pkg")


async def test_local_working_dir_is_uploaded_once(
    head: tuple[RayBackend, RaySim], folder: Path
) -> None:
    backend, sim = head
    tmp_path = folder
    backend._options = RayOptions(base=tmp_path)  # a relative working_dir is the config's
    env = {"working_dir": "pkg", "excludes": ["*.log"]}
    for i in range(3):
        await backend.submit(sub(f"r-wd-{i}", {"entrypoint": "true", "runtime_env": env}))
    [name] = sim.uploads
    assert {name: 1} == sim.uploads
    assert name.startswith("_ray_pkg_")
    assert f"gcs://{name}" == sim.jobs["r-wd-0"].body["runtime_env"]["working_dir"]
    names = zipfile.ZipFile(BytesIO(sim.packages[name])).namelist()
    assert ["main.py"] == names
    status = await settle(backend, Receipt("r-wd-0", "r-wd-0"))
    assert Phase.SUCCEEDED == status.phase


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entrypoint": "x", "entrypoint_memory": 2**50}, "job.entrypoint_memory"),
        ({"entrypoint": "x", "entrypoint_memory": 1.5}, "job.entrypoint_memory"),
        ({"entrypoint": "x", "foo": 1}, "job.foo"),
        ({"entrypoint": "x", "metadata": {"a": 1}}, "job.metadata.a"),
        ({"entrypoint": "x", "entrypoint_resources": {"NPU": "1"}}, "job.entrypoint_resources.NPU"),
        ({"entrypoint": "x", "runtime_env": {"env_vars": {"A": 1}}}, "job.runtime_env.env_vars.A"),
        ({"entrypoint": "x", "entrypoint_num_cpus": -1}, "job.entrypoint_num_cpus"),
        ({"entrypoint": 123}, "job.entrypoint"),
    ],
)
def test_bodies_ray_would_refuse_or_misrun_are_refused(body: dict[str, object], field: str) -> None:
    problems = Problems()
    KIND.validate(body, problems)
    assert field in [p.field for p in problems.items]


def run_config(folder: Path, url: str, rows: int, extra: str = "") -> Path:
    config = folder / "run.toml"
    config.write_text(
        f"""
[run]
name = "ray-t"
[sweep]
grid.i = {{range = [0, {rows}]}}
[backend]
kind = "ray"
url = "{url}"
{extra}
[retry]
base_s = 0.01
max_s = 0.2
attempts = 20
[track]
first_s = 0.05
max_s = 0.2
[job]
entrypoint = "exit {{i}}"
"""
    )
    return config


def ledger(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/_sim/ledger", timeout=10) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


def creates(url: str) -> dict[str, int]:
    """The simulator's creates per submission id."""
    found = ledger(url)["creates"]
    assert isinstance(found, dict)
    return found


def test_run_deletes_each_job_once_its_end_is_journaled(tmp_path: Path) -> None:
    with simulator("ray", "--pending-s", "0", "--run-s", "0") as url:
        config = run_config(tmp_path, url, 6)
        code = main(["run", str(config)])
        book = ledger(url)
    assert 1 == code  # exit 1..5 fail
    assert 6 == book["deletes"]
    assert 0 == book["held"]
    with Journal.open(tmp_path / ".bulk" / "ray-t" / "journal.sqlite") as journal:
        assert {"succeeded": 1, "failed": 5} == journal.counts()


def test_logs_of_a_ray_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with simulator("ray", "--pending-s", "0", "--run-s", "0") as url:
        config = run_config(tmp_path, url, 2, "delete_finished = false")
        main(["run", str(config)])
        capsys.readouterr()
        assert 0 == main(["logs", str(config), "1"])
    assert "Running entrypoint for job ray-t-" in capsys.readouterr().out


def test_logs_of_a_deleted_ray_job_say_why_they_are_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with simulator("ray", "--pending-s", "0", "--run-s", "0") as url:
        config = run_config(tmp_path, url, 1)
        main(["run", str(config)])
        capsys.readouterr()
        assert 2 == main(["logs", str(config), "0"])
    [line] = capsys.readouterr().err.splitlines()
    assert "no longer has job ray-t-" in line
    assert "set delete_finished = false to read logs later" in line


def test_logs_of_a_local_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "loc"\n[sweep]\ngrid.i = [7]\n'
        '[job]\ncommand = "echo out-{i}; echo err >&2"\n'
    )
    assert 0 == main(["run", str(config)])
    capsys.readouterr()
    assert 0 == main(["logs", str(config), "0"])
    out = capsys.readouterr().out
    assert "out-7" in out
    assert "err" in out


def test_logs_where_the_service_keeps_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with simulator("stub") as url:
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\nname = "st"\n[sweep]\ngrid.i = [1]\n[backend]\nkind = "stub"\n'
            f'url = "{url}"\n[track]\nfirst_s = 0.05\n[job]\nx = "{{i}}"\n'
        )
        assert 0 == main(["run", str(config)])
        capsys.readouterr()
        assert 2 == main(["logs", str(config), "0"])
    [line] = capsys.readouterr().err.splitlines()
    assert "keeps no job logs" in line


@pytest.fixture
async def locked_head(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A head in token mode (token ``s3cret-token``)."""
    app = make_app(RaySimConfig(pending_s=0.0, run_s=0.0, token="s3cret-token"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong-token", 403)])
async def test_a_refused_token_stops_the_run(
    locked_head: str, monkeypatch: pytest.MonkeyPatch, token: str | None, status: int
) -> None:
    """No token (401) or a wrong one (403, Ray's answer) refuses the run, not one job."""
    if token is not None:
        monkeypatch.setenv("RAY_TOKEN", token)
    backend = RayBackend(RayOptions(url=locked_head, token_env="RAY_TOKEN" if token else None))
    try:
        with pytest.raises(AuthenticationError) as caught:
            await backend.submit(sub("r-auth", {"entrypoint": "true"}))
    finally:
        await backend.aclose()
    assert status == caught.value.status


async def test_the_right_token_is_sent_as_a_bearer(
    locked_head: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_TOKEN", "s3cret-token")
    backend = RayBackend(RayOptions(url=locked_head, token_env="RAY_TOKEN"))
    try:
        assert Receipt("r-ok", "r-ok") == await backend.submit(sub("r-ok", {"entrypoint": "true"}))
    finally:
        await backend.aclose()


async def test_the_simulator_keeps_rays_quirks(head: tuple[RayBackend, RaySim]) -> None:
    """Collections without the trailing slash are 404; a running job cannot be deleted;
    a deleted id is free again."""
    backend, sim = head
    http = backend._http
    for method in ("GET", "POST"):
        answer = await http.request(method, "/api/jobs", body=b"{}", idempotent=True, expect=(404,))
        assert b"404: Not Found" == answer.body
    await backend.submit(sub("r-run", {"entrypoint": "sleep 60"}))
    refused = await http.request("DELETE", "/api/jobs/r-run", idempotent=True, expect=(500,))
    assert last_line(refused.body).endswith("non-terminal state RUNNING.")
    await backend.stop(Receipt("r-run", "r-run"))
    await http.request("DELETE", "/api/jobs/r-run", idempotent=True)
    assert await backend.lookup(sub("r-run", {})) is None
    await backend.submit(sub("r-run", {"entrypoint": "true"}))
    assert 2 == sim.creates["r-run"]


def test_a_template_may_not_choose_another_submission_id() -> None:
    from bulk._template import compile_template

    assert KIND.check_template(compile_template({"entrypoint": "x"})) is None
    ok = compile_template({"entrypoint": "x", "submission_id": "{_name}"})
    assert KIND.check_template(ok) is None
    other = KIND.check_template(compile_template({"entrypoint": "x", "submission_id": "a-{i}"}))
    assert other is not None
    assert "bulk sets the submission id to the job's name" in other


def test_logs_of_a_row_never_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row the service never accepted has no log: one line, exit 2; an unknown row too."""
    with simulator("ray") as url:
        pass  # its port is closed now: the run cannot reach the service
    config = run_config(tmp_path, url, 2)
    config.write_text(config.read_text().replace("attempts = 20", "attempts = 2\nbudget_s = 0.3"))
    assert 3 == main(["run", str(config)])
    capsys.readouterr()

    assert 2 == main(["logs", str(config), "1"])
    [line] = capsys.readouterr().err.splitlines()
    assert "has not been accepted by the service: it has no log" in line
    assert 2 == main(["logs", str(config), "nosuchrow"])
    [line] = capsys.readouterr().err.splitlines()
    assert "no row 'nosuchrow' in run ray-t" in line


def test_the_ray_example_runs_against_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configs/ray-pi.toml: 12 jobs, its working_dir folder uploaded once, all succeeded."""
    configs = Path(__file__).parent.parent.parent / "configs"
    shutil.copytree(configs / "ray", tmp_path / "ray")
    with simulator("ray", "--pending-s", "0", "--run-s", "0") as url:
        text = (configs / "ray-pi.toml").read_text().replace("http://127.0.0.1:8265", url)
        config = tmp_path / "ray-pi.toml"
        config.write_text(text + "\n[track]\nfirst_s = 0.05\nmax_s = 0.2\n")
        assert 0 == main(["run", str(config)])
        book = ledger(url)
    uploads = book["uploads"]
    assert isinstance(uploads, dict)
    assert [1] == list(uploads.values())
    creates = book["creates"]
    assert isinstance(creates, dict)
    assert 12 == len(creates)


def test_values_in_the_entrypoint_are_shell_quoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray runs the entrypoint with a shell: a value stays one argument, as in local jobs."""
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "q"\n[sweep]\ngrid.v = ["a; echo INJECTED"]\n[backend]\nkind = "ray"\n'
        '[job]\nentrypoint = "echo {v}"\n'
    )
    assert 0 == main(["plan", "--json", str(config)])
    [line] = capsys.readouterr().out.splitlines()
    assert "echo 'a; echo INJECTED'" == json.loads(line)["job"]["entrypoint"]


def test_bulk_stop_keeps_tracking_a_job_pending_for_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job of no CPU and one of 1 CPU on a head of half a CPU, bulk killed, then `bulk
    stop`: the running one is stopped; the one PENDING for resources ignores the stop, so it
    is reported as not stopped (exit 1, with why) and stays tracked in the journal."""
    with simulator("ray", "--pending-s", "0", "--cpus", "0.5") as url:
        config = run_config(tmp_path, url, 2)
        text = config.read_text().replace('"exit {i}"', '"sleep 600"\nentrypoint_num_cpus = "{i}"')
        config.write_text(text)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulk", "run", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_sync(lambda: len(creates(url)) == 2, what="both jobs sent")
        finally:
            proc.kill()
            proc.wait(timeout=60)
        code = main(["stop", str(config)])
    err = capsys.readouterr().err
    assert 1 == code
    assert "Ray ignores a stop of a job PENDING for resources" in err
    with Journal.open(tmp_path / ".bulk" / "ray-t" / "journal.sqlite") as journal:
        states = sorted(j.state.value for j in journal.iter_jobs())
    # Still to be tracked (or, if bulk was killed before recording the answer, looked up).
    assert states in (["stopped", "submitted"], ["stopped", "submitting"])


async def test_every_error_answer_says_its_tracebacks_last_line(
    head: tuple[RayBackend, RaySim],
) -> None:
    """Not only creates: a DELETE Ray refuses (a job still running) says why, not where."""
    backend, _ = head
    deleting = DeletingRayBackend(backend._options)
    try:
        receipt = await deleting.submit(sub("r-del", {"entrypoint": "sleep 60"}))
        with pytest.raises(TransientBackendError) as caught:
            await deleting.delete_ended(receipt)
    finally:
        await deleting.aclose()
    message = str(caught.value)
    assert message.endswith("but it is in a non-terminal state RUNNING.")
    assert "Traceback" not in message


def plan_working_dir(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    working_dir: str,
    extra: str = "",
    *,
    command: str = "plan",
    url: str = "http://127.0.0.1:8265",
) -> tuple[int, str]:
    """``bulk plan`` (or ``command``) of two Ray jobs in ``tmp_path/cfg`` whose working_dir
    is the one given: its exit code and first line on stderr."""
    config = tmp_path / "cfg" / "c.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        f'[run]\nname = "w"\n[sweep]\ngrid.i = [1, 2]\n[backend]\nkind = "ray"\nurl = "{url}"\n'
        f'[job]\nentrypoint = "echo {{i}}"\n'
        f'runtime_env = {{working_dir = "{working_dir}"{extra}}}\n'
    )
    code = main([command, str(config)])
    err = capsys.readouterr().err.splitlines()
    return code, err[0] if code and err else ""


WHERE = "allowed: a folder inside the config's folder, or a URI (gcs://, s3://, https://)"


@pytest.mark.parametrize(
    ("working_dir", "problem"),
    [
        ("/etc", "'/etc' is outside the config's folder"),
        ("..", "'..' is outside the config's folder"),
        ("sub/../../out", "'sub/../../out' is outside the config's folder"),
        ("link", "'link' is outside the config's folder (a symbolic link to "),
        ("missing", "'missing': no such folder"),
        ("loop", "'loop': no such folder"),
    ],
)
def test_a_working_dir_outside_the_configs_folder_is_refused_at_plan_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], working_dir: str, problem: str
) -> None:
    """A hostile working_dir (elsewhere, escaping, a link out, missing, a link loop) is one
    line at plan time, exit 2, and a run sends nothing."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "secret").write_text("s")
    (tmp_path / "cfg" / "sub").mkdir(parents=True)
    (tmp_path / "cfg" / "link").symlink_to(tmp_path / "out")
    (tmp_path / "cfg" / "loop").symlink_to("loop")
    code, line = plan_working_dir(tmp_path, capsys, working_dir)
    assert 2 == code
    assert line.startswith(f"{tmp_path / 'cfg' / 'c.toml'}: job.runtime_env.working_dir: {problem}")
    assert line.endswith(f"; {WHERE}")
    with simulator("ray", "--pending-s", "0", "--run-s", "0") as url:
        assert (2, line) == plan_working_dir(tmp_path, capsys, working_dir, command="run", url=url)
        book = ledger(url)
    assert not book["uploads"]
    assert not book["creates"]


@pytest.mark.parametrize(
    ("name", "target"),
    [("escape", "OUT"), ("dangling", "nowhere"), ("loop", "loop"), ("folder", "data")],
)
def test_links_inside_a_working_dir_are_never_followed_out_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, target: str
) -> None:
    """A link inside the folder other than to a file inside it (out of it, dangling, a loop,
    a folder) is refused at plan time naming it, without hanging; excluding it is the way."""
    (tmp_path / "secret").write_text("s")
    pkg = tmp_path / "cfg" / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "main.py").write_text("print(1)\n")
    (pkg / name).symlink_to(tmp_path / "secret" if target == "OUT" else target)
    code, line = plan_working_dir(tmp_path, capsys, "pkg")
    assert 2 == code
    assert f": job.runtime_env.working_dir: {pkg}: {name} is a symbolic link" in line
    assert 0 == plan_working_dir(tmp_path, capsys, "pkg", f', excludes = ["{name}"]')[0]


def test_a_link_to_a_file_inside_is_stored_as_the_file(folder: Path) -> None:
    (folder / "pkg" / "alias.py").symlink_to("main.py")
    data = zipfile.ZipFile(BytesIO(pack(folder / "pkg", ["*.log"]).data))
    assert ["alias.py", "main.py"] == data.namelist()
    assert b"print(1)\n" == data.read("alias.py")


def test_a_working_dir_over_100_mib_is_refused_before_zipping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of more than 100 MiB of files (after excludes) is refused at plan time from
    the files' sizes (a sparse file: nothing is read), and pack refuses it too."""
    pkg = tmp_path / "cfg" / "pkg"
    pkg.mkdir(parents=True)
    with (pkg / "big.bin").open("wb") as f:
        f.truncate(100 * 1024 * 1024 + 1)
    code, line = plan_working_dir(tmp_path, capsys, "pkg")
    assert 2 == code
    assert "more than 100 MiB of files after excludes (at big.bin)" in line
    assert 0 == plan_working_dir(tmp_path, capsys, "pkg", ', excludes = ["*.bin"]')[0]
    with pytest.raises(ValueError, match="more than 100 MiB"):
        pack(pkg)


def test_a_file_that_grows_while_packed_stops_the_packing(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing reads at most the cap, whatever the sizes seen before: memory stays bounded."""
    monkeypatch.setattr(_package, "inspect", lambda f, e: [("m", f / "main.py", 1)])
    monkeypatch.setattr(_package, "MAX_FOLDER_BYTES", 4)
    with pytest.raises(ValueError, match="grew past"):
        pack(folder / "pkg")


def test_each_distinct_working_dir_is_checked_once_not_per_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 rows over two folders: two walks of a folder at plan time, not 2,000."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "main.py").write_text("x")
    walks: list[str] = []
    walk = os.walk

    def counted(top: str, **kwargs: Any) -> Any:
        walks.append(str(top))
        return walk(top, **kwargs)

    monkeypatch.setattr(os, "walk", counted)
    config = tmp_path / "c.toml"
    config.write_text(
        '[run]\nname = "w"\n[sweep]\ngrid.d = ["a", "b"]\ngrid.i = {range = [0, 1000]}\n'
        '[backend]\nkind = "ray"\n[job]\nentrypoint = "echo {i}"\n'
        'runtime_env = {working_dir = "{d}"}\n'
    )
    assert 0 == main(["plan", str(config)])
    assert sorted(walks) == [str(tmp_path / "a"), str(tmp_path / "b")]
