"""``bulk status --watch`` and ``bulk top``: a live view of a run, read from its journal.

It works from another terminal while ``bulk run`` goes on, and changes nothing: the journal
is opened read-only (a WAL reader: the run commits on, never waits for it), and the run's
lock is never taken, not even for a moment (a ``bulk run`` starting then would be refused).
Whether a run is going is read from the kernel's table of file locks instead (``/proc/locks``
on Linux; elsewhere, whether the process the lock file names is alive).

A refresh reads, in one short read transaction: counts by state from the state index
(every state but the largest, which the fixed total gives: about 0.1 s on 10⁶ rows), the
failed rows of highest index (jobs are sent in index order) from the index's ends, and the
last minute of the run's per-second series (requests, throttles and
errors by endpoint, retries, each endpoint's adaptive rate and ceiling). Job submit and
finish rates are the change of the counts between refreshes, over the last minute the view
has seen (so they appear after the second refresh); the ETA is the rows left over the
finish rate.

When it ends: on Ctrl-C (exit 0), and by itself once the run is not going and every row is
finished (``bulk run`` of a finished run sends nothing either). A run that stopped with rows
left (interrupted, crashed) is shown as not running, and watched on: ``bulk run`` resumes it,
and the view follows, like ``tail -f``. Before the run has started (no journal yet) the view
waits for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import bulk._config as config
from bulk._cli._common import EXIT_OK, output, stdout_console
from bulk._journal import Journal, State, StoredJob
from bulk._naming import job_name
from bulk._text import cut, preview
from bulk.errors import JournalError

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["Endpoint", "Rates", "View", "Watcher", "cmd_watch", "describe", "lock_holder"]

RATE_WINDOW_S = 60.0  # rates are over the last minute
LATEST_FAILURES = 5
_SENT_OR_LATER = (State.SUBMITTED, State.RUNNING, State.SUCCEEDED, State.FAILED, State.STOPPED)
_DONE = (State.SUCCEEDED, State.FAILED, State.STOPPED)


@dataclass
class View:
    """What one refresh read."""

    at: float  # wall-clock time of the read
    started: bool = False  # the journal exists
    live: int | None = None  # the pid of the bulk process working on the run, if any
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[StoredJob] = field(default_factory=list)
    error: str | None = None  # why this refresh could not read the journal (tried again)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    retries: int = 0  # requests sent again over the last minute

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, *states: State) -> int:
        return sum(self.counts.get(s.value, 0) for s in states)

    @property
    def done(self) -> int:
        return self.count(*_DONE)

    @property
    def ended(self) -> bool:
        """The run is not going and has nothing left to do."""
        return self.started and self.live is None and self.done == self.total > 0


@dataclass
class Endpoint:
    """One endpoint over the last minute, from the run's per-second series."""

    requests: int = 0
    throttled: int = 0
    errors: int = 0  # failed other than by a throttle
    rate: float | None = None  # the adaptive rate now, per second
    ceiling: float | None = None  # its hard ceiling, per second


# The endpoints the series records with an adaptive rate (look-ups are paced as status),
# and the service-wide budget's rate.
_ENDPOINTS = ("submit", "status", "stop", "lookup", "service")


