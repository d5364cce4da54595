"""``bulk sim yuanrong``: a simulator of openYuanrong's job API (the frontend's ``/api/jobs``).

Faithful to docs/api/ray.md Part 2, and explicit where it guesses:

- **Routes** without a trailing slash (``/api/jobs/`` is a 404, as gin's
  ``RedirectTrailingSlash = false`` makes it): ``POST /api/jobs``, ``GET /api/jobs`` (every
  app, growing with every job, never paged or filtered by tenant), ``GET /api/jobs/{id}``,
  ``POST /api/jobs/{id}/stop`` and ``DELETE /api/jobs/{id}`` (bare ``true``/``false``).
- **Errors** are JSON strings with the frontend's messages: 400 ``shouldBind ...`` (a body of
  the wrong types, or not sent as ``application/json``), empty ``entrypoint`` or
  ``runtime_env.working_dir``, negative resources, an id with ``driver`` or outside
  ``^[a-z0-9-]{1,64}$`` once ``app-`` is prepended, and a duplicate id ``"submit job has
  already exist, submissionId: app-..."``; 404 ``"not found app ..."``.
- **Scheduling** happens inside the POST: a job that asks for more CPUs than the node has
  (``cpus``), a custom resource the node lacks, or a pool label not offered (``labels``, when
  any are given) answers, after ``schedule_fail_s``, 500 ``"create app failed, ..."``; no app
  is made. Otherwise the app is PENDING for ``pending_s`` (0: it may jump straight to an
  end), RUNNING for ``run_s`` (or the job's ``runtime_env.env_vars.SIM_RUN_S``), then
  SUCCEEDED, or FAILED at ``failure_rate`` (or with ``SIM_EXIT_CODE`` other than 0). Stop
  answers ``true`` for a RUNNING app (→ STOPPED) and ``false`` otherwise: a PENDING app
  ignores it. DELETE answers ``true`` for an ended app (it leaves the list) and ``false``
  while it runs. Times are strings of seconds (``time_unit = "ms"``: milliseconds).
- **Headers**: ``X-Tenant-Id`` (required with ``require_tenant``: 400 otherwise, a guess),
  ``X-Pool-Label``; with ``token`` set every request needs ``X-Auth: <token>`` (401
  ``{"error": ...}`` otherwise).
- **Faults** (seeded), as the Gongji simulator's: ``http_429_rate`` (with ``Retry-After``),
  ``error_rate`` (502), ``reset_rate``, ``commit_fail_rate`` (creates the app, then answers
  500 or drops the connection), ``latency_s``, ``rate_limit_per_s`` (one bucket for every
  endpoint, 429 beyond it), ``echo_rate`` (a 500 page echoing the request's headers),
  ``garbage_rate`` (a successful answer replaced by one bulk cannot read, after it took
  effect).
- ``GET /_sim/ledger``: ``{"creates": {id: count}, "requests": {path: count}, "echoed",
  "first_create", "last_create", "busiest_second", "throttled", "jobs"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from bulk._sim._common import Ledger, TokenBucket, busiest_second, per_second, seconds, share

__all__ = ["YUANRONG", "SimConfig", "YuanrongSim", "YuanrongSimulator", "make_app", "sample_body"]

_ID = re.compile(r"[a-z0-9-]{1,64}")
_GARBAGE = (b"<html>502</html>", b'{"submission_id": 7}', b"[1, 2", b'"ok"')


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated service behaves."""

    pending_s: float = 0.0
    run_s: float = 0.0
    failure_rate: float = 0.0
    cpus: float = 16.0
    resources: tuple[str, ...] = ()  # custom resources the node has (any amount)
    labels: tuple[str, ...] = ()  # pool labels offered; empty: any label is satisfied
    schedule_fail_s: float = 0.0
    time_unit: str = "s"
    require_tenant: bool = False
    token: str | None = None
    http_429_rate: float = 0.0
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    commit_fail_rate: float = 0.0
    latency_s: float = 0.0
    rate_limit_per_s: float | None = None
    echo_rate: float = 0.0
    garbage_rate: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class _App:
    sid: str
    body: dict[str, Any]
    created: float
    wall: float
    run_s: float
    exit_code: int
    stopped_at: float | None = None


