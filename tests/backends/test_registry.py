"""The registry: built-in kinds, and kinds that installed packages add by entry point."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bulk.backends import Command, Endpoint, get_kind, kind_names
from bulk.backends import Testbed as Bed  # a name pytest does not collect

_T = TypeVar("_T")

# A third-party kind, as a package outside bulk would write it: only the public surface.
TOY_MODULE = r"""
from aiohttp import web

from bulk.backends import NO_QUOTING, Command, LimitsConfig, TrackConfig
from bulk.testing import FakeBackend


async def hello(backend, args, send):
    answer = await send("status", backend.status, [])
    return f"hello {args.who}, {len(answer)} jobs\n".encode()


class ToySim:
    help = "a toy service"

    def add_arguments(self, parser):
        parser.add_argument("--greeting", default="hi")

    def app(self, args):
        return web.Application()


class ToyKind:
    name = "toy"
    default_limits = LimitsConfig(submit_rate_per_s=1000.0, status_rate_per_s=1000.0)
    default_track = TrackConfig(first_s=0.001, max_s=0.01)
    quoted_fields = NO_QUOTING
    jobs_outlive_bulk = False
    unique_names = True

    def parse_options(self, table, base):
        return table.get("colour", str, "red")

    def validate(self, body, problems):
        problems.table(body, "job")

    def check_template(self, template):
        return None

    def create(self, options, *, run, run_dir):
        return FakeBackend(runs_for=1)

    def commands(self):
        return (Command("hello", "say hello", lambda p: p.add_argument("--who"), hello),)

    def simulator(self):
        return ToySim()

    def testbed(self, folder):
        import contextlib

        from bulk.backends import Testbed

        @contextlib.asynccontextmanager
        async def bed():
            yield Testbed(FakeBackend(runs_for=0), lambda name, long: b"{}")

        return bed()


class RaisingKind(ToyKind):
    def simulator(self):
        raise RuntimeError("the toy simulator is broken")


class BadOptions(ToyKind):
    def parse_options(self, table, base):
        raise ValueError("bad options")


class BadCreate(ToyKind):
    def create(self, options, *, run, run_dir):
        raise ValueError("cannot create")


class BadLimits(ToyKind):
    default_limits = "fast"


KIND = ToyKind()
RAISING = RaisingKind()
BAD_OPTIONS = BadOptions()
BAD_CREATE = BadCreate()
BAD_LIMITS = BadLimits()
"""

CONFIG = """
[run]
name = "toyrun"

[sweep]
grid.i = {range = [0, 5]}

[backend]
kind = "toy"
colour = "blue"

[job]
x = "{i}"
"""


def install_toy(folder: Path, entry: str = "toy = toy_kind:KIND") -> dict[str, str]:
    """A tiny distribution on a path entry: dist-info (METADATA, entry_points.txt) + module.

    Returns the environment of a ``bulk`` subprocess that sees it.
    """
    site = folder / "site"
    info = site / "toy-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[bulk.backends]\n{entry}\n")
    (site / "toy_kind.py").write_text(textwrap.dedent(TOY_MODULE))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


def bulk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulk", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_kind_from_an_entry_point_plans_and_runs_to_the_end(tmp_path: Path) -> None:
    """A package that registers ``toy`` in ``bulk.backends`` is planned and run by ``bulk``."""
    env = install_toy(tmp_path)
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)

    planned = bulk(env, "plan", str(config), "--json")
    ran = bulk(env, "run", str(config))
    status = bulk(env, "status", str(config), "--json")

    assert 0 == planned.returncode, planned.stderr
    assert 5 == len(planned.stdout.splitlines()), planned.stdout
    assert 0 == ran.returncode, ran.stderr
    assert "5 succeeded" in ran.stderr
    assert {"succeeded": 5} == {k: v for k, v in json.loads(status.stdout)["counts"].items() if v}


def test_a_kind_contributes_its_commands_and_simulator(tmp_path: Path) -> None:
    """``bulk toy hello`` and ``bulk sim toy`` come from the toy kind: the CLI names none."""
    env = install_toy(tmp_path)
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)

    hello = bulk(env, "toy", "hello", str(config), "--who", "you")
    listed = bulk(env, "--help")
    with subprocess.Popen(
        [sys.executable, "-m", "bulk", "sim", "toy", "--port", "0", "--greeting", "yo"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as sim:
        assert sim.stdout is not None
        first = sim.stdout.readline()
        sim.send_signal(signal.SIGTERM)
        served = sim.wait(timeout=60)

    assert 0 == hello.returncode, hello.stderr
    assert "hello you, 0 jobs\n" == hello.stdout
    assert re.search(r"^    toy +commands of the toy backend$", listed.stdout, re.MULTILINE)
    assert first.startswith("bulk sim toy: listening on http://127.0.0.1:")
    assert 0 == served


@pytest.fixture
def gongji_resources(tmp_path: Path) -> tuple[Command, AbstractAsyncContextManager[Bed]]:
    """The Gongji kind's resources command and its testbed (made outside the event loop)."""
    kind = get_kind("gongji")
    [command] = [c for c in kind.commands() if c.name == "resources"]
    return command, kind.testbed(tmp_path)


