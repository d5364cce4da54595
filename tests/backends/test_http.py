"""The HTTP boundary: every aiohttp failure and status becomes the right bulk error."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bulk.backends._http import HttpClient, parse_retry_after
from bulk.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
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


class TestUnreachable:
    """Nothing was sent: the service could not be reached. Never ambiguous, never a failure."""

    async def test_connection_refused(self) -> None:
        """A closed port is an unreachable service, even for a create."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        http = HttpClient(f"http://127.0.0.1:{port}", timeout_s=5)

        with pytest.raises(UnreachableError, match="Connection refused") as info:
            await http.request("POST", "/x", body=b"{}", idempotent=False)
        await http.aclose()

        assert f"cannot connect to http://127.0.0.1:{port}: Connection refused" == str(info.value)

    async def test_a_connect_that_never_completes(self) -> None:
        """A listener whose queue is full drops the connect: unreachable after half the
        request timeout, not an ambiguous timeout of a request that may have been applied."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            queued = []
            for _ in range(3):  # fill the accept queue: later connects get no answer
                client = socket.socket()
                client.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    client.connect(("127.0.0.1", port))
                queued.append(client)
            http = HttpClient(f"http://127.0.0.1:{port}", timeout_s=0.4)

            with pytest.raises(UnreachableError, match=r"no connection within 0\.2s"):
                await http.request("POST", "/x", body=b"{}", idempotent=False)
            await http.aclose()
            for client in queued:
                client.close()

    async def test_untrusted_certificate_refuses_the_run(
        self, self_signed: tuple[Path, Path]
    ) -> None:
        """A certificate that does not verify will not fix itself: the run is refused."""
        cert, key = self_signed
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        async def ok(request: web.Request) -> web.Response:
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/", ok)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(ssl=context)
        http = HttpClient(f"https://127.0.0.1:{server.port}", timeout_s=5)

        with pytest.raises(RunRefusedError, match="TLS certificate is not trusted"):
            await http.request("GET", "/", idempotent=True)
        await http.aclose()
        await server.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    folder = tmp_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_retry_after_forms() -> None:
    """Delta-seconds and HTTP dates are both understood; junk is ignored."""
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert 2.5 == parse_retry_after("2.5")
    assert 25 < (parse_retry_after(soon) or 0) <= 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_an_expected_answer_is_not_read_for_retry_after(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After is read only from an answer that becomes an error: none per accepted one."""
    import bulk.backends._http as http

    seen: list[str | None] = []

    def spy(value: str | None) -> float | None:
        seen.append(value)
        return parse_retry_after(value)

    monkeypatch.setattr(http, "parse_retry_after", spy)
    response = await client.request("POST", "/s/201", body=b"{}", idempotent=False, expect=(201,))
    assert 201 == response.status
    assert [] == seen
    with pytest.raises(ThrottledError) as info:
        await client.request("POST", "/s/429", body=b"{}", idempotent=False)
    assert ["7"] == seen
    assert 7 == info.value.retry_after


async def test_urls_of_fixed_targets_are_built_once(client: HttpClient) -> None:
    """A target without a query keeps its URL object; one with a query (names) is not kept."""
    first = client._url("/s/200")
    assert first is client._url("/s/200")
    client._url("/s/200?name=a")
    assert ["/s/200"] == list(client._urls)