@dataclass(slots=True)
class YuanrongSim(Ledger):
    """The simulated service's state."""

    config: SimConfig = field(default_factory=SimConfig)
    apps: dict[str, _App] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    bucket: TokenBucket | None = None
    times: deque[float] = field(default_factory=lambda: deque(maxlen=1_000_000))
    throttled: int = 0

    def busiest_second(self) -> int:
        """The most API requests received in any one-second window."""
        return busiest_second(list(self.times))

    def create(self, sid: str, body: dict[str, Any]) -> _App:
        """Make an app of a valid, schedulable body and count it in the ledger."""
        env = body.get("runtime_env", {}).get("env_vars") or {}
        run_s = _float(env.get("SIM_RUN_S"), self.config.run_s)
        code = int(_float(env.get("SIM_EXIT_CODE"), 0.0))
        if code == 0 and self.roll(self.config.failure_rate):
            code = 1
        app = _App(sid, body, time.monotonic(), time.time(), run_s, code)
        self.apps[sid] = app
        self.count_create(sid)
        return app

    def status(self, app: _App) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, on the clock."""
        if app.stopped_at is not None:
            return "STOPPED"
        age = time.monotonic() - app.created
        if age < self.config.pending_s:
            return "PENDING"
        if age < self.config.pending_s + app.run_s:
            return "RUNNING"
        return "SUCCEEDED" if app.exit_code == 0 else "FAILED"

    def view(self, app: _App) -> dict[str, Any]:
        """The app as the frontend's AppInfo (times as strings; no ``message``)."""
        status = self.status(app)
        scale = 1000 if self.config.time_unit == "ms" else 1
        started = app.wall + self.config.pending_s
        ended = None
        if status == "STOPPED" and app.stopped_at is not None:
            ended = app.wall + (app.stopped_at - app.created)
        elif status in ("SUCCEEDED", "FAILED"):
            ended = started + app.run_s
        env = app.body["runtime_env"]
        error_type = ""
        if status == "FAILED":
            error_type = f"instance exited with code {app.exit_code}"
        elif status == "STOPPED":
            error_type = "instance killed by user"
        return {
            "key": app.sid,
            "type": "SUBMISSION",
            "entrypoint": app.body["entrypoint"],
            "submission_id": app.sid,
            "driver_info": {"id": app.sid, "node_ip_address": "127.0.0.1", "pid": "4242"},
            "status": status,
            "start_time": "" if status == "PENDING" else str(int(started * scale)),
            "end_time": "" if ended is None else str(int(ended * scale)),
            "metadata": app.body.get("metadata") or {},
            "runtime_env": {
                "working_dir": env.get("working_dir", ""),
                "pip": " ".join(env.get("pip") or []),
                "envVars": orjson.dumps(env.get("env_vars") or {}).decode(),
            },
            "driver_agent_http_address": "",
            "driver_node_id": "node-1",
            "driver_exit_code": app.exit_code if status in ("SUCCEEDED", "FAILED") else 0,
            "error_type": error_type,
        }

    def unschedulable(self, body: dict[str, Any], labels: str) -> str | None:
        """Why the scheduler cannot place this job, or None."""
        cpus = body.get("entrypoint_num_cpus") or 0
        if cpus > self.config.cpus:
            return f"{cpus} CPUs asked, the node has {self.config.cpus:g}"
        for name, amount in (body.get("entrypoint_resources") or {}).items():
            if amount > 0 and name not in self.config.resources:
                return f"no node has resource {name}"
        for label in filter(None, labels.split(",")):
            if self.config.labels and label not in self.config.labels:
                return f"1 unit with [Affinity can't be Satisfied] requirements: label {label}"
        return None


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


