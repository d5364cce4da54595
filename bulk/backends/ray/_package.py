"""A local ``working_dir`` as Ray ships one: a deterministic zip, uploaded once by its hash.

``ray job submit --working-dir DIR`` zips DIR, uploads it to the head's GCS as
``_ray_pkg_<hash>.zip`` (``PUT /api/packages/gcs/<name>``, skipped when ``GET`` finds it)
and sends ``gcs://_ray_pkg_<hash>.zip`` in the job's ``runtime_env``. bulk does the same, once
per run and directory. Kept apart from the Ray client: openYuanrong takes a zip of a working
directory too (``file:///...zip``), and would share the packing.

The zip is deterministic: entries sorted by path, every timestamp fixed (1980-01-01, the
earliest a zip can hold), modes kept (an executable script stays executable), so the same
folder always gives the same bytes and the same name, and a resumed run uploads nothing. The
hash is the SHA-1 of the zip's bytes (Ray hashes the files' paths and contents itself; any
content hash names a package uniquely, which is all the name is for). Left out, as Ray
leaves them out: ``.git`` and ``__pycache__`` folders anywhere, and whatever the
``runtime_env.excludes`` patterns match (``fnmatch`` against the path relative to the folder,
or any one of its parts: ``*.log``, ``data/``, ``build``).

What may be shipped is bounded, because a ``working_dir`` may come from a sweep's rows (a
hostile CSV must not make bulk upload ``/etc`` or ``~/.ssh``), and checked by
:func:`inspect` at plan time, once per distinct folder, and again before packing:

- **Where.** The folder, its symbolic links resolved, must be the config's folder or inside
  it (:func:`local_folder`): an absolute path elsewhere, ``..`` escaping it or a link
  leading out of it is refused, as is a folder that does not exist.
- **Links inside.** A symbolic link to a file inside the folder is stored as that file's
  contents (Ray's unzip would not recreate a link). Any other link (to a folder, out of the
  folder, dangling, a loop) is refused, naming it: bulk never follows one, so a loop cannot
  hang it and nothing outside the folder is read. Excluding it (``excludes``) is the way out.
- **Size.** The files' total size after excludes is capped at :data:`MAX_FOLDER_BYTES`
  (100 MiB: Ray's docs advise at most 100 MiB, and refuse packages over ~500 MiB); the walk
  stops as soon as the cap is passed, and packing reads at most that many bytes (a file that
  grew since is refused), so the zip held in memory stays below ~100 MiB.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALWAYS_EXCLUDED",
    "MAX_FOLDER_BYTES",
    "PKG_PREFIX",
    "Package",
    "PackageError",
    "inspect",
    "local_folder",
    "pack",
]

PKG_PREFIX = "_ray_pkg_"
ALWAYS_EXCLUDED = (".git", "__pycache__")
_EPOCH = (1980, 1, 1, 0, 0, 0)
MAX_FOLDER_BYTES = 100 * 1024 * 1024  # the files of one working_dir, after excludes
_MIB = 1024 * 1024
_CHUNK = 1024 * 1024
WHERE_ALLOWED = "allowed: a folder inside the config's folder, or a URI (gcs://, s3://, https://)"


class PackageError(ValueError):
    """A working_dir that cannot be shipped; the message says why and what is allowed."""


@dataclass(frozen=True, slots=True)
class Package:
    """A packed folder: its GCS name (``_ray_pkg_<sha1>.zip``) and the zip's bytes."""

    name: str
    data: bytes

    @property
    def uri(self) -> str:
        """What a job's ``runtime_env.working_dir`` says: ``gcs://<name>``."""
        return f"gcs://{self.name}"


def local_folder(base: Path, working_dir: str) -> Path:
    """The folder a local ``working_dir`` names, relative to ``base`` (the config's folder),
    its links resolved.

    Raises:
        PackageError: it is not inside ``base`` (or ``base`` itself), or is not a folder.
    """
    root = base.resolve()
    given = base / working_dir
    try:
        folder = given.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a dangling link, a loop (RuntimeError < 3.13)
        msg = f"{working_dir!r}: no such folder; {WHERE_ALLOWED}"
        raise PackageError(msg) from None
    if not folder.is_relative_to(root):
        plain = Path(os.path.normpath(given.absolute()))
        via = "" if folder == plain else f" (a symbolic link to {folder})"
        msg = f"{working_dir!r} is outside the config's folder{via}; {WHERE_ALLOWED}"
        raise PackageError(msg)
    if not folder.is_dir():
        msg = f"{working_dir!r} is not a folder; {WHERE_ALLOWED}"
        raise PackageError(msg)
    return folder


