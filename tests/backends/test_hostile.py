"""Hostile strings in names, keys and values always go out as well-formed JSON and URLs.

No request body, URL or generated renderer is built by pasting an unchecked string: quotes,
newlines, NUL bytes, backslashes, ``&?#%/`` and non-ASCII text arrive at the service exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from bulk._sim.gongji import GONGJI, GongjiSim, SimConfig, sample_body
from bulk._sim.gongji import make_app as make_gongji_app
from bulk._sim.stub import SERVICE, StubFaults, make_app
from bulk._template import compile_template
from bulk.backends.base import Phase, Receipt, Submission
from bulk.backends.gongji import GongjiBackend, GongjiClient, GongjiOptions
from bulk.backends.gongji._client import read_options_token
from bulk.backends.stub import StubBackend, StubOptions
from bulk.errors import ConfigError

HOSTILE = 'q"uote\nnew\rline\x00nul\\back/slash&amp?q#h%25 ü漢 {brace} \u2028 </script>'


@pytest.fixture
async def stub_server() -> AsyncIterator[TestServer]:
    server = TestServer(make_app(StubFaults(run_s=0.0)), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


class TestStub:
    async def test_a_hostile_name_and_body_arrive_exactly(self, stub_server: TestServer) -> None:
        """The name is escaped as JSON and as a query value; the body's values round-trip."""
        backend = StubBackend(StubOptions(url=url(stub_server)))
        body = compile_template({"v": "{v}", "s": "x {v} y"}).render_bytes({"v": HOSTILE})
        try:
            receipt = await backend.submit(Submission(HOSTILE, body))
            found = await backend.lookup(Submission(HOSTILE, body))
            status = await backend.status([receipt])
        finally:
            await backend.aclose()

        service = stub_server.app[SERVICE]
        assert {HOSTILE: 1} == service.creates
        assert receipt == found
        assert status[receipt.remote_id].phase in (Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED)
        assert {"v": HOSTILE, "s": f"x {HOSTILE} y"} == orjson.loads(body)

    async def test_a_remote_id_is_one_path_segment(self) -> None:
        """A remote id with '/' (or '?', '#') is quoted whole into the stop URL."""
        seen: list[str] = []

        async def stop(request: web.Request) -> web.StreamResponse:
            seen.append(request.match_info["id"])
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/jobs/{id}/stop", stop)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        backend = StubBackend(StubOptions(url=url(server)))
        try:
            await backend.stop(Receipt("n", "a/b?c#d"))
        finally:
            await backend.aclose()
            await server.close()

        assert ["a/b?c#d"] == seen

    @pytest.mark.parametrize(
        ("path", "data"),
        [
            pytest.param("/jobs", b'{"name": "x", "spec": {', id="create-malformed"),
            pytest.param("/jobs", b"[1, 2]", id="create-not-an-object"),
            pytest.param("/jobs/status", b'{"ids": ', id="status-malformed"),
            pytest.param("/jobs/status", b'{"ids": "job-1"}', id="status-not-a-list"),
        ],
    )
    async def test_the_simulator_answers_400_to_a_malformed_request(
        self, stub_server: TestServer, path: str, data: bytes
    ) -> None:
        """A malformed body is the client's error (400), never a 5xx that would be retried."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(url(stub_server) + path, data=data) as response,
        ):
            status = response.status

        assert 400 == status


async def test_gongji_task_name_is_escaped_in_body_and_search() -> None:
    """A hostile task_name is created, and found again by an exact-name search."""
    sim = GongjiSim(SimConfig(pending_s=0.0, run_s=30.0))
    sim.add_token("t", None)
    server = TestServer(make_gongji_app(sim), host="127.0.0.1")
    await server.start_server()
    client = GongjiClient(GongjiOptions(url=url(server)), token="t", signer=None)
    backend = GongjiBackend(client)
    body = sample_body(HOSTILE)
    try:
        receipt = await backend.submit(Submission("run-1", body))
        found = await backend.lookup(Submission("run-1", body))
    finally:
        await backend.aclose()
        await server.close()

    assert {HOSTILE: 1} == server.app[GONGJI].creates
    assert receipt == found


text = st.text(max_size=12)


@given(
    key=text.filter(lambda k: "{" not in k and "}" not in k),
    literal=text.map(lambda s: s.replace("{", "{{").replace("}", "}}")),
    value=text,
)
def test_generated_renderer_with_hostile_keys_and_values(
    key: str, literal: str, value: Any
) -> None:
    """Keys, literals and values of any text render to valid JSON, as the reference does."""
    template = compile_template({key: "{v}", "s": f"{literal}{{v}}", "l": [literal, key]})
    row = {"v": value}

    rendered = orjson.loads(template.render_bytes(row))

    assert template._fast is not None
    assert template._fast(row) == template._render(row)
    unescaped = literal.replace("{{", "{").replace("}}", "}")
    assert {key: value, "s": unescaped + value, "l": [unescaped, key]} == rendered


@pytest.mark.parametrize("token", ["ab\ncd", "ab\x01cd", "ab\tcd", "ab\x7f"])
def test_a_token_no_header_can_carry_is_refused_once(tmp_path: Path, token: str) -> None:
    """A control character in the token is a config error, not a failure of every request."""
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="a character an HTTP header cannot carry"):
        read_options_token(GongjiOptions(token_file=token_file))
