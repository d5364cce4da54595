"""Rows a backend cannot send: caught by validation, and never fatal to a run.

Validation refuses what a backend cannot carry (a NUL byte in a process argument, an
environment entry past the kernel's limit). Should such a row reach a backend anyway (a
journal made before the check), the backend says "cannot send this" (a permanent error, the
row fails with the reason) and the run goes on; anything else a backend raises leaves the row
``unknown``, looked up by name before it is ever sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from bulk._clock import AnyioClock
from bulk._engine import Engine, Runtime
from bulk._journal import Journal, State
from bulk._naming import Point, job_name, point_key
from bulk._policy import LimitsConfig, Policy, RetryConfig, TrackConfig
from bulk._problems import Problems
from bulk._template import compile_template, to_json
from bulk.backends.base import Backend, Submission
from bulk.backends.local import KIND, LocalBackend, LocalOptions
from bulk.errors import ConfigError, PermanentBackendError
from bulk.testing import ClockLimiter, FakeBackend

RUN = "u"
POLICY = Policy(
    LimitsConfig(
        submit_rate_per_s=1000.0,
        status_rate_per_s=1000.0,
        stop_rate_per_s=1000.0,
        burst=10,
        max_in_flight=4,
        max_active=4,
    ),
    RetryConfig(attempts=3, budget_s=10.0, base_s=0.01, max_s=0.05),
    TrackConfig(first_s=0.005, factor=1.5, max_s=0.05),
)


def problems_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    problems = Problems()
    KIND.validate(body, problems)
    return [(p.field, p.message) for p in problems.items]


class TestLocalValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            pytest.param({"command": "echo a\x00b"}, "job.command", id="shell-string"),
            pytest.param({"command": ["echo", "a\x00b"]}, "job.command[1]", id="argv"),
            pytest.param({"command": "true", "env": {"A": "x\x00"}}, "job.env.A", id="env"),
            pytest.param({"command": "true", "cwd": "w\x00rk"}, "job.cwd", id="cwd"),
        ],
    )
    def test_nul_bytes_are_refused_where_they_are(self, body: dict[str, Any], field: str) -> None:
        """A NUL byte cannot be in an argument, an environment value or a path."""
        ((got_field, message),) = problems_of(body)

        assert field == got_field
        assert message.startswith("holds a NUL byte (character ")
        assert "cannot carry one" in message

    def test_arguments_past_the_kernel_limit_are_refused(self) -> None:
        """One argument or environment entry is capped at 128 KiB by Linux's execve()."""
        big = "é" * 70_000  # 140,000 bytes in UTF-8, 70,000 characters

        found = problems_of({"command": ["echo", big], "env": {"BIG": big}})

        assert ["job.command[1]", "job.env.BIG"] == [f for f, _ in found]
        assert "is 140,000 bytes long; the kernel takes at most 131,071 bytes" in found[0][1]
        assert "is 140,004 bytes long" in found[1][1]  # "BIG=" counts too

    def test_environment_names_and_ordinary_bodies(self) -> None:
        """An '=' in an environment name is refused; an ordinary body has no problem."""
        ((field, message),) = problems_of({"command": "true", "env": {"A=B": "1"}})

        assert "job.env.A=B" == field
        assert message.startswith("is not a valid environment variable name")
        ok = {"command": ["echo", "x" * 100_000, 3], "env": {"A": "1"}, "cwd": "w", "timeout_s": 5}
        assert [] == problems_of(ok)


class TestLocalSubmit:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"command": ["echo", "a\x00b"]}, id="nul-in-argv"),
            pytest.param({"command": "true", "env": {"A=B": "1"}}, id="equals-in-env-name"),
            pytest.param({"comand": "true"}, id="not-a-local-body"),
        ],
    )
    async def test_a_body_that_cannot_be_started_is_permanent(
        self, tmp_path: Path, body: dict[str, Any]
    ) -> None:
        """What execve() cannot carry is a PermanentBackendError: nothing was started."""
        backend = LocalBackend(LocalOptions(base=tmp_path), run_dir=tmp_path)
        try:
            with pytest.raises(PermanentBackendError, match="nothing was started") as caught:
                await backend.submit(Submission("u-1", orjson.dumps(body)))
        finally:
            await backend.aclose()

        assert "u-1" == caught.value.job_name


async def test_a_failure_reason_quotes_the_program_cut(tmp_path: Path) -> None:
    """A long program name that cannot start gives a short reason (it is stored and shown)."""
    backend = LocalBackend(LocalOptions(base=tmp_path), run_dir=tmp_path)
    try:
        with pytest.raises(PermanentBackendError) as caught:
            await backend.submit(Submission("u-2", orjson.dumps({"command": ["p" * 100_000]})))
    finally:
        await backend.aclose()

    assert str(caught.value).startswith("cannot start 'ppp")
    assert len(str(caught.value)) < 200


