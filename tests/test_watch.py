"""`bulk status --watch` and `bulk top`: a live view of a run from another terminal.

The runs here are real local runs of jobs that wait for a file the test creates (gate-<i>),
so the test decides when rows finish; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import bulk._config as config
import bulk._runs as runs
from bulk._cli._watch import Endpoint, Rates, Watcher, describe, lock_holder
from bulk._journal import Record, RunLock, SeriesRow, State
from bulk.testing import wait_until_sync

BULK = [sys.executable, "-m", "bulk"]
POLLS = 3000  # of a tmux pane, 10 ms apart: 30 s and more, a bound only
LINE_TIMEOUT_S = 30  # the bound on waiting for the next line: only turns a hang into a failure


def gated_config(folder: Path, rows: int = 4) -> Path:
    """A run of ``rows`` local jobs, two at a time; job i ends when gate-i exists (row 1
    fails)."""
    path = folder / "run.toml"
    path.write_text(
        f"""
[run]
name = "watched"

[sweep]
grid.i = {{range = [0, {rows}]}}

[limits]
max_active = 2

[retry]
attempts = 1

[job]
command = "while [ ! -e gate-{{i}} ]; do sleep 0.02; done; exit $(( {{i}} == 1 ))"
"""
    )
    return path


def open_gates(folder: Path, *rows: int) -> None:
    for i in rows:
        (folder / f"gate-{i}").touch()


class Lines:
    """The lines a process writes to its stdout, read by a thread, waited for with a bound."""

    def __init__(self, proc: subprocess.Popen[str]):
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            with contextlib.suppress(ValueError, OSError):  # closed at the test's end
                for line in stdout:
                    self._lines.put(line.rstrip("\n"))
            self._lines.put(None)

        threading.Thread(target=read, daemon=True).start()

    def until(self, wanted: str) -> str:
        """The first line from now on that contains ``wanted``."""
        while True:
            line = self._lines.get(timeout=LINE_TIMEOUT_S)
            if line is None:
                raise AssertionError(f"ended before {wanted!r}; lines: {self.seen[-5:]}")
            self.seen.append(line)
            if wanted in line:
                return line


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end are ended by their pid."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def start(
    procs: list[subprocess.Popen[str]], *args: str, cwd: Path, stdout: int | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*BULK, *args],
        cwd=cwd,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    return proc


def test_plain_lines_follow_a_run_from_before_its_start_to_its_end(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """Off a terminal, one line per refresh: waiting for the run, then its counts as they
    move, then "ended" and exit 0 by itself. The watcher holds nothing the run needs."""
    config_path = gated_config(tmp_path)
    watch = start(procs, "status", "--watch", "--interval", "0.05", str(config_path), cwd=tmp_path)
    lines = Lines(watch)
    lines.until("waiting for the run to start")

    run = start(procs, "run", str(config_path), cwd=tmp_path, stdout=subprocess.DEVNULL)
    first = lines.until("(2 pending, 2 running)")  # not "...:32 running": the time of day
    open_gates(tmp_path, 0, 1)
    later = lines.until("2/4 done")
    open_gates(tmp_path, 2, 3)
    last = lines.until("ended")

    assert f"running (bulk pid {run.pid})" in first
    assert "0/4 done (2 pending, 2 running)" in first
    assert "1 succeeded" in later
    assert "1 failed" in later
    assert "submits" in lines.seen[-2]  # rates, once two refreshes were read
    assert "4/4 done (3 succeeded, 1 failed)" in last
    assert 0 == watch.wait(timeout=LINE_TIMEOUT_S)
    assert watch.stderr is not None
    assert "" == watch.stderr.read()
    assert 1 == run.wait(timeout=LINE_TIMEOUT_S)  # row 1 failed


def test_ctrl_c_ends_the_watch_with_exit_0(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """A run not going with rows left is watched on, until Ctrl-C: exit 0, no message."""
    config_path = gated_config(tmp_path)
    unfinished_run(config_path)
    watch = start(procs, "top", str(config_path), "--interval", "0.05", cwd=tmp_path)
    line = Lines(watch).until("not running")

    watch.send_signal(signal.SIGINT)

    assert 0 == watch.wait(timeout=LINE_TIMEOUT_S)
    assert watch.stderr is not None
    assert "" == watch.stderr.read()
    assert "1/4 done (3 pending, 1 failed)" in line
    assert "ETA" not in line  # nothing is going


def test_closed_pipe_exits_0_without_a_message(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """`bulk status --watch | head -1`: the reader goes away; exit 0, nothing on stderr."""
    config_path = gated_config(tmp_path)
    unfinished_run(config_path)
    watch = start(procs, "status", "--watch", "--interval", "0.05", str(config_path), cwd=tmp_path)
    assert watch.stdout is not None
    assert "not running" in watch.stdout.readline()

    watch.stdout.close()

    assert 0 == watch.wait(timeout=LINE_TIMEOUT_S)
    assert watch.stderr is not None
    assert "" == watch.stderr.read()


def unfinished_run(config_path: Path) -> None:
    """The run's journal with row 1 failed and the rest pending, as after an interruption."""
    cfg = config.load(config_path)
    cfg.run.dir.mkdir(parents=True)
    journal, _ = runs.open_run(cfg)
    with journal:
        journal.apply([Record(1, State.FAILED, error="exit code 1", submitted_at=1.0)])


