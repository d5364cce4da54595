"""The HTTP boundary shared by the remote backends: one aiohttp session, errors translated,
secrets kept in.

Every aiohttp exception and unexpected HTTP status becomes a :mod:`bulk.errors` type here, in
one place, so backends and the engine never see aiohttp's. The mapping:

=====================================  ===================================================
what happened                          raised
=====================================  ===================================================
HTTP 429 (any method)                  ThrottledError, ``retry_after`` from Retry-After
HTTP 5xx, request not idempotent       AmbiguousBackendError: it may have been applied
HTTP 5xx, idempotent request           TransientBackendError
HTTP 401                               AuthenticationError: the run stops, rows kept
other 4xx, 3xx (redirects are not      PermanentBackendError (the body's message in it)
followed: they would carry the
credentials to another host)
could not connect (nothing sent)       UnreachableError: refused, no answer to the connect
                                       within ``connect_timeout_s``, a name that does not
                                       resolve; the engine waits such an outage out
TLS certificate not trusted            RunRefusedError: waiting will not fix it
reset / timeout once sent, not idem.   AmbiguousBackendError
reset / timeout once sent, idempotent  TransientBackendError
a 2xx answer the backend cannot read   ``Response.malformed``: TransientBackendError for an
(not JSON, wrong shape, a 2xx status   idempotent request, AmbiguousBackendError otherwise
the caller did not expect)
=====================================  ===================================================

"Idempotent" is the caller's word: reads and look-ups are; a create is not. Every error
raised for an answer carries that answer's HTTP ``status`` (and a backend adds the service's
``code``): callers decide by those fields, never by the message's text.

**Secrets.** A service, or a proxy in front of it, may echo what it received: an error page
that dumps the request headers puts the token and the signature into the answer. Every answer
is therefore scrubbed *as bytes, before anything parses it*: each secret the client knows (the
values of its secret headers, per request, and whatever the backend registered) is replaced
by ``[redacted]``, in the forms an echo would take (as sent, JSON-escaped, percent-encoded),
and so is the value after any secret header's name (``"sign_str": "..."``) and any PEM
private key. Every string bulk later derives from an answer (error messages, failure reasons,
log lines, remote ids) is built from scrubbed bytes, so none can carry a secret into the
journal, a log, the terminal, ``bulk status`` or an export. Text quoted from an answer is cut
to 300 characters (:func:`bulk._text.excerpt`), and every backend error to 1,000.
Secrets shorter than 8 characters are not looked for: they cannot be told apart from
ordinary text, and no real token is that short.
"""

from __future__ import annotations

import email.utils
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import orjson
from yarl import URL

from bulk._ratelimit import pace_request
from bulk._text import excerpt
from bulk.errors import (
    AmbiguousBackendError,
    AuthenticationError,
    BackendError,
    ConfigError,
    PermanentBackendError,
    RunRefusedError,
    ThrottledError,
    TransientBackendError,
    UnreachableError,
)

__all__ = [
    "REDACTED",
    "HttpClient",
    "Response",
    "Secrets",
    "display_url",
    "malformed",
    "parse_retry_after",
    "read_token",
    "url_problem",
    "url_secrets",
]

