"""``bulk sim gongji``: a simulator of the 共绩算力 Open API's Job endpoints.

Faithful to docs/api/gongji.md where it is known, and explicit where
it guesses:

- **Auth**: every request needs a registered ``token``, ``version: 1.0.0`` and a 13-digit
  ms ``timestamp`` within ``skew_s`` (default 300 s; the real window is undocumented). RSA-mode
  tokens need ``sign_str``: it must decode to 256 bytes and verify (PKCS#1 v1.5, SHA-256)
  against the raw request target as received (path and query, byte for byte) and the raw body.
  Simple-mode tokens ignore ``sign_str``. Failures answer HTTP 200 with an error code
  (C001 unknown token, C002 bad version, C004 stale timestamp, C005 bad signature: our
  assignment; the real meanings are undocumented) and ``data: null``.
- **Envelope**: ``{"code", "message", "data"}``, HTTP 200, ``data`` null on errors.
- **Jobs**: create validates the required fields and ignores unknown ones; ``task_id`` is an
  integer; names are *not* required to be unique (as far as anyone knows, the real API does
  not check). Lifecycle on the clock: Pending for ``pending_s``, Running for ``run_s`` (or a
  ``SIM_RUN_S`` entry in the job's own ``services[].env``), then
  ``job_status.status`` Complete (or Failed at ``failure_rate``) and task ``status`` End.
  Stop: Pending/Running → End with ``job_status.status`` "Manual" (a guess); stopping an
  ended task answers C010 (or success with ``stop_ended_ok``).
- **search**: comma-separated ``status`` (default: all but End), ``search_value`` substring of
  ``task_name``, ``page``/``page_size``, ``count`` = all matches; newest task first, or oldest
  first with ``list_order = "oldest"`` (the API does not document its order).
- **Faults** (seeded): ``throttle_rate`` answers code C008; ``http_429_rate`` answers HTTP 429
  with ``Retry-After``; ``error_rate`` a 502; ``reset_rate`` drops the connection;
  ``commit_fail_rate`` creates the task, then answers 500 or drops the connection;
  ``latency_s`` delays every answer; ``rate_limit_per_s`` is one bucket per token shared by
  every endpoint (HTTP 429 beyond it); ``echo_rate`` echoes the request's headers (token,
  ``sign_str``) and body back, half the time as an HTTP 500 page and half as a C999 envelope
  whose message holds them (nothing is created either way), as a careless service or proxy
  would; ``garbage_rate`` replaces a successful answer (code 0000), once the request took
  effect, by one bulk cannot read: not JSON, not an envelope, or ``data`` of the wrong shape.
- ``GET /_sim/ledger``: ``{"creates": {task_name: count}, "requests": {path: count},
  "echoed", "first_create", "last_create", "busiest_second", "throttled",
  "served_per_s_while_creating"}`` (the most API requests in any 1 s; requests answered with a
  throttle; requests served a second between the first create and the last).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bulk._sim._common import Ledger, TokenBucket, busiest_second, per_second, seconds, share
from bulk.errors import ConfigError

__all__ = [
    "DEVICES",
    "GARBAGE",
    "GONGJI",
    "GongjiSim",
    "GongjiSimulator",
    "SimConfig",
    "make_app",
    "sample_body",
]

_CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated service behaves."""

    pending_s: float = 0.5
    run_s: float = 2.0
    failure_rate: float = 0.0
    skew_s: float = 300.0
    stop_ended_ok: bool = False
    throttle_rate: float = 0.0
    http_429_rate: float = 0.0
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    commit_fail_rate: float = 0.0
    latency_s: float = 0.0
    rate_limit_per_s: float | None = None
    echo_rate: float = 0.0
    garbage_rate: float = 0.0
    list_order: str = "newest"  # search results: "newest" task first, or "oldest" first
    seed: int = 0


def _mark(device: str, region: str, count: int) -> str:
    digest = hashlib.sha256(f"{device}|{region}|{count}".encode()).digest() * 5
    return base64.b64encode(digest)[:160].decode()


