"""The ``gongji`` backend: 共绩算力 (Gongji) Open API, Job batch tasks.

Facts come from ``shared/api/gongji.md``; where it says a point is unknown, the safe choice is
made and written down here.

Requests carry the headers ``token``, ``timestamp`` (ms), ``version: 1.0.0`` and, for a key in
RSA mode, ``sign_str``: Base64 of RSA PKCS#1 v1.5 / SHA-256 over::

    {path}\\n{version}\\n{timestamp}\\n{token}\\n{data}

where *path* is the request target exactly as sent (with its query string on a GET; the doc
leaves this open, and every client that signs GETs does so) and *data* the exact body bytes
(empty for a GET). The body is serialised once, those bytes signed, those bytes sent. Every
retry is signed afresh with a new timestamp. Simple-mode ("token only") keys send no signature.

A job's identity on the service is its ``task_name``. Task names are **not documented as
unique**: the service may well accept a second create with the same name. So exactly-once
rests on bulk alone: ``submitting`` is journaled before every create, and after an ambiguous
create the task is searched for by its exact name (all statuses, all pages) and adopted before
anything is sent again. The template's ``task_name`` must contain ``{_name}`` (or ``{_key}``
and ``{_attempt}``) so that every row and every attempt has a name of its own.

Secrets: the token and every request's ``sign_str`` are secret headers of the HTTP client, so
an answer that echoes them (an error page dumping the request) is scrubbed before anything
reads it (see :mod:`bulk.backends._http`). An answer that is not the documented envelope, or
whose ``data`` has the wrong shape, is transient for a read and ambiguous for a create.

Status mapping: ``job_status.status`` Complete → succeeded, Failed → failed; task ``status``
End (or Paused) otherwise → stopped; Pending/Running → queued/running; any other value is
non-terminal and logged once. Tracking lists the run's unfinished tasks with ``search``
(all pages), looks for tasks that left that list among the newest ended ones (whichever order
the service lists them in: see ``GongjiBackend._ended``), and asks ``detail`` only for the
rest.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import anyio
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bulk._policy import LimitsConfig, TrackConfig
from bulk._problems import short_repr
from bulk._ratelimit import pace_request
from bulk.backends._http import HttpClient, excerpt, malformed, read_token, url_problem
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
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    ConfigError,
    PermanentBackendError,
    RetryableBackendError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

if TYPE_CHECKING:
    from bulk._problems import Problems
    from bulk._table import Table
    from bulk._template import Template

__all__ = [
    "CODES",
    "DEFAULT_URL",
    "KIND",
    "GongjiBackend",
    "GongjiClient",
    "GongjiKind",
    "GongjiOptions",
    "Signer",
    "map_status",
    "string_to_sign",
]

DEFAULT_URL = "https://openapi.suanli.cn"
VERSION = "1.0.0"
ACTIVE = "Pending,Running,Paused"
ALL_STATUSES = "Pending,Running,Paused,End"
_log = logging.getLogger("bulk.gongji")


# -- the envelope's error codes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Code:
    family: str
    on_write: type[BackendError]  # for a create (not idempotent)
    on_read: type[BackendError]  # for reads, look-ups and stop (idempotent)
    why: str


_AUTH = (
    "check the key's mode (simple keys send no signature, RSA keys must), that the private "
    "key matches the public key uploaded in the console, and the machine's clock (timestamps "
    "are checked against the server's)"
)

# The API lists the codes 0000, C001-C010 (no C003), C999 and Z001 without saying what they
# mean (api/gongji.md §1.4). Each choice below, with its reason; a code not listed is
# permanent, so an unknown answer is never retried blindly.
CODES: dict[str, _Code] = {
    **{
        code: _Code(
            "auth",
            AuthenticationError,
            AuthenticationError,
            "auth/signature family in public clients; same credentials cannot succeed",
        )
        for code in ("C001", "C002", "C004", "C005", "C006", "C007", "C003", "A003")
    },
    **{
        code: _Code(
            "throttle",
            ThrottledError,
            ThrottledError,
            "mapped to 'rate limited, retryable' by a public adapter: slow down",
        )
        for code in ("C008", "C009")
    },
    "C010": _Code(
        "conflict",
        PermanentBackendError,
        PermanentBackendError,
        "operation conflict (e.g. stopping an ended task): retrying cannot help",
    ),
    "C999": _Code(
        "system",
        AmbiguousBackendError,
        TransientBackendError,
        "a generic server error may come after the task was created: look it up",
    ),
    "Z001": _Code(
        "unknown",
        AmbiguousBackendError,
        TransientBackendError,
        "meaning unknown: treated like a server error, the safe side",
    ),
}


# -- signing ------------------------------------------------------------------------------------


def string_to_sign(target: str, timestamp: str, token: str, data: bytes) -> bytes:
    """The bytes an RSA-mode request signs (``data`` is the exact body; empty for a GET)."""
    return f"{target}\n{VERSION}\n{timestamp}\n{token}\n".encode() + data


class Signer:
    """RSA-SHA256 (PKCS#1 v1.5) signatures, Base64-encoded, with the user's private key.

    Args:
        pem: the private key, PKCS#8 or PKCS#1 PEM (or bare Base64 DER).
    """

    def __init__(self, pem: bytes):
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            try:
                key = serialization.load_der_private_key(base64.b64decode(pem), password=None)
            except (ValueError, TypeError):
                msg = "is not an unencrypted RSA private key in PEM (PKCS#8 or PKCS#1)"
                raise ValueError(msg) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            msg = "is not an RSA private key"
            raise TypeError(msg)
        self._key = key

    def sign(self, message: bytes) -> str:
        """Base64 of the signature (256 bytes for a 2048-bit key)."""
        signature = self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()


# -- options and the job schema ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GongjiOptions:
    """``[backend]`` keys of the Gongji backend (secrets by reference only).

    Attributes:
        url: the API's base URL.
        token_env, token_file: where the API token is read from (one of them).
        private_key_file, private_key_env: the RSA private key, for RSA-mode tokens; none for
            a simple-mode token.
        timeout_s: per request.
        sign_threads: sign in this many worker threads (0: on the event loop; signing costs
            ~0.25 ms and cryptography releases the GIL, so threads help only at high rates).
        verify_tls: verify the server's certificate.
        page_size: rows per ``search`` page.
    """

    url: str = DEFAULT_URL
    token_env: str | None = "GONGJI_TOKEN"
    token_file: Path | None = None
    private_key_file: Path | None = None
    private_key_env: str | None = None
    timeout_s: float = 30.0
    sign_threads: int = 0
    verify_tls: bool = True
    page_size: int = 100


_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GongjiKind:
    """The ``gongji`` backend kind."""

    name = "gongji"
    # No rate limit is documented; a third-party guide polls no faster than every 10 s. The
    # throttle codes (C008, C009) name no endpoint, so the likely shape is one limit per token
    # across all endpoints: a shared budget of 10 requests/s (an assumption, overridable)
    # keeps creates, searches, details and stops together under it.
    default_limits = LimitsConfig(
        submit_rate_per_s=5.0,
        status_rate_per_s=2.0,
        stop_rate_per_s=5.0,
        service_rate_per_s=10.0,
        burst=5,
        max_in_flight=8,
        max_active=100,
    )
    default_track = TrackConfig(first_s=10.0, factor=1.5, max_s=60.0, batch=1000)
    quoted_fields = NO_QUOTING  # bodies are JSON fields, never parsed by a shell here
    jobs_outlive_bulk = True
    # task_name is not documented as unique: a second create with the same name may make a
    # second task (the simulator does so), so a resend is a duplicate.
    unique_names = False

    def parse_options(self, table: Table, base: Path) -> GongjiOptions:
        """Read the ``[backend]`` keys (credentials by reference)."""
        d = GongjiOptions()
        url = table.get("url", str, d.url)
        problem = url_problem(url)
        if problem is not None:
            table.fail("url", problem)
        token_file = table.get("token_file", str, None)
        token_env = table.get("token_env", str, None if token_file else d.token_env)
        if token_file and token_env:
            table.fail("token_env", "give token_env or token_file, not both")
        if token_env is not None and not _ENV.fullmatch(token_env):
            table.fail("token_env", f"{token_env!r} is not an environment variable name")
        key_file = table.get("private_key_file", str, None)
        key_env = table.get("private_key_env", str, None)
        if key_file and key_env:
            table.fail("private_key_env", "give private_key_file or private_key_env, not both")
        sign_threads = table.get("sign_threads", int, d.sign_threads)
        if sign_threads < 0:
            table.fail("sign_threads", f"{sign_threads} must be 0 (sign inline) or more")
        return GongjiOptions(
            url=url,
            token_env=token_env,
            token_file=base / token_file if token_file else None,
            private_key_file=base / key_file if key_file else None,
            private_key_env=key_env,
            timeout_s=table.positive("timeout_s", float, d.timeout_s),
            sign_threads=sign_threads,
            verify_tls=table.get("verify_tls", bool, d.verify_tls),
            page_size=table.positive("page_size", int, d.page_size),
        )

    def validate(self, body: Any, problems: Problems) -> None:
        """The create body's required fields (api/gongji.md §2.4); extra fields are allowed."""
        job = problems.table(body, "job")
        if job is None:
            return
        problems.string(job, "task_name", "job", max_len=128)
        sub_type = job.get("sub_type")
        if sub_type not in (None, "Spot"):
            problems.add(
                "job.sub_type", f"{short_repr(sub_type)} is not allowed; null (OnDemand) or 'Spot'"
            )
        problems.number(job, "points", "job", integer=True, minimum=1)
        resources = problems.kind(job, "resources", "job", (list,))
        if resources is not None and not resources:
            problems.add("job.resources", "needs at least one resource")
        for i, res in enumerate(resources or []):
            _validate_resource(res, f"job.resources[{i}]", problems)
        support = problems.kind(job, "job_support", "job", (dict,))
        if support is not None:
            timeout = problems.number(
                support, "timeout_sec", "job.job_support", integer=True, minimum=1
            )
            problems.number(support, "parallelism", "job.job_support", integer=True, minimum=1)
            if support.get("mod_param") is None:
                problems.add(
                    "job.job_support.mod_param",
                    "is required (e.g. "
                    '{"default": {"backoff_limit": 3, "restart_policy": "OnFailure"}})',
                )
            estimated = support.get("estimated_exec_sec")
            with problems.depending_on("job.sub_type"):
                if sub_type == "Spot":
                    est = problems.number(
                        support, "estimated_exec_sec", "job.job_support", integer=True, minimum=1
                    )
                    if est is not None and timeout is not None and est >= timeout:
                        with problems.depending_on("job.job_support.timeout_sec"):
                            problems.add(
                                "job.job_support.estimated_exec_sec",
                                f"{int(est)} must be below timeout_sec {int(timeout)}",
                            )
                elif estimated is not None:
                    problems.add(
                        "job.job_support.estimated_exec_sec",
                        "is only for Spot jobs (sub_type = 'Spot'); leave it out or null",
                    )
        services = problems.kind(job, "services", "job", (list,))
        if services is not None and not services:
            problems.add("job.services", "needs at least one service (container)")
        for i, svc in enumerate(services or []):
            _validate_service(svc, f"job.services[{i}]", problems)

    def check_template(self, template: Template) -> str | None:
        """``task_name`` must name each row and attempt apart (see the module docstring)."""
        source = template.source if isinstance(template.source, dict) else {}
        name = source.get("task_name")
        if not isinstance(name, str):
            return None  # validate() reports a missing task_name per row
        if "{_name}" in name or ("{_key}" in name and "{_attempt}" in name):
            return None
        return (
            f"task_name {name!r} must contain {{_name}} (or both {{_key}} and {{_attempt}}): "
            "bulk finds a task again by its exact name after a crash, and every row and "
            "retry needs a name of its own"
        )

    def create(self, options: GongjiOptions, *, run: str, run_dir: Path) -> GongjiBackend:
        """A client with the credentials read now (from the environment or files)."""
        token = _read_token(options)
        signer = _read_signer(options)
        client = GongjiClient(options, token=token, signer=signer)
        return GongjiBackend(client, page_size=options.page_size)

    def testbed(self, folder: Path) -> AbstractAsyncContextManager[Testbed]:
        """A backend of ``bulk sim gongji`` served in this process (a simple-mode token)."""
        from aiohttp.test_utils import TestServer

        from bulk._sim.gongji import GongjiSim, SimConfig, make_app, sample_body

        def body(name: str, long: bool) -> bytes:  # the task name is in the body
            return sample_body(f"contract-{name}", run_s=30 if long else None)

        @asynccontextmanager
        async def bed() -> AsyncIterator[Testbed]:
            sim = GongjiSim(SimConfig(pending_s=0.0, run_s=0.0))
            sim.add_token("t", None)
            server = TestServer(make_app(sim), host="127.0.0.1")
            await server.start_server()
            url = str(server.make_url("")).rstrip("/")
            client = GongjiClient(GongjiOptions(url=url), token="t", signer=None)
            backend = GongjiBackend(client)
            try:
                yield Testbed(backend, body)
            finally:
                await backend.aclose()
                await server.close()

        return bed()

    def commands(self) -> Sequence[Command]:
        """``bulk gongji resources``."""
        from bulk.backends.gongji._cli import COMMANDS

        return COMMANDS

    def simulator(self) -> Simulator:
        """``bulk sim gongji``."""
        from bulk._sim.gongji import GongjiSimulator

        return GongjiSimulator()


KIND: BackendKind[GongjiOptions] = GongjiKind()


def _validate_resource(res: Any, where: str, problems: Problems) -> None:
    obj = problems.table(res, where)
    if obj is None:
        return
    if "mark" in obj:
        problems.string(obj, "mark", where)
        return
    if "gpu_name" in obj:  # by name: resolved against the device list at run time
        problems.string(obj, "gpu_name", where)
        problems.number(obj, "gpu_count", where, integer=True, minimum=1)
        problems.string(obj, "region", where)
        return
    problems.add(
        f"{where}.mark",
        "is required (from `bulk gongji resources`), or give "
        "{gpu_name, gpu_count, region} to have bulk find the mark",
    )


def _validate_service(svc: Any, where: str, problems: Problems) -> None:
    obj = problems.table(svc, where)
    if obj is None:
        return
    problems.string(obj, "service_name", where)
    problems.string(obj, "service_image", where)
    weight = problems.kind(obj, "resource_weight", where, (dict,))
    if weight is not None:
        for key in ("cpu_weight", "mem_weight", "gpu_weight"):
            problems.number(
                weight, key, f"{where}.resource_weight", minimum=0, exclusive_minimum=True
            )
    env = obj.get("env")
    if env is not None and not (
        isinstance(env, list) and all(isinstance(e, dict) and "name" in e for e in env)
    ):
        problems.add(f"{where}.env", 'must be an array of {"name", "value"} objects (not "K=V")')


def _read_token(options: GongjiOptions) -> str:
    token = read_token(options.token_env, options.token_file)
    assert token is not None  # required: read_token raises instead
    return token


def _read_signer(options: GongjiOptions) -> Signer | None:
    if options.private_key_file is not None:
        field_name = "backend.private_key_file"
        try:
            pem = options.private_key_file.read_bytes()
        except OSError as exc:
            msg = f"cannot read the private key {str(options.private_key_file)!r}: {exc.strerror}"
            raise ConfigError(msg, field=field_name) from None
    elif options.private_key_env is not None:
        field_name = "backend.private_key_env"
        pem = os.environ.get(options.private_key_env, "").encode()
        if not pem:
            msg = f"the environment variable {options.private_key_env} is not set"
            raise ConfigError(msg, field=field_name)
    else:
        return None  # a simple-mode token
    try:
        return Signer(pem)
    except (ValueError, TypeError) as exc:
        # The message names the file or variable, never any of the key's bytes.
        msg = f"the private key {exc}"
        raise ConfigError(msg, field=field_name) from None


# -- the client ---------------------------------------------------------------------------------


class GongjiClient:
    """The Open API's endpoints over one signed HTTP session.

    Example::

        client = GongjiClient(options, token="...", signer=Signer(pem))
        task_id = await client.create(body_bytes, job_name="run-1a2b")
        count, tasks = await client.search(status="Running", search_value="run-", page=1)
    """

    def __init__(self, options: GongjiOptions, *, token: str, signer: Signer | None):
        # The token and each request's signature are secret headers: the client takes them
        # out of every answer before this class reads it.
        self._http = HttpClient(
            options.url,
            timeout_s=options.timeout_s,
            verify_tls=options.verify_tls,
            secrets=[token],
            secret_headers=("token", "sign_str"),
        )
        self._token = token
        self._signer = signer
        self._sign_limiter = (
            anyio.CapacityLimiter(options.sign_threads) if options.sign_threads else None
        )
        self.requests: dict[str, int] = {}  # per path: what tracking costs

    async def _headers(self, target: str, body: bytes) -> dict[str, str]:
        timestamp = str(time.time_ns() // 1_000_000)
        headers = {"token": self._token, "timestamp": timestamp, "version": VERSION}
        if self._signer is not None:
            message = string_to_sign(target, timestamp, self._token, body)
            if self._sign_limiter is None:
                headers["sign_str"] = self._signer.sign(message)
            else:
                headers["sign_str"] = await anyio.to_thread.run_sync(
                    self._signer.sign, message, limiter=self._sign_limiter
                )
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        payload: Any = None,
        body: bytes | None = None,
        idempotent: bool,
        job_name: str | None = None,
    ) -> Any:
        """One request; the envelope's ``data`` on ``code == "0000"``, else a bulk error.

        ``body`` is sent as given (already serialised); ``payload`` is serialised once here.
        """
        target = path + ("?" + urlencode(query, quote_via=quote) if query else "")
        data = body if body is not None else (orjson.dumps(payload) if payload is not None else b"")
        self.requests[path] = self.requests.get(path, 0) + 1
        await pace_request()  # before signing: the timestamp is then taken after any wait
        response = await self._http.request(
            method,
            target,
            body=data if method == "POST" else None,
            headers=await self._headers(target, data if method == "POST" else b""),
            idempotent=idempotent,
            job_name=job_name,
            paced=True,
        )
        envelope = response.json()
        code = envelope.get("code") if isinstance(envelope, dict) else None
        if not isinstance(code, str):
            msg = "not an API envelope {code, message, data}"
            raise response.malformed(msg)
        if code == "0000":
            return envelope.get("data")
        raise _code_error(code, envelope.get("message"), method, path, idempotent, job_name)

    async def create(self, body: bytes, *, job_name: str) -> int:
        """``POST /api/task/job/create``: the new task's id."""
        path = "/api/task/job/create"
        data = await self.call("POST", path, body=body, idempotent=False, job_name=job_name)
        task_id = _task_id(data.get("task_id") if isinstance(data, dict) else None)
        if task_id is None:
            error = malformed("POST", path, "no task_id", data, idempotent=False, job_name=job_name)
            raise error
        return task_id

    async def detail(self, task_id: int) -> dict[str, Any]:
        """``GET /api/task/job/detail``."""
        path = "/api/task/job/detail"
        data = await self.call("GET", path, query={"task_id": task_id}, idempotent=True)
        if not isinstance(data, dict):
            error = malformed(
                "GET", path, "data is not a task", data, idempotent=True, job_name=None
            )
            raise error
        return data

    async def search(
        self, *, status: str, search_value: str, page: int, page_size: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """``GET /api/task/job/search``: the total count and one page of tasks."""
        query = {
            "status": status,
            "search_value": search_value,
            "page": page,
            "page_size": page_size,
        }
        path = "/api/task/job/search"
        data = await self.call("GET", path, query=query, idempotent=True)
        return _page(path, data)

    async def stop(self, task_id: int, *, job_name: str | None = None) -> None:
        """``POST /api/task/job/stop``."""
        await self.call(
            "POST",
            "/api/task/job/stop",
            payload={"task_id": task_id},
            idempotent=True,
            job_name=job_name,
        )

    async def resources(self) -> list[dict[str, Any]]:
        """``GET /api/deployment/resource/search`` for Job GPU devices."""
        path = "/api/deployment/resource/search"
        query = {"task_type": "Job", "device_type": "GpuDevice"}
        data = await self.call("GET", path, query=query, idempotent=True)
        return _page(path, data)[1]

    async def aclose(self) -> None:
        await self._http.aclose()


def _digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits (``isdigit`` alone accepts "²", which ``int`` refuses,
    and "١", which it reads as 1)."""
    return text.isascii() and text.isdigit()


def _task_id(value: Any) -> int | None:
    """A task id as the API gives it (an integer, or its digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _digits(value) and len(value) < 20:
        return int(value)
    return None


def _page(path: str, data: Any) -> tuple[int, list[dict[str, Any]]]:
    """``count`` and ``results`` of a list answer; any other shape is an unreadable answer."""
    if data is None:
        return 0, []  # nothing matched: some services answer data null
    count = data.get("count") if isinstance(data, dict) else None
    results = data.get("results") if isinstance(data, dict) else None
    if results is None:
        results = []
    if (
        not isinstance(data, dict)
        or not isinstance(count, int | None)
        or isinstance(count, bool)
        or not isinstance(results, list)
        or not all(isinstance(r, dict) for r in results)
    ):
        what = "data is not {count, results: [objects]}"
        error = malformed("GET", path, what, data, idempotent=True, job_name=None)
        raise error
    return count or 0, results


def _code_error(
    code: str, message: Any, method: str, path: str, idempotent: bool, job_name: str | None
) -> BackendError:
    rule = CODES.get(code)
    said = excerpt(message) if message else "no message"
    text = f"{method} {path}: code {excerpt(code, 20)}: {said}"
    if rule is None:
        return PermanentBackendError(f"{text} (an undocumented code)", job_name=job_name)
    if rule.family == "auth":
        text += f"; {_AUTH}"
    kind = rule.on_read if idempotent else rule.on_write
    if kind is ThrottledError:
        return ThrottledError(text, job_name=job_name, retry_after=1.0)
    return kind(text, job_name=job_name)


# -- status mapping ------------------------------------------------------------------------------

_warned: set[str] = set()


def map_status(task: Mapping[str, Any]) -> JobStatus:
    """A task of ``search``/``detail`` as a :class:`JobStatus` (see the module docstring)."""
    job_status = task.get("job_status")
    inner = job_status.get("status") if isinstance(job_status, dict) else None
    outer = task.get("status")
    if inner == "Complete":
        return JobStatus(Phase.SUCCEEDED)
    if inner == "Failed":
        failed = job_status.get("failed_pods") if isinstance(job_status, dict) else None
        return JobStatus(Phase.FAILED, f"job failed (failed_pods={excerpt(failed, 20)})")
    if outer == "End":
        return JobStatus(Phase.STOPPED, f"ended ({excerpt(inner or 'no job status', 40)})")
    if outer == "Paused":
        return JobStatus(Phase.STOPPED, "paused")
    if outer == "Running" or inner == "Running":
        return JobStatus(Phase.RUNNING)
    shown = excerpt(outer, 40)
    if outer != "Pending" and shown not in _warned and len(_warned) < 20:
        _warned.add(shown)
        _log.warning("unknown task status %r: treated as not finished", shown)
    return JobStatus(Phase.QUEUED)


# -- the backend --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Resources:
    loaded: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class GongjiBackend:
    """Jobs as Gongji Job tasks. Implements :class:`~bulk.backends.base.Backend`."""

    # Pages of newest ended tasks read to find jobs that left the unfinished list, before
    # falling back to one detail request per job.
    END_PAGES = 3

    def __init__(self, client: GongjiClient, *, page_size: int = 100):
        self.client = client
        self._page_size = page_size
        self._names: dict[str, str] = {}  # remote id -> task_name, for search prefixes
        self._resources = _Resources()
        self._order: str | None = None  # how search lists tasks: "newest"/"oldest" first
        self._end_count: dict[str, int] = {}  # ended tasks per search prefix, last seen

    async def submit(self, submission: Submission) -> Receipt:
        body = submission.body
        if b'"gpu_name"' in body and _needs_marks(orjson.loads(body)):
            body = await self._resolve_marks(submission)
        task_id = await self.client.create(body, job_name=submission.name)
        receipt = Receipt(submission.name, str(task_id))
        self._names[receipt.remote_id] = _task_name(submission)
        return receipt

    async def lookup(self, submission: Submission) -> Receipt | None:
        """Search every status for the exact task_name; the first task created wins."""
        name = _task_name(submission)
        ids = [
            _task_id(t.get("task_id"))
            for t in await self._search_all(ALL_STATUSES, name)
            if t.get("task_name") == name
        ]
        matches = [task_id for task_id in ids if task_id is not None]
        if len(matches) < len(ids):
            error = malformed(
                "GET",
                "/api/task/job/search",
                "a task of that name has no task_id",
                None,
                idempotent=True,
                job_name=submission.name,
            )
            raise error
        if not matches:
            return None
        receipt = Receipt(submission.name, str(min(matches)))
        self._names[receipt.remote_id] = name
        return receipt

    async def status(self, jobs: Sequence[Receipt]) -> Mapping[str, JobStatus]:
        wanted = {job.remote_id for job in jobs}
        prefix = _common_prefix(self._names.get(job.remote_id) for job in jobs)
        out: dict[str, JobStatus] = {}
        for task in await self._search_all(ACTIVE, prefix):
            remote_id = str(task.get("task_id"))
            if remote_id in wanted:
                out[remote_id] = map_status(task)
        if len(out) < len(wanted):
            out.update(await self._ended(wanted - out.keys(), prefix))
        for remote_id in wanted - out.keys():
            if not _digits(remote_id):
                continue  # not a task id of this service: never reported at all
            try:
                out[remote_id] = map_status(await self.client.detail(int(remote_id)))
            except UnreachableError:
                raise  # the service is down: no use asking about the other jobs now
            except (RetryableBackendError, PermanentBackendError) as exc:
                # Unknown this time: left out, so the engine asks again later. A task the
                # service no longer knows is never reported missing (which would resend it).
                _log.debug("detail %s: %s", remote_id, exc)
        return out

    async def _ended(self, missing: set[str], prefix: str) -> dict[str, JobStatus]:
        """Find tasks that left the unfinished list among the ended ones, from the newest.

        The API does not say in which order ``search`` lists tasks. Task ids grow with
        creation, so each page's ids tell: descending, newest first; ascending, oldest first
        (then the newest are on the last page, found from ``count``); neither, unknown (the
        first pages are read). The order seen is kept for the next call. Pages are read from
        the newest end until every task asked for is found, or a page holds a task older
        than all of them (none can be further on), or :attr:`END_PAGES` pages were read:
        ``detail`` asks for the rest.
        """
        found: dict[str, JobStatus] = {}
        targets = {int(r) for r in missing if _digits(r)}
        if not targets:
            return found
        size = self._page_size
        oldest = min(targets)
        known = self._end_count.get(prefix)
        page = -(-known // size) if self._order == "oldest" and known else 1
        visited: set[int] = set()
        # Pages beyond this bound (towards the old end) hold only tasks older than any wanted.
        bound: int | None = None
        while len(visited) < self.END_PAGES:
            count, tasks = await self.client.search(
                status="End", search_value=prefix, page=page, page_size=size
            )
            visited.add(page)
            self._end_count[prefix] = count
            ids: list[int] = []
            for task in tasks:
                remote_id = str(task.get("task_id"))
                if _digits(remote_id):
                    ids.append(int(remote_id))
                if remote_id in missing:
                    found[remote_id] = map_status(task)
                    targets.discard(int(remote_id))
            if not targets or not tasks:
                break
            order = _list_order(ids)
            if order is not None:
                self._order = order
            last = max(1, -(-count // size))
            if self._order == "newest":
                if min(ids, default=oldest) <= oldest:
                    bound = page if bound is None else min(bound, page)
                candidates = [q for q in range(1, last + 1) if q not in visited]
                candidates = [q for q in candidates if bound is None or q < bound]
                page = min(candidates, default=0)
            elif self._order == "oldest":
                # Ascending: page 1 (read before the order was known) is the old end.
                if min(ids, default=oldest) <= oldest and page != 1:
                    bound = page if bound is None else max(bound, page)
                candidates = [q for q in range(last, 0, -1) if q not in visited]
                candidates = [q for q in candidates if bound is None or q > bound]
                page = max(candidates, default=0)
            else:  # no order to go by: the first pages, as the newest may be anywhere
                page = page + 1 if page < last else 0
            if not page:
                break
        return found

    async def stop(self, job: Receipt) -> None:
        try:
            await self.client.stop(int(job.remote_id), job_name=job.name)
        except PermanentBackendError as exc:
            if "code C010" not in str(exc):  # C010: the task has already ended
                raise

    async def resources(self) -> list[dict[str, Any]]:
        """The device list (cached for the run)."""
        async with self._resources.lock:
            if not self._resources.loaded:
                self._resources.devices = await self.client.resources()
                self._resources.loaded = True
        return self._resources.devices

    async def _resolve_marks(self, submission: Submission) -> bytes:
        body = orjson.loads(submission.body)
        devices = await self.resources()
        resolved = []
        for res in body.get("resources") or []:
            if isinstance(res, dict) and "mark" not in res and "gpu_name" in res:
                res = find_mark(
                    devices,
                    res["gpu_name"],
                    res["gpu_count"],
                    res["region"],
                    job_name=submission.name,
                )
            resolved.append(res)
        body["resources"] = resolved
        return orjson.dumps(body)

    async def _search_all(self, status: str, search_value: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            count, results = await self.client.search(
                status=status, search_value=search_value, page=page, page_size=self._page_size
            )
            tasks.extend(results)
            if not results or page * self._page_size >= count:
                return tasks
            page += 1

    async def aclose(self) -> None:
        await self.client.aclose()


def find_mark(
    devices: Sequence[Mapping[str, Any]],
    gpu_name: str,
    gpu_count: int,
    region: str,
    *,
    job_name: str | None = None,
) -> dict[str, Any]:
    """The create ``resources`` entry for a device given by name, count and region.

    Raises:
        RunRefusedError: no such device, or it is sold out (the message lists what is
            available): the run stops until the template or the inventory changes.
    """
    sold_out = False
    for device in devices:
        if device.get("gpu_name") != gpu_name or device.get("gpu_count") != gpu_count:
            continue
        for reg in _regions(device):
            if region not in (reg.get("region"), reg.get("region_name")):
                continue
            if not reg.get("inventory"):
                sold_out = True
                continue
            mark = reg.get("mark")
            if not isinstance(mark, dict) or "resource" not in mark or "mark" not in mark:
                error = malformed(
                    "GET",
                    "/api/deployment/resource/search",
                    f"{gpu_name}×{gpu_count} in {region} has no mark",
                    reg,
                    idempotent=True,
                    job_name=job_name,
                )
                raise error
            return {
                "resource": mark["resource"],
                "region_name": reg.get("region_name"),
                "mark": mark["mark"],
            }
    available = sorted(
        excerpt(f"{d.get('gpu_name')}×{d.get('gpu_count')} in {r.get('region')}", 60)
        for d in devices
        for r in _regions(d)
        if r.get("inventory")
    )
    what = f"{gpu_name}×{gpu_count} in {region}"
    problem = "is sold out (inventory 0)" if sold_out else "is not in the device list"
    msg = f"{what} {problem}; available: {excerpt(', '.join(available) or 'nothing')}"
    raise RunRefusedError(msg, job_name=job_name)


def _regions(device: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A device's regions, skipping anything that is not one (a garbled list)."""
    regions = device.get("regions")
    return [r for r in regions if isinstance(r, dict)] if isinstance(regions, list) else []


def _needs_marks(body: Any) -> bool:
    """Whether a resource is given by name (no mark) and must be resolved."""
    resources = body.get("resources") if isinstance(body, dict) else None
    return any(isinstance(r, dict) and "mark" not in r and "gpu_name" in r for r in resources or [])


def _task_name(submission: Submission) -> str:
    try:
        name = orjson.loads(submission.body)["task_name"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        name = None
    if not isinstance(name, str):
        msg = "the job body has no task_name"
        raise PermanentBackendError(msg, job_name=submission.name)
    return name


def _list_order(ids: Sequence[int]) -> str | None:
    """``newest`` if the ids go down, ``oldest`` if they go up, else None (unknown)."""
    if len(set(ids)) < 2:
        return None
    if all(a > b for a, b in itertools.pairwise(ids)):
        return "newest"
    if all(a < b for a, b in itertools.pairwise(ids)):
        return "oldest"
    return None


def _common_prefix(names: Iterable[str | None]) -> str:
    """The longest common prefix of the names, or "" when any is unknown."""
    prefix: str | None = None
    for name in names:
        if name is None:
            return ""
        # Character by character is what is wanted here: names, not paths.
        prefix = name if prefix is None else os.path.commonprefix([prefix, name])  # noqa: RUF071
    return prefix or ""


_check: type[Backend] = GongjiBackend
