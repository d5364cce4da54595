"""``bulk sim ray``: a simulator of Ray's Jobs REST API (the dashboard, Ray 2.60).

Faithful to api/ray.md, quirks included:

- Collection paths need the trailing slash: ``POST /api/jobs`` and ``GET /api/jobs`` answer
  404 ``404: Not Found`` (text/plain), as Ray does.
- Errors are text/plain Python tracebacks; a duplicate ``submission_id`` is **HTTP 500**
  ending ``ValueError: Job with submission_id X already exists. Please use a different
  submission_id.``; bad bodies are 400 ``TypeError: ...`` with Ray's wording; invalid JSON is
  500 ``Server got itself in trouble``. An id with ``/`` answers 500 and leaves a record that
  stays PENDING for ever and cannot be addressed.
- Jobs: PENDING for ``pending_s``, then RUNNING (if ``--cpus`` has room for the job's
  ``entrypoint_num_cpus``; else PENDING "waiting for resources" until it fits or
  ``start_timeout_s`` runs out: FAILED ``JOB_SUPERVISOR_ACTOR_START_TIMEOUT``), then
  SUCCEEDED, or FAILED with ``driver_exit_code``. States are worked out when asked, so a
  poller may see PENDING, then an end. A job runs ``sleep N`` for N seconds (an entrypoint
  beginning so), else ``run_s``; ``exit N`` (or ``false``: 1) ends it with that code, and so
  does the ``SIM_EXIT_CODE`` entry of ``runtime_env.env_vars``; ``failure_rate`` fails jobs
  at random with code 1. A ``working_dir`` that is not a ``gcs://`` package uploaded here
  fails the job (the simulated head has no files).
- Stop: ``{"stopped": true}`` and STOPPED, except for a job PENDING for resources, which
  ignores it (still ``{"stopped": true}``). DELETE of a job not ended: 500 ``RuntimeError:
  Attempted to delete job ...``; after a DELETE the id is free again.
- ``GET /api/jobs/`` lists every job held, and costs ``list_cost_s`` per job held (Ray
  2.60: ~0.25 ms; 104 ms with 410 jobs), so a client that never deletes pays more and more.
- Packages: ``GET``/``PUT /api/packages/gcs/<name>``. Logs: ``GET /api/jobs/{id}/logs``.
- Auth (``--token``): no ``Authorization`` 401, a wrong one 403, as Ray's token mode.
- Faults (seeded), as ``bulk sim gongji``'s: ``http_429_rate`` (Ray itself never throttles;
  a proxy in front of it may), ``error_rate`` (502), ``reset_rate`` (connection dropped),
  ``commit_fail_rate`` (the job is created, then a 500 or a dropped connection),
  ``latency_s``, ``echo_rate`` (a 500 traceback quoting the request's headers and body),
  ``garbage_rate`` (a 200 whose body bulk cannot read, after the request took effect).
- ``GET /_sim/ledger``: ``{"creates": {id: count}, "requests": {path: count}, "uploads":
  {package: count}, "deletes", "held", "list_calls", "echoed", "first_create",
  "last_create"}``. A correct client makes every create count 1, whatever the faults.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bulk._sim._common import Ledger, seconds, share

__all__ = ["RAY", "RaySim", "RaySimConfig", "RaySimulator", "make_app"]

_FIELDS = frozenset(
    {
        "entrypoint",
        "submission_id",
        "job_id",
        "runtime_env",
        "metadata",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
        "entrypoint_resources",
        "entrypoint_label_selector",
    }
)
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_MESSAGES = {
    "PENDING": "Job has not started yet.",
    "RUNNING": "Job is currently running.",
    "SUCCEEDED": "Job finished successfully.",
    "STOPPED": "Job was intentionally stopped.",
}
_WAITING = (
    "Job has not started yet. It may be waiting for resources (CPUs, GPUs, memory, custom "
    "resources) to become available."
)
_GARBAGE = (b"<html>502</html>", b"", b"[]", b'"ok"', b"{}", b'{"status": 3}')
_SLEEP = re.compile(r"sleep\s+(\d+(?:\.\d+)?)")
_EXIT = re.compile(r"exit\s+(\d+)")


@dataclass(frozen=True, slots=True)
class RaySimConfig:
    """How the simulated head behaves."""

    pending_s: float = 0.5
    run_s: float = 1.0
    failure_rate: float = 0.0
    cpus: float | None = None  # room for entrypoint_num_cpus; None: no limit
    start_timeout_s: float = 900.0  # RAY_JOB_START_TIMEOUT_SECONDS
    list_cost_s: float = 0.00025  # per job held, per list call
    token: str | None = None
    http_429_rate: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    commit_fail_rate: float = 0.0
    latency_s: float = 0.0
    echo_rate: float = 0.0
    garbage_rate: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class _Job:
    sid: str
    body: dict[str, Any]
    created: float
    cpus: float
    run_s: float
    exit_code: int
    status: str = "PENDING"
    waiting: bool = False  # PENDING for resources
    started: float | None = None
    ended: float | None = None
    error_type: str | None = None
    message: str | None = None
    stop_asked: bool = False
    zombie: bool = False  # an id with "/": PENDING for ever


@dataclass(slots=True)
class RaySim(Ledger):
    """The simulated head's state."""

    config: RaySimConfig = field(default_factory=RaySimConfig)
    jobs: dict[str, _Job] = field(default_factory=dict)
    active: dict[str, _Job] = field(default_factory=dict)  # not ended, in creation order
    packages: dict[str, bytes] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    deletes: int = 0
    list_calls: int = 0
    garbage_rate: float = 0.0

    def __post_init__(self) -> None:
        self.rng.seed(self.config.seed)
        self.garbage_rate = self.config.garbage_rate

    def create(self, sid: str, body: dict[str, Any]) -> _Job:
        """Create a job of a valid body and count it in the ledger."""
        now = time.monotonic()
        entrypoint = str(body["entrypoint"])
        env = body.get("runtime_env") or {}
        env_vars = env.get("env_vars") or {}
        sleep = _SLEEP.match(entrypoint)
        code = _EXIT.match(entrypoint)
        exit_code = int(code.group(1)) if code else 1 if entrypoint.strip() == "false" else 0
        exit_code = int(env_vars.get("SIM_EXIT_CODE", exit_code))
        if self.roll(self.config.failure_rate):
            exit_code = 1
        job = _Job(
            sid,
            body,
            now,
            float(body.get("entrypoint_num_cpus") or 0),
            float(sleep.group(1)) if sleep else self.config.run_s,
            exit_code,
        )
        working_dir = env.get("working_dir")
        if isinstance(working_dir, str) and working_dir.removeprefix("gcs://") not in self.packages:
            job.error_type = (
                "RUNTIME_ENV_SETUP_FAILURE"
                if working_dir.startswith("gcs://")
                else "JOB_SUPERVISOR_ACTOR_START_FAILURE"
            )
        self.jobs[sid] = job
        self.active[sid] = job
        self.count_create(sid, now)
        return job

    def advance(self) -> None:
        """Bring every job not ended up to now: ends first (they free CPUs), then starts."""
        now = time.monotonic()
        self._finish(now)
        self._start(now)

    def _finish(self, now: float) -> None:
        for job in list(self.active.values()):
            if job.started is not None and (job.stop_asked or now >= job.started + job.run_s):
                if job.stop_asked:
                    self._end(job, now, "STOPPED")
                elif job.exit_code:
                    message = (
                        f"Job entrypoint command failed with exit code {job.exit_code}, last "
                        "available logs (truncated to 20,000 chars):\n(simulated)"
                    )
                    self._end(job, now, "FAILED", "JOB_ENTRYPOINT_COMMAND_ERROR", message)
                else:
                    self._end(job, now, "SUCCEEDED")

    def _start(self, now: float) -> None:
        cfg = self.config
        used = sum(j.cpus for j in self.active.values() if j.started is not None)
        for job in list(self.active.values()):
            if job.started is not None or job.zombie or now < job.created + cfg.pending_s:
                continue
            if job.stop_asked and not job.waiting:
                self._end(job, now, "STOPPED")
            elif job.error_type is not None:
                self._end(job, now, "FAILED", job.error_type, f"{job.error_type} (simulated)")
            elif cfg.cpus is None or used + job.cpus <= cfg.cpus:
                job.started, job.status, job.waiting = now, "RUNNING", False
                used += job.cpus
            elif now >= job.created + cfg.start_timeout_s:
                message = (
                    f"Job supervisor actor failed to start within {cfg.start_timeout_s:g} "
                    "seconds. This timeout can be configured by setting the environment "
                    "variable RAY_JOB_START_TIMEOUT_SECONDS."
                )
                self._end(job, now, "FAILED", "JOB_SUPERVISOR_ACTOR_START_TIMEOUT", message)
            else:
                job.waiting = True

    def _end(
        self,
        job: _Job,
        now: float,
        status: str,
        error_type: str | None = None,
        message: str | None = None,
    ) -> None:
        job.status, job.ended, job.waiting = status, now, False
        job.error_type, job.message = error_type, message
        self.active.pop(job.sid, None)

    def view(self, job: _Job) -> dict[str, Any]:
        """The job as ``GET /api/jobs/{id}`` shows it (JobDetails)."""
        message = job.message or (_WAITING if job.waiting else _MESSAGES[job.status])
        ended = job.status in _TERMINAL
        return {
            "type": "SUBMISSION",
            "job_id": None,
            "submission_id": job.sid,
            "driver_info": None,
            "status": job.status,
            "entrypoint": job.body["entrypoint"],
            "message": message,
            "error_type": job.error_type,
            "start_time": int(job.created * 1000),
            "end_time": int(job.ended * 1000) if job.ended is not None else None,
            "metadata": job.body.get("metadata") or {},
            "runtime_env": job.body.get("runtime_env") or {},
            "driver_agent_http_address": None,
            "driver_node_id": None,
            "driver_exit_code": job.exit_code if ended and job.status != "STOPPED" else None,
        }


