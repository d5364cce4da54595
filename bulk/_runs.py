"""A run's files on disk: create its journal, or resume it if nothing that matters changed.

A run lives in its folder (``[run] dir``, default ``.bulk/<name>/`` beside the config),
created owner-only (0700: it holds variables, request bodies and job output)::

    journal.sqlite     every point and its job's state (see bulk._journal)
    run.json           written before a run's first job is sent: the highest attempt number
                       any job of this folder may have been sent with
    lock               held (flock) by the bulk process working on the run
    logs/, pids/       the local backend's job output and process ids
    journal-N.sqlite   journals of earlier runs, kept by ``bulk run --restart``

Resuming is refused when the rendered jobs would differ from those already sent: a changed
template, sweep settings, sweep file contents, run name or backend kind. Limits, retry and
tracking policy may change freely.

``bulk retry --template-changed`` is the one way to change the template of a run: the rows
it sends again get a new template version (see bulk._journal), every other row keeps the
version it was planned with, and the run's template fingerprint becomes the new one.

A folder with traces of an earlier run (``run.json``, logs, pid files, archived journals, a
``-wal`` or ``-shm`` left without its database) but no journal has lost its history: starting
afresh there would send every job again, so it is refused. ``--restart`` then starts a new
run anyway, numbering attempts past every one the folder records (new job names, so nothing
of the lost run is mistaken for the new one's). A stray ``-wal`` is never left beside a new
journal: SQLite would replay it into the new file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import bulk._plan._check as plan
from bulk._config import Config, fingerprint_of
from bulk._journal import Journal, State
from bulk._naming import render_context
from bulk._plan._sources import open_sweep_file
from bulk._problems import Problems
from bulk._template import Template, compile_template
from bulk._version import __version__
from bulk.backends import get_kind
from bulk.backends.base import body_validator
from bulk.errors import ConfigError, JournalError

__all__ = [
    "SentMark",
    "fingerprints",
    "missing_journal",
    "note_attempt",
    "open_journal",
    "open_retry",
    "open_run",
    "require_journal",
    "templates",
    "traces",
]

_MARKER = "run.json"
_SIDES = ("-wal", "-shm")

# What each fingerprint covers, in the words of the refusal message.
_WHAT = {
    "fp_job": "the job template",
    "fp_sweep": "the [sweep] settings",
    "fp_files": "the contents of the sweep files",
    "fp_backend": "the backend kind",
}


def fingerprints(cfg: Config) -> dict[str, str]:
    """Hashes of everything that decides which jobs a run sends."""
    files = hashlib.sha256()
    for path in cfg.sweep.files:
        files.update(str(path.name).encode() + b"\0")
        try:
            # Regular files only: /dev/zero would be hashed forever, a FIFO block the run.
            with open_sweep_file(path) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    files.update(chunk)
        except OSError as exc:
            msg = f"cannot read sweep file: {exc.strerror}"
            raise ConfigError(msg, where=str(path)) from None
    return {
        "fp_job": fingerprint_of(cfg.template.source),
        "fp_sweep": fingerprint_of(cfg.raw.get("sweep", {})),
        "fp_files": files.hexdigest()[:16],
        "fp_backend": fingerprint_of(cfg.backend.kind),
    }


def open_run(cfg: Config, *, restart: bool = False) -> tuple[Journal, bool]:
    """The run's journal: resumed if it exists, else built (every row validated first).

    The caller holds the run's lock.

    Args:
        cfg: the run's config.
        restart: archive an existing journal (or the traces of a lost one) and start a new
            run; its jobs get attempt numbers past every earlier one, so no job name is ever
            reused.

    Returns:
        The journal, and whether it was resumed.

    Raises:
        InputErrors: a new run's sweep has problems (nothing is created).
        JournalError: the existing journal does not match the config or is damaged, or it
            is missing from a folder that shows an earlier run (and no restart).
    """
    path = cfg.journal_path
    current = fingerprints(cfg)
    if path.exists() and not restart:
        journal = open_journal(cfg)
        try:
            changed = _changes(journal, current)
            if changed:
                advice = (
                    f"Undo the change to resume, or start a new run: bulk run --restart "
                    f"{cfg.path} (the old journal is kept)"
                )
                if changed == ["fp_job"]:
                    advice += (
                        f"; or send the failed rows again with the changed template: "
                        f"bulk retry --template-changed {cfg.path}"
                    )
                why = "resuming would mix two different runs"
                raise _refusal(cfg, journal, changed, why, advice)
            _record_current_template(cfg, journal, current)
        except BaseException:
            journal.close()
            raise
        return journal, True
    first_attempt = 1
    if traces(cfg.run.dir):
        if not restart:
            raise missing_journal(cfg)
        first_attempt = _highest_attempt(cfg.run.dir) + 1
        _archive(cfg.run.dir)
    return _create(cfg, current, first_attempt), False


def open_journal(cfg: Config) -> Journal:
    """The run's existing journal, checked to be this run's: every command that reads or
    resumes a run opens it here.

    A journal copied or moved from another run's folder (``.bulk/j1/journal.sqlite`` put in
    ``.bulk/j2/``) holds that run's rows, job names and remote ids: resuming, stopping or
    retrying it as this run would act on the other run's jobs, so it is refused. (A journal
    that records no run name, from an older bulk, cannot be checked and is accepted.)

    Raises:
        JournalError: the journal is damaged, or it records another run's name.
    """
    journal = Journal.open(cfg.journal_path)
    try:
        recorded = journal.meta().get("run")
    except BaseException:
        journal.close()
        raise
    if recorded is not None and recorded != cfg.run.name:
        journal.close()
        msg = (
            f"{cfg.journal_path}: this journal belongs to run {recorded!r}, not to run "
            f"{cfg.run.name!r} of {cfg.path} (was it copied or moved here?); using it would "
            f"mix two runs: put it back in its own run's folder, or start a new run: "
            f"bulk run --restart {cfg.path} (the journal is kept)"
        )
        raise JournalError(msg)
    return journal


def require_journal(cfg: Config) -> None:
    """Refuse a command that needs a started run when the run has no journal.

    Raises:
        JournalError: the run has not been started, or its journal was lost (nothing was
            created by checking).
    """
    if not cfg.journal_path.exists():
        raise missing_journal(cfg)


def open_retry(
    cfg: Config, states: Sequence[State], *, template_changed: bool = False
) -> tuple[Journal, int]:
    """``bulk retry``: the run's journal, with its rows in ``states`` put back to pending.

    The caller holds the run's lock. Every reset row gets the next attempt (a new job name)
    and the run's current template version. The template may have changed only when
    ``template_changed`` is given: then every row to be sent again is rendered and
    validated with the new template first, and the new version is recorded together with
    the reset, in one transaction. Given when the template has not changed (running the
    same command again after an interruption), it changes nothing.

    Raises:
        JournalError: the run has not been started, or its sweep or backend changed, or its
            template changed without ``template_changed``, or a row still to be finished
            needs a template version this journal does not hold.
        InputErrors: a row to be sent again does not render or validate with the new
            template (nothing is changed).
    """
    require_journal(cfg)
    journal = open_journal(cfg)
    try:
        current = fingerprints(cfg)
        changed = _changes(journal, current)
        if changed and changed != ["fp_job"]:
            advice = (
                f"bulk retry sends failed rows of the same sweep again: undo the change to "
                f"retry, or start a new run: bulk run --restart {cfg.path} (the old journal "
                f"is kept)"
            )
            raise _refusal(cfg, journal, changed, "the rows are no longer the same", advice)
        if changed and not template_changed:
            advice = (
                f"To send the failed rows again with the changed template: bulk retry "
                f"--template-changed {cfg.path}; or undo the change; or start a new run: "
                f"bulk run --restart {cfg.path} (the old journal is kept)"
            )
            raise _refusal(cfg, journal, changed, "retrying would mix two templates", advice)
        runs_next = journal.max_attempt() + 1
        if not changed:
            _record_current_template(cfg, journal, current)
            note_attempt(cfg.run.dir, runs_next)  # before any job is sent with it
            return journal, journal.reset_failed(states, template=journal.template_version())
        _check_retried_rows(cfg, journal, states)
        held = journal.template_sources()
        unfinished = sum(n for state, n in journal.counts().items() if not State(state).terminal)
        if journal.template_version() not in held and unfinished:
            msg = (
                f"{cfg.journal_path}: some rows are not finished yet and were planned "
                f"with the previous job template, whose text this journal (made by an "
                f"older bulk) does not hold; undo the change and finish them with "
                f"bulk run {cfg.path} first, then retry with the changed template"
            )
            raise JournalError(msg)
        version = journal.template_version() + 1
        now = datetime.now(UTC).isoformat(timespec="seconds")
        note_attempt(cfg.run.dir, runs_next)
        with journal.transaction():
            journal.add_template(version, current["fp_job"], cfg.template.source, now)
            journal.set_meta({"fp_job": current["fp_job"], "template_changed": now})
            count = journal.reset_failed(states, template=version)
    except BaseException:
        journal.close()
        raise
    return journal, count


def templates(cfg: Config, journal: Journal) -> dict[int, Template]:
    """Every template version the journal holds, compiled, by version.

    Rows are rendered (and looked up) with their own version's text, so a row is found as
    it was sent even when the config has changed since (``bulk stop`` does not compare
    them). Only a handful of versions exist (one per ``bulk retry --template-changed``), so
    all are compiled rather than finding which ones unfinished rows use (a scan of every
    row: 0.6-0.8 s on 10⁶ rows). The current version of a journal made before template
    versions has no text until a resume whose config matches it records it: its rows then
    render with the config's template, as they always did. Each is compiled as the config's
    is, with the fields its backend kind quotes.
    """
    quoted = get_kind(cfg.backend.kind).quoted_fields
    return {v: compile_template(source, quoted) for v, source in journal.template_sources().items()}


def _changes(journal: Journal, current: dict[str, str]) -> list[str]:
    """The fingerprints (``fp_*``) that differ between the journal and the config."""
    meta = journal.meta()
    return [k for k, v in current.items() if meta.get(k) != v]


def _refusal(
    cfg: Config, journal: Journal, changed: list[str], why: str, advice: str
) -> JournalError:
    meta = journal.meta()
    if changed == ["fp_job"] and "template_changed" in meta:
        since = f"the template was last changed ({meta['template_changed']})"
    else:
        since = f"this run started ({meta.get('created', 'earlier')})"
    what = ", ".join(_WHAT[k] for k in changed)
    return JournalError(f"{cfg.path}: {what} changed since {since}; {why}. {advice}")


def _record_current_template(cfg: Config, journal: Journal, current: dict[str, str]) -> None:
    """Keep the text of the run's current template (a journal of schema 1 lacks it)."""
    version = journal.template_version()
    if version not in journal.template_sources():
        now = datetime.now(UTC).isoformat(timespec="seconds")
        journal.add_template(version, current["fp_job"], cfg.template.source, now)