REDACTED = "[redacted]"
_MIN_SECRET = 8
# Headers whose values are always secret, whoever sets them.
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")
# A connect that takes longer is an unreachable service (nothing was sent), not a timeout of
# a request that may have been applied. Half the request timeout when that is shorter.
CONNECT_TIMEOUT_S = 10.0
_PEM = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Response:
    """A response whose status the caller said it expects, and what the request was."""

    status: int
    body: bytes
    method: str = "GET"
    target: str = "/"
    idempotent: bool = True
    job_name: str | None = None

    def json(self) -> Any:
        """The body as JSON; an answer that is not JSON raises :meth:`malformed`'s error."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            msg = "not JSON"
            raise self.malformed(msg) from None

    @property
    def path(self) -> str:
        """The target without its query string (which may carry tokens or user data)."""
        return _path(self.target)

    def malformed(self, what: str, answer: object = None) -> BackendError:
        """The error for an answer bulk cannot read (``what`` says how it is wrong), quoting
        ``answer`` (the part of it that is wrong), or else the whole body."""
        return malformed(
            self.method,
            self.target,
            what,
            self.body if answer is None else answer,
            idempotent=self.idempotent,
            job_name=self.job_name,
            status=self.status,
        )


def malformed(
    method: str,
    target: str,
    what: str,
    answer: object,
    *,
    idempotent: bool,
    job_name: str | None,
    status: int | None = None,
) -> BackendError:
    """The error for a successful answer bulk cannot read (not JSON, a field missing).

    Retrying a read is harmless, so it is transient; a write that answered 2xx may well have
    been applied, so it is ambiguous: the job is looked up by name before anything is resent.
    """
    code = f"HTTP {status} " if status is not None else ""
    msg = f"{method} {_path(target)}: {code}answer bulk cannot read ({what}): {excerpt(answer)}"
    kind = TransientBackendError if idempotent else AmbiguousBackendError
    return kind(msg, job_name=job_name, status=status)


class Secrets:
    """What one client must never let out, and how to take it out of what came back.

    Example::

        secrets = Secrets(["my-long-api-token"], headers=["token", "sign_str"])
        clean = secrets.scrub_bytes(answer, extra=["the-signature-of-this-request"])

    Args:
        values: secrets known up front (a token, a password).
        headers: names of request headers whose values are secret (besides Authorization,
            Proxy-Authorization and Cookie); the value after such a name in an answer is
            taken out too, whatever it is.
    """

    def __init__(self, values: Iterable[str] = (), *, headers: Iterable[str] = ()):
        self.headers = frozenset(h.lower() for h in (*_SECRET_HEADERS, *headers))
        self._names = [h.encode() for h in sorted(self.headers)]
        self._known: list[_Secret] = []
        for value in values:
            self.add(value)
        names = b"|".join(re.escape(h) for h in self._names)
        # The whole name, a separator as a header dump or JSON would have it, then the value
        # (with an auth scheme word before it; never one already redacted).
        self._named = re.compile(
            rb"((?<![A-Za-z0-9_-])(?:" + names + rb""")["']?\s*[:=]\s*["']?)"""
            rb"""((?:(?:Bearer|Basic|Token)\s+)?[^"'\s,;&}\]\[]+)""",
            re.IGNORECASE,
        )

    def add(self, value: str) -> None:
        """Take ``value`` (and its echoed forms) out of every later answer."""
        if len(value) >= _MIN_SECRET and all(k.value != value for k in self._known):
            self._known.append(_Secret(value))

    def scrub_bytes(self, data: bytes, extra: Sequence[str] = ()) -> bytes:
        """``data`` with every secret (and every ``extra`` one, e.g. this request's
        signature) replaced by ``[redacted]``."""
        if not data:
            return data
        for secret in self._known:
            data = secret.scrub(data)
        for value in extra:
            if len(value) >= _MIN_SECRET and all(k.value != value for k in self._known):
                data = _Secret(value).scrub(data)
        if b"PRIVATE KEY" in data:
            data = _PEM.sub(_REDACTED, data)
        # Substring tests on a lowered copy first: far cheaper than a case-blind regex scan
        # of a long answer (a page of 100 tasks) that names no secret header at all.
        lowered = data.lower()
        for name in self._names:
            if name in lowered:
                return self._named.sub(rb"\1" + _REDACTED, data)
        return data

    def scrub(self, text: str, extra: Sequence[str] = ()) -> str:
        """``text`` with every secret replaced (see :meth:`scrub_bytes`)."""
        return self.scrub_bytes(text.encode("utf-8", "surrogateescape"), extra).decode(
            "utf-8", "surrogateescape"
        )


_REDACTED = REDACTED.encode()
_RUN = re.compile(r"[A-Za-z0-9]{6,}")


class _Secret:
    """One secret, and the forms an echo would show it in: as sent, JSON-escaped (with and
    without ``\\/``), percent-encoded. The forms are only built once a cheap probe (a run of
    letters and digits of the secret, which every form contains unchanged) is found in an
    answer."""

    __slots__ = ("_forms", "_probe", "value")

    def __init__(self, value: str):
        self.value = value
        run = _RUN.search(value)  # the first run will do, and is found soonest
        self._probe = run.group().encode() if run else b""
        self._forms: list[bytes] | None = None

    def scrub(self, data: bytes) -> bytes:
        if self._probe not in data:
            return data
        if self._forms is None:
            value = self.value
            json_escaped = orjson.dumps(value).decode()[1:-1]
            texts = {
                value,
                json_escaped,
                json_escaped.replace("/", "\\/"),  # encoders that escape "/" (PHP, some Java)
                quote(value, safe=""),
                quote_plus(value, safe=""),
            }
            # A longer form first, so that no part of it is left behind.
            self._forms = sorted((t.encode() for t in texts), key=len, reverse=True)
        for form in self._forms:
            if form in data:
                data = data.replace(form, _REDACTED)
        return data


