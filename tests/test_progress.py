"""The progress display: the one-line summary, plain periodic lines, and rich's bar."""

from __future__ import annotations

import io

import anyio
import pytest

# _progress imports rich on first use, inside the event loop, where blockbuster flags rich's
# import-time os.getcwd(); imported here first, before any loop runs.
import rich.console
import rich.progress  # noqa: F401

from bulk._cli._progress import describe, show
from bulk._engine import Stats
from bulk.testing import wait_until


class Terminal(io.StringIO):
    """A stream that says it is a terminal (rich then draws its bar into it)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stats", "line"),
    [
        (Stats(total=10), "0/10 done, 0 succeeded, 0 active"),
        (
            Stats(total=2000, done=1500, succeeded=1400, failed=60, stopped=40, active=12),
            "1,500/2,000 done, 1,400 succeeded, 60 failed, 40 stopped, 12 active",
        ),
        (
            Stats(total=5, done=1, succeeded=1, active=4, throttled=3, unreachable=True),
            "1/5 done, 1 succeeded, 4 active, 3 throttled, service unreachable: waiting",
        ),
    ],
)
def test_describe_names_only_what_is_there(stats: Stats, line: str) -> None:
    assert line == describe(stats)


async def test_plain_lines_follow_the_counters_until_cancelled() -> None:
    stats = Stats(total=4)
    stream = io.StringIO()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: show(stats, "demo", interval_s=0.01, stream=stream))
        await wait_until(lambda: _text(stream), lambda t: "0/4 done" in t, what="a first line")
        stats.done = stats.succeeded = 4
        await wait_until(lambda: _text(stream), lambda t: "4/4 done" in t, what="the new count")
        tg.cancel_scope.cancel()

    lines = stream.getvalue().splitlines()
    assert lines[0] == "bulk: demo: 0/4 done, 0 succeeded, 0 active"
    assert all(line.startswith("bulk: demo: ") for line in lines)


async def test_no_interval_means_no_plain_lines() -> None:
    stream = io.StringIO()

    with anyio.fail_after(5):  # it returns at once: nothing to show
        await show(Stats(total=1), "demo", interval_s=0, stream=stream)

    assert "" == stream.getvalue()


async def test_a_reader_gone_ends_the_display_not_the_run() -> None:
    """The stream closing under it (nobody reads any more) ends ``show``, with no error."""
    stream = io.StringIO()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: show(Stats(total=1), "demo", interval_s=0.01, stream=stream))
            await wait_until(lambda: _text(stream), what="a first line")
            stream.close()
    # the task group ended by itself: show returned instead of raising ValueError


async def test_a_terminal_gets_a_bar_whose_last_frame_is_the_final_state() -> None:
    stats = Stats(total=10, done=3, succeeded=2, failed=1, active=5)
    stream = Terminal()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: show(stats, "demo", interval_s=0, stream=stream))
        await wait_until(lambda: _text(stream), lambda t: "3/10" in t, what="the bar")
        stats.done, stats.succeeded, stats.active = 10, 9, 0
        tg.cancel_scope.cancel()  # drawn again on the way out, without waiting 0.2 s

    text = stream.getvalue()
    assert "demo" in text
    assert "2 ok · 1 failed · 5 active" in text
    assert "10/10" in text
    assert "9 ok · 1 failed · 0 active" in text


async def _text(stream: io.StringIO) -> str:
    return stream.getvalue()