def _check_retried_rows(cfg: Config, journal: Journal, states: Sequence[State]) -> None:
    """Render and validate every row ``bulk retry`` would send, with the config's template.

    Raises:
        InputErrors: one compiler-style line per problem, as ``bulk plan`` reports them.
    """
    kind = get_kind(cfg.backend.kind)
    result = plan.PlanResult()
    problem = kind.check_template(cfg.template)
    if problem:
        result.add_error(ConfigError(problem, where=cfg.template_where, field="job"))
        result.raise_if_errors()
    validate = body_validator(kind, cfg.backend.options)
    for row in journal.iter_jobs(states):
        try:
            body = cfg.template.render(render_context(row.point, cfg.run.name, row.attempt + 1))
        except ConfigError as exc:
            origin = plan.origin_where(cfg, row.origin)
            result.add_error(ConfigError(exc.problem, where=origin, field=exc.field))
            continue
        problems = Problems()
        validate(body, problems)
        origin = plan.origin_where(cfg, row.origin)
        for item in problems.items:
            result.add_error(ConfigError(item.message, where=origin, field=item.field))
    result.raise_if_errors()


def traces(run_dir: Path) -> list[str]:
    """What in ``run_dir`` shows that a run has sent jobs from it (empty: nothing does).

    Neither ``lock`` (a run refused for bad input takes it too) nor a journal still being
    built (nothing is sent before it is complete) counts.
    """
    if not run_dir.is_dir():
        return []
    try:
        names = set(os.listdir(run_dir))
        found = [
            n for n in ("journal.sqlite", *(f"journal.sqlite{s}" for s in _SIDES)) if n in names
        ]
        if _MARKER in names:
            found.append(_MARKER)
        archived = sorted(n for n in names if n.startswith("journal-") and ".sqlite" in n)
        if archived:
            found.append(f"{len(archived)} archived journal file(s)")
        found.extend(f"{sub}/" for sub in ("logs", "pids") if _has_files(run_dir / sub))
    except OSError as exc:
        msg = f"{run_dir}: cannot read the run folder: {exc.strerror}"
        raise JournalError(msg) from None
    return found


