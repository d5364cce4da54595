"""The ``ray`` backend: Ray's Jobs REST API (the dashboard's ``/api/jobs/``), over aiohttp.

Facts come from api/ray.md (measured on Ray 2.60); the quirks it lists are handled here:

- **Names.** A job's ``submission_id`` is bulk's job name, always (a template may only say
  ``"{_name}"``). A create of an id Ray already has is answered **HTTP 500** with a traceback
  ending ``ValueError: Job with submission_id X already exists. ...``: that is the job bulk
  sent before, adopted as accepted (so the kind's names are unique). Ray's other error bodies
  are text/plain tracebacks too: their last line (the exception) is the reason kept.
- **Paths.** Collection paths need their trailing slash (``/api/jobs/``); without it Ray
  answers 404.
- **Status.** ``GET /api/jobs/{id}`` per job while few are asked about at once, one
  ``GET /api/jobs/`` (every job the head holds: it has no filter and no pages) when many
  are, for the head's size; see :data:`LIST_FROM` for the measured crossover. PENDING may be
  followed by any end without RUNNING; ``driver_exit_code``, ``error_type`` and the first
  line of ``message`` make a failure's reason (:mod:`bulk.backends.ray._jobs`).
- **Stop.** ``POST /api/jobs/{id}/stop``. A job PENDING because no node has the resources it
  asks for ignores the stop (Ray answers ``{"stopped": true}`` all the same, and the job ends
  only at ``RAY_JOB_START_TIMEOUT_SECONDS``, FAILED): bulk reads the job back after a stop
  and, if so, says it could not be stopped (``bulk stop`` keeps tracking it) instead of
  recording it stopped.
- **Deleting finished jobs** (``delete_finished``, on by default): the head's job list keeps
  every job ever submitted until it is deleted, and every list call and the head's memory
  grow with it. Once a job's end is *committed to the journal*, bulk sends
  ``DELETE /api/jobs/{id}`` (the engine calls :meth:`DeletingRayBackend.delete_ended`; never
  before: a job deleted before its end is journaled would, after a crash, be polled, found
  missing, looked up, not found, and sent again). A journaled end is never polled or looked
  up again, so a deleted job is never sent twice. A ``kill -9`` between the commit and the
  delete leaves that one job on the head (harmless). Ray deletes the record, not the
  driver's log files on the head's disk.
- **working_dir.** A ``runtime_env.working_dir`` that is a local folder (not ``scheme://``)
  is zipped once per run and folder (:mod:`bulk.backends.ray._package`), uploaded unless the
  head has it, and sent as ``gcs://_ray_pkg_<sha1>.zip``; a relative folder is relative to
  the config's folder, and must stay inside it, exist, and hold at most 100 MiB of files
  (checked at plan time by :meth:`RayKind.validator`, once per distinct folder, and again
  before packing). ``pip``, ``env_vars`` and the rest of ``runtime_env`` pass through.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import orjson

from bulk._policy import LimitsConfig, TrackConfig
from bulk._text import excerpt
from bulk.backends._http import HttpClient, Response, read_token, url_problem
from bulk.backends._jobsapi import each_job
from bulk.backends.base import (
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
from bulk.backends.ray._jobs import WAITING_FOR_RESOURCES, job_status, last_line
from bulk.backends.ray._package import Package, PackageError, inspect, local_folder, pack
from bulk.backends.ray._schema import validate_body
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    PermanentBackendError,
)

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = [
    "DEFAULT_URL",
    "KIND",
    "LIST_FROM",
    "LIST_PER_GET",
    "RayBackend",
    "RayKind",
    "RayOptions",
]

DEFAULT_URL = "http://127.0.0.1:8265"
JOBS = "/api/jobs/"  # the trailing slash is required
PACKAGES = "/api/packages/gcs/"
ALREADY_EXISTS = b"already exists"
# Status: one ``GET /api/jobs/`` (every job the head holds) or one GET per job asked about,
# chosen by counts. Measured against ``bulk sim ray``, whose list costs what Ray 2.60's does
# (~0.25 ms per job held; ``python -m benchmarks.bench_ray_status``): a per-job GET costs
# ~2 ms (8 in flight), the list ~0.28 ms per job held; so the list wins from k ≈ held / 6
# jobs asked about (measured: between 16 and 32 with 100 held, past 64 with 1,000). bulk
# lists when k >= max(LIST_FROM, held // LIST_PER_GET), ``held`` being its estimate of the
# jobs on the head (the last list's length, plus creates, minus deletes since).
LIST_FROM = 16
LIST_PER_GET = 6
_PER_JOB_IN_FLIGHT = 8  # per-job GETs of one status call sent at once
_FOLDERS_KEPT = 1024  # working_dir checks remembered at plan time (each a walk of a folder)
_log = logging.getLogger("bulk.ray")


@dataclass(frozen=True, slots=True)
class RayOptions:
    """``[backend]`` keys: the dashboard's ``url``, an optional bearer token's variable
    (``token_env``), the per-request ``timeout_s``, ``verify_tls``, ``delete_finished``; and
    ``base``, the config's folder (a relative ``working_dir`` is relative to it)."""

    url: str = DEFAULT_URL
    token_env: str | None = None
    timeout_s: float = 30.0
    verify_tls: bool = True
    delete_finished: bool = True
    base: Path = Path()


