"""Shared fixtures: asyncio under the anyio plugin, no blocking calls on the event loop, the
CLI run with bounded memory and time, and a real Ray head for the ``ray_head`` tests."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

import bulk._loop
from bulk._rayhead import RayHead, RayUnavailableError, ray_cli, ray_head


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp and aiolimiter are asyncio-only


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose async code blocks the event loop (file I/O, time.sleep, ...)."""
    with blockbuster_ctx() as bb:
        # The local backend's end of a job that left nothing behind, on the loop by design
        # (bulk/backends/local.py, LocalBackend._sweep): one read of /proc (kernel memory,
        # never a disk) and the job's pid file removed (no fsync).
        bb.functions["io.BufferedReader.read"].can_block_in("bulk/backends/_procs.py", "no_orphans")
        bb.functions["os.unlink"].can_block_in("bulk/backends/local.py", "_remove_files")
        yield bb


@pytest.fixture(autouse=True)
def asyncio_loop_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in this process use asyncio's own loop: under uvloop an exception from a
    Python signal handler is swallowed, so pytest-timeout could not stop a hung test. The
    subprocess tests run the real ``bulk``, on uvloop."""
    monkeypatch.setattr(bulk._loop, "UVLOOP", False)


BOUNDED_MEMORY_MB = 256  # `bulk plan` on a small sweep peaks near 100 MB of address space
BOUNDED_TIMEOUT_S = 60  # a refusal takes well under a second; this only stops a runaway


@pytest.fixture
def bounded_bulk() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the bulk CLI in a subprocess capped in address space and in time.

    For inputs that once exhausted memory or hung: a regression fails the test (MemoryError,
    a kill, or the timeout) instead of taking the machine down.
    """

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return run_bounded("from bulk._cli import main\nsys.exit(main(sys.argv[1:]))\n", args, cwd)

    return run


@pytest.fixture
def bounded_python() -> Callable[[str, Path], subprocess.CompletedProcess[str]]:
    """Run Python ``code`` in a subprocess capped as :func:`bounded_bulk` is."""

    def run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return run_bounded(code, (), cwd)

    return run


def run_bounded(code: str, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    limit = BOUNDED_MEMORY_MB << 20
    prelude = f"import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BOUNDED_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def fake_pushgateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A Pushgateway stand-in on an OS-chosen port of 127.0.0.1: its URL, and the requests
    it received (method, path, body), each answered 200. Shut down after the test."""
    received: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append((self.command, self.path, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_DELETE = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _missing_ray() -> None:
    reason = "Ray is not installed next to this Python (pip install -e '.[test,ray]')"
    if os.environ.get("CI"):  # CI installs Ray: a skip there would hide a broken install
        pytest.fail(f"CI is set: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def real_ray_head() -> Iterator[RayHead]:
    """A loopback-only Ray head (:func:`bulk._rayhead.ray_head`), started on first use and
    stopped by PID after the last test of the module (a head takes ~1 GB and a core while
    it starts: it is not kept through the rest of the suite; the real-head tests live in one
    module, ``tests/real/test_ray_head.py``).

    Without Ray installed the tests using it skip and say why, except under CI (``CI`` set),
    where they fail. ``BULK_RAY_HEAD_PIDS`` names a file the head's PIDs are appended to, so
    that ``.ci/run`` can check afterwards that none of them is left.
    """
    if ray_cli() is None:
        _missing_ray()
    pid_file = os.environ.get("BULK_RAY_HEAD_PIDS")
    try:
        with ray_head(pid_file=Path(pid_file) if pid_file else None) as head:
            yield head
    except RayUnavailableError:
        _missing_ray()


@pytest.fixture
def ray_url(real_ray_head: RayHead) -> str:
    """The real head's Jobs API base URL."""
    return real_ray_head.url
