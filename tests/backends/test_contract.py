"""One contract, every backend: FakeBackend, LocalBackend, and StubBackend over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from aiohttp.test_utils import TestServer

from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.backends.local import LocalBackend, LocalOptions
from bulk.backends.stub import StubBackend, StubOptions
from bulk.sim.stub import StubFaults, make_app
from bulk.testing import FakeBackend

# (backend, a body that finishes at once, a body that runs until stopped)
Case = tuple[Backend, bytes, bytes]


@pytest.fixture(params=["fake", "local", "stub"])
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    kind = request.param
    if kind == "fake":
        fake = FakeBackend(
            runs_for=0,
            outcome=lambda name: (
                (Phase.SUCCEEDED, None) if name.endswith("quick") else (Phase.RUNNING, None)
            ),
        )
        yield fake, b"{}", b"{}"
    elif kind == "local":
        local = LocalBackend(LocalOptions(base=tmp_path, kill_grace_s=1), run_dir=tmp_path)
        yield local, b'{"command": "true"}', b'{"command": ["sleep", "30"]}'
        await local.aclose()
    else:
        server = TestServer(make_app(StubFaults(run_s=0.0)), host="127.0.0.1")
        await server.start_server()
        stub = StubBackend(StubOptions(url=str(server.make_url(""))))
        yield stub, b"{}", b'{"run_s": 30}'
        await stub.aclose()
        await server.close()


async def settle(
    backend: Backend, receipt: Receipt, done: Callable[[JobStatus], bool]
) -> JobStatus:
    """Poll until `done` (bounded: a backend that never gets there fails the test)."""
    for _ in range(500):
        status = (await backend.status([receipt]))[receipt.remote_id]
        if done(status):
            return status
        await anyio.sleep(0.01)
    pytest.fail(f"job {receipt.name} never settled")


class TestContract:
    async def test_submit_then_track_to_success(self, case: Case) -> None:
        """An accepted job can be polled to a terminal, successful state."""
        backend, quick, _ = case
        receipt = await backend.submit(Submission("c-quick", quick))

        status = await settle(backend, receipt, lambda s: s.phase.terminal)

        assert "c-quick" == receipt.name
        assert Phase.SUCCEEDED == status.phase

    async def test_duplicate_name_is_the_same_job(self, case: Case) -> None:
        """Submitting a name twice returns the first job's receipt (counted as success)."""
        backend, _, slow = case
        first = await backend.submit(Submission("c-dup", slow))

        again = await backend.submit(Submission("c-dup", slow))

        assert first == again

    async def test_lookup_by_name(self, case: Case) -> None:
        """A submitted job is found by its name; an unknown name is not."""
        backend, _, slow = case
        receipt = await backend.submit(Submission("c-look", slow))

        assert receipt == await backend.lookup(Submission("c-look", slow))
        assert await backend.lookup(Submission("c-never-sent", slow)) is None

    async def test_stop_a_running_job(self, case: Case) -> None:
        """Stopping a job ends it as stopped; stopping it again is not an error."""
        backend, _, slow = case
        receipt = await backend.submit(Submission("c-stop", slow))

        await backend.stop(receipt)
        status = await settle(backend, receipt, lambda s: s.phase.terminal)
        await backend.stop(receipt)

        assert Phase.STOPPED == status.phase

    async def test_unknown_remote_id_is_missing(self, case: Case) -> None:
        """A remote id the service does not know is reported MISSING."""
        backend, _, _ = case

        answer = await backend.status([Receipt("c-ghost", "ghost-id")])

        assert Phase.MISSING == answer["ghost-id"].phase
