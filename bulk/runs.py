"""A run's files on disk: create its journal, or resume it if nothing that matters changed.

A run lives in its folder (``[run] dir``, default ``.bulk/<name>/`` beside the config)::

    journal.sqlite     every point and its job's state (see journal.py)
    lock               held (flock) by the bulk process working on the run
    logs/, pids/       the local backend's job output and process ids
    journal-N.sqlite   journals of earlier runs, kept by ``bulk run --restart``

Resuming is refused when the rendered jobs would differ from those already sent: a changed
template, sweep settings, sweep file contents, run name or backend kind. Limits, retry and
tracking policy may change freely.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from bulk import __version__, plan
from bulk.config import Config, fingerprint_of
from bulk.errors import ConfigError, JournalError
from bulk.journal import Journal
from bulk.sweep import open_sweep_file

__all__ = ["fingerprints", "open_run"]

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
            _check_resume(cfg, old, current)
            return old, True
        first_attempt = old.max_attempt() + 1
        old.close()
        _archive(path)
    return _create(cfg, current, first_attempt), False


def _check_resume(cfg: Config, journal: Journal, current: dict[str, str]) -> None:
    meta = journal.meta()
    changed = [_WHAT[k] for k, v in current.items() if meta.get(k) != v]
    if changed:
        journal.close()
        msg = (
            f"{cfg.path}: {', '.join(changed)} changed since this run started "
            f"({meta.get('created', 'earlier')}); resuming would mix two different runs. "
            f"Undo the change to resume, or add --restart to start a new run "
            f"(the old journal is kept)"
        )
        raise JournalError(msg)


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
