"""One contract, every backend: the FakeBackend, and every kind the registry knows, each on
its own testbed (``BackendKind.testbed``: a simulator on loopback, a temporary folder)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bulk.backends import get_kind, kind_names
from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.backends.base import Testbed as Bed  # a name pytest does not collect
from bulk.errors import AmbiguousBackendError, TransientBackendError
from bulk.testing import FakeBackend, wait_until

BodyFor = Callable[[str, bool], bytes]  # (job name, runs until stopped?) -> body


@dataclass(frozen=True)
class Case:
    backend: Backend
    body: BodyFor
    unique_names: bool = True  # a second submit of a name returns the first job
    # Sets the share of the service's 2xx answers replaced by garbage (HTTP backends only).
    garble: Callable[[float], None] | None = None


@pytest.fixture(params=["fake", *kind_names()])
def testbed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[AbstractAsyncContextManager[Bed], bool]:
    """The testbed of a registered kind (made outside the event loop: it may import its
    simulator), and whether the kind's names are unique."""
    if request.param == "fake":
        return fake_testbed(), True
    kind = get_kind(request.param)
    return kind.testbed(tmp_path), kind.unique_names


@asynccontextmanager
async def fake_testbed() -> AsyncIterator[Bed]:
    fake = FakeBackend(
        runs_for=0,
        outcome=lambda name: (
            (Phase.SUCCEEDED, None) if name.endswith("quick") else (Phase.RUNNING, None)
        ),
    )
    yield Bed(fake, lambda _name, _long: b"{}")


@pytest.fixture
async def case(testbed: tuple[AbstractAsyncContextManager[Bed], bool]) -> AsyncIterator[Case]:
    manager, unique_names = testbed
    async with manager as bed:
        # Where names are not unique (Gongji), bulk never sends a name again without
        # looking it up first, so the duplicate-submit item does not apply.
        yield Case(bed.backend, bed.body, unique_names=unique_names, garble=bed.garble)


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

    async def test_garbage_2xx_is_a_backend_error(self, case: Case) -> None:
        """A 2xx answer bulk cannot read (not JSON, the wrong shape) ends no run: after a
        create it is ambiguous (the job is looked up next), after a read transient."""
        if case.garble is None:
            pytest.skip("no service answers to garble")
        body = case.body("c-garbage", True)
        receipt = await case.backend.submit(Submission("c-garbage", body))
        case.garble(1.0)

        for i in range(12):  # the simulators pick one of their garbage answers at random
            fresh = Submission(f"c-garbage-{i}", case.body(f"c-garbage-{i}", True))
            with pytest.raises(AmbiguousBackendError):
                await case.backend.submit(fresh)
            with pytest.raises(TransientBackendError):
                await case.backend.lookup(Submission("c-garbage", body))
            with pytest.raises(TransientBackendError):
                await case.backend.status([receipt])
            try:
                await case.backend.stop(receipt)  # a stop may not read its answer at all
            except TransientBackendError:
                pass

    async def test_name_already_exists_is_success(self, case: Case) -> None:
        """A job whose create was not known to have worked (its answer unreadable) is, sent
        again, accepted as the job that exists: the receipt a look-up finds."""
        if not case.unique_names:
            pytest.skip("this service does not refuse a second job of a name")
        submission = Submission("c-exists", case.body("c-exists", True))
        if case.garble is not None:
            case.garble(1.0)
            with pytest.raises(AmbiguousBackendError):
                await case.backend.submit(submission)
            case.garble(0.0)
        else:
            await case.backend.submit(submission)  # created; its receipt forgotten

        again = await case.backend.submit(submission)

        assert again == await case.backend.lookup(submission)
