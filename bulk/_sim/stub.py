"""``bulk sim stub``: the reference job service (see :mod:`bulk.backends.stub`), with faults.

Jobs are queued for ``queue_s``, run for ``run_s`` (or the job spec's own ``run_s``), then
succeed (or fail, at ``job_failure_rate``). Faults, each drawn per request from a seeded generator:

- ``throttle_rate``: 429 with ``Retry-After: retry_after_s``, nothing created;
- ``fail_before_rate``: 503, nothing created;
- ``fail_after_rate``: the job **is created**, then the answer is a 503 or a dropped
  connection ("commit then fail"): the client cannot know it worked;
- ``rate_limit_per_s``: a token bucket per service; requests beyond it get 429;
- ``latency_s``: every answer is delayed this long;
- ``echo_rate``: a 500 whose body echoes the request's headers and body, as a careless
  service's error page would (nothing is created): the client must keep its token out of
  everything it stores or shows;
- ``garbage_rate``: a 2xx answer's body is replaced by one bulk cannot read (not JSON, a list,
  an object without the fields the protocol promises), after the request took effect: a
  create so answered did create its job.

With ``token`` set, every job request must carry ``Authorization: Bearer <token>``; any other
gets 401 (the ledger needs none).

``GET /ledger`` answers ``{"creates": {name: count}, "requests", "echoed", "garbled",
"first_create", "last_create"}``: how many times each name was created, and when creating
began and ended. A correct client makes it 1 for every name, whatever the faults.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from bulk._sim._common import Ledger, TokenBucket, per_second, seconds, share

__all__ = ["GARBAGE", "SERVICE", "StubFaults", "StubService", "StubSimulator", "make_app"]


@dataclass(frozen=True, slots=True)
class StubFaults:
    """What the simulated service does wrong, and how its jobs behave."""

    throttle_rate: float = 0.0
    retry_after_s: float = 0.5
    fail_before_rate: float = 0.0
    fail_after_rate: float = 0.0
    rate_limit_per_s: float | None = None
    latency_s: float = 0.0
    queue_s: float = 0.0
    run_s: float = 0.0
    job_failure_rate: float = 0.0
    echo_rate: float = 0.0
    garbage_rate: float = 0.0
    token: str | None = None
    seed: int = 0


@dataclass(slots=True)
class _Job:
    id: str
    name: str
    created: float
    fails: bool
    run_s: float
    stopped: bool = False


@dataclass(slots=True)
class StubService(Ledger):
    """The service's state: its jobs, by id and by name, and the create ledger."""

    faults: StubFaults = field(default_factory=StubFaults)
    jobs: dict[str, _Job] = field(default_factory=dict)
    by_name: dict[str, _Job] = field(default_factory=dict)
    requests: int = 0
    garbled: int = 0  # 2xx answers whose body was replaced by garbage
    _bucket: TokenBucket | None = None

    def __post_init__(self) -> None:
        self.rng.seed(self.faults.seed)
        if self.faults.rate_limit_per_s:
            self._bucket = TokenBucket(self.faults.rate_limit_per_s)

    def over_limit(self) -> bool:
        """Whether this request is beyond the service's rate limit (if it has one)."""
        return self._bucket is not None and not self._bucket.take()

    def create(self, name: str, run_s: float) -> _Job:
        """Create a job (it may be drawn to fail) and count it in the ledger."""
        job = _Job(
            f"job-{len(self.jobs) + 1}",
            name,
            time.monotonic(),
            self.roll(self.faults.job_failure_rate),
            run_s,
        )
        self.jobs[job.id] = job
        self.by_name[name] = job
        self.count_create(name)
        return job

    def state(self, job: _Job) -> tuple[str, str | None]:
        if job.stopped:
            return "stopped", "stopped"
        age = time.monotonic() - job.created
        f = self.faults
        if age < f.queue_s:
            return "queued", None
        if age < f.queue_s + job.run_s:
            return "running", None
        return ("failed", "exit code 1") if job.fails else ("succeeded", None)