def inspect(folder: Path, excludes: Iterable[str] = ()) -> list[tuple[str, Path, int]]:
    """The files :func:`pack` would store, as (relative posix path, path, size), sorted.

    Raises:
        PackageError: a link that is not to a file inside the folder, or more than
            :data:`MAX_FOLDER_BYTES` of files.
        OSError: the folder or a file in it cannot be read.
    """
    root = folder.resolve(strict=True)
    if not root.is_dir():
        raise NotADirectoryError(0, "not a directory", str(folder))
    patterns = [p.rstrip("/") for p in excludes if p.strip("/")]
    found: list[tuple[str, Path, int]] = []
    total = 0

    def fail(err: OSError) -> None:
        raise err

    # os.walk follows no link to a folder (followlinks=False): a link is only ever looked at.
    for directory, dirs, files in os.walk(root, onerror=fail):
        base = Path(directory)
        rel_dir = base.relative_to(root)
        dirs[:] = sorted(d for d in dirs if not _excluded((rel_dir / d).as_posix(), patterns))
        for name in dirs:
            if (base / name).is_symlink():
                _bad_link(root, (rel_dir / name).as_posix(), base / name)
        for name in sorted(files):
            relative = (rel_dir / name).as_posix()
            if _excluded(relative, patterns):
                continue
            path = base / name
            size = _size(root, relative, path)
            if size is None:
                continue
            total += size
            if total > MAX_FOLDER_BYTES:
                msg = (
                    f"{folder}: more than {MAX_FOLDER_BYTES // _MIB} MiB of files after "
                    f"excludes (at {relative}); bulk ships at most {MAX_FOLDER_BYTES // _MIB} "
                    "MiB (Ray advises at most 100 MiB); leave large files out "
                    "(runtime_env.excludes) or give a URI (gcs://, s3://, https://)"
                )
                raise PackageError(msg)
            found.append((relative, path, size))
    return sorted(found)


def _size(root: Path, relative: str, path: Path) -> int | None:
    """The size of the regular file at ``path``, or None for a socket or a fifo (nothing
    Ray ships either); a link must lead to a file inside ``root``."""
    if path.is_symlink():
        _link_inside(root, relative, path)
    info = path.stat()
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _link_inside(root: Path, relative: str, path: Path) -> None:
    """A link to a file inside ``root`` is fine; anything else is refused."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        target = None
    if target is None or not target.is_relative_to(root) or not target.is_file():
        _bad_link(root, relative, path)


def _bad_link(root: Path, relative: str, path: Path) -> None:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    msg = (
        f"{root}: {relative} is a symbolic link (to {target}); bulk follows links only to "
        "files inside the folder; leave it out (runtime_env.excludes) or replace it by a copy"
    )
    raise PackageError(msg)


def pack(folder: Path, excludes: Iterable[str] = ()) -> Package:
    """Zip ``folder`` deterministically (see the module docstring).

    Raises:
        OSError: the folder or a file in it cannot be read, or it is not a folder.
        PackageError: see :func:`inspect`; or a file grew past the cap while being read.
    """
    files = inspect(folder, excludes)
    budget = MAX_FOLDER_BYTES
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, path, _size in files:
            info = zipfile.ZipInfo(relative, date_time=_EPOCH)
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(path.stat().st_mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as source, archive.open(info, "w") as sink:
                while chunk := source.read(min(_CHUNK, budget + 1)):
                    budget -= len(chunk)
                    if budget < 0:
                        msg = f"{folder}: grew past {MAX_FOLDER_BYTES // _MIB} MiB while packed"
                        raise PackageError(msg)
                    sink.write(chunk)
    data = buffer.getvalue()
    return Package(f"{PKG_PREFIX}{hashlib.sha1(data, usedforsecurity=False).hexdigest()}.zip", data)


def _excluded(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    if any(part in ALWAYS_EXCLUDED for part in parts):
        return True
    return any(
        fnmatch.fnmatchcase(relative, p) or any(fnmatch.fnmatchcase(part, p) for part in parts)
        for p in patterns
    )
