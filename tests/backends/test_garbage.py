"""Every wrong shape of a 2xx answer, in every place of it, from every endpoint of every HTTP
backend: either a well-formed result or a :class:`BackendError` of the kind the table in
:mod:`bulk.backends._http` says (ambiguous after a create, transient after a read), never a
``KeyError``, ``TypeError`` or ``JSONDecodeError`` that would end the run.

Each valid answer is taken apart: every value in it (the whole answer, each field, each item)
is replaced in turn by each value of :data:`WRONG`, and each field is left out; then bodies that
are not JSON at all.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulk._sim.gongji import sample_body
from bulk.backends.base import Backend, JobStatus, Phase, Receipt, Submission
from bulk.backends.gongji import GongjiBackend, GongjiClient, GongjiOptions
from bulk.backends.stub import StubBackend, StubOptions
from bulk.errors import (
    AmbiguousBackendError,
    BackendError,
    RunRefusedError,
    TransientBackendError,
)

WRONG: list[Any] = [None, True, 0, -1, 2**62, 2**70, 1.5, "", "x", [], [1], {}, {"a": 1}]
NOT_JSON = [b"", b"<html>gateway</html>", b'{"id":', b"[" * 5000, b"\xff\xfe", b"NaN"]


def places(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path to every value inside a JSON value, the whole of it first."""
    yield at
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, inner in items:
        yield from places(inner, (*at, key))


