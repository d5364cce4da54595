"""One contract, every backend: FakeBackend, LocalBackend, and StubBackend over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bulk._sim.gongji import GongjiSim, SimConfig, sample_body
from bulk._sim.gongji import make_app as make_gongji_app
from bulk._sim.stub import StubFaults, make_app
from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.backends.gongji import GongjiBackend, GongjiClient, GongjiOptions
from bulk.backends.local import LocalBackend, LocalOptions
from bulk.backends.stub import StubBackend, StubOptions
from bulk.testing import FakeBackend, wait_until

BodyFor = Callable[[str, bool], bytes]  # (job name, runs until stopped?) -> body


@dataclass(frozen=True)
class Case:
    backend: Backend
    body: BodyFor
    unique_names: bool = True  # a second submit of a name returns the first job


def fixed(quick: bytes, slow: bytes) -> BodyFor:
    return lambda _name, long: slow if long else quick


@pytest.fixture(params=["fake", "local", "stub", "gongji"])
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    kind = request.param
    if kind == "fake":
        fake = FakeBackend(
            runs_for=0,
            outcome=lambda name: (
                (Phase.SUCCEEDED, None) if name.endswith("quick") else (Phase.RUNNING, None)
            ),
        )
        yield Case(fake, fixed(b"{}", b"{}"))
    elif kind == "local":
        local = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=1), run_dir=tmp_path)
        yield Case(local, fixed(b'{"command": "true"}', b'{"command": ["sleep", "30"]}'))
        await local.aclose()
    elif kind == "gongji":
        sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.0))
        sim.add_token("t", None)
        server = TestServer(make_gongji_app(sim), host="127.0.0.1")
        await server.start_server()
        client = GongjiClient(
            GongjiOptions(url=str(server.make_url("")).rstrip("/")), token="t", signer=None
        )
        gongji = GongjiBackend(client)
        # The task name is in the body; names are not unique on Gongji (bulk never sends a
        # name again without looking it up first), so the duplicate-submit item does not apply.
        yield Case(
            gongji,
            lambda name, long: sample_body(f"contract-{name}", run_s=30 if long else None),
            unique_names=False,
        )
        await gongji.aclose()
        await server.close()
    else:
        server = TestServer(make_app(StubFaults(run_s=0.0)), host="127.0.0.1")
        await server.start_server()
        stub = StubBackend(StubOptions(url=str(server.make_url(""))))
        yield Case(stub, fixed(b"{}", b'{"run_s": 30}'))
        await stub.aclose()
        await server.close()


async def settle(
    backend: Backend, receipt: Receipt, done: Callable[[JobStatus], bool]
) -> JobStatus:
    """Poll until `done` (bounded: a backend that never gets there fails the test)."""

    async def status() -> JobStatus:
        return (await backend.status([receipt]))[receipt.remote_id]

    return await wait_until(status, done, what=f"job {receipt.name} settles", polls=500)


class TestContract:
    async def test_submit_then_track_to_success(self, case: Case) -> None:
        """An accepted job can be polled to a terminal, successful state."""
        receipt = await case.backend.submit(Submission("c-quick", case.body("c-quick", False)))

        status = await settle(case.backend, receipt, lambda s: s.phase.terminal)

        assert "c-quick" == receipt.name
        assert Phase.SUCCEEDED == status.phase

    async def test_duplicate_name_is_the_same_job(self, case: Case) -> None:
        """Submitting a name twice returns the first job's receipt (counted as success)."""
        if not case.unique_names:
            pytest.skip("this service does not enforce unique names; bulk looks up first")
        body = case.body("c-dup", True)
        first = await case.backend.submit(Submission("c-dup", body))

        again = await case.backend.submit(Submission("c-dup", body))

        assert first == again

    async def test_lookup_by_name(self, case: Case) -> None:
        """A submitted job is found again; one never sent is not."""
        body = case.body("c-look", True)
        receipt = await case.backend.submit(Submission("c-look", body))

        assert receipt == await case.backend.lookup(Submission("c-look", body))
        never = Submission("c-never-sent", case.body("c-never-sent", True))
        assert await case.backend.lookup(never) is None

    async def test_stop_a_running_job(self, case: Case) -> None:
        """Stopping a job ends it as stopped; stopping it again is not an error."""
        receipt = await case.backend.submit(Submission("c-stop", case.body("c-stop", True)))

        await case.backend.stop(receipt)
        status = await settle(case.backend, receipt, lambda s: s.phase.terminal)
        await case.backend.stop(receipt)

        assert Phase.STOPPED == status.phase

    async def test_unknown_remote_id_is_never_terminal(self, case: Case) -> None:
        """A remote id the service does not know is MISSING or left out: never an end."""
        answer = await case.backend.status([Receipt("c-ghost", "ghost-id")])

        assert answer.get("ghost-id") in (None, JobStatus(Phase.MISSING))
