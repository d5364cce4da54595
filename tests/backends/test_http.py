"""The HTTP boundary: every aiohttp failure and status becomes the right bulk error."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulk.backends.http import HttpClient, parse_retry_after
from bulk.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async def scripted(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        if code == 0:  # drop the connection after reading the request
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        headers = {"Retry-After": "7"} if code == 429 else {}
        return web.Response(status=code, text=f"answer {code}", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/s/{code}", scripted)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = HttpClient(str(server.make_url("")), timeout_s=5)
    yield http
    await http.aclose()
    await server.close()


@pytest.mark.parametrize(
    ("code", "idempotent", "error"),
    [
        pytest.param(429, False, ThrottledError, id="429"),
        pytest.param(503, False, AmbiguousBackendError, id="5xx-create"),
        pytest.param(503, True, TransientBackendError, id="5xx-read"),
        pytest.param(400, False, PermanentBackendError, id="400"),
        pytest.param(0, False, AmbiguousBackendError, id="reset-create"),
        pytest.param(0, True, TransientBackendError, id="reset-read"),
    ],
)
async def test_errors_are_mapped(
    client: HttpClient, code: int, idempotent: bool, error: type[Exception]
) -> None:
    """Each failure maps to exactly one bulk error type."""
    with pytest.raises(error) as info:
        await client.request(
            "POST", f"/s/{code}?token=secret", body=b"{}", idempotent=idempotent, job_name="j"
        )

    assert type(info.value) is error
    assert "secret" not in str(info.value)  # queries (which may hold tokens) are never shown
    if code == 429:
        assert 7 == info.value.retry_after  # type: ignore[attr-defined]
    if code == 400:
        assert "HTTP 400: answer 400" in str(info.value)


async def test_expected_statuses_are_returned(client: HttpClient) -> None:
    """A status the caller expects comes back with its body."""
    response = await client.request("GET", "/s/404", idempotent=True, expect=(200, 404))

    assert (404, b"answer 404") == (response.status, response.body)


async def test_connection_refused_is_transient() -> None:
    """Nothing was sent: retrying cannot duplicate anything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    http = HttpClient(f"http://127.0.0.1:{port}", timeout_s=5)

    with pytest.raises(TransientBackendError) as info:
        await http.request("POST", "/x", body=b"{}", idempotent=False)
    await http.aclose()

    assert type(info.value) is TransientBackendError


def test_retry_after_forms() -> None:
    """Delta-seconds and HTTP dates are both understood; junk is ignored."""
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert 2.5 == parse_retry_after("2.5")
    assert 25 < (parse_retry_after(soon) or 0) <= 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
