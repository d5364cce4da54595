"""The command line at its edges: ports in use, closed pipes, closed streams, full disks.

None of these may show a Python traceback: each is a one-line error with exit 2, or (a reader
that went away) no message at all and exit 0. Bad arguments live in the corpus
(tests/corpus/*/args.txt); what needs a live socket or a real pipe is here.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

import anyio
import pytest

import bulk
import bulk._api
import bulk._cli
import bulk._config as config
import bulk._runs as runs
from bulk._cli._main import main
from bulk._journal import Record, State
from bulk._loop import run_async
from bulk.backends import kind_names

BULK = [sys.executable, "-m", "bulk"]
ROWS = 4000  # enough output (well over a pipe's 64 KiB) that a closed pipe must be met


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write_config(folder: Path, rows: int = 3) -> Path:
    path = folder / "run.toml"
    path.write_text(
        f'[run]\nname = "edges"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        '[job]\ncommand = "true {i}"\n'
    )
    return path


class TestPortsInUse:
    def test_metrics_port_in_use_is_one_line_and_creates_nothing(
        self, tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--metrics-port` on a busy port: exit 2, one line, no run folder, no job run."""
        cfg = write_config(tmp_path)

        code = main(["run", str(cfg), "--metrics-port", str(busy_port)])
        err = capsys.readouterr().err

        expected = (
            f"bulk run: error: argument --metrics-port: cannot listen on 127.0.0.1:{busy_port}: "
            "address already in use; choose another port, or 0 to let the OS choose"
        )
        assert 2 == code
        assert [expected] == err.splitlines()
        assert not (tmp_path / ".bulk").exists()

    @pytest.mark.parametrize(
        "sim", [pytest.param(["stub"], id="stub"), pytest.param(["gongji", "--simple-token", "t"])]
    )
    def test_simulator_on_a_busy_port_is_one_line(
        self, sim: list[str], busy_port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`bulk sim KIND --port P` with P in use: exit 2 and one line naming the port."""
        code = main(["sim", *sim, "--port", str(busy_port)])
        err = capsys.readouterr().err

        expected = (
            f"bulk sim {sim[0]}: error: argument --port: cannot listen on "
            f"127.0.0.1:{busy_port}: address already in use; choose another port, or 0 to let "
            "the OS choose"
        )
        assert 2 == code
        assert [expected] == err.splitlines()


def test_progress_interval_zero_prints_no_progress_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--progress-interval 0` means no progress lines (it used to print them in a busy loop)."""
    cfg = write_config(tmp_path, rows=20)

    assert 0 == main(["run", str(cfg), "--progress-interval", "0"])

    lines = capsys.readouterr().err.splitlines()
    assert ["bulk: run edges finished"] == [line[:24] for line in lines]


# -- output that nobody reads ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of ROWS rows, half of them failed, built without running anything."""
    folder = tmp_path_factory.mktemp("big")
    path = write_config(folder, rows=ROWS)
    cfg = config.load(path)
    cfg.run.dir.mkdir(parents=True)
    journal, _ = runs.open_run(cfg)
    with journal:
        journal.apply([Record(i, State.FAILED, error="exit code 1") for i in range(0, ROWS, 2)])
    return path


OUTPUT_COMMANDS = [
    pytest.param(["plan", "--limit", str(ROWS)], id="plan"),
    pytest.param(["plan", "--json"], id="plan-json"),
    pytest.param(["status", "--failures", str(ROWS)], id="status"),
    pytest.param(["status", "--json", "--failures", str(ROWS)], id="status-json"),
    pytest.param(["export"], id="export-csv"),
    pytest.param(["export", "--format", "jsonl"], id="export-jsonl"),
]


def wide_environment() -> dict[str, str]:
    # rich sizes tables to COLUMNS off a terminal: wide enough that no cell wraps.
    return {**os.environ, "COLUMNS": "200"}


class TestClosedPipe:
    @pytest.mark.parametrize("command", OUTPUT_COMMANDS)
    def test_reader_gone_before_the_first_write(self, big_run: Path, command: list[str]) -> None:
        """stdout is a pipe nobody reads (`| true`): exit 0, nothing on stderr."""
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write now fails with EPIPE: no timing involved
        try:
            done = subprocess.run(
                [*BULK, command[0], str(big_run), *command[1:]],
                stdout=write_end,
                stderr=subprocess.PIPE,
                env=wide_environment(),
                timeout=60,
                check=False,
            )
        finally:
            os.close(write_end)

        assert (0, b"") == (done.returncode, done.stderr)

    @pytest.mark.parametrize("command", OUTPUT_COMMANDS)
    def test_reader_stops_after_one_line(self, big_run: Path, command: list[str]) -> None:
        """`| head -1`: the reader takes one line and goes; bulk exits 0 with no message."""
        proc = subprocess.Popen(
            [*BULK, command[0], str(big_run), *command[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=wide_environment(),
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # far more than a pipe holds is still to come: bulk meets EPIPE
        err = proc.stderr.read()
        proc.stderr.close()

        assert (0, b"") == (proc.wait(timeout=60), err)
        assert first

    @pytest.mark.parametrize("command", OUTPUT_COMMANDS)
    def test_full_disk_is_one_line(self, big_run: Path, command: list[str]) -> None:
        """stdout on a full device: one line saying so, exit 2, no traceback."""
        with open("/dev/full", "wb") as full:
            done = subprocess.run(
                [*BULK, command[0], str(big_run), *command[1:]],
                stdout=full,
                stderr=subprocess.PIPE,
                env=wide_environment(),
                timeout=60,
                check=False,
            )

        assert 2 == done.returncode
        assert [b"bulk: error: cannot write standard output: no space left on device"] == (
            done.stderr.splitlines()
        )


def test_export_to_an_unwritable_file_is_one_line(
    big_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export -o` into a missing folder: exit 2 and one line naming the file."""
    target = tmp_path / "missing" / "out.csv"

    code = main(["export", str(big_run), "-o", str(target)])

    assert 2 == code
    assert [f"bulk: error: cannot write {target}: no such file or directory"] == (
        capsys.readouterr().err.splitlines()
    )


class TestClosedStderr:
    def test_run_with_stderr_read_by_nobody_finishes(self, tmp_path: Path) -> None:
        """`bulk run 2>&1 | head -0`: progress and summary are lost, the run is not: exit 0."""
        cfg = write_config(tmp_path, rows=6)
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(
                [*BULK, "run", str(cfg), "--progress-interval", "0.01"],
                stdout=subprocess.PIPE,
                stderr=write_end,
                timeout=60,
                check=False,
            )
        finally:
            os.close(write_end)

        assert (0, b"") == (done.returncode, done.stdout)
        assert {"succeeded": 6} == journal_counts(cfg)

    def test_run_with_stderr_closed_finishes(self, tmp_path: Path) -> None:
        """`bulk run 2>&-` runs to the end, and nothing meant for stderr lands on stdout."""
        cfg = write_config(tmp_path, rows=6)

        done = subprocess.run(
            ["sh", "-c", 'exec "$@" 2>&-', "sh", *BULK, "run", str(cfg)],
            stdout=subprocess.PIPE,
            timeout=60,
            check=False,
        )

        assert (0, b"") == (done.returncode, done.stdout)
        assert {"succeeded": 6} == journal_counts(cfg)

    def test_status_with_stdout_closed_exits_0(self, big_run: Path) -> None:
        """`bulk status >&-`: the output has nowhere to go, which is not an error."""
        done = subprocess.run(
            ["sh", "-c", 'exec "$@" >&-', "sh", *BULK, "status", str(big_run)],
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )

        assert (0, b"") == (done.returncode, done.stderr)


def journal_counts(cfg_path: Path) -> dict[str, int]:
    from bulk._journal import Journal

    with Journal.open(cfg_path.parent / ".bulk" / "edges" / "journal.sqlite") as journal:
        return journal.counts()


def test_missing_credentials_are_refused_before_the_run_folder_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unset token: exit 2, one line, and no journal that a later run would "resume"."""
    monkeypatch.delenv("BULK_TEST_UNSET_TOKEN", raising=False)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[run]\nname = "creds"\n[sweep]\ngrid.i = [1, 2]\n'
        '[backend]\nkind = "gongji"\nurl = "http://127.0.0.1:9"\n'
        'token_env = "BULK_TEST_UNSET_TOKEN"\nprivate_key_file = "missing.pem"\n'
        '[job]\ntask_name = "{_name}"\npoints = 1\n'
        'resources = [{mark = "m"}]\n'
        'services = [{service_name = "s", service_image = "i", resource_weight = 1}]\n'
        'job_support = {timeout_sec = 60, parallelism = 1, mod_param = "fixed"}\n'
    )

    code = main(["run", str(cfg)])
    err = capsys.readouterr().err.splitlines()

    assert 2 == code
    assert 1 == len(err)
    assert "BULK_TEST_UNSET_TOKEN" in err[0]
    assert not (tmp_path / ".bulk").exists()


@pytest.mark.parametrize(
    ("backend", "field"),
    [
        ('kind = "stub"\nurl = "http://127.0.0.1:9"\ntoken_file = "missing"', "token_file"),
        ('kind = "gongji"\nurl = "http://127.0.0.1:9"\ntoken_file = "missing"', "token_file"),
        (
            'kind = "gongji"\nurl = "http://127.0.0.1:9"\ntoken_env = "BULK_TEST_UNSET_TOKEN"',
            "token_env",
        ),
    ],
    ids=["stub-token-file", "gongji-token-file", "gongji-token-env"],
)
def test_credential_errors_name_the_config_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    field: str,
) -> None:
    """A secret that cannot be read is reported as `config.toml: backend.KEY: ...`, like
    every other config error (it had no file)."""
    monkeypatch.delenv("BULK_TEST_UNSET_TOKEN", raising=False)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[run]\nname = "creds"\n[sweep]\ngrid.i = [1, 2]\n[backend]\n{backend}\n'
        '[job]\ntask_name = "{_name}"\ncommand = "echo {i}"\n'
    )

    code = main(["run", str(cfg)])
    err = capsys.readouterr().err.splitlines()

    assert 2 == code
    assert 1 == len(err)
    assert err[0].startswith(f"{cfg}: backend.{field}: "), err[0]


def test_out_of_memory_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MemoryError, whatever raised it, is one line and exit 2: never a traceback."""

    def exhausted(_path: object) -> NoReturn:
        raise MemoryError

    monkeypatch.setattr(bulk._api, "load", exhausted)  # what `bulk plan` reads a config with

    assert 2 == main(["plan", str(tmp_path / "run.toml")])

    err = capsys.readouterr().err
    assert err.startswith("bulk: error: out of memory; lower [sweep] max_jobs")
    assert 1 == len(err.splitlines())


def test_out_of_memory_inside_a_task_group_is_unwrapped() -> None:
    """A task group wraps a task's MemoryError in a group: it comes out as MemoryError."""

    async def tasks() -> None:
        async def exhausted() -> None:
            raise MemoryError

        async with anyio.create_task_group() as tg:
            tg.start_soon(exhausted)

    with pytest.raises(MemoryError):
        run_async(tasks(), uvloop=False)


@pytest.fixture
def gc_settings() -> Iterator[tuple[tuple[int, int, int], int]]:
    """The collector's thresholds and frozen count before the test, restored after it."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        yield threshold, frozen
    finally:
        gc.set_threshold(*threshold)
        if gc.get_freeze_count() != frozen:
            gc.unfreeze()


def test_main_leaves_the_garbage_collector_alone(
    gc_settings: tuple[tuple[int, int, int], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """main() runs inside a program or a test: process-wide GC tuning is not its to do."""
    assert 0 == main(["--version"])

    assert gc_settings == (gc.get_threshold(), gc.get_freeze_count())


def test_the_console_script_tunes_the_garbage_collector(
    gc_settings: tuple[tuple[int, int, int], int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The installed `bulk` executable is the function that tunes the collector, then runs
    the command."""
    (script,) = entry_points(group="console_scripts", name="bulk")
    monkeypatch.setattr(sys, "argv", ["bulk", "--version"])

    with pytest.raises(SystemExit) as exited:
        script.load()()

    assert 0 == exited.value.code
    assert "bulk " in capsys.readouterr().out
    assert (50_000, 20, 20) == gc.get_threshold()
    assert gc.get_freeze_count() > 0


def test_python_m_bulk_tunes_the_garbage_collector() -> None:
    """`python -m bulk` is the same executable as `bulk`."""
    code = (
        "import gc, runpy, sys\n"
        "sys.argv = ['bulk', '--version']\n"
        "try:\n"
        "    runpy.run_module('bulk', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, gc.get_threshold()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    version, exit_code, threshold = out.stdout.split()[1:]
    assert (bulk.__version__, "0", "50000") == (version, exit_code, threshold)


def test_the_cli_names_no_backend_outside_its_backend_commands() -> None:
    """The CLI works for any kind: no module of it names one (a kind's simulator and its own
    commands come from the kind)."""
    folder = Path(bulk._cli.__file__).parent
    named = {
        (path.name, kind)
        for path in sorted(folder.glob("*.py"))
        for kind in kind_names()
        if re.search(rf"\b{kind}\b", path.read_text(encoding="utf-8"), re.IGNORECASE)
    }

    assert set() == named
