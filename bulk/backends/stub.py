"""The ``stub`` backend: bulk's reference HTTP job service, served by ``bulk sim stub``.

A deliberately small protocol — create with a caller-chosen unique name, batch status,
look-up by name, stop — that exercises the whole engine over real HTTP: the crash tests and
the submit-rate benchmark run against it. It is also the template for a new HTTP backend.

=====================================  ======================================================
``POST /jobs``                         ``{"name", "spec"}`` → 201 ``{"id"}``; 409 ``{"id"}``
                                       if the name exists (counted as success)
``POST /jobs/status``                  ``{"ids": [...]}`` → ``{"jobs": {id: {state, reason}}}``
``GET /jobs?name=N``                   → 200 ``{"id", "state", ...}`` or 404
``POST /jobs/{id}/stop``               → 200
=====================================  ======================================================

States are ``queued``, ``running``, ``succeeded``, ``failed`` and ``stopped``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.backends.http import HttpClient
from bulk.config import LimitsConfig, TrackConfig
from bulk.errors import PermanentBackendError

if TYPE_CHECKING:
    from bulk.config import Table
    from bulk.spec import Template
    from bulk.validate import Problems

__all__ = ["KIND", "StubBackend", "StubKind", "StubOptions"]

_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
_PHASES = {
    "queued": Phase.QUEUED,
    "running": Phase.RUNNING,
    "succeeded": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "stopped": Phase.STOPPED,
}


@dataclass(frozen=True, slots=True)
class StubOptions:
    """``[backend]`` keys: ``url`` of the service and the per-request ``timeout_s``."""

    url: str
    timeout_s: float = 10.0


class StubKind:
    """The ``stub`` backend kind."""

    name = "stub"
    default_limits = LimitsConfig(
        submit_rate_per_s=200.0,
        status_rate_per_s=50.0,
        stop_rate_per_s=50.0,
        burst=10,
        max_in_flight=16,
        max_active=1000,
    )
    default_track = TrackConfig(first_s=0.2, factor=1.5, max_s=2.0, batch=500)
    uvloop = True  # HTTP-bound: uvloop costs 20-25 % less CPU per request
    unique_names = True  # a second create of a name is answered 409 with the first job's id

    def parse_options(self, table: Table, base: Path) -> StubOptions:
        """Read ``url`` (required) and ``timeout_s``."""
        url = table.get("url", str)
        if not _URL.fullmatch(url):
            table.fail("url", f"{url!r} is not an http(s) URL")
        return StubOptions(url=url, timeout_s=table.positive("timeout_s", float, 10.0))

    def validate(self, body: Any, problems: Problems) -> None:
        """Any JSON object is a valid stub job."""
        problems.table(body, "job")

    def check_template(self, template: Template) -> str | None:
        """Names are made by bulk: any template will do."""
        return None

    def create(self, options: StubOptions, *, run: str, run_dir: Path) -> StubBackend:
        """A client of the service at ``options.url``."""
        return StubBackend(options)


KIND = StubKind()


class StubBackend:
    """A client of the stub service. Implements :class:`~bulk.backends.base.Backend`."""

    def __init__(self, options: StubOptions):
        self._http = HttpClient(options.url, timeout_s=options.timeout_s)

    async def submit(self, submission: Submission) -> Receipt:
        # The name is [a-z0-9-] (run name and hex key), so it needs no JSON escaping.
        body = b'{"name":"' + submission.name.encode() + b'","spec":' + submission.body + b"}"
        response = await self._http.request(
            "POST",
            "/jobs",
            body=body,
            idempotent=False,
            expect=(201, 409),
            job_name=submission.name,
        )
        return Receipt(submission.name, _id(response.body, submission.name))

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        body = orjson.dumps({"ids": [job.remote_id for job in jobs]})
        response = await self._http.request("POST", "/jobs/status", body=body, idempotent=True)
        answers = orjson.loads(response.body)["jobs"]
        out = {}
        for job in jobs:
            answer = answers.get(job.remote_id)
            if answer is None:
                out[job.remote_id] = JobStatus(Phase.MISSING)
            else:
                phase = _PHASES.get(answer["state"], Phase.QUEUED)
                out[job.remote_id] = JobStatus(phase, answer.get("reason"))
        return out

    async def stop(self, job: Receipt) -> None:
        await self._http.request(
            "POST", f"/jobs/{quote(job.remote_id)}/stop", idempotent=True, job_name=job.name
        )

    async def lookup(self, submission: Submission) -> Receipt | None:
        name = submission.name
        response = await self._http.request(
            "GET", f"/jobs?name={quote(name)}", idempotent=True, expect=(200, 404), job_name=name
        )
        if response.status == 404:
            return None
        return Receipt(name, _id(response.body, name))

    async def aclose(self) -> None:
        await self._http.aclose()


def _id(body: bytes, name: str) -> str:
    try:
        return str(orjson.loads(body)["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        msg = f"the service answered without a job id: {body[:200]!r}"
        raise PermanentBackendError(msg, job_name=name) from None


_check: type[Backend] = StubBackend