def display_url(url: str) -> str:
    """``url`` without user, password, query or fragment: fit for a message."""
    parsed = URL(url)
    if parsed.is_absolute():
        shown = parsed.with_user(None).with_query(None).with_fragment(None)
        return str(shown).rstrip("/")
    return url.split("?", 1)[0].split("#", 1)[0]


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be credentials: the password and the query's values."""
    parsed = URL(url)
    found = [parsed.password] if parsed.password else []
    return found + [v for v in parsed.query.values() if v]


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
        headers: sent with every request.
        secrets: values to take out of every answer and message (see the module docstring).
        secret_headers: names of headers whose values are secret, per request (Authorization,
            Proxy-Authorization and Cookie always are).
        error_text: what an error answer's (scrubbed) body says, for the error's message;
            by default its first 300 characters (Ray's tracebacks say it in their last line).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 64,
        verify_tls: bool = True,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        secret_headers: Iterable[str] = (),
        error_text: Callable[[bytes], str] = excerpt,
    ):
        self.base_url = base_url.rstrip("/")
        self._shown_url = display_url(self.base_url)
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s / 2)
        )
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        self._headers = dict(headers or {})
        self.secrets = Secrets(secrets, headers=secret_headers)
        for value in url_secrets(self.base_url):
            self.secrets.add(value)
        for name, value in self._headers.items():
            if name.lower() in self.secrets.headers:
                self.secrets.add(value)
        self._session: aiohttp.ClientSession | None = None
        self._error_text = error_text

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

        The returned body has every secret taken out (see the module docstring).

        Args:
            target: the path and query, percent-encoded, exactly as it goes on the wire.
            body: the exact bytes to send (signed bytes must be the sent bytes).
            idempotent: whether sending it twice is harmless (decides ambiguous vs transient).
            paced: the caller awaited :func:`bulk._ratelimit.pace_request` already (to sign
                after the wait, with a fresh timestamp).
        """
        if not paced:  # inside an engine call, every request after the first waits its turn
            await pace_request()
        session = self._get_session()
        send_headers = dict(headers or {})
        if body is not None:
            send_headers.setdefault("Content-Type", "application/json")
        secret_headers = self.secrets.headers
        extra = [v for k, v in send_headers.items() if k.lower() in secret_headers]
        # encoded=True: the target goes on the wire exactly as given; a signed request's
        # signature covers these very bytes, so nothing may re-quote them.
        url = URL(self.base_url + target, encoded=True)
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=send_headers,
                skip_auto_headers=("User-Agent",),
                allow_redirects=False,  # a redirect would carry the credentials elsewhere
            ) as resp:
                data = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._transport_error(
                exc, method, target, extra, idempotent=idempotent, job_name=job_name
            ) from exc
        data = self.secrets.scrub_bytes(data, extra)
        response = Response(status, data, method, target, idempotent, job_name)
        if status in expect:
            return response
        raise _status_error(response, expect, retry_after, self._error_text)

    def _transport_error(
        self,
        exc: TimeoutError | aiohttp.ClientError,
        method: str,
        target: str,
        extra: Sequence[str],
        *,
        idempotent: bool,
        job_name: str | None,
    ) -> BackendError:
        """The error for a request that got no answer (see the module docstring)."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            msg = (
                f"cannot connect to {self._shown_url}: its TLS certificate is not trusted "
                f"({self._clean(str(exc.certificate_error), extra)}); check the URL "
                "(verify_tls = false is for test servers only)"
            )
            return RunRefusedError(msg, job_name=job_name)
        if isinstance(exc, aiohttp.ClientConnectorError):
            error = exc.os_error
            # errno first (asyncio's strerror is "Connect call failed (host, port)"); name
            # resolution errors have negative codes and their own strerror.
            errno = error.errno or 0
            reason = os.strerror(errno) if errno > 0 else error.strerror or str(error)
            msg = f"cannot connect to {self._shown_url}: {self._clean(reason, extra)}"
            return UnreachableError(msg, job_name=job_name)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            msg = (
                f"cannot connect to {self._shown_url}: no connection within "
                f"{self._timeout.connect:g}s"
            )
            return UnreachableError(msg, job_name=job_name)
        what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({exc!r})"
        msg = self._clean(f"{method} {_path(target)} {what}", extra)
        kind = TransientBackendError if idempotent else AmbiguousBackendError
        return kind(msg, job_name=job_name)

    def _clean(self, text: str, extra: Sequence[str]) -> str:
        return self.secrets.scrub(text, extra)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _status_error(
    response: Response,
    expect: tuple[int, ...],
    retry_after: float | None,
    error_text: Callable[[bytes], str] = excerpt,
) -> BackendError:
    """The error for an answer whose status is not in ``expect`` (see the module docstring)."""
    status = response.status
    job_name = response.job_name
    if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
        # Success of a kind the caller does not know what to make of (a 200 where the
        # protocol says 201, a 204): for a create, the job may well exist.
        expected = " or ".join(str(code) for code in expect)
        return response.malformed(f"HTTP {status} where {expected} was expected")
    msg = f"{response.method} {response.path}: HTTP {status}: {error_text(response.body)}"
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return ThrottledError(msg, job_name=job_name, status=status, retry_after=retry_after)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        kind = TransientBackendError if response.idempotent else AmbiguousBackendError
        return kind(msg, job_name=job_name, status=status, retry_after=retry_after)
    if status == HTTPStatus.UNAUTHORIZED:
        return AuthenticationError(msg + "; check the token", job_name=job_name, status=status)
    return PermanentBackendError(msg, job_name=job_name, status=status)


