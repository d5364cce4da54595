"""The Gongji backend: signing, the client against the simulator, mapping, exactly-once."""

from __future__ import annotations

import argparse
import base64
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from rich.table import Table

from bulk._engine import Engine, Runtime
from bulk._journal import Journal
from bulk._naming import Point, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._problems import Problems
from bulk._sim.gongji import DEVICES, GongjiSim, SimConfig, make_app, sample_body
from bulk._template import compile_template
from bulk.backends.base import JobStatus, Phase, Submission
from bulk.backends.gongji import (
    GongjiBackend,
    GongjiClient,
    GongjiOptions,
    Signer,
    map_status,
    string_to_sign,
)
from bulk.backends.gongji._backend import KIND, find_mark
from bulk.backends.gongji._cli import _resources as resources_command
from bulk.backends.gongji._client import read_options_token
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    ConfigError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
)
from bulk.testing import simulator, wait_until

DATA = Path(__file__).parent.parent / "data"
PKCS1 = (DATA / "test-key-pkcs1.pem").read_bytes()
PKCS8 = (DATA / "test-key-pkcs8.pem").read_bytes()
PUBLIC = (DATA / "test-key.pub.pem").read_bytes()
TOKEN = "a0e13fe1-5626-4c05-926b-20f586c69102-20240821144204"


def independent_signature(message: str) -> str:
    """The expected sign_str, computed here without bulk's code."""
    key = serialization.load_pem_private_key(PKCS1, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    raw = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def body_for(name: str, run_s: float | None = None) -> bytes:
    return sample_body(name, run_s)


class TestSigning:
    def test_vector_post(self) -> None:
        """A fixed key, token, timestamp and body give exactly the independent signature."""
        body = b'{"task_id":1962322}'
        message = string_to_sign("/api/task/job/stop", "1724222524375", TOKEN, body)

        expected = independent_signature(
            f'/api/task/job/stop\n1.0.0\n1724222524375\n{TOKEN}\n{{"task_id":1962322}}'
        )

        assert expected == Signer(PKCS1).sign(message) == Signer(PKCS8).sign(message)
        assert 256 == len(base64.b64decode(expected))

    def test_vector_get_with_query(self) -> None:
        """A GET signs path?query as sent, and ends with a newline after the token."""
        target = (
            "/api/task/job/search?status=Running%2CPending%2CPaused&search_value=&page=1"
            "&page_size=10"
        )
        message = string_to_sign(target, "1724222524375", TOKEN, b"")

        assert message.endswith(f"{TOKEN}\n".encode())
        assert independent_signature(f"{target}\n1.0.0\n1724222524375\n{TOKEN}\n") == Signer(
            PKCS1
        ).sign(message)
        path_only = string_to_sign("/api/task/job/search", "1724222524375", TOKEN, b"")
        assert Signer(PKCS1).sign(path_only) != Signer(PKCS1).sign(message)

    async def test_client_signs_the_bytes_it_sends(self) -> None:
        """On the wire: the headers, and a signature over the raw target and raw body."""
        seen: list[tuple[dict[str, str], str, bytes]] = []

        async def record(request: web.Request) -> web.Response:
            seen.append((dict(request.headers), request.raw_path, await request.read()))
            return web.json_response({"code": "0000", "message": "ok", "data": {"task_id": 7}})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        client = GongjiClient(
            GongjiOptions(url=str(server.make_url(""))), token=TOKEN, signer=Signer(PKCS8)
        )
        await client.create('{"task_name":"任务 1"}'.encode(), job_name="j")
        await client.search(status="Running,Pending", search_value="run a", page=2, page_size=5)
        await client.aclose()
        await server.close()

        (post_h, post_target, post_body), (get_h, get_target, get_body) = seen
        assert ("1.0.0", 13) == (post_h["version"], len(post_h["timestamp"]))
        assert post_h["sign_str"] == independent_signature(
            f"{post_target}\n1.0.0\n{post_h['timestamp']}\n{TOKEN}\n" + post_body.decode()
        )
        assert (
            "/api/task/job/search?status=Running%2CPending&search_value=run%20a&page=2&page_size=5"
            == get_target
        )
        assert b"" == get_body
        assert get_h["sign_str"] == independent_signature(
            f"{get_target}\n1.0.0\n{get_h['timestamp']}\n{TOKEN}\n"
        )


@pytest.fixture
async def sim_url() -> AsyncIterator[tuple[str, GongjiSim]]:
    sim = GongjiSim(SimConfig(pending_s=0.05, run_s=0.1))
    sim.add_token(TOKEN, PUBLIC)
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), sim
    await server.close()


