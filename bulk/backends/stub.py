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

States are ``queued``, ``running``, ``succeeded``, ``failed`` and ``stopped``. With a token
(``token_env`` or ``token_file``), every request carries ``Authorization: Bearer <token>``;
a 401 answer stops the run (bad credentials), rows kept.

An answer bulk cannot read (not JSON, a field missing or of the wrong type) is transient for a
read and ambiguous for a create (the job is looked up before anything is sent again): it never
ends the run, and never fails a job that may exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from bulk._policy import LimitsConfig, TrackConfig
from bulk._text import excerpt
from bulk.backends._http import HttpClient, Response, read_token, url_problem
from bulk.backends.base import (
    NO_QUOTING,
    Backend,
    BackendKind,
    Command,
    JobStatus,
    Phase,
    Receipt,
    Simulator,
    Submission,
    Testbed,
)

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = ["KIND", "StubBackend", "StubKind", "StubOptions"]

_PHASES = {
    "queued": Phase.QUEUED,
    "running": Phase.RUNNING,
    "succeeded": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "stopped": Phase.STOPPED,
}


@dataclass(frozen=True, slots=True)
class StubOptions:
    """``[backend]`` keys: ``url`` of the service, the per-request ``timeout_s``, and where an
    optional bearer token is read from (``token_env`` or ``token_file``)."""

    url: str
    timeout_s: float = 10.0
    token_env: str | None = None
    token_file: Path | None = None


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
    quoted_fields = NO_QUOTING
    jobs_outlive_bulk = True
    unique_names = True  # a second create of a name is answered 409 with the first job's id

    def parse_options(self, table: Table, base: Path) -> StubOptions:
        """Read ``url`` (required), ``timeout_s`` and the token's reference, if any."""
        url = table.get("url", str)
        problem = url_problem(url)
        if problem is not None:
            table.fail("url", problem)
        token_file = table.get("token_file", str, None)
        token_env = table.get("token_env", str, None)
        if token_file is not None and token_env is not None:
            table.fail("token_env", "give token_env or token_file, not both")
        return StubOptions(
            url=url,
            timeout_s=table.positive("timeout_s", float, 10.0),
            token_env=token_env,
            token_file=base / token_file if token_file is not None else None,
        )

    def validate(self, body: Any, problems: Problems) -> None:
        """Any JSON object is a valid stub job."""
        problems.table(body, "job")

    def check_template(self, template: Template) -> str | None:
        """Names are made by bulk: any template will do."""
        return None

    def create(self, options: StubOptions, *, run: str, run_dir: Path) -> StubBackend:
        """A client of the service at ``options.url``."""
        return StubBackend(options)

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend of ``bulk sim stub`` served in this process on an OS-chosen port."""
        from aiohttp.test_utils import TestServer

        from bulk._sim.stub import SERVICE, StubFaults, make_app

        @asynccontextmanager
        async def bed() -> AsyncIterator[Testbed]:
            app = make_app(StubFaults(run_s=0.0))
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            backend = StubBackend(StubOptions(url=str(server.make_url(""))))

            def garble(rate: float) -> None:
                app[SERVICE].faults = dataclasses.replace(app[SERVICE].faults, garbage_rate=rate)

            try:
                yield Testbed(
                    backend,
                    lambda _name, long: b'{"run_s": 30}' if long else b"{}",
                    garble=garble,
                )
            finally:
                await backend.aclose()
                await server.close()

        return bed()

    def commands(self) -> Sequence[Command]:
        """None: the stub has only the common commands."""
        return ()

    def simulator(self) -> Simulator:
        """``bulk sim stub``."""
        from bulk._sim.stub import StubSimulator

        return StubSimulator()


KIND: BackendKind[StubOptions] = StubKind()


class StubBackend:
    """A client of the stub service. Implements :class:`~bulk.backends.base.Backend`."""

    def __init__(self, options: StubOptions):
        token = read_token(options.token_env, options.token_file)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # The token goes in a secret header: the client takes it out of every answer.
        self._http = HttpClient(options.url, timeout_s=options.timeout_s, headers=headers)

    async def submit(self, submission: Submission) -> Receipt:
        # Serialised, never pasted: a name is escaped like any string. The body is already
        # the compact JSON the engine rendered (orjson): it goes in as it is, not re-parsed.
        body = orjson.dumps({"name": submission.name, "spec": orjson.Fragment(submission.body)})
        response = await self._http.request(
            "POST",
            "/jobs",
            body=body,
            idempotent=False,
            expect=(201, 409),
            job_name=submission.name,
        )
        return Receipt(submission.name, _id(response))

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        body = orjson.dumps({"ids": [job.remote_id for job in jobs]})
        response = await self._http.request("POST", "/jobs/status", body=body, idempotent=True)
        answers = _field(response, response.json(), "jobs", dict)
        out = {}
        for job in jobs:
            answer = answers.get(job.remote_id)
            if answer is None:
                out[job.remote_id] = JobStatus(Phase.MISSING)
                continue
            if not isinstance(answer, dict):
                msg = f"jobs[{job.remote_id!r}] is not an object"
                raise response.malformed(msg)
            state = _field(response, answer, "state", str)
            reason = answer.get("reason")
            out[job.remote_id] = JobStatus(
                _PHASES.get(state, Phase.QUEUED),
                None
                if reason is None
                else excerpt(reason if isinstance(reason, str) else str(reason)),
            )
        return out

    async def stop(self, job: Receipt) -> None:
        await self._http.request(
            "POST",
            f"/jobs/{quote(job.remote_id, safe='')}/stop",
            idempotent=True,
            job_name=job.name,
        )

    async def lookup(self, submission: Submission) -> Receipt | None:
        name = submission.name
        response = await self._http.request(
            "GET",
            f"/jobs?name={quote(name, safe='')}",
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            return None
        return Receipt(name, _id(response))

    async def aclose(self) -> None:
        await self._http.aclose()


def _id(response: Response) -> str:
    """The job id of a create or look-up answer (ambiguous after a create if unreadable)."""
    job_id = _field(response, response.json(), "id", str | int)
    if isinstance(job_id, bool) or not str(job_id):
        msg = "id is empty"
        raise response.malformed(msg)
    return str(job_id)


def _field(response: Response, answer: object, key: str, kind: Any) -> Any:
    """``answer[key]``, which must be of ``kind``; else the answer is unreadable."""
    if not isinstance(answer, dict):
        msg = "not a JSON object"
        raise response.malformed(msg)
    value = answer.get(key)
    if not isinstance(value, kind):
        msg = f"{key} is missing or not of the expected type"
        raise response.malformed(msg)
    return value


_check: type[Backend] = StubBackend
