"""The HTTP boundary shared by the remote backends: one aiohttp session, errors translated.

Every aiohttp exception and unexpected HTTP status becomes a :mod:`bulk.errors` type here, in
one place, so backends and the engine never see aiohttp's. The mapping:

=====================================  ===================================================
what happened                          raised
=====================================  ===================================================
HTTP 429 (any method)                  ThrottledError, ``retry_after`` from Retry-After
HTTP 5xx, request not idempotent       AmbiguousBackendError: it may have been applied
HTTP 5xx, idempotent request           TransientBackendError
other 4xx                              PermanentBackendError (the body's message in it)
could not connect (nothing sent)       TransientBackendError
reset / timeout once sent, not idem.   AmbiguousBackendError
reset / timeout once sent, idempotent  TransientBackendError
=====================================  ===================================================

"Idempotent" is the caller's word: reads and look-ups are; a create is not.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from bulk.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)
from bulk.ratelimit import pace_request

__all__ = ["HttpClient", "Response", "parse_retry_after"]

_MESSAGE_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Response:
    """A response whose status the caller said it expects."""

    status: int
    body: bytes


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpClient:
    """One aiohttp session to one base URL, with errors mapped to :mod:`bulk.errors`.

    Example::

        client = HttpClient("http://127.0.0.1:8265", timeout_s=30, max_connections=16)
        response = await client.request("POST", "/api/jobs/", body=data, idempotent=False,
                                        expect=(200, 409), job_name=name)
        await client.aclose()

    Args:
        base_url: scheme, host and port (and any path prefix); no trailing slash needed.
        timeout_s: total time for one request.
        max_connections: the connection pool's size (the engine caps requests in flight too).
        verify_tls: verify certificates (on by default; off only for a test server).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 64,
        verify_tls: bool = True,
        headers: Mapping[str, str] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (aiohttp sessions are loop-bound).
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._verify_tls)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        expect: tuple[int, ...] = (200,),
        job_name: str | None = None,
        paced: bool = False,
    ) -> Response:
        """Send one request; return it if its status is in ``expect``, else raise.

        Args:
            target: the path and query, percent-encoded, exactly as it goes on the wire.
            body: the exact bytes to send (signed bytes must be the sent bytes).
            idempotent: whether sending it twice is harmless (decides ambiguous vs transient).
            paced: the caller awaited :func:`bulk.ratelimit.pace_request` already (to sign
                after the wait, with a fresh timestamp).
        """
        if not paced:  # inside an engine call, every request after the first waits its turn
            await pace_request()
        session = self._get_session()
        send_headers = dict(headers or {})
        if body is not None:
            send_headers.setdefault("Content-Type", "application/json")
        # encoded=True: the target goes on the wire exactly as given; a signed request's
        # signature covers these very bytes, so nothing may re-quote them.
        url = URL(self.base_url + target, encoded=True)
        try:
            async with session.request(
                method, url, data=body, headers=send_headers, skip_auto_headers=("User-Agent",)
            ) as resp:
                data = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            msg = f"cannot connect to {self.base_url}: {exc.os_error.strerror or exc}"
            raise TransientBackendError(msg, job_name=job_name) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({exc!r})"
            msg = f"{method} {_path(target)} {what}"
            kind = TransientBackendError if idempotent else AmbiguousBackendError
            raise kind(msg, job_name=job_name) from exc
        if status in expect:
            return Response(status, data)
        msg = f"{method} {_path(target)}: HTTP {status}: {_snippet(data)}"
        if status == 429:
            raise ThrottledError(msg, job_name=job_name, retry_after=retry_after)
        if status >= 500:
            kind = TransientBackendError if idempotent else AmbiguousBackendError
            raise kind(msg, job_name=job_name, retry_after=retry_after)
        raise PermanentBackendError(msg, job_name=job_name)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _path(target: str) -> str:
    # Messages name the path only: a query string may carry tokens or user data.
    return target.split("?", 1)[0]


def _snippet(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:_MESSAGE_LIMIT] + ("..." if len(text) > _MESSAGE_LIMIT else "") or "(empty)"
