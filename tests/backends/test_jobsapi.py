"""The Ray family's shared reading of a job record: both kinds map the five statuses and
``driver_exit_code`` through one place, and keep their own wording of reasons."""

from __future__ import annotations

import pytest

from bulk.backends import ray, yuanrong
from bulk.backends._jobsapi import PHASES, each_job, exit_code, job_phase
from bulk.backends.base import Phase, Receipt
from bulk.errors import AuthenticationError, TransientBackendError


@pytest.mark.parametrize("status", sorted(PHASES))
def test_both_kinds_read_the_five_statuses_alike(status: str) -> None:
    record = {"status": status, "driver_exit_code": 0}
    ray_status = ray.job_status(record)
    yr_status = yuanrong.job_status(record)
    assert yr_status is not None
    assert ray_status.phase == yr_status.phase == job_phase(status) == PHASES[status]


def test_a_status_outside_the_five_is_read_in_each_kinds_dialect() -> None:
    assert job_phase("EVICTED") is None
    assert job_phase(None) is None
    assert Phase.QUEUED == ray.job_status({"status": "EVICTED"}).phase
    assert yuanrong.job_status({"status": "EVICTED"}) is None


@pytest.mark.parametrize(
    ("value", "want"), [(3, 3), (0, 0), (None, None), (True, None), ("3", None)]
)
def test_exit_code_is_an_int_and_never_a_bool(value: object, want: int | None) -> None:
    assert want == exit_code({"driver_exit_code": value})


def test_each_kind_words_a_failure_its_own_way() -> None:
    record = {"status": "FAILED", "driver_exit_code": 3, "error_type": "boom"}
    assert "exit code 3 (boom)" == ray.failure_reason(record)
    assert "exit code 3; boom" == yuanrong.failure_reason(record)


def _receipts(count: int) -> list[Receipt]:
    return [Receipt(f"job-{i}", f"id-{i}") for i in range(count)]


@pytest.mark.anyio
async def test_a_failed_get_does_not_lose_the_others() -> None:
    """50 per-job GETs, every seventh failing (a proxy's 502): the 42 answers come back (an
    all-or-nothing call of 50 GETs at a few per cent of failures never came back whole, and
    a run's jobs were never seen to end)."""

    async def fetch(job: Receipt) -> str:
        if int(job.remote_id.removeprefix("id-")) % 7 == 0:
            raise TransientBackendError("502 Bad Gateway")
        return job.name

    got = await each_job(_receipts(50), fetch, in_flight=8)

    assert {f"id-{i}": f"job-{i}" for i in range(50) if i % 7} == got


@pytest.mark.anyio
async def test_nothing_back_or_a_refusal_raises() -> None:
    """All GETs failing raises (for the gateway's retries and outage handling); a refused
    token raises even when other answers came back (it stops the run)."""

    async def down(job: Receipt) -> str:
        raise TransientBackendError("connection refused")

    with pytest.raises(TransientBackendError):
        await each_job(_receipts(5), down, in_flight=2)

    async def refused_once(job: Receipt) -> str:
        if job.remote_id == "id-3":
            raise AuthenticationError("403 Forbidden")
        return job.name

    with pytest.raises(AuthenticationError):
        await each_job(_receipts(5), refused_once, in_flight=2)
