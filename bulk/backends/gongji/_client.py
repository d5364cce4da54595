"""The Gongji Open API client: options, credentials, and one method per endpoint.

Every request is signed (:mod:`bulk.backends.gongji._signing`) and goes through one
:class:`~bulk.backends._http.HttpClient`. The token and every request's ``sign_str`` are
secret headers of that client, so an answer that echoes them (an error page dumping the
request) is scrubbed before anything reads it. An answer that is not the documented envelope,
or whose ``data`` has the wrong shape, is transient for a read and ambiguous for a create; an
envelope with an error code raises what :data:`~bulk.backends.gongji._codes.CODES` says.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import orjson

from bulk._ratelimit import pace_request
from bulk.backends._http import HttpClient, Response, read_token
from bulk.backends.gongji._codes import code_error
from bulk.backends.gongji._signing import VERSION, Signer, string_to_sign
from bulk.errors import BackendError, ConfigError

__all__ = [
    "DEFAULT_URL",
    "Answer",
    "GongjiClient",
    "GongjiOptions",
    "digits",
    "page_of",
    "read_options_token",
    "read_signer",
    "task_id_of",
]

DEFAULT_URL = "https://openapi.suanli.cn"


@dataclass(frozen=True, slots=True)
class Answer:
    """The ``data`` of an envelope whose code was ``0000``, and the response it came in."""

    data: Any
    response: Response

    def malformed(self, what: str) -> BackendError:
        """The error for ``data`` of a shape bulk cannot read (quoted in the message)."""
        return self.response.malformed(what, "(empty)" if self.data is None else self.data)


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
    token_env: str | None = "GONGJI_TOKEN"  # noqa: S105 - a variable's name, not a token
    token_file: Path | None = None
    private_key_file: Path | None = None
    private_key_env: str | None = None
    timeout_s: float = 30.0
    sign_threads: int = 0
    verify_tls: bool = True
    page_size: int = 100


def read_options_token(options: GongjiOptions) -> str:
    """The API token the options reference (required)."""
    token = read_token(options.token_env, options.token_file)
    if token is None:  # neither a variable nor a file named (read_token raises if unset)
        msg = "no API token: give backend.token_env or backend.token_file"
        raise ConfigError(msg, field="backend.token_env")
    return token


def read_signer(options: GongjiOptions) -> Signer | None:
    """The signer of the private key the options reference; None for a simple-mode token."""
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
    ) -> Answer:
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
            return Answer(envelope.get("data"), response)
        raise code_error(code, envelope.get("message"), response)

    async def create(self, body: bytes, *, job_name: str) -> int:
        """``POST /api/task/job/create``: the new task's id."""
        path = "/api/task/job/create"
        answer = await self.call("POST", path, body=body, idempotent=False, job_name=job_name)
        data = answer.data
        task_id = task_id_of(data.get("task_id") if isinstance(data, dict) else None)
        if task_id is None:
            msg = "no task_id"
            raise answer.malformed(msg)
        return task_id

    async def detail(self, task_id: int) -> dict[str, Any]:
        """``GET /api/task/job/detail``."""
        path = "/api/task/job/detail"
        answer = await self.call("GET", path, query={"task_id": task_id}, idempotent=True)
        if not isinstance(answer.data, dict):
            msg = "data is not a task"
            raise answer.malformed(msg)
        return answer.data

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
        return page_of(await self.call("GET", path, query=query, idempotent=True))

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
        return page_of(await self.call("GET", path, query=query, idempotent=True))[1]

    async def aclose(self) -> None:
        await self._http.aclose()


def digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits (``isdigit`` alone accepts "²", which ``int`` refuses,
    and "١", which it reads as 1)."""
    return text.isascii() and text.isdigit()


# A task id is a 64-bit integer: longer digit strings are not ids (and are never converted).
_MAX_TASK_ID_DIGITS = 19


def task_id_of(value: Any) -> int | None:
    """A task id as the API gives it (an integer, or its digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and digits(value) and len(value) <= _MAX_TASK_ID_DIGITS:
        return int(value)
    return None


def page_of(answer: Answer) -> tuple[int, list[dict[str, Any]]]:
    """``count`` and ``results`` of a list answer; any other shape is an unreadable answer."""
    data = answer.data
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
        msg = "data is not {count, results: [objects]}"
        raise answer.malformed(msg)
    return count or 0, results
