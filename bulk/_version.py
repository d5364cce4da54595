"""bulk's version, from the installed distribution's metadata (one place, imported by all)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("bulk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