def replaced(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    out = copy.deepcopy(value)
    node = out
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = new
    return out


def removed(value: Any, at: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(value)
    node = out
    for key in at[:-1]:
        node = node[key]
    del node[at[-1]]
    return out


def wrong_answers(valid: Any) -> Iterator[bytes]:
    """``valid`` with each of its values wrong in each way, or missing; then not JSON."""
    for at in places(valid):
        for new in WRONG:
            yield json.dumps(replaced(valid, at, new)).encode()  # orjson refuses 2**70
        if at:
            yield json.dumps(removed(valid, at)).encode()
    yield from NOT_JSON


@dataclass
class Script:
    """What the test server answers: valid answers by (method, path), one of them wrong."""

    answers: dict[tuple[str, ...], bytes]  # (method, path), or with a status query after
    status: dict[tuple[str, str], int]


@pytest.fixture
async def script() -> AsyncIterator[tuple[Script, str]]:
    state = Script({}, {})

    async def handler(request: web.Request) -> web.StreamResponse:
        key = (request.method, request.path)
        body = state.answers.get((*key, request.query.get("status", "")), state.answers.get(key))
        if body is None:
            return web.Response(status=404)
        return web.Response(
            status=state.status.get(key, 200), body=body, content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield state, str(server.make_url("")).rstrip("/")
    await server.close()


def well_formed(result: object) -> bool:
    """Whether a backend's result has the types the protocol promises."""
    if result is None:
        return True
    if isinstance(result, Receipt):
        return isinstance(result.remote_id, str) and bool(result.remote_id)
    if isinstance(result, Mapping):
        return all(
            isinstance(k, str)
            and isinstance(v, JobStatus)
            and isinstance(v.phase, Phase)
            and isinstance(v.reason, str | None)
            for k, v in result.items()
        )
    return False


async def escapes(
    state: Script,
    where: tuple[str, ...],
    valid: Any,
    call: Callable[[], Awaitable[object]],
    expected: type[BackendError],
    *,
    also: tuple[type[BackendError], ...] = (),
    envelope: bool = False,
) -> list[str]:
    """Every wrong answer at ``where`` whose outcome breaks the contract, described."""
    out = []
    for answer in wrong_answers(valid):
        state.answers[where] = answer
        allowed: tuple[type[BackendError], ...] = (expected, *also)
        if envelope:
            code = _code(answer)
            if isinstance(code, str) and code != "0000":
                allowed = (BackendError,)  # an error envelope, not garbage: its code decides
        try:
            result = await call()
        except allowed as exc:
            if expected is AmbiguousBackendError and isinstance(exc, TransientBackendError):
                out.append(f"{answer[:80]!r}: transient after a create that may have worked")
            continue
        except Exception as exc:  # noqa: BLE001 - what escapes is what this test looks for
            out.append(f"{answer[:80]!r}: {type(exc).__name__}: {exc}"[:300])
            continue
        if not well_formed(result):
            out.append(f"{answer[:80]!r}: returned {result!r}"[:300])
    return out


def _code(answer: bytes) -> object:
    try:
        value = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return value.get("code") if isinstance(value, dict) else None


# -- stub -------------------------------------------------------------------------------------


class TestStub:
    @pytest.fixture
    async def stub(self, script: tuple[Script, str]) -> AsyncIterator[tuple[Script, Backend]]:
        state, url = script
        state.answers.update(
            {
                ("POST", "/jobs"): b'{"id": "job-1"}',
                ("GET", "/jobs"): b'{"id": "job-1", "state": "running"}',
                (
                    "POST",
                    "/jobs/status",
                ): b'{"jobs": {"job-1": {"state": "failed", "reason": "r"}}}',
                ("POST", "/jobs/job-1/stop"): b"{}",
            }
        )
        state.status[("POST", "/jobs")] = 201
        backend = StubBackend(StubOptions(url=url))
        yield state, backend
        await backend.aclose()

    async def test_submit(self, stub: tuple[Script, Backend]) -> None:
        state, backend = stub
        found = await escapes(
            state,
            ("POST", "/jobs"),
            {"id": "job-1"},
            lambda: backend.submit(Submission("g-1", b"{}")),
            AmbiguousBackendError,
        )
        assert [] == found

    async def test_status(self, stub: tuple[Script, Backend]) -> None:
        state, backend = stub
        found = await escapes(
            state,
            ("POST", "/jobs/status"),
            {"jobs": {"job-1": {"state": "failed", "reason": "r"}}},
            lambda: backend.status([Receipt("g-1", "job-1")]),
            TransientBackendError,
        )
        assert [] == found

    async def test_lookup(self, stub: tuple[Script, Backend]) -> None:
        state, backend = stub
        found = await escapes(
            state,
            ("GET", "/jobs"),
            {"id": "job-1", "state": "running"},
            lambda: backend.lookup(Submission("g-1", b"{}")),
            TransientBackendError,
        )
        assert [] == found

    async def test_stop(self, stub: tuple[Script, Backend]) -> None:
        state, backend = stub
        found = await escapes(
            state,
            ("POST", "/jobs/job-1/stop"),
            {},
            lambda: backend.stop(Receipt("g-1", "job-1")),
            TransientBackendError,
        )
        assert [] == found


# -- gongji -----------------------------------------------------------------------------------

NAME = "g-1"


def envelope(data: object) -> dict[str, Any]:
    return {"code": "0000", "message": "success", "data": data}


TASK = {
    "task_id": 10001,
    "task_name": NAME,
    "status": "End",
    "job_status": {"status": "Failed", "failed_pods": 1},
}
DEVICE = {
    "gpu_name": "4090",
    "gpu_count": 1,
    "regions": [
        {
            "region": "r1",
            "region_name": "R1",
            "inventory": 3,
            "mark": {"resource": "x", "mark": "m"},
        }
    ],
}
CREATE = ("POST", "/api/task/job/create")
SEARCH = ("GET", "/api/task/job/search")
DETAIL = ("GET", "/api/task/job/detail")
STOP = ("POST", "/api/task/job/stop")
DEVICES = ("GET", "/api/deployment/resource/search")


def by_name() -> bytes:
    """A create body whose device is given by name: bulk reads the device list first."""
    body = orjson.loads(sample_body(NAME))
    body["resources"] = [{"gpu_name": "4090", "gpu_count": 1, "region": "r1"}]
    return orjson.dumps(body)


class TestGongji:
    @pytest.fixture
    async def gongji(self, script: tuple[Script, str]) -> AsyncIterator[tuple[Script, Backend]]:
        state, url = script
        state.answers.update(
            {
                CREATE: orjson.dumps(envelope({"task_id": 10001})),
                SEARCH: orjson.dumps(envelope({"count": 0, "results": []})),
                DETAIL: orjson.dumps(envelope(TASK)),
                STOP: orjson.dumps(envelope(None)),
                DEVICES: orjson.dumps(envelope({"count": 1, "results": [DEVICE]})),
            }
        )
        client = GongjiClient(GongjiOptions(url=url), token="t" * 20, signer=None)
        backend = GongjiBackend(client)
        yield state, backend
        await backend.aclose()

    async def test_submit(self, gongji: tuple[Script, Backend]) -> None:
        state, backend = gongji
        found = await escapes(
            state,
            CREATE,
            envelope({"task_id": 10001}),
            lambda: backend.submit(Submission(NAME, sample_body(NAME))),
            AmbiguousBackendError,
            envelope=True,
        )
        assert [] == found

    async def test_submit_by_device_name(self, gongji: tuple[Script, Backend]) -> None:
        """The device list is a read: transient, or no such device (the run is refused)."""
        state, backend = gongji
        assert isinstance(backend, GongjiBackend)

        async def submit() -> object:
            backend._resources.loaded = False  # read the list again for every answer
            return await backend.submit(Submission(NAME, by_name()))

        found = await escapes(
            state,
            DEVICES,
            envelope({"count": 1, "results": [DEVICE]}),
            submit,
            TransientBackendError,
            also=(RunRefusedError,),
            envelope=True,
        )
        assert [] == found

    async def test_status_search(self, gongji: tuple[Script, Backend]) -> None:
        state, backend = gongji
        found = await escapes(
            state,
            SEARCH,
            envelope({"count": 1, "results": [TASK]}),
            lambda: backend.status([Receipt(NAME, "10001")]),
            TransientBackendError,
            envelope=True,
        )
        assert [] == found

    @pytest.mark.parametrize("ids", [(10003, 10001), (10001, 10003)], ids=["newest", "oldest"])
    async def test_status_ended(self, ids: tuple[int, int], gongji: tuple[Script, Backend]) -> None:
        """A job gone from the unfinished list is looked for among the ended tasks, pages
        read from the newest end (the ids tell the order); its count may be garbled."""
        state, backend = gongji
        tasks = [{**TASK, "task_id": task_id} for task_id in ids]
        found = await escapes(
            state,
            (*SEARCH, "End"),
            # The job asked for is not among them: more pages are read.
            envelope({"count": 300, "results": tasks}),
            lambda: backend.status([Receipt(NAME, "10000")]),
            TransientBackendError,
            envelope=True,
        )
        assert [] == found

    async def test_status_detail(self, gongji: tuple[Script, Backend]) -> None:
        state, backend = gongji
        found = await escapes(
            state,
            DETAIL,
            envelope(TASK),
            lambda: backend.status([Receipt(NAME, "10001")]),
            TransientBackendError,
            envelope=True,
        )
        assert [] == found

    async def test_lookup(self, gongji: tuple[Script, Backend]) -> None:
        state, backend = gongji
        found = await escapes(
            state,
            SEARCH,
            envelope({"count": 1, "results": [TASK]}),
            lambda: backend.lookup(Submission(NAME, sample_body(NAME))),
            TransientBackendError,
            envelope=True,
        )
        assert [] == found

    async def test_stop(self, gongji: tuple[Script, Backend]) -> None:
        state, backend = gongji
        found = await escapes(
            state,
            STOP,
            envelope(None),
            lambda: backend.stop(Receipt(NAME, "10001")),
            TransientBackendError,
            envelope=True,
        )
        assert [] == found
