"""The ``yuanrong`` backend: openYuanrong's job API (the frontend's ``/api/jobs``).

Facts come from docs/api/ray.md Part 2 (read from the frontend's source; nothing of it was
run). Every point §2.4 lists as unknown gets the safe choice, written down where it is made:

- **Ids.** A job's submission id is ``app-<job name>`` (:func:`submission_id`); the run name is
  checked at config time so that every name fits ``^[a-z0-9-]{1,64}$`` without ``driver``.
  The id in the reply is the remote id. A duplicate is HTTP 400 ``"submit job has already
  exist, ..."``: accepted, as the ``app-`` form of the name. The duplicate check is a GET
  then a create on the service, not atomic: bulk never sends a name twice at once.
- **Errors** are JSON strings (``"..."``); an answer that is not one is read as text (the
  Content-Type of those answers is unknown). 400 refuses the job (the service's reason);
  401 stops the run (``X-Auth``); 404 on the submit path means the URL is not a frontend
  and stops the run; 500 ``"create app failed ..."`` is the service failing to schedule the
  job: a failed job with the service's reason, not an ambiguous answer (no app was made);
  any other 5xx or a time-out after sending is ambiguous (looked up before a resend).
- **Time-outs.** The submit can block until the job is scheduled, tens of seconds for a
  job that cannot be (18 s per try, two tries, in the documented example): ``timeout_s``
  defaults to 120.
- **Status** from ``GET /api/jobs/{id}`` for a few jobs, the one list for many
  (:func:`use_list`); PENDING may jump to an end. A job the service does not know (404, or
  absent from the list) is left out of the answer (as not changed) for ``missing_after_s``
  before it counts as missing: the service serves both from a map an etcd watch fills, which
  may lag behind a create. Unknown status values are treated as not finished.
- **Stop** answers a bare ``true`` (it was RUNNING) or ``false`` (any other status). On
  ``false`` bulk reads the job: ended (or gone) is a stop done; still PENDING is an error for
  that job ("PENDING jobs ignore stop"): it stays tracked, never recorded stopped.
- **GPUs.** The frontend read validates ``entrypoint_num_gpus`` but never passes it on to the
  scheduler: a template that sets it gets a warning at plan time (use
  ``entrypoint_resources``).
- **Tenancy.** ``X-Tenant-Id`` and ``X-Pool-Label`` come from ``[backend]`` (``tenant``,
  ``pool_labels``) and go with every request; a row's ``headers`` table overrides them on its
  submit. The list is not filtered by tenant in the code read: bulk only ever reads the jobs
  it asked about from it.
- **Rate limits** exist (a traffic-limit middleware) but their values are unknown: modest
  defaults, and HTTP 429 is a throttle as everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
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
from bulk.backends._jobsapi import each_job
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
from bulk.backends.yuanrong._jobs import job_status, use_list
from bulk.backends.yuanrong._schema import (
    headers_of,
    run_name_problem,
    submission_id,
    validate_body,
)
from bulk.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    RunRefusedError,
)

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = ["KIND", "YuanrongBackend", "YuanrongKind", "YuanrongOptions", "error_text"]

_log = logging.getLogger("bulk")
_PER_JOB_IN_FLIGHT = 8  # per-job GETs of one status call sent at once (as for Ray)
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII without space or comma
DUPLICATE = "already exist"  # "submit job has already exist, submissionId: app-..."
UNSCHEDULABLE = "create app failed"  # "create app failed, submissionId:[...], err: ..."


@dataclass(frozen=True, slots=True)
class YuanrongOptions:
    """``[backend]`` keys: the frontend's ``url``, the default tenant and pool labels, the
    optional JWT (by reference), time-outs."""

    url: str
    tenant: str | None = None
    pool_labels: tuple[str, ...] = ()
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: float = 120.0
    verify_tls: bool = True
    missing_after_s: float = 60.0

    def headers(self) -> dict[str, str]:
        """The headers every request carries (the token's aside)."""
        out = {}
        if self.tenant is not None:
            out["X-Tenant-Id"] = self.tenant
        if self.pool_labels:
            out["X-Pool-Label"] = ",".join(self.pool_labels)
        return out


class YuanrongKind:
    """The ``yuanrong`` backend kind."""

    name = "yuanrong"
    # The frontend has a traffic limit of unknown value: modest rates, overridable.
    default_limits = LimitsConfig(
        submit_rate_per_s=20.0,
        status_rate_per_s=20.0,
        stop_rate_per_s=20.0,
        burst=10,
        max_in_flight=16,
        max_active=1000,
    )
    default_track = TrackConfig(first_s=1.0, factor=1.5, max_s=15.0, batch=500)
    quoted_fields = NO_QUOTING
    jobs_outlive_bulk = True
    unique_names = True  # a second submit of an id answers 400 "already exist"

    def parse_options(self, table: Table, base: Path) -> YuanrongOptions:
        """Read ``url`` (required), ``tenant``, ``pool_labels``, the token's reference and
        the time-outs."""
        url = table.get("url", str)
        problem = url_problem(url)
        if problem is not None:
            table.fail("url", problem)
        tenant = table.get("tenant", str, None)
        if tenant is not None and not re.fullmatch(r"[\x21-\x7e]+", tenant):
            table.fail("tenant", f"{tenant!r} must be one word of printable ASCII")
        labels = table.get("pool_labels", list, [])
        for label in labels:
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                table.fail(
                    "pool_labels",
                    f"{label!r} is not a label; labels are strings of printable ASCII "
                    "without spaces or commas (they are sent comma-joined)",
                )
        token_file = table.get("token_file", str, None)
        token_env = table.get("token_env", str, None)
        if token_file is not None and token_env is not None:
            table.fail("token_env", "give token_env or token_file, not both")
        if token_env is not None and not _ENV.fullmatch(token_env):
            table.fail("token_env", f"{token_env!r} is not an environment variable name")
        return YuanrongOptions(
            url=url,
            tenant=tenant,
            pool_labels=tuple(labels),
            token_env=token_env,
            token_file=base / token_file if token_file is not None else None,
            timeout_s=table.positive("timeout_s", float, 120.0),
            verify_tls=table.get("verify_tls", bool, True),
            missing_after_s=table.positive("missing_after_s", float, 60.0),
        )

    def run_name_problem(self, run: str) -> str | None:
        """Why this run's job names cannot be openYuanrong ids, or None."""
        return run_name_problem(run)

    def validate(self, body: Any, problems: Problems) -> None:
        """The submit body (see :func:`validate_body`)."""
        job = problems.table(body, "job")
        if job is not None:
            validate_body(job, problems)

    def check_template(self, template: Template) -> str | None:
        """Nothing refuses a template as a whole; one that sets ``entrypoint_num_gpus`` is
        warned about (the frontend read ignores it)."""
        source = template.source if isinstance(template.source, dict) else {}
        if source.get("entrypoint_num_gpus") is not None:
            _log.warning(
                "bulk: warning: job.entrypoint_num_gpus: openYuanrong's frontend does not "
                "pass it to the scheduler (docs/api/ray.md §2.2); request GPUs through "
                "entrypoint_resources (e.g. {GPU = 1}) instead"
            )
        return None

    def create(self, options: YuanrongOptions, *, run: str, run_dir: Path) -> YuanrongBackend:
        """A client of the frontend at ``options.url``, with the token read now."""
        return YuanrongBackend(options)

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend of ``bulk sim yuanrong`` served in this process on an OS-chosen port."""
        from aiohttp.test_utils import TestServer

        from bulk._sim.yuanrong import YuanrongSim, make_app, sample_body

        @asynccontextmanager
        async def bed() -> AsyncIterator[Testbed]:
            sim = YuanrongSim()
            server = TestServer(make_app(sim), host="127.0.0.1")
            await server.start_server()
            url = str(server.make_url("")).rstrip("/")
            backend = YuanrongBackend(YuanrongOptions(url=url, tenant="contract"))

            def garble(rate: float) -> None:
                sim.config = dataclasses.replace(sim.config, garbage_rate=rate)

            try:
                yield Testbed(
                    backend, lambda _name, long: sample_body(30.0 if long else 0.0), garble=garble
                )
            finally:
                await backend.aclose()
                await server.close()

        return bed()

    def commands(self) -> Sequence[Command]:
        """None: openYuanrong has only the common commands."""
        return ()

    def simulator(self) -> Simulator:
        """``bulk sim yuanrong``."""
        from bulk._sim.yuanrong import YuanrongSimulator

        return YuanrongSimulator()


KIND: BackendKind[YuanrongOptions] = YuanrongKind()


def error_text(body: bytes) -> str:
    """The message of an error answer: a JSON string decoded, else the text as it is."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"]).strip()  # the token middleware's {"error": "..."}
    return body.decode("utf-8", "replace").strip()


