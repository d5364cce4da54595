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
or any one of its parts: ``*.log``, ``data/``, ``build``). Symbolic links are followed only
to files inside the folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ALWAYS_EXCLUDED", "PKG_PREFIX", "Package", "pack"]

PKG_PREFIX = "_ray_pkg_"
ALWAYS_EXCLUDED = (".git", "__pycache__")
_EPOCH = (1980, 1, 1, 0, 0, 0)
MAX_PACKAGE_BYTES = 512 * 1024 * 1024  # Ray's own limit on a working_dir package (GCS)


@dataclass(frozen=True, slots=True)
class Package:
    """A packed folder: its GCS name (``_ray_pkg_<sha1>.zip``) and the zip's bytes."""

    name: str
    data: bytes

    @property
    def uri(self) -> str:
        """What a job's ``runtime_env.working_dir`` says: ``gcs://<name>``."""
        return f"gcs://{self.name}"


def pack(folder: Path, excludes: Iterable[str] = ()) -> Package:
    """Zip ``folder`` deterministically (see the module docstring).

    Raises:
        OSError: the folder or a file in it cannot be read, or it is not a folder.
        ValueError: the zip would be larger than Ray accepts (512 MiB).
    """
    if not folder.is_dir():
        raise NotADirectoryError(0, "not a directory", str(folder))
    patterns = [p.rstrip("/") for p in excludes if p.strip("/")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, path in _files(folder, patterns):
            info = zipfile.ZipInfo(relative, date_time=_EPOCH)
            mode = path.stat().st_mode
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            if buffer.tell() > MAX_PACKAGE_BYTES:
                msg = f"{folder} packs to more than 512 MiB, more than Ray accepts"
                raise ValueError(msg)
    data = buffer.getvalue()
    return Package(f"{PKG_PREFIX}{hashlib.sha1(data, usedforsecurity=False).hexdigest()}.zip", data)


def _files(folder: Path, patterns: list[str]) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``folder`` not excluded, as (relative posix path, path),
    sorted by relative path."""
    root = folder.resolve()
    found: list[tuple[str, Path]] = []
    for directory, dirs, files in os.walk(folder):
        base = Path(directory)
        rel_dir = base.relative_to(folder)
        dirs[:] = [d for d in dirs if not _excluded((rel_dir / d).as_posix(), patterns)]
        for name in files:
            relative = (rel_dir / name).as_posix()
            path = base / name
            if _excluded(relative, patterns) or not path.is_file():
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                continue
            found.append((relative, path))
    return iter(sorted(found))


def _excluded(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    if any(part in ALWAYS_EXCLUDED for part in parts):
        return True
    return any(
        fnmatch.fnmatchcase(relative, p) or any(fnmatch.fnmatchcase(part, p) for part in parts)
        for p in patterns
    )
