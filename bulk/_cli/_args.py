"""argparse pieces: a parser with one-line errors and the types of option values."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn, TypeAlias

from bulk._cli._common import EXIT_INPUT, err


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``bulk run: error: argument ...: what is wrong``."""

    def error(self, message: str) -> NoReturn:
        err(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_INPUT)


# The subcommands of a Parser (argparse has no public name for it).
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


# The highest TCP port number (ports are 16-bit).
MAX_PORT = 65535


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_PORT:
        msg = f"expected a port number from 0 to {MAX_PORT} (0: any free port), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# Progress lines more often than this are noise (an interval of 0 used to be a busy loop:
# measured 500,000 lines in 2 s); the crash tests read lines every 0.02 s. An interval of 0
# means no progress lines (the summary at the end is still printed).
MIN_PROGRESS_INTERVAL_S = 0.01


def progress_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or MIN_PROGRESS_INTERVAL_S <= value < math.inf):
        msg = (
            f"expected seconds between progress lines, at least {MIN_PROGRESS_INTERVAL_S} "
            f"(0: no progress lines), got {text!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a whole number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# A refresh of `bulk status --watch` reads a few indexed counts; more often than this would
# only load the journal's disk for a view nobody can read that fast.
MIN_WATCH_INTERVAL_S = 0.05


def watch_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not MIN_WATCH_INTERVAL_S <= value < math.inf:
        msg = f"expected seconds between refreshes, at least {MIN_WATCH_INTERVAL_S}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def pushgateway_url(text: str) -> str:
    """An http(s) URL with a host and no user or password (it would be shown in messages)."""
    from urllib.parse import urlsplit

    if "@" in text.partition("://")[2].partition("/")[0]:
        # The text is not repeated: it holds a password, or may.
        msg = "a user or password in the URL is not supported; give http://HOST:PORT"
        raise argparse.ArgumentTypeError(msg)
    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        msg = f"expected an http:// or https:// URL such as http://127.0.0.1:9091, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text.rstrip("/")