class Rates:
    """Submits and finishes per second over the last ``window_s``, from successive counts."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self._window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, at: float, sent: int, done: int) -> None:
        self._samples.append((at, sent, done))
        while self._samples and at - self._samples[0][0] > self._window_s:
            self._samples.popleft()

    def per_s(self) -> tuple[float, float, float] | None:
        """``(submits/s, finishes/s, over seconds)``, or None before two samples."""
        if len(self._samples) < 2:  # noqa: PLR2004 - a rate needs two samples
            return None
        (t0, sent0, done0), (t1, sent1, done1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return None
        # A `bulk retry` puts rows back to pending: counts may go down; rates do not.
        return max(sent1 - sent0, 0) / span, max(done1 - done0, 0) / span, span


class Watcher:
    """Reads views of a run from its journal, read-only, across the run's life: before its
    journal exists, while it is written, after a ``--restart`` replaced it."""

    def __init__(self, cfg: config.Config):
        self.cfg = cfg
        self._journal: Journal | None = None
        self._total = 0  # the journal's rows: fixed once it is made
        self._largest = State.PENDING  # the state with the most rows at the last refresh

    def close(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            journal.close()

    def read(self) -> View:
        """The run now.

        Raises:
            JournalError: the file is not this run's journal (another run's, or not a bulk
                journal): watching on would show nothing true.
        """
        view = View(at=time.time(), live=lock_holder(self.cfg.run.dir))
        if self._journal is not None and self._journal.replaced:
            self.close()
        if self._journal is None:
            if not self.cfg.journal_path.exists():
                return view
            self._journal = self._open()
            self._total = self._journal.total()
        view.started = True
        try:
            with self._journal.snapshot():
                view.counts = self._counts(self._journal)
                view.failures = self._journal.latest((State.FAILED, State.UNKNOWN), LATEST_FAILURES)
                self._read_series(self._journal, view)
        except JournalError as exc:  # busy past the timeout, a disk error: try again later
            view.error = str(exc)
        return view

    def _counts(self, journal: Journal) -> dict[str, int]:
        """Rows by state. Counting is a walk of the state index, so the state with the most
        rows (at the last refresh) is not counted but made up from the total, which a
        journal keeps. Measured on 10⁶ rows half finished (a loaded machine): a refresh
        90-130 ms, against 200-330 ms counting every state (GROUP BY)."""
        counts = {s.value: journal.count(s) for s in State if s is not self._largest}
        counts[self._largest.value] = self._total - sum(counts.values())
        self._largest = State(max(counts, key=lambda s: counts[s]))
        return {state: n for state, n in counts.items() if n}

    @staticmethod
    def _read_series(journal: Journal, view: View) -> None:
        """Requests, throttles and retries over the last minute, and each endpoint's
        adaptive rate now: a minute of the series (a few hundred rows at most)."""
        endpoints: dict[str, Endpoint] = {}
        for row in journal.series(since=view.at - RATE_WINDOW_S):
            if row.endpoint == "run":
                view.retries += row.retries
                continue
            seen = endpoints.setdefault(row.endpoint, Endpoint())
            seen.requests += row.requests
            seen.throttled += row.throttled
            seen.errors += row.errors
        for name in _ENDPOINTS:
            latest = journal.latest_rate(name)
            if latest is not None:
                seen = endpoints.setdefault(name, Endpoint())
                seen.rate, seen.ceiling = latest
        view.endpoints = {name: endpoints[name] for name in sorted(endpoints, key=_order)}

    def _open(self) -> Journal:
        journal = Journal.open_reader(self.cfg.journal_path)
        try:
            recorded = journal.meta().get("run")
        except BaseException:
            journal.close()
            raise
        if recorded is not None and recorded != self.cfg.run.name:
            journal.close()
            msg = (
                f"{self.cfg.journal_path}: this journal belongs to run {recorded!r}, not to "
                f"run {self.cfg.run.name!r} of {self.cfg.path}"
            )
            raise JournalError(msg)
        return journal


def _order(endpoint: str) -> tuple[int, str]:
    return (_ENDPOINTS.index(endpoint) if endpoint in _ENDPOINTS else len(_ENDPOINTS), endpoint)


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the process holding the run's lock, or None when no process holds it.

    Read without touching the lock: a watcher that took it, even for a moment, would make a
    ``bulk run`` starting at that moment fail.
    """
    path = run_dir / "lock"
    try:
        st = os.stat(path)
        named = path.read_text().strip()
    except OSError:
        return None
    try:
        with open("/proc/locks") as f:
            table = f.read()
    except OSError:  # not Linux: the pid the lock file names, if that process lives
        pid = int(named) if named.isdigit() else None
        if pid is None:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" (a waiter's line has "->" after
    # "1:", so its fields do not match).
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > _WHERE and fields[1] == "FLOCK" and fields[_WHERE] == where:
            return int(fields[4]) if fields[4].isdigit() else 0
    return None


_WHERE = 5  # the field of a /proc/locks line that names the file


