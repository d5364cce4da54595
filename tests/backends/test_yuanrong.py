"""The openYuanrong backend against `bulk sim yuanrong` (and a capturing server): ids, the
dialect's answers, per-row headers, stop while PENDING, the seed example, and kill -9."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import bulk
from bulk._problems import Problems
from bulk._sim.yuanrong import SimConfig, YuanrongSim, make_app, sample_body
from bulk.backends.base import Phase, Receipt, Submission
from bulk.backends.yuanrong import (
    KIND,
    YuanrongBackend,
    YuanrongOptions,
    error_text,
    failure_reason,
    parse_time,
    submission_id,
)
from bulk.errors import ConfigError, PermanentBackendError
from bulk.testing import simulator

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture
async def served() -> AsyncIterator[tuple[YuanrongSim, str]]:
    sim = YuanrongSim(SimConfig(pending_s=30.0, labels=("gpu",)))
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    try:
        yield sim, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def test_names_become_valid_ids_deterministically() -> None:
    """bulk's names map to app-<name>; others are made to fit, same name same id."""
    long = "r" * 40 + "-0123456789abcdef-100"  # a 100th attempt of a 40-character run

    fitted = {submission_id(n) for n in (long, long + "0", "Ab_C.d", "x-driver-y")}

    assert "app-run-0123456789abcdef" == submission_id("run-0123456789abcdef")
    assert submission_id(long) == submission_id(long)
    assert 4 == len(fitted)
    for sid in fitted:
        assert sid.startswith("app-")
        assert len(sid) <= 64
        assert "driver" not in sid
        assert set(sid) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_a_run_name_with_driver_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "driver-x"\n[sweep]\ngrid.i = [1]\n[backend]\nkind = "yuanrong"\n'
        'url = "http://127.0.0.1:9"\n[job]\nentrypoint = "e {i}"\n'
        'runtime_env = {working_dir = "/w"}\n'
    )

    with pytest.raises(ConfigError, match=r"run\.name: 'driver-x' contains 'driver'"):
        bulk.load(config)


def test_gpus_in_a_template_warn_at_plan_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\nname = "gpu"\n[sweep]\ngrid.i = [1]\n[backend]\nkind = "yuanrong"\n'
        'url = "http://127.0.0.1:9"\n[job]\nentrypoint = "e {i}"\nentrypoint_num_gpus = 1\n'
        'runtime_env = {working_dir = "/w"}\n'
    )

    with caplog.at_level(logging.WARNING, logger="bulk"):
        bulk.plan(config)

    assert "entrypoint_num_gpus" in caplog.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entrypoint": "", "runtime_env": {"working_dir": "/w"}}, "job.entrypoint"),
        ({"entrypoint": "e", "runtime_env": {}}, "job.runtime_env.working_dir"),
        (
            {"entrypoint": "e", "runtime_env": {"working_dir": "/w"}, "entrypoint_num_cpus": 0.2},
            "job.entrypoint_num_cpus",
        ),
        (
            {"entrypoint": "e", "runtime_env": {"working_dir": "/w"}, "entrypoint_memory": 2**51},
            "job.entrypoint_memory",
        ),
        (
            {"entrypoint": "e", "runtime_env": {"working_dir": "/w"}, "metadata": {"a": 1}},
            "job.metadata.a",
        ),
        (
            {
                "entrypoint": "e",
                "runtime_env": {"working_dir": "/w"},
                "entrypoint_resources": {"NPU": "1"},
            },
            "job.entrypoint_resources.NPU",
        ),
        (
            {"entrypoint": "e", "runtime_env": {"working_dir": "/w"}, "entrypoint_num_cpu": 1},
            "job.entrypoint_num_cpu",
        ),
    ],
)
def test_bad_bodies_are_refused_before_sending(body: dict[str, Any], field: str) -> None:
    problems = Problems()

    KIND.validate(body, problems)

    assert field in [p.field for p in problems.items]


def test_times_and_reasons_read_both_dialects() -> None:
    assert 1_700_000_000.0 == parse_time("1700000000")
    assert 1_700_000_000.5 == parse_time("1700000000500")
    assert 1_700_000_000.0 == parse_time(1_700_000_000_000)
    assert parse_time("") is None
    assert "exit code 3; boom" == failure_reason({"driver_exit_code": 3, "error_type": "boom"})
    assert "create app failed" == error_text(b'"create app failed"')