def _path(target: str) -> str:
    # Messages name the path only: a query string may carry tokens or user data.
    return target.split("?", 1)[0]


_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what an HTTP header value can carry as it is


def url_problem(url: str) -> str | None:
    """What is wrong with a service's base URL from a config, or None.

    A URL must not carry credentials (``user:password@``, a query string): secrets are
    referenced (``token_env``, ``token_file``), never written in a config. The message never
    repeats the URL's secret parts.
    """
    if not _URL.fullmatch(url):
        return f"{display_url(url)!r} is not an http(s) URL"
    parsed = URL(url)
    if parsed.user is not None or parsed.password is not None:
        return (
            f"{display_url(url)!r} carries a user name or password (user:password@): "
            "secrets are never written in a config; reference them instead "
            '(token_env = "ENV_VAR" or token_file = "path")'
        )
    if parsed.query_string or parsed.fragment:
        return (
            f"{display_url(url)!r} has a query string or fragment (?...): give the service's "
            "base URL only; a token is referenced instead "
            '(token_env = "ENV_VAR" or token_file = "path")'
        )
    return None


def read_token(env: str | None, file: Path | None, *, required: bool = True) -> str | None:
    """An API token from the file or environment variable a config names.

    Surrounding whitespace (the newline an editor or ``echo`` adds) is dropped; what is left
    must be one line of printable ASCII without spaces, as an HTTP header carries it. Error
    messages name the file or variable, never the token.

    Raises:
        ConfigError: unreadable, unset (when ``required``), empty or not a header value.
    """
    if file is not None:
        field = "backend.token_file"
        try:
            token = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            msg = f"cannot read the token file {str(file)!r}: {reason}"
            raise ConfigError(msg, field=field) from None
        where = f"the token file {str(file)!r}"
    elif env is not None:
        field = "backend.token_env"
        if env not in os.environ:
            if not required:
                return None
            msg = f"the environment variable {env} is not set (the API token)"
            raise ConfigError(msg, field=field)
        token = os.environ[env].strip()
        where = f"the environment variable {env}"
    else:
        return None
    if not token:
        if not required:
            return None
        msg = f"{where} is empty (the API token)"
        raise ConfigError(msg, field=field)
    if not _TOKEN.fullmatch(token):
        msg = (
            f"{where} holds more than one line, a space or a character an HTTP header cannot "
            "carry; a token is one line of printable ASCII"
        )
        raise ConfigError(msg, field=field)
    return token
