"""The Ray family's shared reading of a job record: both kinds map the five statuses and
``driver_exit_code`` through one place, and keep their own wording of reasons."""

from __future__ import annotations

import pytest

from bulk.backends import ray, yuanrong
from bulk.backends._jobsapi import PHASES, exit_code, job_phase
from bulk.backends.base import Phase


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