def backend_for(url: str, token: str = TOKEN, signer: Signer | None = None) -> GongjiBackend:
    client = GongjiClient(GongjiOptions(url=url), token=token, signer=signer)
    return GongjiBackend(client, page_size=3)


async def settle(backend: GongjiBackend, remote_id: str, name: str) -> Phase:
    from bulk.backends.base import Receipt

    async def status() -> JobStatus | None:
        return (await backend.status([Receipt(name, remote_id)])).get(remote_id)

    def ended(status: JobStatus | None) -> bool:
        return status is not None and status.phase.terminal

    settled = await wait_until(status, ended, what=f"task {name} ends", polls=300, interval_s=0.02)
    assert settled is not None
    return settled.phase


class TestClientAgainstSimulator:
    async def test_create_track_lookup_stop(self, sim_url: tuple[str, GongjiSim]) -> None:
        """Create → Complete; look-up by exact name; stop a running task → stopped."""
        url, _ = sim_url
        backend = backend_for(url, signer=Signer(PKCS1))

        quick = await backend.submit(Submission("b-1", body_for("run-a")))
        slow = await backend.submit(Submission("b-2", body_for("run-ab", run_s=30)))
        await backend.stop(slow)

        assert Phase.SUCCEEDED == await settle(backend, quick.remote_id, "b-1")
        assert Phase.STOPPED == await settle(backend, slow.remote_id, "b-2")
        assert quick == await backend.lookup(Submission("b-1", body_for("run-a")))
        assert await backend.lookup(Submission("b-9", body_for("run-"))) is None  # exact only
        await backend.stop(slow)  # stopping an ended task: C010, taken as done
        await backend.aclose()

    async def test_an_ended_task_is_forgotten(self, sim_url: tuple[str, GongjiSim]) -> None:
        """The task names kept for search prefixes go once a task has ended: the client's
        memory follows the active jobs, not every job the run ever sent."""
        url, _ = sim_url
        backend = backend_for(url, token="simple-token")
        quick = await backend.submit(Submission("f-1", body_for("forget-a")))
        slow = await backend.submit(Submission("f-2", body_for("forget-b", run_s=30)))

        assert Phase.SUCCEEDED == await settle(backend, quick.remote_id, "f-1")

        assert [slow.remote_id] == list(backend._names)
        await backend.aclose()

    async def test_submit_reads_the_task_name_the_engine_rendered(
        self, sim_url: tuple[str, GongjiSim]
    ) -> None:
        """A create whose Submission carries the rendered body takes the task name for the
        search prefixes from it, not from parsing the body again (told apart here by a
        rendering that names another task); without it, the body is parsed."""
        url, _ = sim_url
        backend = backend_for(url, token="simple-token")
        rendered = {**orjson.loads(body_for("body-a", run_s=30)), "task_name": "rendered-a"}

        first = await backend.submit(Submission("r-1", body_for("body-a", run_s=30), rendered))
        second = await backend.submit(Submission("r-2", body_for("body-b", run_s=30)))

        assert {first.remote_id: "rendered-a", second.remote_id: "body-b"} == backend._names
        await backend.aclose()

    async def test_search_paginates(self, sim_url: tuple[str, GongjiSim]) -> None:
        """Tracking reads every page (page size 3 here) and finds every task."""
        url, _ = sim_url
        backend = backend_for(url, token="simple-token")
        receipts = [
            await backend.submit(Submission(f"p-{i}", body_for(f"page-{i}", run_s=30)))
            for i in range(8)
        ]

        answer = await backend.status(receipts)

        assert {r.remote_id for r in receipts} == set(answer)
        assert backend.client.requests["/api/task/job/search"] == 3  # 8 tasks / 3 per page
        await backend.aclose()

    async def test_status_leaves_out_ids_that_are_not_task_ids(
        self, sim_url: tuple[str, GongjiSim]
    ) -> None:
        """A remote id of Unicode digits ("²" passes str.isdigit, not int) is left out."""
        from bulk.backends.base import Receipt

        url, _ = sim_url
        backend = backend_for(url, token="simple-token")

        answer = await backend.status([Receipt("x", "²")])
        await backend.aclose()

        assert {} == answer

    async def test_simulator_refuses_a_timestamp_of_unicode_digits(
        self, sim_url: tuple[str, GongjiSim]
    ) -> None:
        """A timestamp of 13 non-ASCII digits is a malformed timestamp (C004), not a crash."""
        url, _ = sim_url
        async with aiohttp.ClientSession() as session:
            for stamp in ("²" * 13, "١" * 13):
                headers = {"token": "simple-token", "version": "1.0.0", "timestamp": stamp}
                async with session.post(f"{url}/api/task/job/detail", headers=headers) as resp:
                    answer = (resp.status, (await resp.json())["code"])

                assert (200, "C004") == answer

    async def test_resources_and_marks(self, sim_url: tuple[str, GongjiSim]) -> None:
        """A resource given by name is resolved to its mark before the create."""
        url, sim = sim_url
        backend = backend_for(url, signer=Signer(PKCS1))
        body = orjson.loads(body_for("by-name"))
        body["resources"] = [{"gpu_name": "4090", "gpu_count": 1, "region": "hebeif-1"}]

        receipt = await backend.submit(Submission("m-1", orjson.dumps(body)))

        sent = sim.tasks[int(receipt.remote_id)].body["resources"][0]
        assert ("河北一区", "4090") == (sent["region_name"], sent["resource"]["gpu_name"])
        assert len(sent["mark"]) > 100
        await backend.aclose()

    @pytest.mark.parametrize(
        ("token", "signer", "tamper", "expected"),
        [
            pytest.param("nobody", None, None, "code C001", id="unknown-token"),
            pytest.param(TOKEN, None, None, "code C005", id="rsa-token-without-signature"),
            pytest.param(TOKEN, "other", None, "code C005", id="wrong-key"),
            pytest.param(TOKEN, "ok", "stale", "code C004", id="stale-timestamp"),
        ],
    )
    async def test_auth_failures_are_authentication_errors(
        self,
        sim_url: tuple[str, GongjiSim],
        token: str,
        signer: str | None,
        tamper: str | None,
        expected: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Bad credentials raise AuthenticationError, saying what to check."""
        url, _ = sim_url
        key = Signer(PKCS1) if signer == "ok" else None
        if signer == "other":
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = Signer(
                other.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        if tamper == "stale":
            monkeypatch.setattr(
                "bulk.backends.gongji._client.time.time_ns", lambda: 1_000_000_000_000
            )
        backend = backend_for(url, token=token, signer=key)

        with pytest.raises(AuthenticationError, match=expected) as info:
            await backend.submit(Submission("x", body_for("auth")))
        await backend.aclose()

        assert "check the key's mode" in str(info.value)
        assert token not in str(info.value)

    async def test_simulator_verifies_the_raw_body(self, sim_url: tuple[str, GongjiSim]) -> None:
        """A body re-serialised after signing (spaces added) no longer verifies."""
        url, _ = sim_url
        client = GongjiClient(GongjiOptions(url=url), token=TOKEN, signer=Signer(PKCS1))
        real_headers = client._headers

        async def sign_compact(target: str, body: bytes) -> dict[str, str]:
            return await real_headers(target, body.replace(b", ", b","))

        client._headers = sign_compact  # type: ignore[method-assign]
        with pytest.raises(AuthenticationError, match="C005"):
            await client.create(b'{"task_name": "t", "points": 1}', job_name="t")
        await client.aclose()


@pytest.mark.parametrize(
    ("config", "idempotent_error", "create_error"),
    [
        pytest.param(SimConfig(throttle_rate=1.0), ThrottledError, ThrottledError, id="C008"),
        pytest.param(SimConfig(http_429_rate=1.0), ThrottledError, ThrottledError, id="429"),
        pytest.param(
            SimConfig(error_rate=1.0), TransientBackendError, AmbiguousBackendError, id="502"
        ),
        pytest.param(
            SimConfig(reset_rate=1.0), TransientBackendError, AmbiguousBackendError, id="reset"
        ),
    ],
)
async def test_fault_families(
    config: SimConfig, idempotent_error: type[Exception], create_error: type[Exception]
) -> None:
    """Throttles, 5xx and resets map to the right error for reads and for creates."""
    sim = GongjiSim(config)
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    backend = backend_for(str(server.make_url("")).rstrip("/"), token="simple-token")

    with pytest.raises(idempotent_error) as read:
        await backend.resources()
    with pytest.raises(create_error) as write:
        await backend.submit(Submission("f", body_for("fault")))
    await backend.aclose()
    await server.close()

    assert type(read.value) is idempotent_error
    assert type(write.value) is create_error


class TestMapping:
    @pytest.mark.parametrize(
        ("status", "inner", "phase"),
        [
            ("Pending", "Pending", Phase.QUEUED),
            ("Running", "Running", Phase.RUNNING),
            ("End", "Complete", Phase.SUCCEEDED),
            ("End", "Failed", Phase.FAILED),
            ("End", "Manual", Phase.STOPPED),
            ("Paused", "Running", Phase.STOPPED),
            ("Surprising", None, Phase.QUEUED),
        ],
    )
    def test_status_mapping(self, status: str, inner: str | None, phase: Phase) -> None:
        """Task and job status map to one phase; unknown values are not terminal."""
        assert phase == map_status({"status": status, "job_status": {"status": inner}}).phase

    def test_find_mark(self) -> None:
        """By name, count and region (key or display name); sold out and absent are refused."""
        hit = find_mark(DEVICES, "4090", 2, "河北六区")

        assert "chengde-p1" == hit["resource"]["region"]
        with pytest.raises(RunRefusedError, match="sold out"):
            find_mark(DEVICES, "H20", 8, "hebeif-1")
        with pytest.raises(RunRefusedError, match=r"not in the device list; available: 4090×1"):
            find_mark(DEVICES, "A100", 1, "hebeif-1")


def make_journal(path: Path, n: int) -> Journal:
    journal = Journal.create(path, {"run": "gj"})
    for _ in journal.fill(Point(i, point_key({"i": i}), f"s:{i}", {"i": i}) for i in range(n)):
        pass
    journal.finish()
    return journal


def engine_for(
    backend: GongjiBackend,
    journal: Journal,
    limits: LimitsConfig,
    retry: RetryConfig,
    track: TrackConfig,
    runtime: Runtime | None = None,
) -> Engine:
    """An engine for run "gj" sending the documented create body (task_name = {_name})."""
    template = compile_template(orjson.loads(body_for("{_name}")))
    policy = Policy(limits, retry, track)
    return Engine(backend, journal, template=template, run="gj", policy=policy, runtime=runtime)


async def test_exactly_once_under_commit_then_fail_and_5xx(tmp_path: Path) -> None:
    """1,000 rows, 20 % commit-then-fail and 10 % 5xx: one create per task name."""
    sim = GongjiSim(
        SimConfig(pending_s=0.0, run_s=0.05, commit_fail_rate=0.2, error_rate=0.1, seed=11)
    )
    sim.add_token(TOKEN, PUBLIC)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    backend = backend_for(str(server.make_url("")).rstrip("/"), signer=Signer(PKCS1))
    backend._page_size = 500
    journal = await anyio.to_thread.run_sync(make_journal, tmp_path / "j.sqlite", 1000)
    engine = engine_for(
        backend,
        journal,
        LimitsConfig(
            submit_rate_per_s=2000,
            status_rate_per_s=200,
            burst=50,
            max_in_flight=16,
            max_active=1000,
        ),
        RetryConfig(attempts=30, budget_s=120, base_s=0.01, max_s=0.1),
        TrackConfig(first_s=0.2, factor=1.5, max_s=0.5, batch=1000),
        Runtime(rng=random.Random(3)),
    )

    stats = await engine.run()
    await backend.aclose()
    await server.close()

    assert 1000 == stats.succeeded
    assert 1000 == len(sim.creates)
    assert {1} == set(sim.creates.values())
    assert await anyio.to_thread.run_sync(journal.counts) == {"succeeded": 1000}


async def test_throttling_never_fails_a_job(tmp_path: Path) -> None:
    """A service rate limit below the configured rate: throttled, slowed, nothing failed."""
    sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.05, rate_limit_per_s=40, seed=5))
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    backend = backend_for(str(server.make_url("")).rstrip("/"), token="simple-token")
    journal = await anyio.to_thread.run_sync(make_journal, tmp_path / "j.sqlite", 150)
    engine = engine_for(
        backend,
        journal,
        LimitsConfig(
            submit_rate_per_s=400,
            status_rate_per_s=50,
            burst=10,
            max_in_flight=8,
            max_active=1000,
        ),
        RetryConfig(attempts=2, budget_s=60, base_s=0.05, max_s=0.2),
        TrackConfig(first_s=0.2, factor=1.5, max_s=0.5),
    )

    stats = await engine.run()
    await backend.aclose()
    await server.close()

    assert (150, 0) == (stats.succeeded, stats.failed)
    assert stats.throttled > 0
    assert {1} == set(sim.creates.values())


class TestServiceBudget:
    """Gongji's likely limit is one per token across endpoints; bulk keeps under a shared one."""

    async def test_the_simulator_limits_a_token_across_endpoints(self) -> None:
        """At 1 request/s per token, a create spends the second for search too; another
        token has its own budget."""
        sim = GongjiSim(SimConfig(rate_limit_per_s=1))
        sim.add_token("one", None)
        sim.add_token("two", None)
        server = TestServer(make_app(sim), host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        one, two = backend_for(url, token="one"), backend_for(url, token="two")

        await one.submit(Submission("a", body_for("budget-a")))
        with pytest.raises(ThrottledError):
            await one.client.search(status="Running", search_value="", page=1, page_size=10)
        await two.client.search(status="Running", search_value="", page=1, page_size=10)
        for backend in (one, two):
            await backend.aclose()
        await server.close()

    async def test_a_run_never_exceeds_the_shared_budget(self, tmp_path: Path) -> None:
        """Creates, paged searches and details together stay within 30/s (+ burst) in every
        second, although each endpoint alone may use all of it."""
        sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.3, seed=2))
        sim.add_token("simple-token", None)
        server = TestServer(make_app(sim), host="127.0.0.1")
        await server.start_server()
        backend = backend_for(str(server.make_url("")).rstrip("/"), token="simple-token")
        journal = await anyio.to_thread.run_sync(make_journal, tmp_path / "j.sqlite", 60)
        engine = engine_for(
            backend,
            journal,
            LimitsConfig(
                submit_rate_per_s=30,
                status_rate_per_s=30,
                service_rate_per_s=30,
                burst=3,
                max_in_flight=8,
                max_active=1000,
            ),
            RetryConfig(attempts=3, budget_s=60, base_s=0.05, max_s=0.2),
            TrackConfig(first_s=0.2, factor=1.5, max_s=0.5, batch=100),
        )

        stats = await engine.run()
        await backend.aclose()
        await server.close()

        assert (60, 0) == (stats.succeeded, stats.failed)
        assert sim.requests["/api/task/job/search"] > stats.status_requests  # several pages
        # Arrivals at the service bunch when the loop they share with the client stalls (40
        # in a second was seen at a load average of 10 on 2 cores): the exact bound is
        # checked on virtual time in tests/test_ratelimit.py. This is the wall-clock sanity
        # check: a budget per endpoint alone lets creates and searches together reach ~60.
        assert sim.busiest_second() <= 30 + 3 + 12