class YuanrongBackend:
    """Jobs as openYuanrong apps. Implements :class:`~bulk.backends.base.Backend`."""

    def __init__(self, options: YuanrongOptions, *, clock: Any = time.monotonic):
        token = read_token(options.token_env, options.token_file)
        headers = options.headers()
        if token:
            headers["X-Auth"] = token
        # X-Auth is a secret header: its value is taken out of every answer.
        self._http = HttpClient(
            options.url,
            timeout_s=options.timeout_s,
            verify_tls=options.verify_tls,
            headers=headers,
            secret_headers=("x-auth",),
        )
        self._missing_after_s = options.missing_after_s
        self._absent: dict[str, float] = {}  # remote id -> when it was first not found
        self._clock = clock

    async def submit(self, submission: Submission) -> Receipt:
        name = submission.name
        sid = submission_id(name)
        job = orjson.loads(submission.body)  # bulk's own rendered JSON, validated
        headers = headers_of(job)
        job.pop("headers", None)
        job["submission_id"] = sid
        response = await self._http.request(
            "POST",
            "/api/jobs",
            body=orjson.dumps(job),
            headers=headers,
            idempotent=False,
            expect=(HTTPStatus.OK, HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND, 500),
            job_name=name,
        )
        if response.status == HTTPStatus.OK:
            return Receipt(name, _reply_id(response))
        text = error_text(response.body)
        msg = f"POST /api/jobs: HTTP {response.status}: {excerpt(text)}"
        if response.status == HTTPStatus.BAD_REQUEST:
            if DUPLICATE in text:
                return Receipt(name, sid)  # this very id exists: the job was sent before
            raise PermanentBackendError(msg, job_name=name, status=response.status)
        if response.status == HTTPStatus.NOT_FOUND:
            msg += (
                f"; {self._http.base_url} has no POST /api/jobs: check [backend] url "
                "(the openYuanrong frontend's address, no path)"
            )
            raise RunRefusedError(msg, job_name=name, status=response.status)
        if UNSCHEDULABLE in text:
            # The service tried to schedule the job and gave up: nothing runs, and a resend
            # would fail alike. The job fails with the service's reason.
            raise PermanentBackendError(msg, job_name=name, status=response.status)
        raise AmbiguousBackendError(msg, job_name=name, status=response.status)

    async def lookup(self, submission: Submission) -> Receipt | None:
        sid = submission_id(submission.name)
        job = await self._get(sid, submission.name)
        return None if job is None else Receipt(submission.name, sid)

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        found: dict[str, dict[str, Any]] = {}
        if use_list(len(jobs)):
            wanted = {job.remote_id for job in jobs}
            response = await self._http.request("GET", "/api/jobs", idempotent=True)
            answer = response.json()
            if not isinstance(answer, list):
                msg = "not a JSON array"
                raise response.malformed(msg)
            for item in answer:
                sid = item.get("submission_id") if isinstance(item, dict) else None
                if isinstance(sid, str) and sid in wanted:
                    found[sid] = item
        else:
            # The rest of the answer is kept when some GETs fail (see each_job); a job whose
            # GET failed is not judged at all (not absent: its 404 did not come either).
            items = await each_job(jobs, self._get_job, in_flight=_PER_JOB_IN_FLIGHT)
            found = {rid: item for rid, item in items.items() if item is not None}
            jobs = [job for job in jobs if job.remote_id in items]
        return self._statuses(jobs, found)

    async def _get_job(self, job: Receipt) -> dict[str, Any] | None:
        return await self._get(job.remote_id, job.name)

    def _statuses(
        self, jobs: Sequence[Receipt], found: Mapping[str, dict[str, Any]]
    ) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        now = self._clock()
        for job in jobs:
            rid = job.remote_id
            item = found.get(rid)
            if item is None:
                since = self._absent.setdefault(rid, now)
                if now - since >= self._missing_after_s:
                    out[rid] = JobStatus(Phase.MISSING)
                continue
            self._absent.pop(rid, None)
            status = job_status(item)
            if status is None:  # a status value the API does not have: not finished
                continue
            out[rid] = status
        return out

    async def stop(self, job: Receipt) -> None:
        response = await self._http.request(
            "POST",
            f"/api/jobs/{quote(job.remote_id, safe='')}/stop",
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=job.name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            return  # the service no longer has it: nothing left to stop
        answer = response.json()
        if not isinstance(answer, bool):
            msg = "not true or false"
            raise response.malformed(msg)
        if answer:
            return
        # false: the job was not RUNNING. Ended (or gone) is a stop done; otherwise it is
        # PENDING, and openYuanrong stops RUNNING jobs only: say so, keep tracking it.
        item = await self._get(job.remote_id, job.name)
        phase = None if item is None else job_status(item)
        if item is None or (phase is not None and phase.phase.terminal):
            return
        msg = (
            f"POST /api/jobs/{job.remote_id}/stop: the service did not stop it (it stops "
            f"RUNNING jobs only; this one is {item.get('status')}); bulk "
            "keeps tracking it: run bulk stop again once it runs"
        )
        raise PermanentBackendError(msg, job_name=job.name, status=response.status)

    async def _get(self, sid: str, name: str) -> dict[str, Any] | None:
        """``GET /api/jobs/{sid}``: the job, or None when the service does not know it."""
        response = await self._http.request(
            "GET",
            f"/api/jobs/{quote(sid, safe='')}",
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            return None
        item = response.json()
        if not isinstance(item, dict) or item.get("submission_id") != sid:
            msg = "not the job asked for (an object with its submission_id)"
            raise response.malformed(msg)
        return item

    async def aclose(self) -> None:
        await self._http.aclose()


def _reply_id(response: Response) -> str:
    """The ``submission_id`` of a submit's answer (ambiguous if unreadable)."""
    answer = response.json()
    sid = answer.get("submission_id") if isinstance(answer, dict) else None
    if not isinstance(sid, str) or not sid:
        msg = "submission_id is missing or not a string"
        raise response.malformed(msg)
    return sid


_check: type[Backend] = YuanrongBackend