SERVICE: web.AppKey[StubService] = web.AppKey("service", StubService)

# What ``garbage_rate`` answers instead of a 2xx body: each is wrong for every endpoint.
GARBAGE = (
    b"<html><body>502 Bad Gateway</body></html>",
    b"",
    b"[]",
    b'"ok"',
    b"{}",
    b'{"id": null, "jobs": [], "state": 3}',
)


def make_app(faults: StubFaults | None = None) -> web.Application:
    """The stub service as an aiohttp application (``app[SERVICE]`` is its state)."""
    service = StubService(faults or StubFaults())

    @web.middleware
    async def garble(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if (
            request.path != "/ledger"
            and HTTPStatus.OK <= response.status < HTTPStatus.MULTIPLE_CHOICES
            and service.roll(service.faults.garbage_rate)
        ):
            service.garbled += 1
            body = GARBAGE[service.rng.randrange(len(GARBAGE))]
            return web.Response(status=response.status, body=body, content_type="application/json")
        return response

    app = web.Application(middlewares=[garble])
    app[SERVICE] = service
    api = _Api(service)
    app.router.add_post("/jobs", api.create)
    app.router.add_post("/jobs/status", api.status)
    app.router.add_get("/jobs", api.lookup)
    app.router.add_post("/jobs/{id}/stop", api.stop)
    app.router.add_get("/ledger", api.ledger)
    return app


class _Api:
    """The service's HTTP endpoints, over its state."""

    def __init__(self, service: StubService):
        self.service = service

    def throttled(self) -> web.Response:
        # A new response each time: aiohttp cannot send one response object twice.
        return web.json_response(
            {"error": "slow down"},
            status=429,
            headers={"Retry-After": f"{self.service.faults.retry_after_s:g}"},
        )

    async def common(self, request: web.Request) -> web.StreamResponse | None:
        """What every job request goes through first: the answer that ends it early, or None."""
        service = self.service
        service.requests += 1
        f = service.faults
        if f.latency_s:
            await asyncio.sleep(f.latency_s)
        if f.token is not None and request.headers.get("Authorization") != f"Bearer {f.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if service.over_limit():
            return web.json_response(
                {"error": "rate limit"}, status=429, headers={"Retry-After": "1"}
            )
        if service.roll(f.echo_rate):
            service.echoed += 1
            echo = {
                "error": "internal error",
                "request": {
                    "headers": dict(request.headers),
                    "body": (await request.read()).decode("utf-8", "replace"),
                },
            }
            return web.json_response(echo, status=500)
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        if (early := await self.common(request)) is not None:
            return early
        admitted = self._admit(await _json_object(request))
        if isinstance(admitted, web.Response):
            return admitted
        service = self.service
        job = service.create(*admitted)
        if service.roll(service.faults.fail_after_rate):
            if service.roll(0.5) and request.transport is not None:
                request.transport.close()  # the client sees a dropped connection
                return web.Response(status=503)
            return web.json_response({"error": "internal error"}, status=503)
        return web.json_response({"id": job.id}, status=201)

    def _admit(self, body: dict[str, Any] | None) -> web.Response | tuple[str, float]:
        """A create's job name and run time, or the answer that refuses it (with the faults
        drawn in the order a service meets them)."""
        service = self.service
        name = body.get("name") if body is not None else None
        if body is None or not isinstance(name, str) or "spec" not in body:
            return web.json_response({"error": "need a JSON object with name and spec"}, status=400)
        f = service.faults
        if service.roll(f.throttle_rate):
            return self.throttled()
        if service.roll(f.fail_before_rate):
            return web.json_response({"error": "unavailable"}, status=503)
        existing = service.by_name.get(name)
        if existing is not None:
            return web.json_response({"id": existing.id, "error": "name exists"}, status=409)
        spec = body["spec"]
        run_s = spec.get("run_s", f.run_s) if isinstance(spec, dict) else f.run_s
        if isinstance(run_s, bool) or not isinstance(run_s, int | float):
            return web.json_response({"error": "spec.run_s must be a number"}, status=400)
        return name, float(run_s)

    async def status(self, request: web.Request) -> web.StreamResponse:
        if (early := await self.common(request)) is not None:
            return early
        body = await _json_object(request)
        ids = body.get("ids") if body is not None else None
        if not isinstance(ids, list):
            return web.json_response({"error": "need a JSON object with ids"}, status=400)
        out = {}
        for job_id in ids:
            job = self.service.jobs.get(job_id) if isinstance(job_id, str) else None
            if job is not None:
                state, reason = self.service.state(job)
                out[job_id] = {"state": state, "reason": reason}
        return web.Response(body=orjson.dumps({"jobs": out}), content_type="application/json")

    async def lookup(self, request: web.Request) -> web.StreamResponse:
        if (early := await self.common(request)) is not None:
            return early
        job = self.service.by_name.get(request.query.get("name", ""))
        if job is None:
            return web.json_response({"error": "not found"}, status=404)
        state, reason = self.service.state(job)
        return web.json_response({"id": job.id, "name": job.name, "state": state, "reason": reason})

    async def stop(self, request: web.Request) -> web.StreamResponse:
        if (early := await self.common(request)) is not None:
            return early
        job = self.service.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "not found"}, status=404)
        if self.service.state(job)[0] in ("queued", "running"):
            job.stopped = True
        return web.json_response({})

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        service = self.service
        return web.Response(
            body=orjson.dumps(
                {
                    "creates": service.creates,
                    "requests": service.requests,
                    "echoed": service.echoed,
                    "garbled": service.garbled,
                    "first_create": service.first_create,
                    "last_create": service.last_create,
                }
            ),
            content_type="application/json",
        )


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The request's body as a JSON object, or None.

    The caller then answers 400, as a service would: a malformed request is the client's
    error, never a 5xx that the client would take as "maybe applied" and retry.
    """
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


class StubSimulator:
    """``bulk sim stub``: the options are the faults of :class:`StubFaults`."""

    help = "bulk's reference HTTP job service, with fault injection"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per fault."""
        for name, kind, default, help_ in (
            ("--throttle-rate", share, 0.0, "share of creates answered 429"),
            ("--retry-after", seconds, 0.5, "Retry-After of those 429s, seconds"),
            ("--fail-before-rate", share, 0.0, "share of creates answered 503, nothing created"),
            ("--fail-after-rate", share, 0.0, "share of creates that create, then fail"),
            ("--rate-limit", per_second, None, "requests per second before 429s"),
            ("--latency", seconds, 0.0, "delay before every answer, seconds"),
            ("--queue-s", seconds, 0.0, "seconds a job stays queued"),
            ("--run-s", seconds, 0.0, "seconds a job runs"),
            ("--job-failure-rate", share, 0.0, "share of jobs that end failed"),
            ("--echo-rate", share, 0.0, "share of requests answered 500 echoing the request"),
            (
                "--garbage-rate",
                share,
                0.0,
                "share of successful answers replaced by garbage (after the request took effect)",
            ),
            ("--token", str, None, "require Authorization: Bearer TOKEN"),
            ("--seed", int, 0, "seed of the fault draws"),
        ):
            parser.add_argument(name, type=kind, default=default, help=help_)

    def app(self, args: argparse.Namespace) -> web.Application:
        """The service with the faults asked for."""
        faults = StubFaults(
            throttle_rate=args.throttle_rate,
            retry_after_s=args.retry_after,
            fail_before_rate=args.fail_before_rate,
            fail_after_rate=args.fail_after_rate,
            rate_limit_per_s=args.rate_limit,
            latency_s=args.latency,
            queue_s=args.queue_s,
            run_s=args.run_s,
            job_failure_rate=args.job_failure_rate,
            echo_rate=args.echo_rate,
            garbage_rate=args.garbage_rate,
            token=args.token,
            seed=args.seed,
        )
        return make_app(faults)