def cmd_watch(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    watcher = Watcher(cfg)
    rates = Rates()
    try:
        with output():
            if sys.stdout.isatty():
                _live(watcher, rates, args.interval)
            else:
                _lines(watcher, rates, args.interval)
    except KeyboardInterrupt:
        pass  # how a watch is meant to end: exit 0, no message
    finally:
        watcher.close()
    return EXIT_OK


def _refresh(watcher: Watcher, rates: Rates) -> View:
    view = watcher.read()
    if view.started and view.error is None:
        rates.add(view.at, view.count(*_SENT_OR_LATER), view.done)
    return view


def _pause(interval_s: float, began: float) -> None:
    """Sleep until the next refresh, ``interval_s`` after the last one ``began`` (a
    monotonic time), or as long as it took if longer (a huge journal on a slow disk): the
    watcher reads at most half the time."""
    took = max(time.monotonic() - began, 0.0)
    time.sleep(max(interval_s - took, took))


def _lines(watcher: Watcher, rates: Rates, interval_s: float) -> None:
    """Not a terminal: one line per refresh, flushed (for a log file or a pipe)."""
    while True:
        began = time.monotonic()
        view = _refresh(watcher, rates)
        print(f"bulk: {watcher.cfg.run.name}: {describe(view, rates)}", flush=True)  # noqa: T201
        if view.ended:
            return
        _pause(interval_s, began)


def _live(watcher: Watcher, rates: Rates, interval_s: float) -> None:
    from rich.live import Live

    console = stdout_console()
    began = time.monotonic()
    view = _refresh(watcher, rates)
    with Live(_render(watcher.cfg, view, rates), console=console, auto_refresh=False) as live:
        live.refresh()
        while not view.ended:
            _pause(interval_s, began)
            began = time.monotonic()
            view = _refresh(watcher, rates)
            live.update(_render(watcher.cfg, view, rates), refresh=True)


def _phase(view: View) -> str:
    if not view.started:
        return "waiting for the run to start (no journal yet)"
    if view.live is not None:
        return f"running (bulk pid {view.live})" if view.live else "running"
    if view.ended:
        return "ended"
    return "not running (bulk run resumes it)"


def _eta(view: View, rates: Rates) -> str | None:
    measured = rates.per_s()
    left = view.total - view.done
    if measured is None or view.live is None or left <= 0:
        return None
    finish_rate = measured[1]
    if finish_rate <= 0:
        return "ETA unknown (nothing finished lately)"
    return f"ETA {_duration(left / finish_rate)}"


_MINUTE, _HOUR = 60, 3600


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < _MINUTE:
        return f"{s}s"
    if s < _HOUR:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def _rates_text(rates: Rates) -> str | None:
    measured = rates.per_s()
    if measured is None:
        return None
    submits, finishes, span = measured
    return f"submits {submits:.1f}/s, finishes {finishes:.1f}/s (last {_duration(span)})"


def _per_s(rate: float) -> str:
    """A rate as people read it: 1,000 and 2.5, not 1e+03 and 2.5000."""
    return f"{rate:,.0f}" if rate >= _WHOLE else f"{rate:.3g}"


_WHOLE = 100  # a rate from here up is shown in whole requests


def _requests_text(view: View) -> str:
    """Requests, throttles and retries over the last minute, and the adaptive rates now."""
    throttled = sum(e.throttled for e in view.endpoints.values())
    requests = sum(e.requests for e in view.endpoints.values())
    rates = ", ".join(
        f"{name} {_per_s(e.rate)}/{_per_s(e.ceiling)}/s"
        if e.ceiling is not None
        else f"{name} {_per_s(e.rate)}/s"
        for name, e in view.endpoints.items()
        if e.rate is not None
    )
    text = f"last minute: {requests:,} requests, {throttled:,} throttled, {view.retries:,} retries"
    return f"{text}; rate now/ceiling: {rates}" if rates else text


def describe(view: View, rates: Rates) -> str:
    """One line: what the run is doing (the plain mode's line)."""
    clock = time.strftime("%H:%M:%S", time.localtime(view.at))
    parts = [f"{clock} {_phase(view)}"]
    if view.started:
        counts = ", ".join(
            f"{view.counts[s.value]:,} {s.value}" for s in State if view.counts.get(s.value)
        )
        parts.append(f"{view.done:,}/{view.total:,} done ({counts or 'no rows'})")
        parts.extend(t for t in (_rates_text(rates), _eta(view, rates)) if t)
        parts.append(_requests_text(view))
    if view.error:
        parts.append(f"cannot read: {view.error}")
    return "; ".join(parts)


def _render(cfg: config.Config, view: View, rates: Rates) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    clock = time.strftime("%H:%M:%S", time.localtime(view.at))
    parts: list[RenderableType] = [
        Text.assemble(
            ("bulk top ", "bold"),
            (cfg.run.name, "bold cyan"),
            f"  {_phase(view)}  {clock}",
        )
    ]
    if view.error:
        parts.append(Text(f"cannot read the journal: {view.error}", style="red"))
    if view.started:
        parts.append(_done_line(view))
        counts = Table(box=None, show_header=True, pad_edge=False)
        for state in State:
            counts.add_column(state.value, justify="right")
        counts.add_row(*(f"{view.counts.get(s.value, 0):,}" for s in State))
        parts.append(counts)
        line = " · ".join(t for t in (_rates_text(rates), _eta(view, rates)) if t)
        if line or view.live is not None:
            parts.append(Text(line or "rates: after the next refresh"))
        parts.append(_endpoints_table(view))
        if view.failures:
            table = Table(title="latest failures", title_justify="left")
            table.add_column("#", no_wrap=True)
            table.add_column("name", overflow="fold")
            table.add_column("variables", overflow="ellipsis", no_wrap=True, ratio=1)
            table.add_column("reason", overflow="ellipsis", no_wrap=True, ratio=2)
            for job in view.failures:
                # Plain text: a reason may quote a service's answer ("[/x]" is not markup).
                table.add_row(
                    str(job.index),
                    Text(job_name(cfg.run.name, job.key, job.attempt)),
                    Text(preview(job.variables, 60)),
                    Text(cut(job.error or job.state.value, 200)),
                )
            parts.append(table)
        parts.append(Text(f"every row: bulk status {cfg.path}", "dim"))
    return Group(*parts)


def _endpoints_table(view: View) -> RenderableType:
    from rich.table import Table

    table = Table(
        title=f"requests over the last minute ({view.retries:,} retries)",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    for column in ("endpoint", "requests", "throttled", "errors", "rate now", "ceiling"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, e in view.endpoints.items():
        table.add_row(
            name,
            f"{e.requests:,}",
            f"{e.throttled:,}",
            f"{e.errors:,}",
            "" if e.rate is None else f"{_per_s(e.rate)}/s",
            "" if e.ceiling is None else f"{_per_s(e.ceiling)}/s",
        )
    if not view.endpoints:
        table.add_row("(none yet)", "", "", "", "", "")
    return table


def _done_line(view: View) -> RenderableType:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(
        f"{view.done:,}/{view.total:,} done",
        ProgressBar(total=max(view.total, 1), completed=view.done),
    )
    return grid
