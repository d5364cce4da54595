"""The run's journal: one SQLite database (WAL) holding every sweep point and its job's state.

It is the source of truth for resume. A point's row moves through these states::

    pending ──► submitting ──► submitted ──► running ──► succeeded | failed | stopped
                    │  ▲
                    ▼  │ (looked up: not there)
                  unknown

``submitting`` is committed *before* the request goes out, so after any crash a row in
``submitting`` or ``unknown`` may or may not exist on the service and is looked up by its name
before anything is sent again. ``bulk retry`` puts failed rows back to ``pending`` with the
next attempt number, which gives them a new job name.

The journal also holds every version of the job template the run has used (``templates``)
and, for each row, the version its current attempt is rendered with (``jobs.template``).
A run starts at version 1; ``bulk retry --template-changed`` adds the next version and moves
only the rows it sends again to it. A row is always rendered with its own version, so a
look-up after a crash (Gongji matches on the rendered ``task_name``) finds what was sent.

Writes from the engine go through :class:`~bulk._journal._writer.JournalWriter`, which
commits them with :meth:`Journal.apply`. Only this package writes job state.

A journal is created owner-only (0600, and SQLite gives its ``-wal`` and ``-shm`` the same
mode): it holds every point's variables. Opening one runs ``PRAGMA quick_check``, so that a
damaged file is refused before anything is read from it or sent; every SQLite or disk error
(a damaged page, a full disk, an I/O error) reaches callers as a one-line
:class:`~bulk.errors.JournalError`, and what was committed before it stays committed.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import orjson

from bulk._naming import Point, point_key
from bulk.errors import JournalError

__all__ = [
    "SCHEMA_VERSION",
    "SERIES_OUTCOMES",
    "Journal",
    "Record",
    "SeriesRow",
    "State",
    "StoredJob",
]

# 2: template versions (``templates``, ``jobs.template``); 3: the per-second ``series``
SCHEMA_VERSION = "3"
# Meta key: the most submit workers of any run session since the last one that ended cleanly
# ("0": the journal holds everything every session sent). See Journal.begin_session.
_UNCLEAN = "unclean_workers"
_FILL_BATCH = 5000


class State(enum.StrEnum):
    """A job's state in the journal."""

    PENDING = "pending"  # not sent yet
    SUBMITTING = "submitting"  # about to be sent, or sent with no answer yet (look it up)
    UNKNOWN = "unknown"  # an ambiguous answer: it may exist on the service (look it up)
    SUBMITTED = "submitted"  # accepted by the service, not started yet
    RUNNING = "running"  # started on the service
    SUCCEEDED = "succeeded"  # ended well
    FAILED = "failed"  # ended badly, or could not be submitted
    STOPPED = "stopped"  # stopped by ``bulk stop`` or a timeout request

    @property
    def terminal(self) -> bool:
        """Whether the job is finished for this attempt."""
        return self in _TERMINAL


_TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.STOPPED})