YUANRONG = web.AppKey("yuanrong", YuanrongSim)


def sample_body(run_s: float = 0.0, exit_code: int = 0) -> bytes:
    """A valid submit body for a job of ``run_s`` seconds ending with ``exit_code``."""
    env = {"SIM_RUN_S": f"{run_s:g}", "SIM_EXIT_CODE": str(exit_code)}
    return orjson.dumps(
        {"entrypoint": "python job.py", "runtime_env": {"working_dir": "/opt/job", "env_vars": env}}
    )


def _text(status: int, message: str) -> web.Response:
    """gin's ``ctx.JSON(code, "...")``: a JSON string."""
    return web.Response(status=status, body=orjson.dumps(message), content_type="application/json")


def _json(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


def make_app(sim: YuanrongSim | None = None) -> web.Application:
    """The simulator as an aiohttp application (``app[YUANRONG]`` is its state)."""
    sim = sim or YuanrongSim()
    sim.rng.seed(sim.config.seed)
    app = web.Application()
    app[YUANRONG] = sim
    api = _Api(sim)
    app.middlewares.append(api.gate)
    app.router.add_post("/api/jobs", api.submit)
    app.router.add_get("/api/jobs", api.list)
    app.router.add_get("/api/jobs/{sid}", api.get)
    app.router.add_post("/api/jobs/{sid}/stop", api.stop)
    app.router.add_delete("/api/jobs/{sid}", api.delete)
    app.router.add_get("/_sim/ledger", api.ledger)
    return app


_BIND = "shouldBind SubmitJob request failed, err: "


class _Api:
    """The frontend's endpoints over the simulator's state, behind one gate."""

    def __init__(self, sim: YuanrongSim):
        self.sim = sim

    @web.middleware
    async def gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count, delay, authenticate, throttle and inject faults, then hand the request on."""
        if request.path.startswith("/_sim/"):
            return await handler(request)  # type: ignore[no-any-return]
        sim, cfg = self.sim, self.sim.config
        sim.requests[request.path] = sim.requests.get(request.path, 0) + 1
        sim.times.append(time.monotonic())
        if cfg.latency_s:
            await asyncio.sleep(cfg.latency_s)
        await request.read()
        if cfg.token is not None and request.headers.get("X-Auth") != cfg.token:
            return web.json_response({"error": "authentication failed"}, status=401)
        limited = sim.bucket is not None and not sim.bucket.take()
        if limited or sim.roll(cfg.http_429_rate):
            sim.throttled += 1
            return web.Response(
                status=429,
                text="too many requests",
                headers={"Retry-After": f"{cfg.retry_after_s:g}"},
            )
        fault = self._fault(request)
        if fault is not None:
            return fault
        response: web.Response = await handler(request)
        if response.status == HTTPStatus.OK and sim.roll(cfg.garbage_rate):
            return web.Response(
                body=_GARBAGE[sim.rng.randrange(len(_GARBAGE))], content_type="application/json"
            )
        return response

    def _fault(self, request: web.Request) -> web.Response | None:
        sim, cfg = self.sim, self.sim.config
        outage = sim.outage(request, cfg.error_rate, cfg.reset_rate)
        if outage is not None:
            return outage
        if sim.roll(cfg.echo_rate):
            sim.echoed += 1
            headers = orjson.dumps({str(k): v for k, v in request.headers.items()}).decode()
            return _text(500, f"internal error; request headers: {headers}")
        return None

    async def submit(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        body, problem = await _read_submit(request, sim.config.require_tenant)
        if body is None:
            return _text(HTTPStatus.BAD_REQUEST, problem)
        sid = body.get("submission_id") or f"app-{sim.rng.getrandbits(64):016x}"
        sid = sid if sid.startswith("app-") else "app-" + sid
        problem = _id_problem(sid) or (
            f"submit job has already exist, submissionId: {sid}" if sid in sim.apps else ""
        )
        if problem:
            return _text(HTTPStatus.BAD_REQUEST, problem)
        why = sim.unschedulable(body, request.headers.get("X-Pool-Label", ""))
        if why is not None:
            await asyncio.sleep(sim.config.schedule_fail_s)
            return _text(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"create app failed, submissionId:[{sid}], err: \nthe instance cannot be "
                f"scheduled within 18000 ms. which has been scheduled for 2 times. The latest "
                f"failure: no available resource that meets the request requirements, {why}\n",
            )
        sim.create(sid, body)
        if sim.roll(sim.config.commit_fail_rate):
            if sim.roll(0.5) and request.transport is not None:
                request.transport.close()
                return web.Response(status=500)
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")
        return _json({"submission_id": sid})

    async def list(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        return _json([sim.view(app) for app in sim.apps.values()])

    def _app(self, request: web.Request) -> _App | None:
        return self.sim.apps.get(request.match_info["sid"])

    async def get(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        if app is None:
            sid = request.match_info["sid"]
            return _text(
                404,
                f"not found app, submissionId: {sid}, err: failed to get appjobInfo, "
                f"submissionID: {sid}",
            )
        return _json(self.sim.view(app))

    async def stop(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        if app is None:
            return _text(404, f"the app does not exist, submissionId:[{request.match_info['sid']}]")
        if self.sim.status(app) != "RUNNING":
            return _json(False)  # internally a 403: only RUNNING apps are killed
        app.stopped_at = time.monotonic()
        return _json(True)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        if app is None:
            return _text(404, f"the app does not exist, submissionId:[{request.match_info['sid']}]")
        if self.sim.status(app) in ("PENDING", "RUNNING"):
            return _json(False)
        del self.sim.apps[app.sid]
        return _json(True)

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        return _json(
            {
                "creates": sim.creates,
                "requests": sim.requests,
                "echoed": sim.echoed,
                "first_create": sim.first_create,
                "last_create": sim.last_create,
                "busiest_second": sim.busiest_second(),
                "throttled": sim.throttled,
                "jobs": len(sim.apps),
            }
        )


async def _read_submit(request: web.Request, require_tenant: bool) -> tuple[Any, str]:
    """The submit's body, or None and the frontend's 400 message."""
    if request.content_type != "application/json":
        return None, _BIND + f"unsupported content type {request.content_type!r}"
    if require_tenant and not request.headers.get("X-Tenant-Id"):
        return None, "X-Tenant-Id should not be empty"
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return None, _BIND + str(exc)
    problem = _bind(body)
    return (None, problem) if problem else (body, "")


def _id_problem(sid: str) -> str:
    """The frontend's refusal of a (prefixed) submission id, or ""."""
    if "driver" in sid:
        return "submission_id should not contain 'driver'"
    if not _ID.fullmatch(sid):
        return (
            f"regular expression validation error, submissionId: {sid}, "
            "pattern: ^[a-z0-9-]{1,64}$, err: <nil>"
        )
    return ""


_TYPES: dict[str, tuple[type, ...]] = {
    "entrypoint": (str,),
    "submission_id": (str,),
    "runtime_env": (dict,),
    "metadata": (dict,),
    "entrypoint_num_cpus": (int, float),
    "entrypoint_num_gpus": (int, float),
    "entrypoint_memory": (int,),
    "entrypoint_resources": (dict,),
}


def _bind(body: Any) -> str:
    """The frontend's checks of a submit body, in its order, with its messages ("": none)."""
    if not isinstance(body, dict):
        return _BIND + "json: cannot unmarshal into Go value of type job.SubmitRequest"
    for key, kinds in _TYPES.items():
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return _BIND + f"json: cannot unmarshal into field SubmitRequest.{key}"
    metadata = (body.get("metadata") or {}).values()
    resources = (body.get("entrypoint_resources") or {}).values()
    if any(not isinstance(v, str) for v in metadata) or any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in resources
    ):
        return _BIND + "json: cannot unmarshal into a map field of SubmitRequest"
    checks = [
        (not body.get("entrypoint"), "entrypoint should not be empty"),
        (
            not (body.get("runtime_env") or {}).get("working_dir"),
            "runtime_env.working_dir should not be empty",
        ),
        *(
            ((body.get(key) or 0) < 0, f"{key} should not be less than 0")
            for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory")
        ),
    ]
    return next((message for failed, message in checks if failed), "")


