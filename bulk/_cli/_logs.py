"""``bulk logs CONFIG ROW``: print one job's log, as the service (or the run folder) keeps it.

ROW is a row's index (as ``bulk export`` shows it), its key, or its job name. The backend
reads the log through its optional ``logs`` method (a service's log endpoint, or the run
folder's log files); a service that keeps no logs is said so in one line (exit 2), as is a
row the service has not accepted. Read only: the run's lock is not taken, so it works while
``bulk run`` goes on; the one request goes through the gateway as a kind's own commands' do
(paced, retried within ``[retry]``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable

import bulk._config as config
import bulk._runs as runs
from bulk._api import open_backend
from bulk._cli._common import EXIT_OK, output
from bulk._clock import AnyioClock
from bulk._journal import StoredJob
from bulk._loop import run_async
from bulk._naming import job_name
from bulk.backends.base import Receipt
from bulk.errors import ConfigError

__all__ = ["cmd_logs"]


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the log of the job of row ``args.row``."""
    cfg = config.load(args.config)
    runs.require_journal(cfg)
    with runs.open_journal(cfg) as journal:
        row = _find(journal.iter_jobs(), cfg.run.name, args.row)
    where = str(cfg.path)
    if row is None:
        msg = f"no row {args.row!r} in run {cfg.run.name}; give a row's index, key or job name"
        raise ConfigError(msg, where=where)
    name = job_name(cfg.run.name, row.key, row.attempt)
    _, backend = open_backend(cfg)
    logs = getattr(backend, "logs", None)
    if logs is None:
        run_async(backend.aclose())
        msg = f"the {cfg.backend.kind} service keeps no job logs bulk can read"
        raise ConfigError(msg, where=where)
    if row.remote_id is None:
        run_async(backend.aclose())
        msg = f"{name} ({row.state.value}) has not been accepted by the service: it has no log"
        raise ConfigError(msg, where=where)
    receipt = Receipt(name, row.remote_id or name)
    text: list[bytes] = []

    async def fetch() -> None:
        from prometheus_client import CollectorRegistry

        from bulk._engine import Gateway
        from bulk._metrics import Metrics

        gateway = Gateway.for_command(cfg.policy, Metrics(CollectorRegistry()), AnyioClock())
        async with contextlib.aclosing(backend):
            text.append(await gateway.send("status", logs, receipt))

    run_async(fetch())
    with output():
        sys.stdout.buffer.write(text[0])
    return EXIT_OK


def _find(rows: Iterable[StoredJob], run: str, wanted: str) -> StoredJob | None:
    """The row whose index, key or job name is ``wanted``."""
    index = int(wanted) if wanted.isdigit() else None
    for row in rows:
        if row.index == index or wanted in (row.key, job_name(run, row.key, row.attempt)):
            return row
    return None