def _device(
    name: str, gpu: str, count: int, mem: int, regions: list[tuple[str, str, int, int]]
) -> dict[str, Any]:
    resource = {
        "device_name": name,
        "gpu_name": gpu,
        "gpu_count": count,
        "gpu_memory": mem * count,
        "memory": 64512 * count,
        "cpu_cores": 16 * count,
    }
    return {
        "device_name": name,
        "gpu_name": gpu,
        "gpu_memory": mem * count,
        "gpu_count": count,
        "memory": 64512 * count,
        "cpu_cores": 16 * count,
        "disk_size": 81920,
        "disk_type": "HDD",
        "regions": [
            {
                "region": key,
                "region_name": label,
                "mark": {
                    "resource": {**resource, "region": key},
                    "mark": _mark(name, key, count),
                    "region_name": label,
                },
                "price": price,
                "discount_price": None,
                "inventory": inventory,
            }
            for key, label, price, inventory in regions
        ],
    }


# A small, fixed catalogue in the documented shape (prices are opaque integers).
DEVICES: list[dict[str, Any]] = [
    _device(
        "4090",
        "4090",
        1,
        24560,
        [("chengde-p1", "河北六区", 1900, 12), ("hebeif-1", "河北一区", 1850, 3)],
    ),
    _device("4090 x 2", "4090", 2, 24560, [("chengde-p1", "河北六区", 3800, 4)]),
    _device("H20 x 8", "H20", 8, 98304, [("hebeif-1", "河北一区", 16416, 0)]),
]


@dataclass(slots=True)
class _Task:
    task_id: int
    body: dict[str, Any]
    created: float
    fails: bool
    run_s: float
    stopped_at: float | None = None


@dataclass(slots=True)
class GongjiSim(Ledger):
    """The simulated service's state."""

    config: SimConfig = field(default_factory=SimConfig)
    tokens: dict[str, rsa.RSAPublicKey | None] = field(default_factory=dict)
    tasks: dict[int, _Task] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)  # per token
    times: deque[float] = field(default_factory=lambda: deque(maxlen=1_000_000))  # API requests
    throttled: int = 0  # requests answered with a throttle (HTTP 429 or C008)
    served: deque[float] = field(default_factory=lambda: deque(maxlen=1_000_000))  # not those
    next_id: int = 10_000

    def add_token(self, token: str, public_key_pem: bytes | None) -> None:
        """Register a token: RSA mode with its public key, or simple mode with None."""
        key = None
        if public_key_pem is not None:
            loaded = serialization.load_pem_public_key(public_key_pem)
            if not isinstance(loaded, rsa.RSAPublicKey):
                msg = "not an RSA public key"
                raise ValueError(msg)
            key = loaded
        self.tokens[token] = key

    def served_per_s_while_creating(self) -> float | None:
        """API requests served (not throttled) per second from the first create to the last."""
        first, last = self.first_create, self.last_create
        if first is None or last is None or last <= first:
            return None
        return sum(1 for at in self.served if first <= at <= last) / (last - first)

    def busiest_second(self) -> int:
        """The most API requests received in any one-second window."""
        return busiest_second(list(self.times))

    def over_limit(self, token: str) -> bool:
        """Whether this request is beyond the token's rate limit (if one is set): one bucket
        per token, whatever the endpoint (the throttle codes name none)."""
        limit = self.config.rate_limit_per_s
        if not limit:
            return False
        bucket = self.buckets.get(token)
        if bucket is None:
            bucket = self.buckets[token] = TokenBucket(limit)
        return not bucket.take()

    def create(self, body: dict[str, Any]) -> _Task:
        """Create a task of a valid body (it may be drawn to fail) and count it in the ledger."""
        self.next_id += 1
        task = _Task(
            self.next_id,
            body,
            time.monotonic(),
            self.roll(self.config.failure_rate),
            _run_s(body, self.config.run_s),
        )
        self.tasks[task.task_id] = task
        self.count_create(str(body["task_name"]))
        return task

    def view(self, task: _Task) -> dict[str, Any]:
        """The task in the detail/search field shapes of the API doc."""
        cfg = self.config
        now = time.monotonic()
        age = (task.stopped_at or now) - task.created
        body = task.body
        points = int(body.get("points", 1))
        if task.stopped_at is not None:
            status, inner = "End", "Manual"
        elif age < cfg.pending_s:
            status, inner = "Pending", "Pending"
        elif age < cfg.pending_s + task.run_s:
            status, inner = "Running", "Running"
        else:
            status, inner = "End", "Failed" if task.fails else "Complete"
        running = status == "Running"
        ended = status == "End"
        created_utc = datetime.now(UTC) - timedelta(seconds=now - task.created)
        cn = created_utc.astimezone(_CHINA)  # the API's samples carry +08:00
        return {
            "task_id": task.task_id,
            "task_name": body.get("task_name"),
            "task_type": "Job",
            "sub_type": body.get("sub_type"),
            "schedule_status": "Scheduled" if body.get("sub_type") == "Spot" else None,
            "deployment_name": f"job-{task.task_id}-sim",
            "resources": body.get("resources"),
            "status": status,
            "points": points,
            "runing_points": points if running else 0,
            "billing_points": points if running else 0,
            "billing_time": int(max(0.0, age - cfg.pending_s)),
            "billing_value": int(max(0.0, age - cfg.pending_s) * 466),
            "forecast_value": 466 if running else 0,
            "task_tags": None,
            "share_disk_volumes": body.get("share_disk_volumes"),
            "share_mem_volumes": body.get("share_mem_volumes"),
            "task_qos": body.get("task_qos"),
            "create_time": cn.isoformat(timespec="microseconds"),
            "last_update_time": cn.isoformat(timespec="microseconds"),
            "job_support": body.get("job_support"),
            "job_status": {
                "create_time": created_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "status": inner,
                "completion_time": None
                if not ended
                else created_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "active_pods": points if running else None,
                "succeeded_pods": points if inner == "Complete" else 0,
                "failed_pods": 1 if inner == "Failed" else 0,
                "completion_mode": "NonIndexed",
            },
            "job_group": None,
            "termination_grace_period_seconds": None,
            "services": [
                {**svc, "service_id": task.task_id * 10 + i}
                for i, svc in enumerate(body.get("services") or [])
            ],
        }