class RayKind:
    """The ``ray`` backend kind."""

    name = "ray"
    # Submitting is cheap (10-40 ms a POST) but a head starts about one job a second per two
    # cores, each running job costs ~57 MiB, and Ray caps nothing by default (api/ray.md
    # §1.6): bulk caps active jobs itself. The dashboard is one asyncio process: 16
    # requests in flight did not submit faster than one.
    default_limits = LimitsConfig(
        submit_rate_per_s=50.0,
        status_rate_per_s=50.0,
        stop_rate_per_s=50.0,
        burst=10,
        max_in_flight=8,
        max_active=64,
    )
    default_track = TrackConfig(first_s=1.0, factor=1.5, max_s=10.0, batch=500)
    # Ray runs the entrypoint with a shell (``shell=True`` in its job manager): a value put
    # into it is shell-quoted, as the local backend's string commands are (``{v!raw}``
    # pastes one as it is).
    quoted_fields: Mapping[str, Callable[[str], str]] = MappingProxyType(
        {"job.entrypoint": shlex.quote}
    )
    jobs_outlive_bulk = True
    unique_names = True  # a second create of an id is answered "already exists"

    def parse_options(self, table: Table, base: Path) -> RayOptions:
        """Read the ``[backend]`` keys."""
        d = RayOptions()
        url = table.get("url", str, d.url)
        problem = url_problem(url)
        if problem is not None:
            table.fail("url", problem)
        return RayOptions(
            url=url,
            token_env=table.get("token_env", str, None),
            timeout_s=table.positive("timeout_s", float, d.timeout_s),
            verify_tls=table.get("verify_tls", bool, d.verify_tls),
            delete_finished=table.get("delete_finished", bool, d.delete_finished),
            base=base,
        )

    def validate(self, body: Any, problems: Problems) -> None:
        """Ray's own checks of a JobSubmitRequest, and those it lacks (see ``_schema``)."""
        validate_body(body, problems)

    def validator(self, options: RayOptions) -> Callable[[Any, Problems], None]:
        """:meth:`validate`, plus the checks of a local ``working_dir`` against the config's
        folder (``options.base``): inside it, existing, its links and size within bounds
        (:mod:`bulk.backends.ray._package`). Each distinct folder (and excludes) is looked at
        once, however many rows name it; the answers of the last :data:`_FOLDERS_KEPT` are
        kept."""
        seen: dict[tuple[str, tuple[str, ...]], str | None] = {}

        def validate(body: Any, problems: Problems) -> None:
            validate_body(body, problems)
            env = body.get("runtime_env") if isinstance(body, dict) else None
            if not isinstance(env, dict) or not _is_local(env.get("working_dir")):
                return
            excludes = env.get("excludes", [])
            if not isinstance(excludes, list) or not all(isinstance(p, str) for p in excludes):
                return  # reported by validate_body
            key = (str(env["working_dir"]), tuple(excludes))
            if key not in seen:
                if len(seen) >= _FOLDERS_KEPT:
                    seen.clear()
                seen[key] = _folder_problem(options.base, *key)
            problem = seen[key]
            if problem is not None:
                with problems.depending_on("job.runtime_env.excludes"):
                    problems.add("job.runtime_env.working_dir", problem)

        return validate

    def check_template(self, template: Template) -> str | None:
        """``submission_id``, if the template gives one, must be ``"{_name}"``: bulk finds a
        job again by its name, so the id is always the job's name."""
        source = template.source if isinstance(template.source, dict) else {}
        given = source.get("submission_id")
        if given is None or given == "{_name}":
            return None
        return (
            f"submission_id {given!r}: bulk sets the submission id to the job's name "
            '(it finds jobs again by it); leave it out, or write "{_name}"'
        )

    def create(self, options: RayOptions, *, run: str, run_dir: Path) -> RayBackend:
        """A client of the head at ``options.url`` (the token read now)."""
        cls = DeletingRayBackend if options.delete_finished else RayBackend
        return cls(options)

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend of ``bulk sim ray`` served in this process on an OS-chosen port."""
        from aiohttp.test_utils import TestServer

        from bulk._sim.ray import RAY, RaySimConfig, make_app

        @asynccontextmanager
        async def bed() -> AsyncIterator[Testbed]:
            app = make_app(RaySimConfig(pending_s=0.0, run_s=0.0))
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            backend = RayBackend(RayOptions(url=str(server.make_url("")).rstrip("/")))

            def garble(rate: float) -> None:
                app[RAY].garbage_rate = rate

            def body(name: str, long: bool) -> bytes:
                command = "sleep 30" if long else "true"
                return orjson.dumps({"entrypoint": command})

            try:
                yield Testbed(backend, body, garble=garble)
            finally:
                await backend.aclose()
                await server.close()

        return bed()

    def commands(self) -> Sequence[Command]:
        """None: ``bulk logs`` is a common command."""
        return ()

    def simulator(self) -> Simulator:
        """``bulk sim ray``."""
        from bulk._sim.ray import RaySimulator

        return RaySimulator()


KIND: BackendKind[RayOptions] = RayKind()


class RayBackend:
    """A client of a Ray head's Jobs API. Implements :class:`~bulk.backends.base.Backend`."""

    def __init__(self, options: RayOptions):
        token = read_token(options.token_env, None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._options = options
        self._http = HttpClient(
            options.url,
            timeout_s=options.timeout_s,
            verify_tls=options.verify_tls,
            headers=headers,
            max_connections=16,
            error_text=error_text,
        )
        self._packages: dict[tuple[Path, tuple[str, ...]], str] = {}  # folder -> gcs:// uri
        self._packing = anyio.Lock()
        self._held = 0  # about how many jobs the head holds (see LIST_PER_GET)

    async def submit(self, submission: Submission) -> Receipt:
        name = submission.name
        body = orjson.loads(submission.body)
        body["submission_id"] = name
        env = body.get("runtime_env")
        if isinstance(env, dict) and _is_local(env.get("working_dir")):
            env["working_dir"] = await self._upload(env, name)
            env.pop("excludes", None)  # applied when packing; Ray would not read them again
        response = await self._request(
            "POST",
            JOBS,
            body=orjson.dumps(body),
            idempotent=False,
            expect=(HTTPStatus.OK, HTTPStatus.BAD_REQUEST, HTTPStatus.INTERNAL_SERVER_ERROR),
            job_name=name,
        )
        if response.status == HTTPStatus.OK:
            answer = _object(response)
            sid = answer.get("submission_id")
            if not isinstance(sid, str) or not sid:
                msg = "submission_id is missing or not a string"
                raise response.malformed(msg, answer)
            self._held += 1
            return Receipt(name, sid)
        if ALREADY_EXISTS in response.body:  # Ray's answer to a duplicate id (HTTP 500)
            return Receipt(name, name)
        raise _refusal(response)

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        if len(jobs) >= max(LIST_FROM, self._held // LIST_PER_GET):
            return await self._status_from_list(jobs)
        return await self._status_per_job(jobs)

    async def _status_per_job(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        async def one(job: Receipt) -> JobStatus:
            record = await self._job(job.remote_id, job.name)
            return JobStatus(Phase.MISSING) if record is None else job_status(record)

        return await each_job(jobs, one, in_flight=_PER_JOB_IN_FLIGHT)

    async def _status_from_list(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        response = await self._request("GET", JOBS, idempotent=True)
        answer = response.json()
        if not isinstance(answer, list):
            msg = "not a JSON array"
            raise response.malformed(msg, answer)
        self._held = len(answer)
        wanted = {job.remote_id for job in jobs}
        found: dict[str, JobStatus] = {}
        for record in answer:
            if not isinstance(record, dict):
                msg = "an entry is not an object"
                raise response.malformed(msg, record)
            sid = record.get("submission_id")
            if isinstance(sid, str) and sid in wanted:
                found[sid] = job_status(record)
        return {job.remote_id: found.get(job.remote_id, JobStatus(Phase.MISSING)) for job in jobs}

    async def _job(self, remote_id: str, name: str | None) -> dict[str, Any] | None:
        """The job's record, or None if the head does not know it (404)."""
        response = await self._request(
            "GET",
            _job_path(remote_id),
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            return None
        record = _object(response)
        if not isinstance(record.get("status"), str):
            msg = "status is missing or not a string"
            raise response.malformed(msg, record)
        return record

    async def stop(self, job: Receipt) -> None:
        response = await self._request(
            "POST",
            _job_path(job.remote_id) + "/stop",
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=job.name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            return  # nothing to stop
        record = await self._job(job.remote_id, job.name)
        message = record.get("message") if record is not None else None
        if (
            record is not None
            and record.get("status") == "PENDING"
            and isinstance(message, str)
            and WAITING_FOR_RESOURCES in message
        ):
            msg = (
                "Ray ignores a stop of a job PENDING for resources (no node has what it asks "
                "for); it ends FAILED at the head's RAY_JOB_START_TIMEOUT_SECONDS: bulk keeps "
                "tracking it"
            )
            raise PermanentBackendError(msg, job_name=job.name)

    async def lookup(self, submission: Submission) -> Receipt | None:
        record = await self._job(submission.name, submission.name)
        if record is None:
            return None
        sid = record.get("submission_id")
        return Receipt(submission.name, sid if isinstance(sid, str) and sid else submission.name)

    async def logs(self, job: Receipt) -> bytes:
        """The job's driver log (Ray's own lines mixed with the job's stdout and stderr)."""
        response = await self._request(
            "GET",
            _job_path(job.remote_id) + "/logs",
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=job.name,
        )
        if response.status == HTTPStatus.NOT_FOUND:
            msg = (
                f"the Ray head no longer has job {job.remote_id} (delete_finished deletes "
                "each job once it has ended; set delete_finished = false to read logs later)"
            )
            raise PermanentBackendError(msg, job_name=job.name, status=response.status)
        answer = _object(response)
        text = answer.get("logs")
        if not isinstance(text, str):
            msg = "logs is missing or not a string"
            raise response.malformed(msg, answer)
        return text.encode()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, target: str, **kwargs: Any) -> Response:
        """One request; Ray's 403 (a wrong token, api/ray.md §1.7) stops the run as a 401
        does, instead of failing every job one by one."""
        try:
            return await self._http.request(method, target, **kwargs)
        except PermanentBackendError as exc:
            if exc.status != HTTPStatus.FORBIDDEN:
                raise
            msg = f"{exc}; check the token (backend.token_env)"
            raise AuthenticationError(msg, job_name=exc.job_name, status=exc.status) from None

    async def _upload(self, env: dict[str, Any], name: str) -> str:
        """The ``gcs://`` URI of the local ``working_dir`` of ``env``: packed and uploaded the
        first time a run needs it (the head keeps packages by their content's hash)."""
        working_dir = str(env["working_dir"])
        excludes = env.get("excludes")
        patterns = tuple(str(p) for p in excludes) if isinstance(excludes, list) else ()
        key = (self._options.base / working_dir, patterns)
        async with self._packing:
            uri = self._packages.get(key)
            if uri is not None:
                return uri
            try:  # checked at plan time too; again here, as what is read is read now
                package = await anyio.to_thread.run_sync(
                    _pack, self._options.base, working_dir, patterns
                )
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                msg = f"runtime_env.working_dir {working_dir!r}: {reason}"
                raise PermanentBackendError(msg, job_name=name) from None
            await self._put(package, name)
            self._packages[key] = package.uri
            return package.uri

    async def _put(self, package: Package, name: str) -> None:
        target = PACKAGES + quote(package.name, safe="")
        found = await self._request(
            "GET",
            target,
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=name,
        )
        if found.status == HTTPStatus.OK:
            return
        await self._request(
            "PUT",
            target,
            body=package.data,
            headers={"Content-Type": "application/octet-stream"},
            idempotent=True,  # the same bytes under the same name: harmless twice
            job_name=name,
        )
        _log.info("bulk: uploaded %s (%d bytes) to the Ray head", package.name, len(package.data))


class DeletingRayBackend(RayBackend):
    """A :class:`RayBackend` that deletes each job from the head once its end is journaled
    (``delete_finished``; see the module docstring)."""

    async def delete_ended(self, job: Receipt) -> None:
        """``DELETE /api/jobs/{id}``: the job's end is committed to the journal. A job the
        head no longer knows is already gone."""
        await self._request(
            "DELETE",
            _job_path(job.remote_id),
            idempotent=True,
            expect=(HTTPStatus.OK, HTTPStatus.NOT_FOUND),
            job_name=job.name,
        )
        self._held = max(0, self._held - 1)


def _pack(base: Path, working_dir: str, excludes: tuple[str, ...]) -> Package:
    return pack(local_folder(base, working_dir), excludes)


def _folder_problem(base: Path, working_dir: str, excludes: tuple[str, ...]) -> str | None:
    """Why a local ``working_dir`` cannot be shipped, or None (see ``_package``)."""
    try:
        inspect(local_folder(base, working_dir), excludes)
    except PackageError as exc:
        return str(exc)
    except OSError as exc:
        return f"{working_dir!r}: {exc.filename or ''}: {exc.strerror or exc}; it must be readable"
    return None


def _is_local(working_dir: object) -> bool:
    """Whether a ``working_dir`` names a local folder (not ``gcs://``, ``s3://``, ...)."""
    return isinstance(working_dir, str) and bool(working_dir) and "://" not in working_dir


def _job_path(remote_id: str) -> str:
    return JOBS + quote(remote_id, safe="")


def _object(response: Response) -> dict[str, Any]:
    answer = response.json()
    if not isinstance(answer, dict):
        msg = "not a JSON object"
        raise response.malformed(msg, answer)
    return answer


def error_text(body: bytes) -> str:
    """What a Ray error answer says: the last line of its traceback (``TypeError: ...``),
    not its first (``Traceback (most recent call last):``)."""
    return excerpt(last_line(body))


def _refusal(response: Response) -> BackendError:
    """The error of a create Ray answered 400 or 500 (not a duplicate): the traceback's last
    line is the reason. 400 is a refusal of this job; a 500 may have created it."""
    reason = error_text(response.body) or f"HTTP {response.status}"
    msg = f"POST {JOBS}: HTTP {response.status}: {reason}"
    if response.status == HTTPStatus.BAD_REQUEST:
        return PermanentBackendError(msg, job_name=response.job_name, status=response.status)
    return AmbiguousBackendError(msg, job_name=response.job_name, status=response.status)


_check: type[Backend] = RayBackend