async def test_gongji_resources_sends_through_the_gateway(
    gongji_resources: tuple[Command, AbstractAsyncContextManager[Bed]],
) -> None:
    """The resources command asks the service only through the ``send`` it is given."""
    command, testbed = gongji_resources
    sent: list[str] = []

    async def send(endpoint: Endpoint, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        sent.append(endpoint)
        return await call(*args)

    async with testbed as bed:
        out = await command.run(bed.backend, argparse.Namespace(json=True), send)

    assert ["lookup"] == sent
    assert isinstance(out, bytes)
    assert json.loads(out)  # the simulator's device list


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("toy = toy_missing:KIND", "ModuleNotFoundError: No module named 'toy_missing'"),
        ("toy = toy_kind:NOPE", "AttributeError"),
        ("toy = toy_kind:ToyKind.name", "is not a backend kind: it has no name, default_limits"),
    ],
)
def test_a_broken_entry_point_is_one_line_exit_2(tmp_path: Path, entry: str, problem: str) -> None:
    """A kind that cannot be loaded: one line naming the config, the entry point and why."""
    env = install_toy(tmp_path, entry)
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)

    planned = bulk(env, "plan", str(config))

    assert 2 == planned.returncode
    [line] = planned.stderr.splitlines()
    assert line.startswith(f"{config}: backend.kind: backend 'toy' (entry point ")
    assert "of toy 0)" in line
    assert problem in line


def test_a_local_run_imports_no_other_kind() -> None:
    """Naming a built-in kind imports its module only: no other kind, no entry-point scan."""
    code = (
        "import json, sys; from bulk.backends import get_kind; get_kind('local');"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bulk.backends.'))))"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout

    assert ["bulk.backends._procs", "bulk.backends.base", "bulk.backends.local"] == json.loads(out)


def test_built_in_names_are_listed() -> None:
    """The built-in kinds are always there, and each is found by its own name."""
    assert {"gongji", "local", "stub"} <= set(kind_names())
    assert all(get_kind(name).name == name for name in kind_names())


def test_a_kind_whose_hooks_raise_leaves_the_cli_working(tmp_path: Path) -> None:
    """A plug-in whose ``simulator()`` raises is left out of ``bulk --help`` with one line;
    bulk's own commands and a run of that kind still work."""
    env = install_toy(tmp_path, "toy = toy_kind:RAISING")
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)

    helped = bulk(env, "--help")
    ran = bulk(env, "run", str(config))

    assert 0 == helped.returncode, helped.stderr
    assert "Traceback" not in helped.stderr
    assert (
        "simulator() failed: RuntimeError: the toy simulator is broken; "
        "left out of the command line"
    ) in helped.stderr
    assert 0 == ran.returncode, ran.stderr


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("toy = toy_kind:BAD_OPTIONS", "parse_options() failed: ValueError: bad options"),
        ("toy = toy_kind:BAD_CREATE", "create() failed: ValueError: cannot create"),
        ("toy = toy_kind:BAD_LIMITS", "is not a backend kind: wrong default_limits"),
    ],
)
def test_a_plug_in_that_fails_in_a_hook_is_one_line_exit_2(
    tmp_path: Path, entry: str, problem: str
) -> None:
    """What a third-party kind's hook raises is one line naming the kind and the hook, exit 2,
    nothing sent; bulk's own code never shows its traceback."""
    env = install_toy(tmp_path, entry)
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)

    ran = bulk(env, "run", str(config))

    assert 2 == ran.returncode, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert 1 == len(lines), ran.stderr
    assert "backend 'toy' (entry point" in lines[0]
    assert problem in lines[0]
