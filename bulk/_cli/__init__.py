"""The ``bulk`` command line (private: ``bulk --help`` is its interface)."""

from bulk._cli._main import (
    main,
)

__all__ = [
    "main",
]
