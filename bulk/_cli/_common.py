"""What every ``bulk`` command shares: exit codes, the error channel, output that fails
in one line, and the error for an address that cannot be listened on."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bulk._logs import json_on_stderr
from bulk.errors import (
    BulkError,
    ConfigError,
)

if TYPE_CHECKING:
    from rich.console import Console


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def err(line: str) -> None:
    # A diagnostic must never take a run down: a reader that went away (a closed pipe) only
    # loses the message; the journal is the record.
    sink = json_on_stderr()
    if sink is not None:  # --log-format json on stderr: every line there is a JSON object
        sink(line)
        return
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)  # noqa: T201 - the CLI's own error channel


def stdout_console() -> Console:
    """A rich console on stdout that reports a closed pipe like every other write does.

    rich's own handling of a reader that went away (``bulk status | head -1``) is to exit
    with status 1; here it raises ``BrokenPipeError``, which :func:`main` turns into a quiet
    exit 0, as for ``plan --json`` and ``export``.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console(highlight=False)


class OutputError(BulkError):
    """The command's output could not be written (a full disk, a bad ``-o`` path)."""


@contextlib.contextmanager
def output(target: Path | None = None) -> Iterator[None]:
    """Turn a failed write to stdout (or ``target``) into a one-line error (exit 2).

    stdout is flushed before leaving, so that no write error is left for the interpreter
    to meet at exit. A closed pipe is not a failure: ``BrokenPipeError`` passes through to
    :func:`main`, which exits 0.
    """
    try:
        yield
        if target is None:
            sys.stdout.flush()
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise output_error(exc, target) from None


def output_error(exc: OSError, target: Path | None = None) -> OutputError:
    where = "standard output" if target is None else str(target)
    return OutputError(f"cannot write {where}: {reason(exc)}")


def reason(exc: OSError) -> str:
    """What went wrong, in lower case, without the errno number or the file name."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        text = exc.strerror or str(exc)
    else:
        text = os.strerror(exc.errno)  # uvloop's strerror repeats the address, for one
    return text[:1].lower() + text[1:]


def listen_error(prog: str, option: str, host: str, port: int, exc: OSError) -> ConfigError:
    """An address that cannot be listened on, as a one-line argument error (exit 2)."""
    if option == "--host":
        advice = "give an address of this machine, such as 127.0.0.1"
    else:
        advice = "choose another port, or 0 to let the OS choose"
    msg = f"cannot listen on {host}:{port}: {reason(exc)}; {advice}"
    return ConfigError(msg, where=f"{prog}: error: argument {option}")
