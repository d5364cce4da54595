"""``bulk sim KIND`` and ``bulk KIND COMMAND``: what each backend kind adds to the command line.

The CLI names no backend: each registered kind may bring a simulator
(:meth:`~bulk.backends.base.BackendKind.simulator`) and commands of its own
(:meth:`~bulk.backends.base.BackendKind.commands`). Their modules are imported only when the
command line may need them, so that ``bulk run`` imports no kind but its config's.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import bulk._cli._args as arg
import bulk._config as config
from bulk._api import open_backend
from bulk._cli._common import EXIT_OK, listen_error, output, stdout_console
from bulk._clock import AnyioClock
from bulk._loop import run_async
from bulk._text import one_line
from bulk.backends import AnyKind, Command, Simulator, get_kind, kind_names
from bulk.errors import BulkError, ConfigError

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["COMMON_COMMANDS", "add_kind_commands"]

_log = logging.getLogger("bulk")

# bulk's own commands; a kind's commands are added next to them (a kind of the same name
# as one of them keeps only its simulator).
COMMON_COMMANDS = frozenset({"plan", "run", "retry", "status", "stop", "export", "logs", "sim"})


def add_kind_commands(sub: arg.Subparsers, argv: Sequence[str]) -> None:
    """``bulk sim KIND`` for each kind with a simulator, ``bulk KIND COMMAND`` for each kind
    with commands of its own; kinds are imported only when ``argv`` may name one of those
    (``bulk sim ...``, ``bulk KIND ...``, ``bulk --help``)."""
    p = sub.add_parser("sim", help="serve a simulator of a job service on 127.0.0.1")
    sims = p.add_subparsers(dest="sim", metavar="KIND", required=True)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in COMMON_COMMANDS - {"sim"}:
        return
    for name in kind_names():
        try:
            kind = get_kind(name)
        except KeyError as exc:  # a plug-in that cannot be loaded
            _log.warning("bulk: %s", exc.args[0])
            continue
        try:
            with _plugin(f"backend {name!r}"):
                _add_kind(sub, sims, kind)
        except BulkError as exc:  # a plug-in's bug must not break bulk's command line
            _log.warning("bulk: %s; left out of the command line", exc)


def _add_kind(sub: arg.Subparsers, sims: arg.Subparsers, kind: AnyKind) -> None:
    simulator = kind.simulator()
    commands = kind.commands()
    if simulator is not None:
        q = sims.add_parser(kind.name, help=simulator.help)
        _serve_options(q)
        simulator.add_arguments(q)
        q.set_defaults(func=functools.partial(_cmd_sim, kind.name, simulator))
    _add_commands(sub, kind, commands)


def _add_commands(sub: arg.Subparsers, kind: AnyKind, commands: Sequence[Command]) -> None:
    if not commands or kind.name in COMMON_COMMANDS:
        return
    p = sub.add_parser(kind.name, help=f"commands of the {kind.name} backend")
    group = p.add_subparsers(dest=f"{kind.name}_command", metavar="COMMAND", required=True)
    for command in commands:
        q = group.add_parser(command.name, help=command.help)
        q.add_argument("config", type=Path, help=f"a {kind.name} run config (its [backend])")
        command.arguments(q)
        q.set_defaults(func=functools.partial(_cmd_kind, kind, command))


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=arg.port, default=0, help="port (0: let the OS choose)")


def _cmd_sim(name: str, simulator: Simulator, args: argparse.Namespace) -> int:
    with _plugin(f"bulk sim {name}"):
        app = simulator.app(args)
    _serve(app, name, args.host, args.port)
    return EXIT_OK


@contextlib.contextmanager
def _plugin(what: str) -> Iterator[None]:
    """What a kind's code raises that is not a bulk error: one line naming ``what``."""
    try:
        yield
    except BulkError:
        raise
    except Exception as exc:  # noqa: BLE001 - a backend's bug, said in one line
        msg = f"{what} failed: {one_line(exc)}"
        raise ConfigError(msg) from None


def _cmd_kind(kind: AnyKind, command: Command, args: argparse.Namespace) -> int:
    """``bulk KIND COMMAND CONFIG``: the command on a backend made from a config of the kind.

    Its requests go through the engine's gateway (paced under the config's limits, capped in
    flight, retried with back-off within ``[retry]``, ``Retry-After`` first), like a run's.
    """
    from prometheus_client import CollectorRegistry

    from bulk._engine import Gateway
    from bulk._metrics import Metrics

    cfg = config.load(args.config)
    if cfg.backend.kind != kind.name:
        msg = f"backend.kind is {cfg.backend.kind!r}; this command needs {kind.name!r}"
        raise ConfigError(msg, where=str(cfg.path))
    _, backend = open_backend(cfg)
    result: list[bytes | RenderableType] = []

    async def run() -> None:
        gateway = Gateway.for_command(cfg.policy, Metrics(CollectorRegistry()), AnyioClock())
        async with contextlib.aclosing(backend):
            with _plugin(f"bulk {kind.name} {command.name}"):
                result.append(await command.run(backend, args, gateway.send))

    run_async(run())
    with output():
        if isinstance(result[0], bytes):
            sys.stdout.buffer.write(result[0])
        else:
            stdout_console().print(result[0])
    return EXIT_OK


def _serve(app: Any, kind: str, host: str, port: int) -> None:
    """Serve an aiohttp app until SIGINT/SIGTERM; print the address once listening.

    Raises:
        ConfigError: the address cannot be listened on (a port in use, an unknown host).
    """
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                option = "--port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
                prog = f"bulk sim {kind}"
                raise listen_error(prog, option, host, port, exc) from None
            bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]  # port 0
            # Signals are caught before the address is printed: a caller that stops the
            # simulator as soon as it reads the line gets a clean exit, not a kill.
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                address = f"http://{bound[0]}:{bound[1]}"
                print(f"bulk sim {kind}: listening on {address}", flush=True)  # noqa: T201
                async for _ in signals:
                    return
        finally:
            await runner.cleanup()

    run_async(main())