GONGJI: web.AppKey[GongjiSim] = web.AppKey("gongji", GongjiSim)


# What ``garbage_rate`` answers instead of a successful envelope: each is wrong for every
# endpoint (a ``data`` of null is a valid empty list, so none is null).
GARBAGE = (
    b"<html><body>502 Bad Gateway</body></html>",
    b"[]",
    b'{"code": 0, "data": {}}',
    b'{"code": "0000", "message": "success", "data": [1, 2]}',
    b'{"code": "0000", "message": "success", "data": "ok"}',
    b'{"code": "0000", "message": "success", "data": {"count": "many", "results": {}}}',
)


def _envelope(data: Any = None, code: str = "0000", message: str = "success") -> web.Response:
    if code != "0000":
        data = None
    return web.Response(
        body=orjson.dumps({"code": code, "message": message, "data": data}),
        content_type="application/json",
    )


def _required(body: dict[str, Any]) -> str | None:
    """The first missing required create field, as the service would complain."""
    for key in ("task_name", "resources", "points", "job_support", "services"):
        if body.get(key) in (None, "", []):
            return key
    for res in body["resources"]:
        if not isinstance(res, dict) or not res.get("mark"):
            return "resources.mark"
    return _required_support(body) or _required_service(body["services"])


def _required_support(body: dict[str, Any]) -> str | None:
    support = body["job_support"]
    for key in ("timeout_sec", "parallelism", "mod_param"):
        if not isinstance(support, dict) or support.get(key) is None:
            return f"job_support.{key}"
    if body.get("sub_type") == "Spot" and not support.get("estimated_exec_sec"):
        return "job_support.estimated_exec_sec"
    return None


def _required_service(services: Any) -> str | None:
    for svc in services:
        for key in ("service_name", "service_image", "resource_weight"):
            if not isinstance(svc, dict) or not svc.get(key):
                return f"services.{key}"
    return None


def sample_body(task_name: str, run_s: float | None = None) -> bytes:
    """A minimal valid create body (tests and benchmarks); ``run_s`` sets its run time here."""
    env = [{"name": "SIM_RUN_S", "value": str(run_s)}] if run_s is not None else []
    return orjson.dumps(
        {
            "task_name": task_name,
            "resources": [{"mark": _mark("4090", "chengde-p1", 1), "region_name": "河北六区"}],
            "points": 1,
            "job_support": {
                "timeout_sec": 3600,
                "parallelism": 1,
                "mod_param": {"default": {"backoff_limit": 3, "restart_policy": "OnFailure"}},
            },
            "services": [
                {
                    "service_name": "main",
                    "service_image": "ubuntu:22.04",
                    "env": env,
                    "resource_weight": {"cpu_weight": 1, "mem_weight": 1, "gpu_weight": 1},
                }
            ],
        }
    )


