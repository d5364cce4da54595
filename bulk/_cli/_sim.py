"""``bulk sim stub|gongji`` and ``bulk gongji resources``: the commands that name a backend.

Kept together so that they can move into their backends as one piece.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

import bulk._cli._args as arg
import bulk._config as config
from bulk._api import open_backend
from bulk._cli._common import (
    EXIT_OK,
    listen_error,
    output,
    reason,
    stdout_console,
)
from bulk._loop import run_async
from bulk._retry import Backoff
from bulk.errors import (
    ConfigError,
    RetryableBackendError,
)


def add_sim_commands(sub: arg.Subparsers) -> None:
    """``bulk sim stub`` and ``bulk sim gongji`` on the subcommands ``sub``."""
    p = sub.add_parser("sim", help="serve a simulator of a job service on 127.0.0.1")
    sims = p.add_subparsers(dest="sim", metavar="KIND", required=True)
    _add_sim_stub(sims)
    _add_sim_gongji(sims)


def _add_sim_stub(sims: arg.Subparsers) -> None:
    q = sims.add_parser("stub", help="bulk's reference HTTP job service, with fault injection")
    _serve_options(q)
    for name, kind, default, help_ in (
        ("--throttle-rate", arg.share, 0.0, "share of creates answered 429"),
        ("--retry-after", arg.seconds, 0.5, "Retry-After of those 429s, seconds"),
        ("--fail-before-rate", arg.share, 0.0, "share of creates answered 503, nothing created"),
        ("--fail-after-rate", arg.share, 0.0, "share of creates that create, then fail"),
        ("--rate-limit", arg.per_second, None, "requests per second before 429s"),
        ("--latency", arg.seconds, 0.0, "delay before every answer, seconds"),
        ("--queue-s", arg.seconds, 0.0, "seconds a job stays queued"),
        ("--run-s", arg.seconds, 0.0, "seconds a job runs"),
        ("--job-failure-rate", arg.share, 0.0, "share of jobs that end failed"),
        ("--echo-rate", arg.share, 0.0, "share of requests answered 500 echoing the request"),
        ("--token", str, None, "require Authorization: Bearer TOKEN"),
        ("--seed", int, 0, "seed of the fault draws"),
    ):
        q.add_argument(name, type=kind, default=default, help=help_)
    q.set_defaults(func=_cmd_sim_stub)


def _add_sim_gongji(sims: arg.Subparsers) -> None:
    q = sims.add_parser("gongji", help="a simulator of the Gongji Open API's Job endpoints")
    _serve_options(q)
    q.add_argument(
        "--rsa-token",
        action="append",
        default=[],
        metavar="TOKEN=PUBLIC.pem",
        help="register an RSA-mode token with its public key (repeatable)",
    )
    q.add_argument(
        "--simple-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="register a simple-mode token (repeatable)",
    )
    q.add_argument(
        "--stop-ended-ok",
        action="store_true",
        help="stopping an ended task succeeds (default: code C010)",
    )
    for name, kind, default, help_ in (
        ("--pending-s", arg.seconds, 0.5, "seconds a task stays Pending"),
        ("--run-s", arg.seconds, 2.0, "seconds a task runs"),
        ("--failure-rate", arg.share, 0.0, "share of tasks that end Failed"),
        ("--skew-s", arg.seconds, 300.0, "accepted timestamp skew, seconds"),
        ("--throttle-rate", arg.share, 0.0, "share of requests answered with code C008"),
        ("--http-429-rate", arg.share, 0.0, "share of requests answered HTTP 429"),
        ("--retry-after", arg.seconds, 1.0, "Retry-After of those 429s, seconds"),
        ("--error-rate", arg.share, 0.0, "share of requests answered HTTP 502"),
        ("--reset-rate", arg.share, 0.0, "share of requests whose connection is dropped"),
        ("--commit-fail-rate", arg.share, 0.0, "share of creates that create, then fail"),
        ("--latency", arg.seconds, 0.0, "delay before every answer, seconds"),
        ("--rate-limit", arg.per_second, None, "requests per second per token before HTTP 429"),
        ("--echo-rate", arg.share, 0.0, "share of requests answered echoing the request"),
        ("--seed", int, 0, "seed of the fault draws"),
    ):
        q.add_argument(name, type=kind, default=default, help=help_)
    q.add_argument(
        "--list-order",
        choices=("newest", "oldest"),
        default="newest",
        help="order of search results (undocumented by the API): newest or oldest task first",
    )
    q.set_defaults(func=_cmd_sim_gongji)


def add_gongji_commands(sub: arg.Subparsers) -> None:
    """``bulk gongji resources`` on the subcommands ``sub``."""
    p = sub.add_parser("gongji", help="Gongji-specific commands")
    gongji = p.add_subparsers(dest="gongji", metavar="COMMAND", required=True)
    q = gongji.add_parser("resources", help="the device list (for resources[].mark)")
    q.add_argument("config", type=Path, help="a gongji run config (for the URL and the key)")
    q.add_argument("--json", action="store_true", help="the raw list as JSON")
    q.set_defaults(func=_cmd_gongji_resources)


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=arg.port, default=0, help="port (0: let the OS choose)")


def _cmd_sim_stub(args: argparse.Namespace) -> int:
    from bulk._sim.stub import StubFaults, make_app

    faults = StubFaults(
        throttle_rate=args.throttle_rate,
        retry_after_s=args.retry_after,
        fail_before_rate=args.fail_before_rate,
        fail_after_rate=args.fail_after_rate,
        rate_limit_per_s=args.rate_limit,
        latency_s=args.latency,
        queue_s=args.queue_s,
        run_s=args.run_s,
        job_failure_rate=args.job_failure_rate,
        echo_rate=args.echo_rate,
        token=args.token,
        seed=args.seed,
    )
    _serve(make_app(faults), "stub", args.host, args.port)
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
            print(f"bulk sim {kind}: listening on http://{bound[0]}:{bound[1]}", flush=True)  # noqa: T201
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return
        finally:
            await runner.cleanup()

    run_async(main())


def _cmd_sim_gongji(args: argparse.Namespace) -> int:
    from bulk._sim.gongji import GongjiSim, SimConfig, make_app

    sim = GongjiSim(
        SimConfig(
            pending_s=args.pending_s,
            run_s=args.run_s,
            failure_rate=args.failure_rate,
            skew_s=args.skew_s,
            stop_ended_ok=args.stop_ended_ok,
            throttle_rate=args.throttle_rate,
            http_429_rate=args.http_429_rate,
            retry_after_s=args.retry_after,
            error_rate=args.error_rate,
            reset_rate=args.reset_rate,
            commit_fail_rate=args.commit_fail_rate,
            latency_s=args.latency,
            rate_limit_per_s=args.rate_limit,
            echo_rate=args.echo_rate,
            list_order=args.list_order,
            seed=args.seed,
        )
    )
    where = "bulk sim gongji: error: argument --rsa-token"
    for entry in args.rsa_token:
        token, sep, key_path = entry.partition("=")
        if not sep or not token:
            msg = f"expected TOKEN=PUBLIC_KEY.pem, got {entry!r}"
            raise ConfigError(msg, where=where)
        try:
            sim.add_token(token, Path(key_path).read_bytes())
        except OSError as exc:
            msg = f"cannot read {key_path}: {reason(exc)}"
            raise ConfigError(msg, where=where) from None
        except ValueError:
            msg = f"{key_path} is not an RSA public key in PEM (openssl rsa -in KEY.pem -pubout)"
            raise ConfigError(msg, where=where) from None
    for token in args.simple_token:
        sim.add_token(token, None)
    if not sim.tokens:
        msg = "register at least one token: --rsa-token TOKEN=PUBLIC.pem or --simple-token TOKEN"
        raise ConfigError(msg, where="bulk sim gongji: error")
    _serve(make_app(sim), "gongji", args.host, args.port)
    return EXIT_OK


def _cmd_gongji_resources(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bulk.backends.gongji import GongjiBackend

    cfg = config.load(args.config)
    if cfg.backend.kind != "gongji":
        msg = f"{cfg.path}: backend.kind is {cfg.backend.kind!r}; this command needs 'gongji'"
        raise ConfigError(msg)
    _, backend = open_backend(cfg)
    assert isinstance(backend, GongjiBackend)  # the kind's factory: the CLI builds objects
    devices: list[Any] = []

    async def fetch() -> None:
        # A one-off read, retried like the engine's requests: transient failures and
        # throttles back off (Retry-After wins) within the config's retry policy.
        backoff = Backoff(cfg.retry, started=time.monotonic())
        async with contextlib.aclosing(backend):
            while True:
                try:
                    devices.extend(await backend.resources())
                    return
                except RetryableBackendError as exc:
                    delay = backoff.next_delay(time.monotonic(), exc.retry_after)
                    if delay is None:
                        raise
                    await anyio.sleep(delay)

    run_async(fetch())
    if args.json:
        with output():
            sys.stdout.buffer.write(orjson.dumps(devices, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    table = Table("device", "GPU", "count", "region", "inventory", "price", "mark")
    for device in devices:
        for region in device.get("regions") or []:
            mark = str((region.get("mark") or {}).get("mark", ""))
            table.add_row(
                str(device.get("device_name")),
                str(device.get("gpu_name")),
                str(device.get("gpu_count")),
                f"{region.get('region')} ({region.get('region_name')})",
                str(region.get("inventory")),
                str(region.get("price")),
                mark[:24] + "…" if len(mark) > 24 else mark,
            )
    with output():
        stdout_console().print(table)
    return EXIT_OK