@pytest.mark.parametrize(
    ("order", "first_pages", "then_pages"),
    [
        pytest.param("newest", [1], [1], id="newest"),
        pytest.param("oldest", [1, 15], [15], id="oldest"),
    ],
)
async def test_ended_tasks_are_found_from_the_newest_end(
    order: str, first_pages: list[int], then_pages: list[int]
) -> None:
    """300 ended tasks, 20 a page: the 10 newest are found on the newest page, wherever
    the list puts it; the order learnt once, later calls read that page alone. No detail."""
    sim = GongjiSim(SimConfig(pending_s=0.0, list_order=order))
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    client = GongjiClient(
        GongjiOptions(url=str(server.make_url("")).rstrip("/")), token="simple-token", signer=None
    )
    backend = GongjiBackend(client, page_size=20)
    names = [f"trk-{i % 10}{i:03}" for i in range(300)]  # like hashes: prefix "trk-" only
    receipts = [await backend.submit(Submission(n, body_for(n, run_s=0))) for n in names]
    pages: list[int] = []
    search = client.search

    async def counted(**query: Any) -> tuple[int, list[dict[str, Any]]]:
        if query["status"] == "End":
            pages.append(query["page"])
        return await search(**query)

    client.search = counted  # type: ignore[method-assign]

    first = await backend.status(receipts[-10:])
    read_first, pages[:] = list(pages), []
    then = await backend.status(receipts[-20:-10])
    await backend.aclose()
    await server.close()

    assert {Phase.SUCCEEDED} == {s.phase for s in [*first.values(), *then.values()]}
    assert (10, 10) == (len(first), len(then))
    assert first_pages == read_first
    assert then_pages == pages
    assert 0 == sim.requests.get("/api/task/job/detail", 0)


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_tracking_costs_little_whatever_the_list_order(order: str, tmp_path: Path) -> None:
    """400 jobs, 100 at a time, listed newest or oldest first: at most 0.2 status requests
    (search pages and details) per finished job either way."""
    sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.3, list_order=order, seed=4))
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    client = GongjiClient(
        GongjiOptions(url=str(server.make_url("")).rstrip("/")), token="simple-token", signer=None
    )
    backend = GongjiBackend(client, page_size=50)
    journal = await anyio.to_thread.run_sync(make_journal, tmp_path / "j.sqlite", 400)
    engine = engine_for(
        backend,
        journal,
        LimitsConfig(
            submit_rate_per_s=2000,
            status_rate_per_s=200,
            burst=50,
            max_in_flight=16,
            max_active=100,
        ),
        RetryConfig(attempts=3, budget_s=60, base_s=0.05, max_s=0.2),
        TrackConfig(first_s=0.6, factor=1.5, max_s=1.0, batch=1000),
    )

    stats = await engine.run()
    await backend.aclose()
    await server.close()

    status = sim.requests.get("/api/task/job/search", 0) + sim.requests.get(
        "/api/task/job/detail", 0
    )
    assert 400 == stats.succeeded
    assert status / 400 <= 0.2, sim.requests