def test_the_watcher_opens_read_only_and_never_takes_the_lock(tmp_path: Path) -> None:
    """While a watcher has the journal open, a run takes the lock and writes; the watcher
    sees who holds the lock and what it wrote, and follows a journal replaced under it."""
    config_path = gated_config(tmp_path)
    unfinished_run(config_path)
    cfg = config.load(config_path)
    watcher = Watcher(cfg)
    try:
        before = watcher.read()
        with RunLock(cfg.run.dir), runs.open_journal(cfg) as journal:  # a run: it can start
            holder = lock_holder(cfg.run.dir)
            journal.apply([Record(0, State.SUCCEEDED, finished_at=2.0)])
            during = watcher.read()
        after_run = watcher.read()
        os.rename(cfg.journal_path, cfg.run.dir / "journal-1.sqlite")  # bulk run --restart
        shutil.copy(cfg.run.dir / "journal-1.sqlite", cfg.journal_path)
        with runs.open_journal(cfg) as journal:
            journal.apply([Record(2, State.SUCCEEDED, finished_at=3.0)])
        replaced = watcher.read()
    finally:
        watcher.close()

    assert (None, 1) == (before.live, before.done)
    assert os.getpid() == holder == during.live
    assert 2 == during.done
    assert (None, 2) == (after_run.live, after_run.done)
    assert 3 == replaced.done
    assert [1] == [job.index for job in replaced.failures]


def test_the_watcher_writes_nothing(tmp_path: Path) -> None:
    """Reading leaves the journal's bytes and modification time as they were."""
    config_path = gated_config(tmp_path)
    unfinished_run(config_path)
    cfg = config.load(config_path)
    before = cfg.journal_path.read_bytes(), cfg.journal_path.stat().st_mtime_ns
    watcher = Watcher(cfg)
    try:
        view = watcher.read()
    finally:
        watcher.close()

    assert (4, 1) == (view.total, view.done)
    assert before == (cfg.journal_path.read_bytes(), cfg.journal_path.stat().st_mtime_ns)


def test_rates_are_over_the_last_minute() -> None:
    rates = Rates(window_s=60)
    assert rates.per_s() is None
    rates.add(0.0, 0, 0)
    assert rates.per_s() is None
    rates.add(10.0, 50, 20)
    assert (5.0, 2.0, 10.0) == rates.per_s()
    rates.add(100.0, 50, 20)  # the first two samples fall out of the window
    assert rates.per_s() is None
    rates.add(110.0, 40, 30)  # `bulk retry` put rows back: no negative rate
    assert (0.0, 1.0, 10.0) == rates.per_s()