def _run_s(body: dict[str, Any], default: float) -> float:
    """A job's run time: ``SIM_RUN_S`` in its first service's env, else the default."""
    for svc in body.get("services") or []:
        for env in (svc.get("env") or []) if isinstance(svc, dict) else []:
            if isinstance(env, dict) and env.get("name") == "SIM_RUN_S":
                try:
                    return float(env.get("value") or default)
                except (TypeError, ValueError):
                    return default
    return default


def make_app(sim: GongjiSim | None = None) -> web.Application:
    """The simulator as an aiohttp application (``app[GONGJI]`` is its state)."""
    sim = sim or GongjiSim()
    sim.rng.seed(sim.config.seed)
    app = web.Application()
    app[GONGJI] = sim
    api = _Api(sim)
    app.middlewares.append(api.gate)
    app.router.add_post("/api/task/job/create", api.create)
    app.router.add_get("/api/task/job/detail", api.detail)
    app.router.add_get("/api/task/job/search", api.search)
    app.router.add_post("/api/task/job/stop", api.stop)
    app.router.add_get("/api/deployment/resource/search", api.resources)
    app.router.add_get("/_sim/ledger", api.ledger)
    return app


class _Api:
    """The simulator's HTTP endpoints, over its state, behind one gate for every request."""

    def __init__(self, sim: GongjiSim):
        self.sim = sim
        self.newest = sim.config.list_order == "newest"

    @web.middleware
    async def gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count, delay, authenticate, throttle and inject faults, then hand the request on."""
        if request.path.startswith("/_sim/"):
            return await handler(request)  # type: ignore[no-any-return]
        sim = self.sim
        sim.requests[request.path] = sim.requests.get(request.path, 0) + 1
        sim.times.append(time.monotonic())
        if sim.config.latency_s:
            await asyncio.sleep(sim.config.latency_s)
        raw = await request.read()
        answer = self._refusal(request, raw)
        if answer is None:
            sim.served.append(time.monotonic())
            answer = self._fault(request, raw)
        if answer is not None:
            return answer
        # The handlers read the body again: aiohttp caches it.
        response: web.Response = await handler(request)
        return self._garbled(response)

    def _garbled(self, response: web.Response) -> web.Response:
        """``response``, or (at ``garbage_rate``) garbage instead of a success's body: the
        request took effect, the answer cannot be read."""
        sim = self.sim
        if (
            isinstance(response.body, bytes)
            and response.body.startswith(b'{"code":"0000"')
            and sim.roll(sim.config.garbage_rate)
        ):
            return web.Response(
                body=GARBAGE[sim.rng.randrange(len(GARBAGE))], content_type="application/json"
            )
        return response

    def _refusal(self, request: web.Request, raw: bytes) -> web.Response | None:
        """The answer to a request that fails authentication or is throttled, or None."""
        sim, cfg = self.sim, self.sim.config
        token = request.headers.get("token", "")
        problem = _authenticate(sim, request, token, raw)
        if problem is not None:
            return _envelope(code=problem[0], message=problem[1])
        if sim.over_limit(token) or sim.roll(cfg.http_429_rate):
            sim.throttled += 1
            return web.Response(
                status=429,
                text="too many requests",
                headers={"Retry-After": f"{cfg.retry_after_s:g}"},
            )
        if sim.roll(cfg.throttle_rate):
            sim.throttled += 1
            return _envelope(code="C008", message="请求过于频繁")
        return None

    def _fault(self, request: web.Request, raw: bytes) -> web.Response | None:
        """The answer of a drawn fault (a bad gateway, a reset, an echo), or None."""
        sim, cfg = self.sim, self.sim.config
        outage = sim.outage(request, cfg.error_rate, cfg.reset_rate)
        if outage is not None:
            return outage
        if sim.roll(cfg.echo_rate):
            sim.echoed += 1
            headers = {str(k): v for k, v in request.headers.items()}
            echo = orjson.dumps({"headers": headers, "body": raw.decode("utf-8", "replace")})
            if sim.roll(0.5):
                return web.Response(
                    status=500, text=f"internal server error; request: {echo.decode()}"
                )
            return _envelope(code="C999", message=f"系统错误 request: {echo.decode()}")
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _envelope(code="C999", message="请求体不是合法的 JSON")
        if not isinstance(body, dict):
            return _envelope(code="C999", message="请求体必须是对象")
        missing = _required(body)
        if missing is not None:
            return _envelope(code="C999", message=f"参数错误: {missing} 不能为空")
        task = sim.create(body)
        if sim.roll(sim.config.commit_fail_rate):
            if sim.roll(0.5) and request.transport is not None:
                request.transport.close()
                return web.Response(status=500)
            return web.Response(status=500, text="internal server error")
        return _envelope({"task_id": task.task_id})

    async def detail(self, request: web.Request) -> web.StreamResponse:
        try:
            task = self.sim.tasks[int(request.query.get("task_id", ""))]
        except (ValueError, KeyError):
            return _envelope(code="C999", message="任务不存在")
        return _envelope(self.sim.view(task))

    async def search(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        statuses = set(filter(None, q.get("status", "Pending,Running,Paused").split(",")))
        value = q.get("search_value", "")
        try:
            page = max(1, int(q.get("page", "1")))
            size = max(1, min(_MAX_PAGE_SIZE, int(q.get("page_size", "10"))))
        except ValueError:
            return _envelope(code="C999", message="分页参数错误")
        tasks = self.sim.tasks.values()
        views = [
            v
            for v in (self.sim.view(t) for t in (reversed(tasks) if self.newest else tasks))
            if v["status"] in statuses and value in str(v["task_name"])
        ]
        return _envelope({"count": len(views), "results": views[(page - 1) * size : page * size]})

    async def stop(self, request: web.Request) -> web.StreamResponse:
        try:
            task = self.sim.tasks[int(orjson.loads(await request.read())["task_id"])]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _envelope(code="C999", message="任务不存在")
        if self.sim.view(task)["status"] == "End":
            if self.sim.config.stop_ended_ok:
                return _envelope()
            return _envelope(code="C010", message="任务已结束，无法停止")
        task.stopped_at = time.monotonic()
        return _envelope()

    async def resources(self, request: web.Request) -> web.StreamResponse:
        return _envelope({"count": len(DEVICES), "results": DEVICES})

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        return web.Response(
            body=orjson.dumps(
                {
                    "creates": sim.creates,
                    "requests": sim.requests,
                    "echoed": sim.echoed,
                    "first_create": sim.first_create,
                    "last_create": sim.last_create,
                    "busiest_second": sim.busiest_second(),
                    "throttled": sim.throttled,
                    "served_per_s_while_creating": sim.served_per_s_while_creating(),
                }
            ),
            content_type="application/json",
        )


_MAX_PAGE_SIZE = 1000  # the simulator clamps search's page_size to this (the API documents none)
_STAMP_DIGITS = 13  # a timestamp in ms has 13 digits (from 2001 to 2286)
_SIGNATURE_BYTES = 256  # an RSA-2048 signature


def _authenticate(
    sim: GongjiSim, request: web.Request, token: str, raw: bytes
) -> tuple[str, str] | None:
    """The error code and message of a request that fails authentication, or None."""
    problem = _check_headers(sim, request, token)
    if problem is not None:
        return problem
    key = sim.tokens[token]
    if key is None:
        return None  # simple mode: no signature to check
    return _check_signature(key, request, token, raw)


def _check_headers(sim: GongjiSim, request: web.Request, token: str) -> tuple[str, str] | None:
    if token not in sim.tokens:
        return "C001", "token 无效"
    if request.headers.get("version") != "1.0.0":
        return "C002", "version 错误"
    stamp = request.headers.get("timestamp", "")
    # isdigit() alone accepts Unicode digits ("²" raises in int(), "١" parses): ASCII only.
    if len(stamp) != _STAMP_DIGITS or not (stamp.isascii() and stamp.isdigit()):
        return "C004", "timestamp 格式错误"
    if abs(time.time() * 1000 - int(stamp)) > sim.config.skew_s * 1000:
        return "C004", "timestamp 已过期"
    return None


def _check_signature(
    key: rsa.RSAPublicKey, request: web.Request, token: str, raw: bytes
) -> tuple[str, str] | None:
    try:
        signature = base64.b64decode(request.headers.get("sign_str", ""), validate=True)
    except (binascii.Error, ValueError):
        return "C005", "sign_str 不是 Base64"
    if len(signature) != _SIGNATURE_BYTES:
        return "C005", "sign_str 长度错误"
    stamp = request.headers.get("timestamp", "")
    data = raw if request.method == "POST" else b""
    message = f"{request.raw_path}\n1.0.0\n{stamp}\n{token}\n".encode() + data
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "C005", "签名校验失败"
    return None


class GongjiSimulator:
    """``bulk sim gongji``: tokens to accept, and the faults of :class:`SimConfig`."""

    help = "a simulator of the Gongji Open API's Job endpoints"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Tokens (RSA or simple mode), one option per fault, the order of search results."""
        parser.add_argument(
            "--rsa-token",
            action="append",
            default=[],
            metavar="TOKEN=PUBLIC.pem",
            help="register an RSA-mode token with its public key (repeatable)",
        )
        parser.add_argument(
            "--simple-token",
            action="append",
            default=[],
            metavar="TOKEN",
            help="register a simple-mode token (repeatable)",
        )
        parser.add_argument(
            "--stop-ended-ok",
            action="store_true",
            help="stopping an ended task succeeds (default: code C010)",
        )
        for name, kind, default, help_ in (
            ("--pending-s", seconds, 0.5, "seconds a task stays Pending"),
            ("--run-s", seconds, 2.0, "seconds a task runs"),
            ("--failure-rate", share, 0.0, "share of tasks that end Failed"),
            ("--skew-s", seconds, 300.0, "accepted timestamp skew, seconds"),
            ("--throttle-rate", share, 0.0, "share of requests answered with code C008"),
            ("--http-429-rate", share, 0.0, "share of requests answered HTTP 429"),
            ("--retry-after", seconds, 1.0, "Retry-After of those 429s, seconds"),
            ("--error-rate", share, 0.0, "share of requests answered HTTP 502"),
            ("--reset-rate", share, 0.0, "share of requests whose connection is dropped"),
            ("--commit-fail-rate", share, 0.0, "share of creates that create, then fail"),
            ("--latency", seconds, 0.0, "delay before every answer, seconds"),
            ("--rate-limit", per_second, None, "requests per second per token before HTTP 429"),
            ("--echo-rate", share, 0.0, "share of requests answered echoing the request"),
            (
                "--garbage-rate",
                share,
                0.0,
                "share of successful answers replaced by garbage (after the request took effect)",
            ),
            ("--seed", int, 0, "seed of the fault draws"),
        ):
            parser.add_argument(name, type=kind, default=default, help=help_)
        parser.add_argument(
            "--list-order",
            choices=("newest", "oldest"),
            default="newest",
            help="order of search results (undocumented by the API): newest or oldest task first",
        )

    def app(self, args: argparse.Namespace) -> web.Application:
        """The service with its tokens and faults.

        Raises:
            ConfigError: no token, or an RSA token whose key cannot be read.
        """
        sim = GongjiSim(
            SimConfig(
                pending_s=args.pending_s,
                run_s=args.run_s,
                failure_rate=args.failure_rate,
                skew_s=args.skew_s,
                stop_ended_ok=args.stop_ended_ok,
                throttle_rate=args.throttle_rate,
                http_429_rate=args.http_429_rate,
                retry_after_s=args.retry_after,
                error_rate=args.error_rate,
                reset_rate=args.reset_rate,
                commit_fail_rate=args.commit_fail_rate,
                latency_s=args.latency,
                rate_limit_per_s=args.rate_limit,
                echo_rate=args.echo_rate,
                garbage_rate=args.garbage_rate,
                list_order=args.list_order,
                seed=args.seed,
            )
        )
        where = "bulk sim gongji: error: argument --rsa-token"
        for entry in args.rsa_token:
            token, sep, key_path = entry.partition("=")
            if not sep or not token:
                msg = f"expected TOKEN=PUBLIC_KEY.pem, got {entry!r}"
                raise ConfigError(msg, where=where)
            try:
                sim.add_token(token, Path(key_path).read_bytes())
            except OSError as exc:
                text = exc.strerror or str(exc)
                msg = f"cannot read {key_path}: {text[:1].lower()}{text[1:]}"
                raise ConfigError(msg, where=where) from None
            except ValueError:
                msg = (
                    f"{key_path} is not an RSA public key in PEM (openssl rsa -in KEY.pem -pubout)"
                )
                raise ConfigError(msg, where=where) from None
        for token in args.simple_token:
            sim.add_token(token, None)
        if not sim.tokens:
            msg = (
                "register at least one token: --rsa-token TOKEN=PUBLIC.pem or --simple-token TOKEN"
            )
            raise ConfigError(msg, where="bulk sim gongji: error")
        return make_app(sim)