RAY: web.AppKey[RaySim] = web.AppKey("ray", RaySim)


def _traceback(status: int, last: str) -> web.Response:
    """A text/plain Python traceback, as the dashboard answers errors."""
    text = (
        "Traceback (most recent call last):\n"
        '  File "/ray/dashboard/modules/job/job_head.py", line 371, in submit_job\n'
        "    resp = await job_agent_client.submit_job_internal(submit_request)\n"
        f"{last}\n"
    )
    return web.Response(status=status, text=text)


def _type_problem(body: dict[str, Any]) -> str | None:
    """Ray's 400 TypeError for a body JobSubmitRequest refuses, or None."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return f"JobSubmitRequest.__init__() got an unexpected keyword argument '{unknown[0]}'"
    if "entrypoint" not in body:
        return "JobSubmitRequest.__init__() missing 1 required positional argument: 'entrypoint'"
    checks: list[tuple[str, tuple[type, ...], str]] = [
        ("entrypoint", (str,), "a string"),
        ("submission_id", (str,), "a string if provided"),
        ("runtime_env", (dict,), "a dict"),
        ("metadata", (dict,), "a dict"),
        ("entrypoint_num_cpus", (int, float), "a number"),
        ("entrypoint_num_gpus", (int, float), "a number"),
        ("entrypoint_memory", (int,), "an integer"),
        ("entrypoint_resources", (dict,), "a dict"),
        ("entrypoint_label_selector", (dict,), "a dict"),
    ]
    for key, kinds, what in checks:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return f"{key} must be {what}, got {type(value)}"
    for key, kinds, what in (
        ("metadata", (str,), "strings"),
        ("entrypoint_label_selector", (str,), "strings"),
        ("entrypoint_resources", (int, float), "numbers"),
    ):
        for value in (body.get(key) or {}).values():
            if isinstance(value, bool) or not isinstance(value, kinds):
                return f"{key} values must be {what}, got {type(value)}"
    return None


def _unauthorized(got: str | None) -> web.Response:
    if got is None:
        return web.Response(status=401, text="Unauthorized: Missing authentication token")
    return web.Response(status=403, text="Forbidden: Invalid authentication token")


def make_app(config: RaySimConfig | None = None) -> web.Application:
    """The simulated head as an aiohttp application (``app[RAY]`` is its state)."""
    sim = RaySim(config or RaySimConfig())
    api = _Api(sim)
    app = web.Application(middlewares=[api.gate], client_max_size=512 * 1024 * 1024)
    app[RAY] = sim
    r = app.router
    r.add_get("/api/version", api.version)
    r.add_post("/api/jobs/", api.create)
    r.add_get("/api/jobs/", api.list)
    r.add_get("/api/jobs/{id}", api.get)
    r.add_delete("/api/jobs/{id}", api.delete)
    r.add_post("/api/jobs/{id}/stop", api.stop)
    r.add_get("/api/jobs/{id}/logs", api.logs)
    r.add_get("/api/packages/{protocol}/{name}", api.package)
    r.add_put("/api/packages/{protocol}/{name}", api.upload)
    r.add_get("/_sim/ledger", api.ledger)
    return app


class _Api:
    """The head's HTTP endpoints, over its state, behind one gate for every request."""

    def __init__(self, sim: RaySim):
        self.sim = sim

    @web.middleware
    async def gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count, delay, authenticate and inject faults, then hand the request on."""
        if request.path.startswith("/_sim/"):
            return await handler(request)  # type: ignore[no-any-return]
        sim, cfg = self.sim, self.sim.config
        sim.requests[request.path] = sim.requests.get(request.path, 0) + 1
        if cfg.latency_s:
            await asyncio.sleep(cfg.latency_s)
        raw = await request.read()
        early = self._refusal(request, raw)
        if early is not None:
            return early
        sim.advance()
        response: web.StreamResponse = await handler(request)
        if (
            isinstance(response, web.Response)
            and response.status == 200  # noqa: PLR2004
            and response.content_type == "application/json"
            and sim.roll(sim.garbage_rate)
        ):
            body = _GARBAGE[sim.rng.randrange(len(_GARBAGE))]
            return web.Response(body=body, content_type="application/json")
        return response

    def _refusal(self, request: web.Request, raw: bytes) -> web.Response | None:
        sim, cfg = self.sim, self.sim.config
        if cfg.token is not None:
            got = request.headers.get("Authorization")
            if got != f"Bearer {cfg.token}":
                return _unauthorized(got)
        if sim.roll(cfg.http_429_rate):
            return web.Response(status=429, text="too many requests", headers={"Retry-After": "1"})
        outage = sim.outage(request, cfg.error_rate, cfg.reset_rate)
        if outage is not None:
            return outage
        if sim.roll(cfg.echo_rate):
            sim.echoed += 1
            headers = {str(k): v for k, v in request.headers.items()}
            echo = orjson.dumps({"headers": headers, "body": raw.decode("utf-8", "replace")})
            return _traceback(500, f"RuntimeError: bad request {echo.decode()}")
        return None

    async def version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"version": "4", "ray_version": "2.60.0", "ray_commit": "sim", "session_name": "sim"}
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return web.Response(
                status=500, text="500 Internal Server Error\n\nServer got itself in trouble"
            )
        problem = _type_problem(body)
        if problem is not None:
            return _traceback(400, f"TypeError: {problem}")
        sid = body.get("submission_id") or f"raysubmit_{sim.rng.getrandbits(64):016x}"
        if sid in sim.jobs:
            return _traceback(
                500,
                "RuntimeError: Request failed with status code 400: ValueError: Job with "
                f"submission_id {sid} already exists. Please use a different submission_id.",
            )
        job = sim.create(sid, body)
        if "/" in sid:
            job.zombie = True
            return _traceback(
                500, f"FileNotFoundError: [Errno 2] No such file: '/tmp/logs/job-driver-{sid}.log'"
            )
        if sim.roll(sim.config.commit_fail_rate):
            return _commit_failed(request, sim)
        return web.json_response({"job_id": sid, "submission_id": sid})

    async def list(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        sim.list_calls += 1
        if sim.config.list_cost_s:
            await asyncio.sleep(sim.config.list_cost_s * len(sim.jobs))
        views = [sim.view(job) for job in sim.jobs.values()]
        return web.Response(body=orjson.dumps(views), content_type="application/json")

    def _find(self, request: web.Request) -> _Job | web.Response:
        job_id = request.match_info["id"]
        job = self.sim.jobs.get(job_id)
        if job is None:
            return web.Response(status=404, text=f"Job {job_id} does not exist")
        return job

    async def get(self, request: web.Request) -> web.StreamResponse:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        return web.Response(body=orjson.dumps(self.sim.view(job)), content_type="application/json")

    async def stop(self, request: web.Request) -> web.StreamResponse:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        if job.status in _TERMINAL:
            return web.json_response({"stopped": False})
        job.stop_asked = True  # ignored while PENDING for resources (see advance)
        self.sim.advance()
        return web.json_response({"stopped": True})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        if job.status not in _TERMINAL:
            return _traceback(
                500,
                f"RuntimeError: Attempted to delete job '{job.sid}', but it is in a "
                f"non-terminal state {job.status}.",
            )
        del self.sim.jobs[job.sid]
        self.sim.deletes += 1
        return web.json_response({"deleted": True})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        job = self._find(request)
        if isinstance(job, web.Response):
            return job
        text = (
            "2026-11-22 10:00:00,000\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
            f"Running entrypoint for job {job.sid}: {job.body['entrypoint']}\n"
        )
        if job.status in ("SUCCEEDED", "FAILED") and job.started is not None:
            text += f"(simulated output of {job.sid}; exit code {job.exit_code})\n"
        return web.json_response({"logs": text})

    async def package(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] not in self.sim.packages:
            return web.Response(status=404, text="Package not found")
        return web.Response(status=200, text="Package exists")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.sim.packages[name] = await request.read()
        self.sim.uploads[name] = self.sim.uploads.get(name, 0) + 1
        return web.Response(status=200, text=f"Successfully uploaded {name}")

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        return web.Response(
            body=orjson.dumps(
                {
                    "creates": sim.creates,
                    "requests": sim.requests,
                    "uploads": sim.uploads,
                    "deletes": sim.deletes,
                    "held": len(sim.jobs),
                    "list_calls": sim.list_calls,
                    "echoed": sim.echoed,
                    "first_create": sim.first_create,
                    "last_create": sim.last_create,
                }
            ),
            content_type="application/json",
        )


def _commit_failed(request: web.Request, sim: RaySim) -> web.Response:
    """A create that took effect, answered with a 500 or a dropped connection."""
    if sim.roll(0.5) and request.transport is not None:
        request.transport.close()
        return web.Response(status=500)
    return web.Response(
        status=500, text="500 Internal Server Error\n\nServer got itself in trouble"
    )


class RaySimulator:
    """``bulk sim ray``: the head's capacity, job timing and faults of :class:`RaySimConfig`."""

    help = "a simulator of Ray's Jobs REST API (the dashboard's /api/jobs/)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per setting of :class:`RaySimConfig`."""
        for name, kind, default, help_ in (
            ("--pending-s", seconds, 0.5, "seconds a job stays PENDING before it may start"),
            ("--run-s", seconds, 1.0, "seconds a job runs (an entrypoint `sleep N`: N)"),
            ("--failure-rate", share, 0.0, "share of jobs that end FAILED (exit code 1)"),
            ("--cpus", seconds, None, "CPUs for entrypoint_num_cpus (default: no limit)"),
            ("--start-timeout-s", seconds, 900.0, "RAY_JOB_START_TIMEOUT_SECONDS"),
            ("--list-cost-s", seconds, 0.00025, "seconds a list call costs per job held"),
            ("--http-429-rate", share, 0.0, "share of requests answered HTTP 429 (a proxy's)"),
            ("--error-rate", share, 0.0, "share of requests answered HTTP 502"),
            ("--reset-rate", share, 0.0, "share of requests whose connection is dropped"),
            ("--commit-fail-rate", share, 0.0, "share of creates that create, then fail"),
            ("--latency", seconds, 0.0, "delay before every answer, seconds"),
            ("--echo-rate", share, 0.0, "share of requests answered echoing the request"),
            ("--garbage-rate", share, 0.0, "share of 200 answers replaced by garbage"),
            ("--token", str, None, "require Authorization: Bearer TOKEN (401/403 otherwise)"),
            ("--seed", int, 0, "seed of the fault draws"),
        ):
            parser.add_argument(name, type=kind, default=default, help=help_)

    def app(self, args: argparse.Namespace) -> web.Application:
        """The head with the settings asked for."""
        return make_app(
            RaySimConfig(
                pending_s=args.pending_s,
                run_s=args.run_s,
                failure_rate=args.failure_rate,
                cpus=args.cpus,
                start_timeout_s=args.start_timeout_s,
                list_cost_s=args.list_cost_s,
                token=args.token,
                http_429_rate=args.http_429_rate,
                error_rate=args.error_rate,
                reset_rate=args.reset_rate,
                commit_fail_rate=args.commit_fail_rate,
                latency_s=args.latency,
                echo_rate=args.echo_rate,
                garbage_rate=args.garbage_rate,
                seed=args.seed,
            )
        )