# -- a real terminal -------------------------------------------------------------------------


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """tmux on a private socket, its server killed at the end."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed (CI must run this test)")
        pytest.skip("tmux is not installed")
    name = f"bulk-test-{uuid.uuid4().hex[:12]}"
    command = ["tmux", "-L", name, "-f", os.devnull]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)
    # The server leaves its socket behind: /tmp/tmux-UID/NAME, or under $TMUX_TMPDIR.
    folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"  # noqa: S108
    (folder / name).unlink(missing_ok=True)


def test_bulk_top_shows_a_live_run_in_a_terminal(
    tmp_path: Path, tmux: list[str], procs: list[subprocess.Popen[str]]
) -> None:
    """`bulk top CONFIG` in a tmux pane: the counts move as rows finish, then "ended"."""
    config_path = gated_config(tmp_path)
    run = start(procs, "run", str(config_path), cwd=tmp_path, stdout=subprocess.DEVNULL)
    top = " ".join([*BULK, "top", str(config_path), "--interval", "0.05"])
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "160", "-y", "40", "-c", str(tmp_path)],
        check=True,
        timeout=30,
    )
    subprocess.run([*tmux, "set-option", "-g", "remain-on-exit", "on"], check=True, timeout=30)
    subprocess.run([*tmux, "respawn-pane", "-k", top], check=True, timeout=30)

    def pane(history: int = 0) -> str:
        """The pane's text, with ``history`` lines scrolled off its top."""
        done = subprocess.run(
            [*tmux, "capture-pane", "-p", "-S", str(-history)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout

    def counts(text: str) -> list[str]:
        """The row of numbers under the states' header line."""
        lines = text.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.split()[:2] == ["pending", "submitting"]:
                return lines[i + 1].split()
        return []

    # pending submitting unknown submitted running succeeded failed stopped
    running = wait_until_sync(
        pane, lambda t: counts(t)[4:5] == ["2"], what="2 running", polls=POLLS
    )
    open_gates(tmp_path, 0, 1, 2, 3)

    # bulk top ends by itself once the run has ended; the pane then holds its last frame
    # whole (a capture while rich redraws may catch half a frame).
    def dead() -> str:
        done = subprocess.run(
            [*tmux, "display-message", "-p", "#{pane_dead}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()

    wait_until_sync(dead, lambda d: d == "1", what="bulk top's end", polls=POLLS)
    # With history: a last frame as tall as the pane is pushed up a line by tmux's "Pane is
    # dead" note, and its first line (the one that says "ended") scrolls off the top.
    ended = pane(history=40)

    assert f"running (bulk pid {run.pid})" in running
    assert "0/4 done" in running
    assert ["0", "0", "0", "0", "0", "3", "1", "0"] == counts(ended)
    assert "ended" in ended
    assert "4/4 done" in ended
    assert "latest failures" in ended
    assert "exit code 1" in ended
    assert "Traceback" not in ended
    assert 1 == run.wait(timeout=LINE_TIMEOUT_S)


def test_requests_throttles_retries_and_rates_come_from_the_series(tmp_path: Path) -> None:
    """The last minute of the run's per-second series: requests, throttles and errors by
    endpoint, retries; each endpoint's adaptive rate and ceiling as last recorded."""
    config_path = gated_config(tmp_path)
    unfinished_run(config_path)
    cfg = config.load(config_path)
    now = int(time.time())
    with runs.open_journal(cfg) as journal:
        journal.apply(
            [],
            series=[
                # Over a minute ago: not counted, but its rate is still the latest.
                SeriesRow(now - 120, "submit", ok=50, rate=9.0, ceiling=10.0),
                SeriesRow(now - 5, "submit", ok=7, throttled=3),
                SeriesRow(now - 5, "status", ok=4, transient=1, rate=2.5, ceiling=5.0),
                SeriesRow(now - 4, "run", retries=4),
            ],
        )
    watcher = Watcher(cfg)
    try:
        view = watcher.read()
    finally:
        watcher.close()

    assert Endpoint(10, 3, 0, 9.0, 10.0) == view.endpoints["submit"]
    assert Endpoint(5, 0, 1, 2.5, 5.0) == view.endpoints["status"]
    assert ["submit", "status"] == list(view.endpoints)
    assert 4 == view.retries
    line = describe(view, Rates())
    assert "last minute: 15 requests, 3 throttled, 4 retries" in line
    assert "rate now/ceiling: submit 9/10/s, status 2.5/5/s" in line


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_interval_is_one_line_exit_2(
    tmp_path: Path, interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bulk._cli._main import main

    assert 2 == main(["top", str(gated_config(tmp_path)), "--interval", interval])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bulk top: error: argument --interval: expected seconds between")