def test_template_must_name_every_row_and_attempt() -> None:
    """task_name without {_name} (or {_key} and {_attempt}) is refused at plan time."""
    from bulk.backends.gongji._backend import KIND

    check: Callable[[str], str | None] = lambda name: KIND.check_template(
        compile_template({"task_name": name})
    )

    assert check("{_name}") is None
    assert check("sweep-{_key}-{_attempt}") is None
    assert "must contain {_name}" in (check("sweep-{_key}") or "")
    assert "must contain {_name}" in (check("fixed") or "")


@pytest.mark.parametrize("name", ["{{_name}}", "t-{_key}-{{_attempt}}", "x-{_name:.3}"])
def test_a_task_name_that_only_looks_like_it_names_rows_apart_is_refused(name: str) -> None:
    """Escaped braces contain the text "{_name}" yet render it literally for every row, and
    a format spec can cut the name short: such a template gave every row (or every attempt)
    one task name, so rows were adopted as each other's tasks after an ambiguous create.
    The name is rendered for two rows and two attempts, not searched for."""
    from bulk.backends.gongji._backend import KIND

    assert "must contain {_name}" in (
        KIND.check_template(compile_template({"task_name": name})) or ""
    )


def test_a_task_name_with_row_variables_is_judged_by_rendering() -> None:
    """Other variables (and format specs that keep the name whole) are fine."""
    from bulk.backends.gongji._backend import KIND

    for name in ("run-{lr}-{_name}", "{_attempt:03d}-{_key}", "{_name}-{seed:>4}"):
        assert KIND.check_template(compile_template({"task_name": name})) is None, name