_TEMPLATES = """
CREATE TABLE IF NOT EXISTS templates (
    version      INTEGER PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    source       BLOB NOT NULL,
    created      TEXT NOT NULL
);
"""
# The run's per-second time series (see SeriesRow): one row per second and endpoint in
# which that endpoint saw requests or its adaptive rate changed, plus a ``run`` row for the
# seconds with retries. WITHOUT ROWID: the primary key is the table (compact, ordered by t).
_SERIES = """
CREATE TABLE IF NOT EXISTS series (
    t            INTEGER NOT NULL,
    endpoint     TEXT NOT NULL,
    ok           INTEGER NOT NULL DEFAULT 0,
    throttled    INTEGER NOT NULL DEFAULT 0,
    transient    INTEGER NOT NULL DEFAULT 0,
    ambiguous    INTEGER NOT NULL DEFAULT 0,
    unreachable  INTEGER NOT NULL DEFAULT 0,
    permanent    INTEGER NOT NULL DEFAULT 0,
    retries      INTEGER NOT NULL DEFAULT 0,
    rate         REAL,
    ceiling      REAL,
    PRIMARY KEY (t, endpoint)
) WITHOUT ROWID;
"""
# The outcomes a series row counts, in column order (the ``outcome`` label of
# ``bulk_requests_total``).
SERIES_OUTCOMES = ("ok", "throttled", "transient", "ambiguous", "unreachable", "permanent")
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    idx          INTEGER PRIMARY KEY,
    key          TEXT NOT NULL,
    origin       TEXT NOT NULL,
    vars         BLOB NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 1,
    state        TEXT NOT NULL DEFAULT 'pending',
    remote_id    TEXT,
    submitted_at REAL,
    started_at   REAL,
    finished_at  REAL,
    error        TEXT,
    template     INTEGER NOT NULL DEFAULT 1
);
"""
    + _TEMPLATES
    + _SERIES
)
# A journal of schema 1 (before template versions) is upgraded in place when opened: all
# its rows were rendered with the run's only template, version 1. Its text is recorded by
# the first resume whose config matches it (see bulk._runs).
_UPGRADE_FROM_1 = (
    "ALTER TABLE jobs ADD COLUMN template INTEGER NOT NULL DEFAULT 1;"  # noqa: S608 - constants
    + _TEMPLATES
    + "UPDATE meta SET v = '2' WHERE k = 'schema';"
)
# Schema 2 (before the time series) gains the empty table: its runs recorded none.
_UPGRADE_FROM_2 = _SERIES + "UPDATE meta SET v = '3' WHERE k = 'schema';"  # noqa: S608
_UPGRADES = {"1": _UPGRADE_FROM_1 + _UPGRADE_FROM_2, "2": _UPGRADE_FROM_2}
_SERIES_INSERT = (
    "INSERT INTO series(t, endpoint, ok, throttled, transient, ambiguous, unreachable, "
    "permanent, retries, rate, ceiling) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(t, endpoint) DO UPDATE SET ok = ok + excluded.ok, "
    "throttled = throttled + excluded.throttled, transient = transient + excluded.transient, "
    "ambiguous = ambiguous + excluded.ambiguous, "
    "unreachable = unreachable + excluded.unreachable, "
    "permanent = permanent + excluded.permanent, retries = retries + excluded.retries, "
    "rate = coalesce(excluded.rate, rate), ceiling = coalesce(excluded.ceiling, ceiling)"
)
# Made after the bulk fill, not during it: one sort is much cheaper than 10⁶ index updates
# (measured: 2.9 µs a row in all, against 5.5 µs with the key index kept up to date).
_KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs(key)"
_STATE_INDEX = "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, idx)"


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One journal row as read back."""

    index: int
    key: str
    origin: str
    variables: dict[str, Any]
    attempt: int
    state: State
    remote_id: str | None
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    error: str | None
    template: int = 1  # the job template's version this attempt is rendered with

    @property
    def point(self) -> Point:
        """The sweep point this job was made from."""
        return Point(self.index, self.key, self.origin, self.variables)


