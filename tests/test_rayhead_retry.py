"""``bulk._rayhead.ray_head`` tries a second head once when Ray's own start-up timed out (a
raylet that missed its deadline on a loaded machine), and never for any other failure."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bulk._rayhead as rayhead


def fake_heads(monkeypatch: pytest.MonkeyPatch, failures: list[Exception]) -> list[int]:
    """``ray_head`` over fake starts that fail with ``failures`` in turn, then succeed."""
    started: list[int] = []

    @contextlib.contextmanager
    def one_head(*args: Any) -> Iterator[str]:
        started.append(len(started) + 1)
        if failures:
            raise failures.pop(0)
        yield "head"

    monkeypatch.setattr(rayhead, "ray_cli", lambda: Path("/bin/true"))
    monkeypatch.setattr(rayhead, "_one_head", one_head)
    return started


def test_a_start_that_timed_out_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    started = fake_heads(monkeypatch, [rayhead._StartTimedOutError("timed out during startup")])
    with rayhead.ray_head() as head:
        got: object = head
    assert ("head", [1, 2]) == (got, started)


def test_twice_timed_out_or_any_other_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    twice: list[Exception] = [rayhead._StartTimedOutError("1"), rayhead._StartTimedOutError("2")]
    started = fake_heads(monkeypatch, twice)
    with pytest.raises(rayhead.RayHeadError, match="2"), rayhead.ray_head():
        pass
    other = fake_heads(monkeypatch, [rayhead.RayHeadError("not ready: waited in vain")])
    with pytest.raises(rayhead.RayHeadError, match="in vain"), rayhead.ray_head():
        pass
    assert ([1, 2], [1]) == (started, other)