async def test_unknown_device_refuses_the_run(tmp_path: Path) -> None:
    """A resource by name that the device list lacks stops the run; no row is failed."""
    sim = GongjiSim(SimConfig())
    sim.add_token("simple-token", None)
    server = TestServer(make_app(sim), host="127.0.0.1")
    await server.start_server()
    backend = backend_for(str(server.make_url("")).rstrip("/"), token="simple-token")
    journal = await anyio.to_thread.run_sync(make_journal, tmp_path / "j.sqlite", 5)
    body = orjson.loads(body_for("{_name}"))
    body["resources"] = [{"gpu_name": "A100", "gpu_count": 1, "region": "hebeif-1"}]
    engine = Engine(
        backend,
        journal,
        template=compile_template(body),
        run="gj",
        policy=Policy(LimitsConfig(max_in_flight=1)),
    )

    refused = pytest.RaisesExc(RunRefusedError, match="A100×1 in hebeif-1")
    with pytest.RaisesGroup(refused, flatten_subgroups=True):
        await engine.run()
    await backend.aclose()
    await server.close()

    assert {} == sim.creates
    assert {"pending": 5} == await anyio.to_thread.run_sync(journal.counts)


def test_resources_command_prints_the_device_list(tmp_path: Path) -> None:
    """`bulk gongji resources CONFIG` signs its request and prints every region's row."""
    import os
    import subprocess
    import sys

    config = tmp_path / "run.toml"
    with simulator("gongji", "--rsa-token", f"list-token={DATA / 'test-key.pub.pem'}") as url:
        config.write_text(
            f'[run]\nname = "list"\n[sweep]\ngrid.i = [1]\n[backend]\nkind = "gongji"\n'
            f'url = "{url}"\nprivate_key_file = "{DATA / "test-key-pkcs1.pem"}"\n'
            '[job]\ntask_name = "{_name}"\n'
        )
        listing = subprocess.run(
            [sys.executable, "-m", "bulk", "gongji", "resources", str(config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GONGJI_TOKEN": "list-token", "COLUMNS": "200"},
        )

    assert 0 == listing.returncode, listing.stderr
    for row in ("chengde-p1", "hebeif-1", "H20", "16416"):
        assert row in listing.stdout


def test_options_without_a_token_source_are_a_config_error() -> None:
    """Options naming neither a token variable nor a file: a ConfigError, not an assert."""
    with pytest.raises(ConfigError, match=r"no API token: give backend\.token_env"):
        read_options_token(GongjiOptions(token_env=None))


async def test_resources_table_cuts_only_marks_too_long_for_their_cell() -> None:
    """A mark of 25 characters is shown whole; a longer one is cut to 25, "…" included."""

    class Devices:
        async def resources(self) -> list[dict[str, Any]]:
            regions = [{"region": "r", "mark": {"mark": "m" * 25}}, {"mark": {"mark": "n" * 40}}]
            return [{"device_name": "d", "regions": regions}]

    async def send(endpoint: str, call: Callable[[], Awaitable[Any]]) -> Any:
        return await call()

    backend: Any = Devices()
    table = await resources_command(backend, argparse.Namespace(json=False), send)

    assert isinstance(table, Table)
    assert ["m" * 25, "n" * 24 + "…"] == list(table.columns[-1].cells)


SPOT = {"sub_type": "Spot"}


@pytest.mark.parametrize(
    ("change", "support", "expected"),
    [
        pytest.param({}, {"mod_param": None}, ["job.job_support.mod_param: is required"], id="mod"),
        pytest.param(
            {},
            {"estimated_exec_sec": 60},
            ["job.job_support.estimated_exec_sec: is only for Spot jobs"],
            id="estimate-not-spot",
        ),
        pytest.param(
            SPOT,
            {"estimated_exec_sec": 3600},
            ["job.job_support.estimated_exec_sec: 3600 must be below timeout_sec 3600"],
            id="estimate-past-timeout",
        ),
        pytest.param(
            SPOT, {}, ["job.job_support.estimated_exec_sec: is required"], id="spot-no-estimate"
        ),
        pytest.param(SPOT, {"estimated_exec_sec": 60}, [], id="spot-ok"),
        pytest.param(
            {},
            {"timeout_sec": 0, "parallelism": "2"},
            ["job.job_support.timeout_sec: ", "job.job_support.parallelism: "],
            id="numbers",
        ),
    ],
)
def test_job_support_is_checked_with_the_sub_type(
    change: dict[str, Any], support: dict[str, Any], expected: list[str]
) -> None:
    """mod_param is required; estimated_exec_sec is for Spot jobs only, and below the time-out."""
    body = orjson.loads(sample_body("{_name}"))
    body.update(change)
    body["job_support"].update(support)
    problems = Problems()

    KIND.validate(body, problems)

    shown = [f"{p.field}: {p.message}" for p in problems.items]
    assert len(expected) == len(shown), shown
    assert all(s.startswith(e) for s, e in zip(shown, expected, strict=True)), shown