def make_journal(path: Path, values: list[Any]) -> Journal:
    journal = Journal.create(path, {"run": RUN})
    points = (
        Point(i, point_key({"x": v}), f"s.csv:{i + 2}", {"x": v}) for i, v in enumerate(values)
    )
    for _ in journal.fill(points):
        pass
    journal.finish()
    return journal


@pytest.fixture
def journal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Journal]:
    """A journal of the values the test is parametrized with (``values``)."""
    j = make_journal(tmp_path / "journal.sqlite", request.param)
    yield j
    j.close()


def values(*vs: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("journal", [list(vs)], indirect=True, ids=["rows"])


def engine(backend: Backend, journal: Journal, template: dict[str, Any]) -> Engine:
    clock = AnyioClock()
    return Engine(
        backend,
        journal,
        template=compile_template(template),
        run=RUN,
        policy=POLICY,
        runtime=Runtime(clock=clock, limiter_factory=ClockLimiter.factory(clock)),
    )


async def by_value(journal: Journal) -> dict[Any, tuple[State, str | None]]:
    """Each row's state and error, keyed by its value (read off the event loop)."""
    jobs = await anyio.to_thread.run_sync(journal.jobs)
    return {job.variables["x"]: (job.state, job.error) for job in jobs}


@values("one", "t\x00wo", "three")
async def test_real_local_backend_fails_only_the_unsendable_row(
    journal: Journal, tmp_path: Path
) -> None:
    """A NUL byte that got past validation fails its row; the other rows run to the end."""
    backend = LocalBackend(LocalOptions(base=tmp_path), run_dir=tmp_path)
    try:
        await engine(backend, journal, {"command": ["echo", "{x}"]}).run()
    finally:
        await backend.aclose()

    rows = await by_value(journal)
    assert (State.SUCCEEDED, None) == rows["one"] == rows["three"]
    state, error = rows["t\x00wo"]
    assert State.FAILED == state
    assert "embedded null byte" in (error or "")
    out = anyio.Path(tmp_path / "logs" / f"{job_name(RUN, point_key({'x': 'one'}))}.out")
    assert "one\n" == await out.read_text()


def test_a_body_json_cannot_carry_names_the_part_at_fault() -> None:
    """The last guard before sending: a body orjson refuses is a ConfigError with its path.

    (Templates and sweep values are checked before a run, so a run does not reach this.)
    """
    with pytest.raises(ConfigError) as info:
        to_json({"a": [1, {"big": 2**70}]})

    assert "job.a[1].big" == info.value.field
    assert "1180591620717411303424 does not fit in 64 bits" in info.value.problem


@values(1, 2, 3)
async def test_unexpected_error_leaves_the_row_unknown_and_resume_looks_it_up(
    journal: Journal,
) -> None:
    """A bug in submit (after the service created the job): unknown, then adopted on resume."""
    bad = job_name(RUN, point_key({"x": 2}))

    async def created_then_bug(backend: FakeBackend, sub: Submission) -> None:
        backend.accept(sub)
        if sub.name == bad:
            raise ValueError("a bug after the request was sent")

    backend = FakeBackend(created_then_bug, clock=AnyioClock())
    await engine(backend, journal, {"n": "{x}"}).run()

    rows = await by_value(journal)
    assert (State.SUCCEEDED, None) == rows[1] == rows[3]
    expected = "unexpected error from the backend: ValueError: a bug after the request was sent"
    assert (State.UNKNOWN, expected) == rows[2]
    assert 1 == len([c for c in backend.calls_to("submit") if c.name == bad])  # not retried
    first_run = len(backend.calls)  # its submits and status calls, in whatever order they ran

    await engine(backend, journal, {"n": "{x}"}).run()  # resume

    assert State.SUCCEEDED == (await by_value(journal))[2][0]
    assert ["lookup"] == [c.endpoint for c in backend.calls[first_run:] if c.name == bad][:1]
    assert 1 == backend.ledger[bad]
    assert 1 == len([c for c in backend.calls_to("submit") if c.name == bad])


@values(1)
async def test_an_unexpected_error_is_recorded_cut(journal: Journal) -> None:
    """The reason kept for an unexpected error is cut (it is stored and shown)."""

    async def huge_bug(backend: FakeBackend, sub: Submission) -> None:
        raise KeyError("k" * 100_000)

    await engine(FakeBackend(huge_bug, clock=AnyioClock()), journal, {"n": "{x}"}).run()

    state, error = (await by_value(journal))[1]
    assert State.UNKNOWN == state
    assert (error or "").startswith("unexpected error from the backend: KeyError: 'kkk")
    assert len(error or "") < 400