@dataclass(frozen=True, slots=True)
class Record:
    """One state change. ``None`` fields keep their stored value (except ``error``).

    Attributes:
        index: the row.
        state: the new state.
        attempt: set with the state (a retry changes it).
        remote_id: the service's id, once known.
        submitted_at, started_at, finished_at: wall-clock times (seconds since the epoch).
        error: the last error or failure reason; cleared when None.
    """

    index: int
    state: State
    attempt: int | None = None
    remote_id: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    def params(self) -> tuple[Any, ...]:
        return (
            self.state.value,
            self.attempt,
            self.remote_id,
            self.submitted_at,
            self.started_at,
            self.finished_at,
            self.error,
            self.index,
        )


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One second of one endpoint in the run's time series (:meth:`Journal.series`).

    Attributes:
        t: the second (wall clock, seconds since the epoch, rounded down; with ``step``,
            the first second of the step).
        endpoint: "submit", "status", "stop", "lookup" (requests by outcome; look-ups are
            paced as status: their rate is status's), "service" (the service-wide budget's
            rate only) or "run" (``retries`` only: retries are not counted per endpoint).
        ok, throttled, transient, ambiguous, unreachable, permanent: requests that ended so
            (the ``outcome`` label of ``bulk_requests_total``) in that second.
        retries: requests sent again (on the ``run`` row).
        rate: the adaptive rate per second at the end of that second (None: unchanged since
            the endpoint's previous row; carry it forward).
        ceiling: the hard ceiling per second, written with ``rate`` (None: as before).
    """

    t: int
    endpoint: str
    ok: int = 0
    throttled: int = 0
    transient: int = 0
    ambiguous: int = 0
    unreachable: int = 0
    permanent: int = 0
    retries: int = 0
    rate: float | None = None
    ceiling: float | None = None

    @property
    def requests(self) -> int:
        """Every request counted in that second, whatever its outcome."""
        return (
            self.ok
            + self.throttled
            + self.transient
            + self.ambiguous
            + self.unreachable
            + self.permanent
        )

    @property
    def errors(self) -> int:
        """Requests that failed other than by a throttle."""
        return self.transient + self.ambiguous + self.unreachable + self.permanent

    def params(self) -> tuple[Any, ...]:
        return (
            self.t,
            self.endpoint,
            self.ok,
            self.throttled,
            self.transient,
            self.ambiguous,
            self.unreachable,
            self.permanent,
            self.retries,
            self.rate,
            self.ceiling,
        )


_INSERT = "INSERT INTO jobs(idx, key, origin, vars) VALUES (?, ?, ?, ?)"
_UPDATE = """
UPDATE jobs SET state = ?, attempt = coalesce(?, attempt), remote_id = coalesce(?, remote_id),
    submitted_at = coalesce(?, submitted_at), started_at = coalesce(?, started_at),
    finished_at = coalesce(?, finished_at), error = ?
WHERE idx = ?
"""
_DURATION = "max(0.0, finished_at - coalesce(started_at, submitted_at))"
_TIMED = (
    "FROM jobs WHERE finished_at IS NOT NULL AND coalesce(started_at, submitted_at) IS NOT NULL"
)
_COLUMNS = (
    "idx, key, origin, vars, attempt, state, remote_id, submitted_at, started_at, "
    "finished_at, error, template"
)


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the writer commits from worker threads, one at a time.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced, so a committed "submitting" survives a power loss or
        # an OS crash too, not only a crash of bulk; without it a lost record could mean a
        # resend. Group commit makes it cheap: measured ~100 µs per commit of 8 records here
        # (NORMAL: 15 µs), a few µs per state change.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words (an OSError's strerror, SQLite's message)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _open_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    """Why the journal at ``path`` cannot be opened, in one line."""
    if exc.sqlite_errorname == "SQLITE_NOTADB":
        return f"{path}: not a readable bulk journal ({exc})"
    if (exc.sqlite_errorname or "").startswith("SQLITE_CORRUPT"):
        return _damaged(path, str(exc))
    # WAL mode writes beside the file even to read it.
    return f"{path}: cannot open the journal: {_reason(exc)}; bulk needs to write in {path.parent}"


def _damaged(path: Path, damage: str) -> str:
    """What to say of a damaged journal, and what to do about it."""
    return (
        f"{path}: the journal is damaged ({damage}); bulk will not resume, "
        "report or stop from it. Put back a sound copy, or move it aside and "
        "start a new run with bulk run --restart (every job runs again)"
    )


def _damage(conn: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds, or None when the file is sound.

    quick_check reads every page and checks the b-trees' structure, but not that indexes
    match their tables (integrity_check does, at 8-10x the cost): measured 0.5 s on a
    10⁶-row journal (184 MB), against 0.6 s for the rest of a resume.
    """
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as exc:  # too damaged to even walk
        return str(exc)
    if rows == [("ok",)]:
        return None
    # One line: SQLite's report may span several ("*** in database main ***\nPage 32: ...").
    text = " ".join(" ".join(str(r[0]) for r in rows).split())
    return text.removeprefix("*** in database main *** ")[:200]


class Journal:
    """A run's journal file. Reads are synchronous (use from a thread in async code).

    Example::

        with Journal.create(path, {"run": "demo"}) as j:
            duplicates = j.fill(points)
        journal = Journal.open(path)
        journal.counts()   # {"pending": 20}
    """

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    @classmethod
    def create(cls, path: Path, meta: dict[str, str]) -> Journal:
        """A new, empty journal at ``path`` (which must not exist)."""
        if path.exists():
            msg = f"{path}: a journal already exists here"
            raise JournalError(msg)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Owner-only from its first byte: SQLite creates the -wal and -shm files with the
            # database file's mode, so all three are 0600.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            conn = _connect(path)
        except (OSError, sqlite3.Error) as exc:
            msg = f"{path}: cannot create the journal: {_reason(exc)}"
            raise JournalError(msg) from None
        journal = cls(path, conn)
        with journal._errors("create the journal"):
            # The fill is not durable on purpose: until finish(), the file is not a live
            # journal (bulk run builds it under a temporary name), so a crash mid-fill only
            # loses a file that is rebuilt from the sweep. finish() turns durability back on.
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO meta(k, v) VALUES (?, ?)",
                [("schema", SCHEMA_VERSION), (_UNCLEAN, "0"), *meta.items()],
            )
        return journal

    @classmethod
    def open(cls, path: Path, *, check: bool = True) -> Journal:
        """An existing journal, checked for damage (``check``) before it is used.

        Raises:
            JournalError: it is missing, cannot be opened, is damaged, is not a bulk
                journal, or is of another schema version.
        """
        if not path.exists():
            msg = f"{path}: no journal (has this run been started?)"
            raise JournalError(msg)
        try:
            conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            raise JournalError(_open_error(path, exc)) from None
        try:
            damage = _damage(conn) if check else None
            if damage is not None:
                raise JournalError(_damaged(path, damage))
            schema = conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            msg = f"{path}: not a readable bulk journal ({exc})"
            raise JournalError(msg) from None
        except BaseException:
            conn.close()
            raise
        if schema is not None and schema[0] in _UPGRADES:
            try:
                conn.executescript(f"BEGIN IMMEDIATE; {_UPGRADES[schema[0]]} COMMIT;")
            except sqlite3.DatabaseError as exc:
                conn.close()
                msg = f"{path}: cannot upgrade this journal from schema {schema[0]} ({exc})"
                raise JournalError(msg) from None
            schema = (SCHEMA_VERSION,)
        if schema is None or schema[0] != SCHEMA_VERSION:
            conn.close()
            msg = f"{path}: journal schema {schema and schema[0]!r}, expected {SCHEMA_VERSION!r}"
            raise JournalError(msg)
        return cls(path, conn)

    @classmethod
    def open_reader(cls, path: Path) -> Journal:
        """An existing journal opened read-only, for a reader in another process (``bulk
        status --watch``) while a run may be writing it.

        The connection cannot write: it never upgrades, checkpoints or changes the file, and
        takes no lock a writer waits on for longer than one read. Unlike :meth:`open` it
        does not run ``quick_check`` first (a damaged page shows as an error on a read).

        Raises:
            JournalError: it is missing, cannot be opened, or is not a bulk journal of this
                schema version.
        """
        if not path.exists():
            msg = f"{path}: no journal (has this run been started?)"
            raise JournalError(msg)
        try:
            conn = sqlite3.connect(
                path.absolute().as_uri() + "?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.DatabaseError as exc:
            raise JournalError(_open_error(path, exc)) from None
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            schema = conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            msg = f"{path}: not a readable bulk journal ({exc})"
            raise JournalError(msg) from None
        if schema is None or schema[0] != SCHEMA_VERSION:
            conn.close()
            msg = (
                f"{path}: journal schema {schema and schema[0]!r}, expected "
                f"{SCHEMA_VERSION!r} (bulk status upgrades it)"
            )
            raise JournalError(msg)
        return cls(path, conn)

    @property
    def replaced(self) -> bool:
        """Whether the file at :attr:`path` is no longer the one this object opened (a
        ``bulk run --restart`` moved it aside and made a new one), or is gone."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (now.st_dev, now.st_ino) != self._identity

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close()
        except JournalError:
            if exc_type is None:
                raise  # else the error already on its way says more

    def close(self) -> None:
        """Close the database (the last connection checkpoints the WAL into the file).

        Raises:
            JournalError: the checkpoint could not be written (what was committed is still
                in the WAL, and is recovered on the next open).
        """
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            msg = f"{self.path}: cannot close the journal: {_reason(exc)}"
            raise JournalError(msg) from None

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn SQLite's and the disk's errors into a one-line JournalError."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            msg = f"{self.path}: cannot {doing}: {_reason(exc)}"
            raise JournalError(msg) from None

    # -- building ---------------------------------------------------------------------------

    def fill(self, points: Iterable[Point]) -> Iterator[Point]:
        """Append points as ``pending``, a batch per transaction; yields each once stored.

        Keys are not checked here: :meth:`finish` builds the unique key index in one sort,
        which costs half as much as keeping it up to date row by row, and reports duplicates.
        """
        conn = self._conn
        for batch in _batches(points, _FILL_BATCH):
            rows = [(p.index, p.key, p.origin, orjson.dumps(p.variables)) for p in batch]
            with self._errors("fill the journal"):
                conn.execute("BEGIN")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            yield from batch

    def finish(self, allow_duplicates: bool = False) -> list[tuple[str, str]]:
        """Index keys and states, and make later commits durable (once, after the fill).

        Args:
            allow_duplicates: give a repeated point a key that counts its occurrence instead
                of reporting it.

        Returns:
            ``(origin, earlier origin)`` of every point that repeats an earlier one, in index
            order; empty when all keys are unique (or repeats were allowed).
        """
        conn = self._conn
        with self._errors("index the journal"):
            while True:
                try:
                    conn.execute(_KEY_INDEX)
                    break
                except sqlite3.IntegrityError:
                    repeats = self._repeats()
                    if not allow_duplicates:
                        return [(origin, earlier) for _, origin, earlier, _ in repeats]
                    self._rekey(repeats)
            conn.execute(_STATE_INDEX)
            conn.execute("PRAGMA synchronous=FULL")
        return []

    def _repeats(self) -> list[tuple[int, str, str, int]]:
        """``(index, origin, first origin, occurrence)`` of every point whose key is taken."""
        rows = self._conn.execute(
            "SELECT idx, origin, key FROM jobs WHERE key IN "
            "(SELECT key FROM jobs GROUP BY key HAVING count(*) > 1) ORDER BY key, idx"
        )
        out = []
        first_key, first_origin, occurrence = "", "", 0
        for idx, origin, key in rows:
            if key != first_key:
                first_key, first_origin, occurrence = key, origin, 0
                continue
            occurrence += 1
            out.append((idx, origin, first_origin, occurrence))
        out.sort()
        return out

    def _rekey(self, repeats: list[tuple[int, str, str, int]]) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        for idx, _, _, occurrence in repeats:
            (variables,) = conn.execute("SELECT vars FROM jobs WHERE idx = ?", (idx,)).fetchone()
            key = point_key(orjson.loads(variables), occurrence)
            conn.execute("UPDATE jobs SET key = ? WHERE idx = ?", (key, idx))
        conn.execute("COMMIT")

    # -- metadata ---------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The run's metadata (fingerprints, versions, times)."""
        with self._errors("read the journal"):
            return dict(self._conn.execute("SELECT k, v FROM meta").fetchall())

    def set_meta(self, items: dict[str, str]) -> None:
        """Add or replace metadata entries."""
        with self._errors("write the journal"):
            self._conn.executemany("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", items.items())

    # -- run sessions -----------------------------------------------------------------------

    def begin_session(self, workers: int) -> int:
        """Record, in the database file itself, that a run starts sending from this journal.

        A committed record lives in the WAL until a checkpoint copies it into the file, so a
        lost ``-wal`` loses the latest records: rows the lost session sent can read
        ``pending`` again. A session that ends cleanly says so (:meth:`end_session`); this
        marks the session unclean and checkpoints, so that the mark survives the loss of
        the WAL even where the records do not.

        Args:
            workers: how many jobs this session may be sending at once (its submit workers).

        Returns:
            0 when every earlier session ended cleanly (the journal holds all they sent);
            else the most submit workers of any session since the last clean end.
        """
        with self._errors("write the journal"):
            earlier = self._conn.execute("SELECT v FROM meta WHERE k = ?", (_UNCLEAN,)).fetchone()
            # A journal of an older bulk does not say: take it as unclean, with this
            # session's workers as the best guess of its predecessors'.
            unclean = int(earlier[0]) if earlier is not None else workers
            self.set_meta({_UNCLEAN: str(max(unclean, workers))})
            # Waits (busy_timeout, 5 s) for a reader such as `bulk status` to finish; one
            # that outstays it leaves the mark in the WAL only (lost with it).
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return unclean

    def end_session(self) -> None:
        """Record that the session ended with every state change it made committed."""
        self.set_meta({_UNCLEAN: "0"})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes inside one transaction: all of them survive a crash, or none."""
        conn = self._conn
        with self._errors("write the journal"):
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        with self._errors("write the journal"):
            conn.execute("COMMIT")

    # -- template versions ------------------------------------------------------------------

    def template_version(self) -> int:
        """The version of the job template the run renders new attempts with (1 at first)."""
        with self._errors("read the journal"):
            row = self._conn.execute("SELECT max(version) FROM templates").fetchone()
        return int(row[0] or 1)

    def template_sources(self) -> dict[int, Any]:
        """The text of every recorded template version, as written in the config."""
        with self._errors("read the journal"):
            rows = self._conn.execute(
                "SELECT version, source FROM templates ORDER BY version"
            ).fetchall()
        return {int(version): orjson.loads(source) for version, source in rows}

    def add_template(self, version: int, fingerprint: str, source: Any, created: str) -> None:
        """Record the text of a template version (kept as is when already recorded)."""
        with self._errors("write the journal"):
            self._conn.execute(
                "INSERT OR IGNORE INTO templates(version, fingerprint, source, created) "
                "VALUES (?, ?, ?, ?)",
                (version, fingerprint, orjson.dumps(source), created),
            )

    # -- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many rows are in each state."""
        with self._errors("read the journal"):
            rows = self._conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")
            return dict(rows.fetchall())

    def count(self, state: State) -> int:
        """How many rows are in ``state`` (a range of the state index)."""
        with self._errors("read the journal"):
            sql = "SELECT count(*) FROM jobs WHERE state = ?"
            return int(self._conn.execute(sql, (state.value,)).fetchone()[0])

    def total(self) -> int:
        """How many points the run has."""
        with self._errors("read the journal"):
            return int(self._conn.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def jobs(
        self,
        states: Sequence[State] | None = None,
        *,
        after: int = -1,
        limit: int | None = None,
    ) -> list[StoredJob]:
        """Rows in index order, optionally only those in ``states`` and past index ``after``."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE idx > ?"  # noqa: S608 - constant column names
        args: list[Any] = [after]
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(s.value for s in states)
        sql += " ORDER BY idx"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._errors("read the journal"):
            return [_stored(row) for row in self._conn.execute(sql, args)]

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make the reads inside one read transaction: they all see the same moment of the
        run (a writer commits on; it is not held up)."""
        conn = self._conn
        with self._errors("read the journal"):
            conn.execute("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def latest(self, states: Sequence[State], limit: int) -> list[StoredJob]:
        """At most ``limit`` rows in ``states`` with the highest indexes, highest first.

        Jobs are sent in index order, so these are about the latest to reach those states.
        Bounded work on any journal: one short range of the state index per state.
        """
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY idx DESC LIMIT ?"  # noqa: S608
        rows: list[StoredJob] = []
        with self._errors("read the journal"):
            for state in states:
                rows.extend(_stored(r) for r in self._conn.execute(sql, (state.value, limit)))
        rows.sort(key=lambda job: job.index, reverse=True)
        return rows[:limit]

    def latest_rate(self, endpoint: str) -> tuple[float, float | None] | None:
        """An endpoint's adaptive rate and ceiling as the series last recorded them, or None.

        Read from the end of the series (its key is the time), so it costs little while the
        rate changes now and then; an adaptive rate is written when it changes.
        """
        sql = (
            "SELECT rate, ceiling FROM series WHERE endpoint = ? AND rate IS NOT NULL "
            "ORDER BY t DESC LIMIT 1"
        )
        with self._errors("read the journal"):
            row = self._conn.execute(sql, (endpoint,)).fetchone()
        return None if row is None else (float(row[0]), row[1])

    def iter_jobs(
        self, states: Sequence[State] | None = None, page: int = 2000
    ) -> Iterator[StoredJob]:
        """Every row (in ``states``), in index order, read a page at a time."""
        after = -1
        while True:
            rows = self.jobs(states, after=after, limit=page)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].index

    # -- writing (synchronous; the engine uses JournalWriter) -------------------------------

    def apply(self, records: Sequence[Record], series: Sequence[SeriesRow] = ()) -> None:
        """Commit state changes (and time-series rows) in one transaction (all or none).

        A series row for a second and endpoint already stored adds its counts to it.

        Raises:
            JournalError: the commit failed (disk full, I/O error, a damaged page), or the
                journal file was deleted or replaced while open (what this connection
                writes would then be lost with it).
        """
        conn = self._conn
        with self._errors("write the journal"):
            self._check_in_place()
            conn.execute("BEGIN")
            try:
                conn.executemany(_UPDATE, [r.params() for r in records])
                if series:
                    conn.executemany(_SERIES_INSERT, [r.params() for r in series])
            except BaseException:
                if conn.in_transaction:  # SQLite ends it itself on some errors
                    conn.execute("ROLLBACK")
                raise
            if not conn.in_transaction:
                # SQLite rolled it back: a read of a damaged page on this connection (the
                # engine reads from another thread) ends the open transaction.
                msg = "SQLite rolled the transaction back (a damaged page or a failing disk)"
                raise sqlite3.DatabaseError(msg)
            conn.execute("COMMIT")

    def _check_in_place(self) -> None:
        # One stat per commit (a few µs against ~100 µs of fsynced commit): SQLite goes on
        # writing to a database file that was deleted, so without it a deleted journal
        # would record the rest of the run into a file nobody can open again.
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._identity:
            msg = (
                f"{self.path}: the journal was deleted or replaced while this run was using "
                f"it; stopping before anything else is sent"
            )
            raise JournalError(msg)

    def series(self, *, since: float | None = None, step: int = 1) -> list[SeriesRow]:
        """The run's time series, in order of time then endpoint, summed over ``step`` seconds.

        Rows exist only for the seconds in which something happened (requests, retries, a
        change of rate), so a reader carries ``rate`` and ``ceiling`` forward over gaps.

        Args:
            since: only seconds at or after this wall-clock time (None: all).
            step: seconds per row: counts are summed over each step, rate and ceiling are
                the latest written in it (a day-long run fits a chart at step 60).
        """
        step = max(1, int(step))
        # rate and ceiling (written together): those of the step's latest row that has
        # them, found by its primary key; the sums are made in SQL, whatever the run's length.
        sql = (
            "SELECT g.s, g.endpoint, g.ok, g.th, g.tr, g.am, g.un, g.pe, g.re, r.rate, "
            "r.ceiling FROM (SELECT t - t % ? AS s, endpoint, sum(ok) AS ok, "
            "sum(throttled) AS th, sum(transient) AS tr, sum(ambiguous) AS am, "
            "sum(unreachable) AS un, sum(permanent) AS pe, sum(retries) AS re, "
            "max(CASE WHEN rate IS NOT NULL THEN t END) AS rt "
            "FROM series WHERE t >= ? GROUP BY s, endpoint) AS g "
            "LEFT JOIN series AS r ON r.t = g.rt AND r.endpoint = g.endpoint "
            "ORDER BY g.s, g.endpoint"
        )
        lo = -1 if since is None else int(since)
        with self._errors("read the journal"):
            rows = self._conn.execute(sql, (step, lo)).fetchall()
        return [SeriesRow(*row) for row in rows]

    # -- reading for reports (aggregated in SQL: bounded whatever the journal's size) -------

    def time_span(self) -> tuple[float | None, float | None]:
        """The first submit time and the last time any row was submitted, started or ended."""
        sql = (
            "SELECT min(submitted_at), max(max(coalesce(submitted_at, 0), "
            "coalesce(started_at, 0), coalesce(finished_at, 0))) FROM jobs"
        )
        with self._errors("read the journal"):
            first, last = self._conn.execute(sql).fetchone()
        return first, (last or None)

    def time_buckets(self, column: str, start: float, width: float) -> dict[int, tuple[int, int]]:
        """``{bucket: (rows, rows that started)}`` of the rows whose ``column``
        ("submitted_at", "started_at", "finished_at") falls in each bucket of ``width``
        seconds from ``start``."""
        if column not in {"submitted_at", "started_at", "finished_at"}:
            raise ValueError(column)
        sql = (
            f"SELECT CAST(({column} - ?) / ? AS INTEGER) AS b, count(*), "  # noqa: S608 - checked
            f"count(started_at) FROM jobs WHERE {column} IS NOT NULL GROUP BY b"
        )
        with self._errors("read the journal"):
            return {b: (n, s) for b, n, s in self._conn.execute(sql, (start, width))}

    def duration_summary(self) -> tuple[int, float, float, float]:
        """``(count, min, max, mean)`` of every ended job's run time (from its start, else
        its submit, to its end; zeros when no job has ended)."""
        sql = f"SELECT count(*), min({_DURATION}), max({_DURATION}), avg({_DURATION}) {_TIMED}"
        with self._errors("read the journal"):
            n, lo, hi, mean = self._conn.execute(sql).fetchone()
        return n, lo or 0.0, hi or 0.0, mean or 0.0

    def duration_ranks(self, ranks: Sequence[int]) -> list[float]:
        """The run times at 1-based ``ranks`` (at most the count) in ascending order: one
        sort, in SQLite."""
        marks = ",".join("?" * len(ranks))
        sql = (
            f"SELECT r, d FROM (SELECT {_DURATION} AS d, row_number() OVER (ORDER BY "  # noqa: S608
            f"{_DURATION}) AS r {_TIMED}) WHERE r IN ({marks})"
        )
        with self._errors("read the journal"):
            by_rank = dict(self._conn.execute(sql, list(ranks)).fetchall())
        return [by_rank[r] for r in ranks]

    def duration_bins(self, edges: Sequence[float]) -> list[int]:
        """How many run times fall in each of the ``len(edges) - 1`` bins between ``edges``
        (ascending; a time below the first edge counts in the first bin, one at or past the
        last in the last)."""
        cases = " ".join(f"WHEN d < ? THEN {i}" for i in range(len(edges) - 2))
        # MATERIALIZED: each time is worked out once, not once per WHEN.
        sql = (
            f"WITH t AS MATERIALIZED (SELECT {_DURATION} AS d {_TIMED}) "  # noqa: S608
            f"SELECT CASE {cases} ELSE {len(edges) - 2} END AS b, count(*) FROM t GROUP BY b"
        )
        counts = [0] * (len(edges) - 1)
        with self._errors("read the journal"):
            for b, n in self._conn.execute(sql, list(edges[1:-1])):
                counts[b] = n
        return counts

    def failure_reasons(self, states: Sequence[State], limit: int) -> list[tuple[str | None, int]]:
        """The commonest ``(error, rows)`` of the rows in ``states``, most rows first."""
        marks = ",".join("?" * len(states))
        sql = (
            f"SELECT error, count(*) AS n FROM jobs WHERE state IN ({marks}) "  # noqa: S608
            "GROUP BY error ORDER BY n DESC, error LIMIT ?"
        )
        with self._errors("read the journal"):
            return self._conn.execute(sql, [*(s.value for s in states), limit]).fetchall()

    def jobs_with_error(
        self, states: Sequence[State], error: str | None, limit: int
    ) -> list[StoredJob]:
        """The first ``limit`` rows in ``states`` whose error is ``error``, in index order."""
        marks = ",".join("?" * len(states))
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) "  # noqa: S608 - marks only
            "AND error IS ? ORDER BY idx LIMIT ?"
        )
        with self._errors("read the journal"):
            rows = self._conn.execute(sql, [*(s.value for s in states), error, limit])
            return [_stored(row) for row in rows]

    def max_attempt(self) -> int:
        """The highest attempt number any row has had."""
        with self._errors("read the journal"):
            row = self._conn.execute("SELECT coalesce(max(attempt), 0) FROM jobs").fetchone()
            return int(row[0])

    def set_first_attempt(self, attempt: int) -> None:
        """Number every row's attempt from ``attempt`` (a restarted run never reuses a name)."""
        with self._errors("write the journal"):
            self._conn.execute("UPDATE jobs SET attempt = ?", (attempt,))

    def reset_failed(
        self, states: Sequence[State] = (State.FAILED,), *, template: int | None = None
    ) -> int:
        """Put rows in ``states`` back to ``pending`` with the next attempt (``bulk retry``).

        Args:
            states: which rows to send again.
            template: the template version their new attempt is rendered with (kept when
                None).

        Returns:
            How many rows were reset.
        """
        marks = ",".join("?" * len(states))
        sql = (
            "UPDATE jobs SET state = 'pending', "  # noqa: S608 - '?' marks only; values are bound
            "attempt = attempt + 1, remote_id = NULL, submitted_at = NULL, started_at = NULL, "
            "finished_at = NULL, error = NULL, template = coalesce(?, template) "
            f"WHERE state IN ({marks})"
        )
        with self._errors("write the journal"):
            cur = self._conn.execute(sql, [template, *(s.value for s in states)])
            return cur.rowcount


def _batches(items: Iterable[Point], size: int) -> Iterator[list[Point]]:
    batch: list[Point] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stored(row: tuple[Any, ...]) -> StoredJob:
    idx, key, origin, variables, attempt, state, remote_id, sub, start, fin, error, tpl = row
    return StoredJob(
        idx,
        key,
        origin,
        orjson.loads(variables),
        attempt,
        State(state),
        remote_id,
        sub,
        start,
        fin,
        error,
        tpl,
    )
