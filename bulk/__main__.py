"""``python -m bulk``: the ``bulk`` executable."""

from __future__ import annotations

from bulk._cli import console_main

console_main()