class YuanrongSimulator:
    """``bulk sim yuanrong``: the node's resources, the lifecycle and the faults."""

    help = "a simulator of openYuanrong's job API (the frontend's /api/jobs)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per setting of :class:`SimConfig`."""
        for name, kind, default, help_ in (
            ("--pending-s", seconds, 0.0, "seconds an app stays PENDING"),
            ("--run-s", seconds, 1.0, "seconds an app runs"),
            ("--failure-rate", share, 0.0, "share of apps that end FAILED"),
            ("--cpus", seconds, 16.0, "CPUs of the node (more asked: create app failed)"),
            ("--schedule-fail-s", seconds, 1.0, "seconds before a create app failed answer"),
            ("--http-429-rate", share, 0.0, "share of requests answered HTTP 429"),
            ("--retry-after", seconds, 1.0, "Retry-After of those 429s, seconds"),
            ("--error-rate", share, 0.0, "share of requests answered HTTP 502"),
            ("--reset-rate", share, 0.0, "share of requests whose connection is dropped"),
            ("--commit-fail-rate", share, 0.0, "share of creates that create, then fail"),
            ("--latency", seconds, 0.0, "delay before every answer, seconds"),
            ("--rate-limit", per_second, None, "requests per second before HTTP 429"),
            ("--echo-rate", share, 0.0, "share of requests answered echoing the headers"),
            ("--garbage-rate", share, 0.0, "share of successful answers replaced by garbage"),
            ("--seed", int, 0, "seed of the fault draws"),
        ):
            parser.add_argument(name, type=kind, default=default, help=help_)
        parser.add_argument(
            "--resource", action="append", default=[], help="a custom resource the node has"
        )
        parser.add_argument(
            "--pool-label", action="append", default=[], help="a pool label offered (repeatable)"
        )
        parser.add_argument("--time-unit", choices=("s", "ms"), default="s", help="of times")
        parser.add_argument(
            "--require-tenant", action="store_true", help="refuse submits without X-Tenant-Id"
        )
        parser.add_argument("--token", default=None, help="the JWT every request needs in X-Auth")

    def app(self, args: argparse.Namespace) -> web.Application:
        """The service with its settings and faults."""
        cfg = SimConfig(
            pending_s=args.pending_s,
            run_s=args.run_s,
            failure_rate=args.failure_rate,
            cpus=args.cpus,
            resources=tuple(args.resource),
            labels=tuple(args.pool_label),
            schedule_fail_s=args.schedule_fail_s,
            time_unit=args.time_unit,
            require_tenant=args.require_tenant,
            token=args.token,
            http_429_rate=args.http_429_rate,
            retry_after_s=args.retry_after,
            error_rate=args.error_rate,
            reset_rate=args.reset_rate,
            commit_fail_rate=args.commit_fail_rate,
            latency_s=args.latency,
            rate_limit_per_s=args.rate_limit,
            echo_rate=args.echo_rate,
            garbage_rate=args.garbage_rate,
            seed=args.seed,
        )
        bucket = TokenBucket(cfg.rate_limit_per_s) if cfg.rate_limit_per_s else None
        return make_app(YuanrongSim(cfg, bucket=bucket))