async def test_submit_sends_json_ids_and_per_row_headers() -> None:
    """Content-Type JSON, app-<name>, [backend] headers, a row's headers over them, and no
    headers table in the body."""
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.json()))
        return web.json_response({"submission_id": "app-r-1"})

    app = web.Application()
    app.router.add_post("/api/jobs", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    backend = YuanrongBackend(YuanrongOptions(url=url, tenant="t1", pool_labels=("a", "b")))
    body = orjson.dumps(
        {
            "entrypoint": "e",
            "runtime_env": {"working_dir": "/w"},
            "headers": {"x-pool-label": ["gpu", "x"]},
        }
    )
    try:
        plain = await backend.submit(Submission("r-1", sample_body()))
        labelled = await backend.submit(Submission("r-2", body))
    finally:
        await backend.aclose()
        await server.close()

    (h1, b1), (h2, b2) = seen
    assert Receipt("r-1", "app-r-1") == plain
    assert "r-2" == labelled.name
    assert "application/json" == h1["Content-Type"]
    assert ("t1", "a,b") == (h1["X-Tenant-Id"], h1["X-Pool-Label"])
    assert ("t1", "gpu,x") == (h2["X-Tenant-Id"], h2["X-Pool-Label"])
    assert "app-r-1" == b1["submission_id"]
    assert "app-r-2" == b2["submission_id"]
    assert "headers" not in b2


async def test_duplicate_is_accepted_and_unschedulable_fails(
    served: tuple[YuanrongSim, str],
) -> None:
    sim, url = served
    backend = YuanrongBackend(YuanrongOptions(url=url))
    no_label = orjson.dumps(
        {
            "entrypoint": "e",
            "runtime_env": {"working_dir": "/w"},
            "headers": {"X-Pool-Label": "cpu"},
        }
    )
    try:
        first = await backend.submit(Submission("d-1", sample_body()))
        again = await backend.submit(Submission("d-1", sample_body()))
        with pytest.raises(PermanentBackendError, match="create app failed") as failed:
            await backend.submit(Submission("d-2", no_label))
    finally:
        await backend.aclose()

    assert first == again == Receipt("d-1", "app-d-1")
    assert {"app-d-1": 1} == sim.creates
    assert 500 == failed.value.status


async def test_stop_of_a_pending_job_is_refused_and_it_stays_tracked(
    served: tuple[YuanrongSim, str],
) -> None:
    _, url = served
    backend = YuanrongBackend(YuanrongOptions(url=url))
    try:
        receipt = await backend.submit(Submission("p-1", sample_body()))
        with pytest.raises(PermanentBackendError, match="RUNNING jobs only"):
            await backend.stop(receipt)
        status = await backend.status([receipt])
    finally:
        await backend.aclose()

    assert Phase.QUEUED == status["app-p-1"].phase


async def test_sim_keeps_the_dialect(served: tuple[YuanrongSim, str]) -> None:
    """Trailing slash 404, JSON-string errors, DELETE false while not ended."""
    import aiohttp

    _, url = served
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/jobs/", data=sample_body()) as r:
            assert 404 == r.status
        async with s.post(f"{url}/api/jobs", data=sample_body()) as r:  # no Content-Type
            assert 400 == r.status
            assert (await r.json(content_type=None)).startswith("shouldBind")
        headers = {"Content-Type": "application/json"}
        body = orjson.loads(sample_body()) | {"submission_id": "Bad_Id"}
        async with s.post(f"{url}/api/jobs", json=body, headers=headers) as r:
            assert "regular expression" in await r.json()
        async with s.post(f"{url}/api/jobs", data=sample_body(), headers=headers) as r:
            sid = (await r.json())["submission_id"]
        async with s.delete(f"{url}/api/jobs/{sid}") as r:
            assert await r.json() is False


def test_seed_example_runs_against_the_simulator(tmp_path: Path) -> None:
    """configs/yuanrong-seed.toml, pointed at `bulk sim yuanrong`: every job succeeds."""
    job = tmp_path / "yuanrong"
    job.mkdir()
    (job / "job.json").write_bytes((CONFIGS / "yuanrong" / "job.json").read_bytes())
    with simulator(
        "yuanrong", "--run-s", "0", "--resource", "NPU", "--pool-label", "default"
    ) as url:
        text = (CONFIGS / "yuanrong-seed.toml").read_text()
        config = tmp_path / "seed.toml"
        config.write_text(text.replace("http://127.0.0.1:8732", url))

        summary = bulk.run(config)

    assert {"succeeded": 4} == dict(summary.counts)
