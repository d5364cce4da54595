"""The openYuanrong job API backend (the frontend's ``/api/jobs``)."""

from bulk.backends.yuanrong._backend import (
    KIND,
    YuanrongBackend,
    YuanrongKind,
    YuanrongOptions,
    error_text,
)
from bulk.backends.yuanrong._jobs import failure_reason, job_status, parse_time, use_list
from bulk.backends.yuanrong._schema import run_name_problem, submission_id

__all__ = [
    "KIND",
    "YuanrongBackend",
    "YuanrongKind",
    "YuanrongOptions",
    "error_text",
    "failure_reason",
    "job_status",
    "parse_time",
    "run_name_problem",
    "submission_id",
    "use_list",
]
