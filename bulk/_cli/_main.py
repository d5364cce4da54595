"""``main()``: one ``bulk`` command, its errors as one line each, and its exit code.

Exit codes: 0 every job succeeded (or the command did what it was asked), 1 some jobs failed,
2 bad config or input (nothing was sent), or output that cannot be written, 3 the service
could not be reached within the retry budget (rows left unsent; rerun resumes), 130
interrupted. A reader that goes away (a closed pipe) is not a failure: exit 0, no message.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bulk._cli._common import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, err
from bulk._cli._parser import build_parser
from bulk.errors import (
    BulkError,
    ConfigError,
    InputErrors,
    OutageError,
    ThrottledError,
    UnreachableError,
)

__all__ = ["console_main", "main"]


def console_main() -> NoReturn:
    """The ``bulk`` executable (the console script ``pyproject.toml`` names, and
    ``python -m bulk``): tune the garbage collector for a process that is bulk's alone,
    then run the command in ``sys.argv`` and exit with its code.

    The tuning is process-wide, so :func:`main`, which a program or a test calls in its
    own process, leaves it alone.
    """
    # bulk allocates millions of short-lived dicts and lists and almost never a reference
    # cycle: a larger first GC generation spares most collections (measured: plan pass
    # 82k -> 89k points/s). Objects alive after start-up are frozen out of collections.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bulk`` command.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit code.
    """
    _ensure_standard_streams()
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(arguments)
    try:
        args = parser.parse_args(arguments)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_INPUT
        code: int = args.func(args)
    except SystemExit as exc:  # argparse: --help, --version, or a bad argument (one line)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    except (BulkError, MemoryError, KeyboardInterrupt, BrokenPipeError) as exc:
        return _stopped_by(exc)
    return code


_OUT_OF_MEMORY = (
    "bulk: error: out of memory; lower [sweep] max_jobs or split the sweep into several "
    "runs, or give bulk more memory (a run resumes where it stopped)"
)


def _stopped_by(exc: BaseException) -> int:
    """Say in one line (never a traceback) what stopped the command; its exit code."""
    if isinstance(exc, BrokenPipeError):
        # The reader went away (`bulk plan --json | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    code = EXIT_INPUT
    if isinstance(exc, InputErrors):
        lines = exc.lines()
    elif isinstance(exc, ConfigError):
        lines = [str(exc)]
    elif isinstance(exc, MemoryError):
        # Whatever ran out (a sweep, a value, a template bigger than the machine): one line,
        # never a traceback. A run's journal holds what was committed; the command resumes.
        lines = [_OUT_OF_MEMORY]
    elif isinstance(exc, KeyboardInterrupt):
        lines, code = ["bulk: interrupted"], EXIT_INTERRUPTED
    else:  # any other BulkError: a refusal, or a service out of reach
        lines = [f"bulk: error: {exc}"]
        if isinstance(exc, OutageError | UnreachableError | ThrottledError):
            code = EXIT_UNREACHABLE  # out of reach, or refusing us, for retry.budget_s
    for line in lines:
        err(line)
    return code


def _ensure_standard_streams() -> None:
    """Put /dev/null on a standard descriptor that was closed (``bulk run 2>&-``, a daemon).

    Otherwise the next file bulk opens (the run's lock, a job's log) would get descriptor 1
    or 2, and whatever is printed would land in it; and Python sets ``sys.stderr`` to None,
    which makes ``print(file=sys.stderr)`` write to stdout. A closed stream is treated like
    /dev/null: its output is dropped and the command does its work (as with a closed pipe).
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            stream = open(fd, mode, closefd=False)  # noqa: SIM115 - kept for bulk's whole life
            setattr(sys, name, stream)
