"""A run's events (start and end, throttles, retries, failures, notes) as log records, and
``--log-format``/``--log-file``: where they go and in which form.

Events are records of the ``bulk.events`` logger, with the event's name and fields attached
(``extra``). That logger has a ``NullHandler``, so by default (``--log-format text``, no
``--log-file``) nothing new is shown and bulk's output is as it always was; a program using
:func:`bulk.run` sees them through its own logging set-up. :func:`configure` sends them, and
every other record of the ``bulk`` logger, to stderr or a file:

- ``json``: one JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``event``, ``run``,
  ``message``, then the event's fields. On stderr, the command's other lines (notes, the
  summary, errors) become ``message`` events too, so that every line parses.
- ``text`` with ``--log-file``: ``time level event message key=value...`` lines in the file.

Fields are counts, names, reasons and the like, never a credential: the same values the
journal holds.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import logging.handlers
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Literal, TextIO

import orjson

__all__ = ["EVENTS", "LogFormat", "configure", "event", "json_on_stderr"]

EVENTS = logging.getLogger("bulk.events")
EVENTS.addHandler(logging.NullHandler())

LogFormat = Literal["text", "json"]

# Set while JSON lines go to stderr: the CLI's own lines (``err``) go through it too.
_stderr_sink: Callable[[str], None] | None = None


def event(name: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event ``name`` (``message``: the same in words) with its fields."""
    if EVENTS.isEnabledFor(level):
        EVENTS.log(level, "%s", message, extra={"event": name, "fields": fields})


def json_on_stderr() -> Callable[[str], None] | None:
    """Where a line meant for stderr goes while JSON events go there (None: stderr itself)."""
    return _stderr_sink


class _Json(logging.Formatter):
    def __init__(self, run: str):
        super().__init__()
        self._run = run

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "run": self._run,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            line.setdefault(key, value)
        return orjson.dumps(line, default=str).decode()


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        name = getattr(record, "event", "log")
        return f"{_time(record)} {record.levelname.lower()} {name} {record.getMessage()}{extra}"


def _time(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Lines(logging.StreamHandler[TextIO]):
    """A stream handler that never takes the run down: a reader that went away or a full
    disk loses the line (the journal is the record)."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def configure(fmt: LogFormat, file: Path | None, *, run: str) -> Iterator[None]:
    """Send the ``bulk`` logger's records, events included, as ``fmt`` to ``file`` (stderr
    when None) while the block runs. ``text`` without a file changes nothing.

    Raises:
        OSError: ``file`` cannot be opened for appending.
    """
    global _stderr_sink
    if fmt == "text" and file is None:
        yield
        return
    stream: TextIO = sys.stderr if file is None else file.open("a", encoding="utf-8")
    logger = logging.getLogger("bulk")
    handlers: list[logging.Handler] = []
    main = _Lines(stream)
    main.setFormatter(_Json(run) if fmt == "json" else _Text())
    handlers.append(main)
    if file is not None:
        # Warnings are still shown on stderr as before (the file holds them as well).
        shown = _Lines(sys.stderr)
        shown.setLevel(logging.WARNING)
        shown.addFilter(lambda record: not hasattr(record, "event"))
        handlers.append(shown)
    # Records are written by a thread of their own: events are logged on the event loop,
    # which must not wait for a file (or a slow reader of stderr).
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    listener = logging.handlers.QueueListener(queue, *handlers, respect_handler_level=True)
    enqueue = logging.handlers.QueueHandler(queue)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(enqueue)
    listener.start()
    if fmt == "json" and file is None:
        _stderr_sink = _message_to(logger)
    try:
        yield
    finally:
        _stderr_sink = None
        logger.removeHandler(enqueue)
        listener.stop()  # every record queued is written
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        if file is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _message_to(logger: logging.Logger) -> Callable[[str], None]:
    def sink(line: str) -> None:
        level = logging.ERROR if ": error:" in line else logging.INFO
        if ": warning:" in line or ": note:" in line:
            level = logging.WARNING
        logger.log(level, "%s", line, extra={"event": "message", "fields": {}})

    return sink
