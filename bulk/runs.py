"""A run's files on disk: create its journal, or resume it if nothing that matters changed.

A run lives in its folder (``[run] dir``, default ``.bulk/<name>/`` beside the config)::

    journal.sqlite     every point and its job's state (see journal.py)
    lock               held (flock) by the bulk process working on the run
    logs/, pids/       the local backend's job output and process ids
    journal-N.sqlite   journals of earlier runs, kept by ``bulk run --restart``

Resuming is refused when the rendered jobs would differ from those already sent: a changed
template, sweep settings, sweep file contents, run name or backend kind. Limits, retry and
tracking policy may change freely.

``bulk retry --template-changed`` is the one way to change the template of a run: the rows
it sends again get a new template version (see journal.py), every other row keeps the
version it was planned with, and the run's template fingerprint becomes the new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bulk import __version__, plan
from bulk.backends import get_kind
from bulk.config import Config, fingerprint_of
from bulk.errors import ConfigError, JournalError
from bulk.journal import Journal, State
from bulk.spec import Template, compile_template
from bulk.validate import Problems

__all__ = ["fingerprints", "open_retry", "open_run", "require_journal", "templates"]

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
            with path.open("rb") as f:
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
        restart: archive an existing journal and start a new run; its jobs get attempt
            numbers past every earlier one, so no job name is ever reused.

    Returns:
        The journal, and whether it was resumed.

    Raises:
        InputErrors: a new run's sweep has problems (nothing is created).
        JournalError: the existing journal does not match the config (and no restart).
    """
    path = cfg.journal_path
    current = fingerprints(cfg)
    first_attempt = 1
    if path.exists():
        old = Journal.open(path)
        if not restart:
            changed = _changes(old, current)
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
                error = _refusal(cfg, old, changed, "resuming would mix two different runs", advice)
                old.close()
                raise error
            _record_current_template(cfg, old, current)
            return old, True
        first_attempt = old.max_attempt() + 1
        old.close()
        _archive(path)
    return _create(cfg, current, first_attempt), False


def require_journal(cfg: Config) -> None:
    """Refuse a command that needs a started run when the run has no journal.

    Raises:
        JournalError: the run has not been started (nothing was created by checking).
    """
    if not cfg.journal_path.exists():
        msg = f"{cfg.journal_path}: no journal: this run has not been started (bulk run {cfg.path})"
        raise JournalError(msg)


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
    journal = Journal.open(cfg.journal_path)
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
        if not changed:
            _record_current_template(cfg, journal, current)
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
    for row in journal.iter_jobs(states):
        try:
            body = cfg.template.render(
                plan.render_context(row.point, cfg.run.name, row.attempt + 1)
            )
        except ConfigError as exc:
            result.add_error(ConfigError(exc.problem, where=row.origin, field=exc.field))
            continue
        problems = Problems()
        kind.validate(body, problems)
        for item in problems.items:
            result.add_error(ConfigError(item.message, where=row.origin, field=item.field))
    result.raise_if_errors()


def _archive(path: Path) -> None:
    n = 1
    while (target := path.with_name(f"journal-{n}.sqlite")).exists():
        n += 1
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))


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
        journal.close()
        _remove_database(building)
        raise
    journal.close()  # checkpoints the WAL into the file before it is renamed
    building.rename(final)
    return Journal.open(final)


def _remove_database(path: Path) -> None:
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)
