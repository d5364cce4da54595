"""What comes back from the network: secrets taken out, quotes capped, unreadable answers.

A service may echo the request (its token, its signature) in an answer, send megabytes of
error page, or answer 2xx with something that is not what the API promises. None of it may
leak a secret, grow a message without bound, or end a run with a KeyError.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulk._sim.gongji import GongjiSim, SimConfig, sample_body
from bulk._sim.gongji import make_app as make_gongji_app
from bulk._sim.stub import StubFaults
from bulk._sim.stub import make_app as make_stub_app
from bulk._text import excerpt
from bulk.backends._http import REDACTED, HttpClient, Secrets, read_token
from bulk.backends.base import Receipt, Submission
from bulk.backends.gongji import CODES, GongjiBackend, GongjiClient, GongjiOptions, Signer
from bulk.backends.stub import StubBackend, StubOptions
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    ConfigError,
    PermanentBackendError,
    ThrottledError,
    TransientBackendError,
)

DATA = Path(__file__).parent.parent / "data"
PRIVATE = (DATA / "test-key-pkcs1.pem").read_bytes()
PUBLIC = (DATA / "test-key.pub.pem").read_bytes()
TOKEN = "a0e13fe1-5626-4c05-926b-20f586c69102-20240821144204"
SIGNATURE = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")  # an RSA-2048 signature is 344 characters


class TestSecrets:
    def test_every_echoed_form_is_taken_out(self) -> None:
        """As sent, JSON-escaped with \\/, percent-encoded, form-encoded: all redacted."""
        secret = "k3y/with+plus=" + "x" * 20
        secrets = Secrets([secret])
        echoes = [
            secret,
            secret.replace("/", "\\/"),
            quote(secret, safe=""),
            quote(secret, safe="").replace("%20", "+"),
        ]

        for echo in echoes:
            clean = secrets.scrub_bytes(f"before {echo} after".encode())
            assert f"before {REDACTED} after".encode() == clean

    def test_values_of_secret_headers_are_taken_out_by_name(self) -> None:
        """Whatever follows a secret header's name (another request's signature) goes too."""
        secrets = Secrets(headers=["sign_str"])
        answer = b'{"sign_str": "c2lnbmF0dXJl+/=", "Authorization": "Bearer abc", "n": "keep"}'

        clean = secrets.scrub_bytes(answer)

        assert b'{"sign_str": "[redacted]", "Authorization": "[redacted]", "n": "keep"}' == clean

    def test_private_keys_and_this_requests_extra_secrets(self) -> None:
        """A PEM private key and a per-request secret (a signature) are both redacted."""
        pem = PRIVATE.decode().strip()
        signature = base64.b64encode(os.urandom(256)).decode()
        secrets = Secrets()

        clean = secrets.scrub(f"key: {pem} sig={signature}.", extra=[signature])

        assert f"key: {REDACTED} sig={REDACTED}." == clean

    def test_short_values_and_ordinary_text_are_left_alone(self) -> None:
        """A secret too short to tell from text is not looked for; nothing else changes."""
        secrets = Secrets(["t", TOKEN])
        answer = b'{"code":"0000","data":{"task_id":10001,"status":"Running"}}'

        assert answer == secrets.scrub_bytes(answer)

    def test_excerpt_is_one_capped_line(self) -> None:
        """A quote of an answer is one line of at most 300 characters."""
        quoted = excerpt(b"line one\nline two " + b"x" * 10_000)

        assert 300 == len(quoted)
        assert quoted.startswith("line one line two x")
        assert quoted.endswith("…")
        assert "(empty)" == excerpt(b"  ")


class TestReadToken:
    @pytest.mark.parametrize("raw", ["tok-123456789\n", "  tok-123456789 \r\n"])
    def test_surrounding_whitespace_is_dropped(
        self, raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The newline an editor or `echo` adds is not part of the token (file and env)."""
        (tmp_path / "token").write_text(raw)
        monkeypatch.setenv("BULK_TEST_TOKEN", raw)

        assert "tok-123456789" == read_token(None, tmp_path / "token")
        assert "tok-123456789" == read_token("BULK_TEST_TOKEN", None)

    @pytest.mark.parametrize(
        ("raw", "problem"),
        [
            pytest.param("tok-1\ntok-2", "holds more than one line", id="two-lines"),
            pytest.param("tok en-123456", "a space", id="space"),
            pytest.param("tokén-123456", "printable ASCII", id="non-ascii"),
            pytest.param(" \n", "is empty", id="blank"),
        ],
    )
    def test_a_token_that_cannot_be_a_header_is_refused_without_showing_it(
        self, raw: str, problem: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The error names the variable and what is wrong, never the token itself."""
        monkeypatch.setenv("BULK_TEST_TOKEN", raw)

        with pytest.raises(ConfigError, match=problem) as info:
            read_token("BULK_TEST_TOKEN", None)

        assert "backend.token_env" == info.value.field
        assert "BULK_TEST_TOKEN" in str(info.value)
        assert all(part not in str(info.value) for part in ("tok-1", "tok en", "tokén"))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler for every path on 127.0.0.1; yields a function returning the URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


class TestHttpClient:
    async def test_an_echo_of_the_request_is_redacted_in_errors_and_answers(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A 500 and a 200 that dump the request headers carry neither token nor signature."""

        async def echo(request: web.Request) -> web.StreamResponse:
            headers = {str(k): v for k, v in request.headers.items()}
            dump = orjson.dumps(headers).decode().replace("/", "\\/")
            status = 500 if request.path == "/fail" else 200
            return web.Response(status=status, text=f"request headers: {dump}")

        url = await serve(echo)
        signature = base64.b64encode(os.urandom(256)).decode()
        client = HttpClient(url, secrets=[TOKEN], secret_headers=["token", "sign_str"])
        headers = {"token": TOKEN, "sign_str": signature}

        with pytest.raises(AmbiguousBackendError) as info:
            await client.request("POST", "/fail", body=b"{}", headers=headers, idempotent=False)
        answer = await client.request("GET", "/ok", headers=headers, idempotent=True)
        await client.aclose()

        for text in (str(info.value), answer.body.decode()):
            assert TOKEN not in text
            assert signature not in text
            assert signature.replace("/", "\\/") not in text
            assert REDACTED in text

    async def test_long_error_pages_are_cut(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A megabyte of error page becomes a message of a few hundred characters."""

        async def huge(request: web.Request) -> web.StreamResponse:
            return web.Response(status=503, text="<html>" + "oops " * 200_000)

        client = HttpClient(await serve(huge))

        with pytest.raises(TransientBackendError) as info:
            await client.request("GET", "/x", idempotent=True)
        await client.aclose()

        assert len(str(info.value)) < 400

    async def test_redirects_are_not_followed(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A redirect elsewhere is an error: the credentials never reach the other host."""
        seen: list[str] = []

        async def elsewhere(request: web.Request) -> web.StreamResponse:
            seen.append(request.headers.get("token", ""))
            return web.json_response({})

        other = await serve(elsewhere)

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{other}/steal")

        client = HttpClient(await serve(redirect), secret_headers=["token"])

        with pytest.raises(BackendError, match="HTTP 302"):
            await client.request("GET", "/x", headers={"token": TOKEN}, idempotent=True)
        await client.aclose()

        assert [] == seen

    async def test_401_is_an_authentication_error(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """Refused credentials stop the run (rows kept) rather than failing every job."""

        async def refuse(request: web.Request) -> web.StreamResponse:
            return web.json_response({"error": "unauthorized"}, status=401)

        client = HttpClient(await serve(refuse))

        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await client.request("POST", "/jobs", body=b"{}", idempotent=False)
        await client.aclose()


async def start_gongji(config: SimConfig) -> tuple[TestServer, GongjiSim, GongjiBackend]:
    sim = GongjiSim(config)
    sim.add_token(TOKEN, PUBLIC)
    server = TestServer(make_gongji_app(sim), host="127.0.0.1")
    await server.start_server()
    signer = Signer(PRIVATE)
    options = GongjiOptions(url=str(server.make_url("")).rstrip("/"))
    return server, sim, GongjiBackend(GongjiClient(options, token=TOKEN, signer=signer))


class TestEchoingSimulators:
    async def test_gongji_echoes_leave_no_token_or_signature(self) -> None:
        """Every request echoed (HTTP 500 page or C999 message): no error holds a secret."""
        server, sim, backend = await start_gongji(SimConfig(echo_rate=1.0, seed=4))
        errors: list[BackendError] = []
        for i in range(6):
            with pytest.raises(BackendError) as info:
                await backend.submit(Submission(f"e-{i}", sample_body(f"echo-{i}")))
            errors.append(info.value)
        with pytest.raises(BackendError) as read:
            await backend.resources()
        errors.append(read.value)
        await backend.aclose()
        await server.close()

        assert 7 == sim.echoed
        assert {AmbiguousBackendError, TransientBackendError} == {type(e) for e in errors}
        for error in errors:
            assert TOKEN not in str(error)
            assert not SIGNATURE.search(str(error)), str(error)
            assert REDACTED in str(error)

    async def test_stub_echoes_leave_no_bearer_token(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The stub's bearer token, echoed in a 500 page, is taken out of the error."""
        server = TestServer(make_stub_app(StubFaults(echo_rate=1.0, token=TOKEN)), host="127.0.0.1")
        await server.start_server()
        monkeypatch.setenv("STUB_TOKEN", TOKEN + "\n")  # with the newline `echo` adds
        backend = StubBackend(StubOptions(url=str(server.make_url("")), token_env="STUB_TOKEN"))

        with pytest.raises(AmbiguousBackendError) as info:
            await backend.submit(Submission("s-1", b"{}"))
        await backend.aclose()
        await server.close()

        assert TOKEN not in str(info.value)
        assert f'"Authorization": "{REDACTED}"' in str(info.value)


# -- answers bulk cannot read -----------------------------------------------------------------

GARBAGE = [
    pytest.param(b"<html>gateway</html>", id="not-json"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'{"unexpected": true}', id="wrong-object"),
]


def scripted(answers: dict[str, bytes], status: int = 200) -> Handler:
    """Answer each path with its bytes (HTTP ``status``); 404 elsewhere."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = answers.get(request.path)
        if body is None:
            return web.Response(status=404)
        return web.Response(status=status, body=body, content_type="application/json")

    return handler


class TestStubGarbage:
    """Each stub endpoint, answered 2xx with something that is not the protocol."""

    @pytest.mark.parametrize("garbage", GARBAGE)
    async def test_create(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """A 201 bulk cannot read may have created the job: ambiguous (looked up next)."""
        backend = StubBackend(
            StubOptions(url=await serve(scripted({"/jobs": garbage}, status=201)))
        )

        with pytest.raises(AmbiguousBackendError, match="answer bulk cannot read"):
            await backend.submit(Submission("g-1", b"{}"))
        await backend.aclose()

    @pytest.mark.parametrize(
        "garbage",
        [
            *GARBAGE,
            pytest.param(b'{"jobs": ["job-1"]}', id="jobs-array"),
            pytest.param(b'{"jobs": {"job-1": "running"}}', id="job-not-object"),
            pytest.param(b'{"jobs": {"job-1": {"reason": null}}}', id="no-state"),
            pytest.param(b'{"jobs": {"job-1": {"state": 3}}}', id="state-not-text"),
        ],
    )
    async def test_status(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """An unreadable status answer is transient: the tracker asks again later."""
        backend = StubBackend(StubOptions(url=await serve(scripted({"/jobs/status": garbage}))))

        with pytest.raises(TransientBackendError) as info:
            await backend.status([Receipt("g-1", "job-1")])
        await backend.aclose()

        assert type(info.value) is TransientBackendError

    @pytest.mark.parametrize("garbage", [*GARBAGE, pytest.param(b'{"id": null}', id="null-id")])
    async def test_lookup(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """An unreadable look-up is transient: never taken as "not there" (a resend)."""
        backend = StubBackend(StubOptions(url=await serve(scripted({"/jobs": garbage}))))

        with pytest.raises(TransientBackendError) as info:
            await backend.lookup(Submission("g-1", b"{}"))
        await backend.aclose()

        assert type(info.value) is TransientBackendError

    async def test_a_long_reason_is_cut(self, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """A failure reason the service sends is stored as at most 300 characters."""
        answer = {"jobs": {"job-1": {"state": "failed", "reason": "x" * 100_000}}}
        url = await serve(scripted({"/jobs/status": orjson.dumps(answer)}))
        backend = StubBackend(StubOptions(url=url))

        status = (await backend.status([Receipt("g-1", "job-1")]))["job-1"]
        await backend.aclose()

        assert status.reason is not None
        assert 300 == len(status.reason)


def envelope(data: object) -> bytes:
    return orjson.dumps({"code": "0000", "message": "success", "data": data})


GONGJI_GARBAGE = [
    *GARBAGE,
    pytest.param(b'{"code": 0, "data": {}}', id="code-not-text"),
    pytest.param(envelope([1, 2]), id="data-array"),
    pytest.param(envelope("ok"), id="data-text"),
]


async def gongji_against(url: str) -> GongjiBackend:
    client = GongjiClient(GongjiOptions(url=url), token=TOKEN, signer=None)
    return GongjiBackend(client)


class TestGongjiGarbage:
    """Each Gongji endpoint, answered HTTP 200 with something that is not the API."""

    @pytest.mark.parametrize(
        "garbage", [*GONGJI_GARBAGE, pytest.param(envelope({"task_id": "x1"}), id="bad-task-id")]
    )
    async def test_create(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """A create answer bulk cannot read is ambiguous: the task may exist."""
        backend = await gongji_against(await serve(scripted({"/api/task/job/create": garbage})))

        with pytest.raises(AmbiguousBackendError):
            await backend.submit(Submission("g-1", sample_body("g-1")))
        await backend.aclose()

    @pytest.mark.parametrize(
        "garbage",
        [
            *GONGJI_GARBAGE,
            pytest.param(envelope({"count": "many", "results": []}), id="count-text"),
            pytest.param(envelope({"count": 2, "results": [1, 2]}), id="results-not-tasks"),
            pytest.param(envelope({"count": 1, "results": {"a": 1}}), id="results-object"),
        ],
    )
    @pytest.mark.parametrize("call", ["status", "lookup", "resources"])
    async def test_lists(
        self, garbage: bytes, call: str, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """search (tracking, look-up) and the device list: unreadable is transient."""
        answers = {"/api/task/job/search": garbage, "/api/deployment/resource/search": garbage}
        backend = await gongji_against(await serve(scripted(answers)))

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "status": lambda: backend.status([Receipt("g-1", "10001")]),
            "lookup": lambda: backend.lookup(Submission("g-1", sample_body("g-1"))),
            "resources": backend.resources,
        }

        with pytest.raises(TransientBackendError) as info:
            await calls[call]()
        await backend.aclose()

        assert type(info.value) is TransientBackendError

    @pytest.mark.parametrize("garbage", GONGJI_GARBAGE)
    async def test_detail(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """detail: unreadable is transient, and tracking leaves the job to ask again later."""
        answers = {
            "/api/task/job/detail": garbage,
            "/api/task/job/search": envelope({"count": 0, "results": []}),
        }
        backend = await gongji_against(await serve(scripted(answers)))

        with pytest.raises(TransientBackendError):
            await backend.client.detail(10001)
        assert {} == await backend.status([Receipt("g-1", "10001")])
        await backend.aclose()

    @pytest.mark.parametrize("garbage", GARBAGE)
    async def test_stop(self, garbage: bytes, serve: Callable[[Handler], Awaitable[str]]) -> None:
        """stop: an answer that is not an envelope is transient (stop is idempotent)."""
        backend = await gongji_against(await serve(scripted({"/api/task/job/stop": garbage})))

        with pytest.raises(TransientBackendError) as info:
            await backend.stop(Receipt("g-1", "10001"))
        await backend.aclose()

        assert type(info.value) is TransientBackendError

    async def test_a_garbled_device_list_is_transient(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A device without its mark, found by name before a create: transient, not a crash."""
        device = {
            "gpu_name": "4090",
            "gpu_count": 1,
            "regions": [{"region": "r1", "inventory": 3}, "junk"],
        }
        answers = {"/api/deployment/resource/search": envelope({"count": 1, "results": [device]})}
        backend = await gongji_against(await serve(scripted(answers)))
        body = orjson.loads(sample_body("g-1"))
        body["resources"] = [{"gpu_name": "4090", "gpu_count": 1, "region": "r1"}]

        with pytest.raises(TransientBackendError, match="has no mark"):
            await backend.submit(Submission("g-1", orjson.dumps(body)))
        await backend.aclose()


# -- decisions by fields, never by text ---------------------------------------------------------


def failing(code: str, message: str = "refused") -> bytes:
    return orjson.dumps({"code": code, "message": message, "data": None})


class TestStructuredFields:
    """Every backend error carries the service's code and the HTTP status, and callers decide
    by those: a message that happens to quote a code decides nothing."""

    @pytest.mark.parametrize(
        ("status", "method", "kind"),
        [
            (429, "POST", ThrottledError),
            (503, "POST", AmbiguousBackendError),
            (503, "GET", TransientBackendError),
            (401, "GET", AuthenticationError),
            (404, "GET", PermanentBackendError),
            (302, "GET", PermanentBackendError),
        ],
    )
    async def test_http_errors_carry_the_status(
        self,
        status: int,
        method: str,
        kind: type[BackendError],
        serve: Callable[[Handler], Awaitable[str]],
    ) -> None:
        """_http: the status that decided the error's kind is on the error."""

        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=b"no", headers={"Location": "/x"})

        client = HttpClient(await serve(handler))

        with pytest.raises(kind) as info:
            await client.request(method, "/x", idempotent=method == "GET")
        await client.aclose()

        assert type(info.value) is kind
        assert (status, None) == (info.value.status, info.value.code)

    async def test_an_unreadable_2xx_carries_its_status(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A 201 bulk cannot read: ambiguous, with the 201 on it."""
        backend = StubBackend(
            StubOptions(url=await serve(scripted({"/jobs": b"<html>"}, status=201)))
        )

        with pytest.raises(AmbiguousBackendError) as info:
            await backend.submit(Submission("g-1", b"{}"))
        await backend.aclose()

        assert 201 == info.value.status

    @pytest.mark.parametrize("status", [200, 202, 204])
    async def test_an_unexpected_success_is_not_a_refusal(
        self, status: int, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A create answered with a 2xx the protocol does not name (200 for 201) may have
        created the job: ambiguous (looked up next), never a refusal that fails the row."""
        body = b"" if status == 204 else b'{"id": "job-1"}'
        url = await serve(scripted({"/jobs": body}, status=status))
        backend = StubBackend(StubOptions(url=url))

        with pytest.raises(AmbiguousBackendError) as info:
            await backend.submit(Submission("g-1", b"{}"))
        await backend.aclose()

        assert status == info.value.status

    @pytest.mark.parametrize("status", [201, 202, 204])
    async def test_an_unexpected_success_of_a_read_is_transient(
        self, status: int, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A look-up answered with a 2xx it does not name: asked again, never a refusal."""
        body = b"" if status == 204 else b'{"id": "job-1"}'
        url = await serve(scripted({"/jobs": body}, status=status))
        backend = StubBackend(StubOptions(url=url))

        with pytest.raises(TransientBackendError) as info:
            await backend.lookup(Submission("g-1", b"{}"))
        await backend.aclose()

        assert status == info.value.status

    @pytest.mark.parametrize("code", [*sorted(CODES), "Q123"])
    async def test_gongji_codes_are_on_the_error(
        self, code: str, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """Every envelope code, documented or not, is the error's ``code``; HTTP 200 its status."""
        backend = await gongji_against(
            await serve(scripted({"/api/task/job/detail": failing(code)}))
        )

        with pytest.raises(BackendError) as info:
            await backend.client.detail(10001)
        await backend.aclose()

        assert (code, 200) == (info.value.code, info.value.status)

    async def test_stop_of_an_ended_task_is_decided_by_the_code(
        self, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """C010 (already ended) is a stopped task; another code whose message quotes
        "code C010" is still the refusal it is."""
        ended = await gongji_against(await serve(scripted({"/api/task/job/stop": failing("C010")})))
        quoting = await gongji_against(
            await serve(scripted({"/api/task/job/stop": failing("Q123", "not code C010")}))
        )

        await ended.stop(Receipt("g-1", "10001"))
        with pytest.raises(PermanentBackendError) as info:
            await quoting.stop(Receipt("g-2", "10002"))
        await ended.aclose()
        await quoting.aclose()

        assert "Q123" == info.value.code


class TestGongjiDetail:
    """Tracking asks ``detail`` for tasks no list showed: what it drops, what it lets through."""

    NOWHERE = envelope({"count": 0, "results": []})  # neither unfinished nor among the ended

    @pytest.mark.parametrize(
        "answer",
        [
            pytest.param(failing("C008"), id="throttle-code"),
            pytest.param(b"slow down", id="http-429"),
        ],
    )
    async def test_a_throttle_reaches_the_engine(
        self, answer: bytes, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A throttled detail is the engine's to hear (its adaptive rate), not dropped."""
        status = 429 if answer == b"slow down" else 200

        async def handler(request: web.Request) -> web.StreamResponse:
            if request.path == "/api/task/job/detail":
                return web.Response(status=status, body=answer, headers={"Retry-After": "2"})
            return web.Response(body=self.NOWHERE, content_type="application/json")

        backend = await gongji_against(await serve(handler))

        with pytest.raises(ThrottledError) as info:
            await backend.status([Receipt("g-1", "10001"), Receipt("g-2", "10002")])
        await backend.aclose()

        assert status == info.value.status

    @pytest.mark.parametrize(
        "answer",
        [
            pytest.param(failing("C010"), id="conflict"),
            pytest.param(failing("Q123"), id="undocumented"),
            pytest.param(failing("C999"), id="server-error"),
            pytest.param(envelope("ok"), id="unreadable"),
        ],
    )
    async def test_what_cannot_be_known_now_is_left_out(
        self, answer: bytes, serve: Callable[[Handler], Awaitable[str]]
    ) -> None:
        """A refused or unreadable detail leaves the job out (asked again later): never
        reported missing, which would send it again."""
        answers = {"/api/task/job/detail": answer, "/api/task/job/search": self.NOWHERE}
        backend = await gongji_against(await serve(scripted(answers)))

        assert {} == await backend.status([Receipt("g-1", "10001")])
        await backend.aclose()