def _has_files(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as entries:
        return any(True for _ in entries)


def missing_journal(cfg: Config) -> JournalError:
    """The error for a command that needs the run's journal and finds none."""
    found = traces(cfg.run.dir)
    if not found:
        msg = f"{cfg.journal_path}: no journal: this run has not been started (bulk run {cfg.path})"
        return JournalError(msg)
    where = cfg.run.dir
    msg = (
        f"{cfg.journal_path}: the run's journal is missing, but {where} holds traces of an "
        f"earlier run ({', '.join(found)}): its history was lost, and starting afresh would "
        f"send its jobs again. Put the journal back to resume; or start a new run with "
        f"bulk run --restart (every job runs again, under new names); or move or delete "
        f"{where} to start afresh"
    )
    return JournalError(msg)


def note_attempt(run_dir: Path, attempt: int) -> None:
    """Record, before jobs are sent with it, that ``attempt`` may be used in ``run_dir``.

    ``run.json`` keeps the highest such number, outside the journal: if the journal is lost,
    ``--restart`` still numbers its attempts past every one used here.
    """
    if attempt <= _noted_attempt(run_dir):
        return
    _write_marker(
        run_dir, {**_read_marker(run_dir), "attempt": attempt}, "the run's attempt number"
    )


class SentMark:
    """How far a run may have sent, kept in ``run.json`` outside the journal.

    A journal that loses its ``-wal`` after a crash forgets its latest records: rows sent
    just before read ``pending`` again. On a service that does not refuse a second job of
    the same name (Gongji) the engine raises this mark, durably, before it sends a row at or
    past it, and clears it when a session ends with every record committed; after an
    unclean end, every pending row below the mark is looked up by name before it is sent,
    and no row at or past it can have been sent. (Kept in the journal, the mark would be
    lost with the very records it stands for.)
    """

    def __init__(self, run_dir: Path):
        self._run_dir = run_dir

    def below(self) -> int | None:
        """Every row sent since the last clean end has a smaller index (None: not known)."""
        value = _read_marker(self._run_dir).get("sent_below")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def raise_to(self, value: int) -> None:
        """Record (fsynced) that rows below ``value`` may be sent.

        Raises:
            JournalError: the mark cannot be written (nothing may be sent past the old one).
        """
        data = {**_read_marker(self._run_dir), "sent_below": value}
        _write_marker(self._run_dir, data, "how far the run has sent")

    def clear(self) -> None:
        """Record that the journal holds every row sent (a session ended cleanly)."""
        self.raise_to(0)


def _read_marker(run_dir: Path) -> dict[str, Any]:
    try:
        data = orjson.loads((run_dir / _MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(run_dir: Path, data: dict[str, Any], what: str) -> None:
    """Replace ``run.json`` atomically and durably (fsync of the file and of the folder)."""
    target = run_dir / _MARKER
    temporary = run_dir / f"{_MARKER}.new"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(target)
        _fsync_dir(run_dir)
    except OSError as exc:
        msg = f"{target}: cannot record {what}: {exc.strerror}"
        raise JournalError(msg) from None


def _noted_attempt(run_dir: Path) -> int:
    value = _read_marker(run_dir).get("attempt", 0)
    return value if isinstance(value, int) else 0


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _highest_attempt(run_dir: Path) -> int:
    """The highest attempt number the folder records: run.json, the journal, the archives."""
    highest = _noted_attempt(run_dir)
    journals = [run_dir / "journal.sqlite", *sorted(run_dir.glob("journal-*.sqlite"))]
    for path in journals:
        if path.exists():
            # A damaged or foreign file says nothing: run.json still covers what was sent.
            with contextlib.suppress(JournalError), Journal.open(path, check=False) as journal:
                highest = max(highest, journal.max_attempt())
    return highest


def _archive(run_dir: Path) -> None:
    """Move the journal and its side files aside, as ``journal-N.sqlite`` (first free N)."""
    path = run_dir / "journal.sqlite"
    n = 1
    while any(_with_side(run_dir / f"journal-{n}.sqlite", side).exists() for side in ("", *_SIDES)):
        n += 1
    target = run_dir / f"journal-{n}.sqlite"
    try:
        for side in ("", *_SIDES):  # a -wal without its journal too: never replayed into a new one
            if _with_side(path, side).exists():
                _with_side(path, side).rename(_with_side(target, side))
    except OSError as exc:
        msg = f"{run_dir}: cannot move the old journal aside to restart: {exc.strerror}"
        raise JournalError(msg) from None


def _with_side(path: Path, side: str) -> Path:
    return path.with_name(path.name + side)


def _create(cfg: Config, current: dict[str, str], first_attempt: int) -> Journal:
    final = cfg.journal_path
    building = final.with_name("journal.building.sqlite")
    _remove_database(building)  # a fill cut short by a crash: rebuilt from the sweep
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {
        "run": cfg.run.name,
        "config": str(cfg.path),
        "backend": cfg.backend.kind,
        "bulk_version": __version__,
        "created": now,
        **current,
    }
    journal = Journal.create(building, meta)
    try:
        # The template's text is kept: after `bulk retry --template-changed`, rows still
        # unfinished under this version are rendered (and looked up) with it.
        journal.add_template(1, current["fp_job"], cfg.template.source, now)
        result = plan.check(cfg, journal, samples=0)
        result.raise_if_errors()
        if first_attempt > 1:
            journal.set_first_attempt(first_attempt)
    except BaseException:
        with contextlib.suppress(JournalError):
            journal.close()
        _remove_database(building)
        raise
    journal.close()  # checkpoints the WAL into the file before it is renamed
    for side in _SIDES:
        if _with_side(final, side).exists():  # SQLite would replay it into the new journal
            _remove_database(building)
            msg = f"{_with_side(final, side)}: left from an earlier journal; move it aside"
            raise JournalError(msg)
    note_attempt(cfg.run.dir, first_attempt)
    try:
        building.rename(final)
    except OSError as exc:
        msg = f"{final}: cannot put the new journal in place: {exc.strerror}"
        raise JournalError(msg) from None
    return Journal.open(final, check=False)  # just built: no need to read it all again


def _remove_database(path: Path) -> None:
    try:
        for file in (path, *(_with_side(path, side) for side in _SIDES)):
            file.unlink(missing_ok=True)
    except OSError as exc:
        msg = f"{path}: cannot remove an unfinished journal: {exc.strerror}"
        raise JournalError(msg) from None
