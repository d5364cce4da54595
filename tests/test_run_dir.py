"""The run folder and its journal at their edges: lost, damaged, unwritable, full, or read.

Each case ends in one line on stderr and a non-zero exit, never a traceback, and never in a
second copy of a job that already ran. Cases that need a real disk limit or file modes that
bind run bulk in a subprocess: under ``RLIMIT_FSIZE`` (with SIGXFSZ ignored, so that writes
fail with EFBIG as on a full disk) and, when the tests run as root (whom modes do not stop),
without the capabilities that bypass them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import bulk._config as config
import bulk._runs as runs
from bulk._cli import main
from bulk._journal import Journal
from bulk.backends.base import Submission
from bulk.backends.local import LocalBackend, LocalOptions
from bulk.errors import JournalError


def write_config(folder: Path, *, rows: int = 6, command: str = "echo {i} >> done.log") -> Path:
    path = folder / "run.toml"
    path.write_text(
        f'[run]\nname = "demo"\n[sweep]\ngrid.i = {{range = [0, {rows}]}}\n'
        f'[retry]\nattempts = 2\nbase_s = 0.01\n[job]\ncommand = "{command}"\n'
    )
    return path


def run_dir(config_path: Path) -> Path:
    return config_path.parent / ".bulk" / "demo"


def done_lines(folder: Path) -> list[str]:
    return (folder / "done.log").read_text().split()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_error_line(err: str) -> str:
    """The single line bulk printed (asserting there is exactly one, and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert 1 == len(lines), err
    return lines[0]


def bulk(
    folder: Path, *args: str, fsize: int | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    """`bulk ARGS` in a subprocess, optionally under a file-size limit or as another user."""
    code = "import resource, signal, sys\n"
    if fsize is not None:
        code += (
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n"
        )
    code += "from bulk._cli import main\nsys.exit(main(sys.argv[1:]))\n"
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        # Root without the capabilities that bypass file permissions: bound by modes as any
        # user is, and still able to run this interpreter (which may live under /root).
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def writable_again(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, its folders made writable again at the end so that pytest can remove it."""
    yield tmp_path
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


class TestLostJournal:
    def test_a_deleted_journal_is_refused_and_nothing_runs_twice(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Journal deleted after a run: the rerun exits 2, says what to do, sends nothing."""
        config_path = write_config(tmp_path)
        assert 0 == main(["run", str(config_path)])
        (run_dir(config_path) / "journal.sqlite").unlink()
        capsys.readouterr()

        code = main(["run", str(config_path)])
        line = one_error_line(capsys.readouterr().err)

        assert 2 == code
        assert "the run's journal is missing" in line
        assert "run.json" in line
        assert "logs/" in line
        assert "bulk run --restart" in line
        assert "move or delete" in line
        assert 6 == len(done_lines(tmp_path))

    def test_run_json_alone_marks_a_run_that_sent_jobs(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A remote run leaves no logs or pid files: run.json alone is enough to refuse."""
        config_path = write_config(tmp_path)
        assert 0 == main(["run", str(config_path)])
        folder = run_dir(config_path)
        for name in ("journal.sqlite", "logs", "pids"):
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        capsys.readouterr()

        assert 2 == main(["run", str(config_path)])
        assert "(run.json)" in capsys.readouterr().err
        assert 6 == len(done_lines(tmp_path))

    def test_a_wal_without_its_journal_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A -wal left without its database is a trace (and would be replayed into a new one)."""
        config_path = write_config(tmp_path)
        folder = run_dir(config_path)
        folder.mkdir(parents=True)
        (folder / "journal.sqlite-wal").write_bytes(b"\0" * 32)

        assert 2 == main(["run", str(config_path)])
        assert "journal.sqlite-wal" in capsys.readouterr().err
        assert not (tmp_path / "done.log").exists()

    def test_status_says_the_journal_was_lost(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """status, export and stop of a lost journal say it was lost, not "never started"."""
        config_path = write_config(tmp_path)
        assert 0 == main(["run", str(config_path)])
        (run_dir(config_path) / "journal.sqlite").unlink()
        capsys.readouterr()

        for command in ("status", "export", "stop"):
            assert 2 == main([command, str(config_path)])
            line = one_error_line(capsys.readouterr().err)
            assert "the run's journal is missing" in line, command

    def test_a_refused_bad_input_leaves_no_trace(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run refused for bad input sent nothing: once fixed, it starts without --restart."""
        config_path = write_config(tmp_path, command="echo {i} {j} >> done.log")
        assert 2 == main(["run", str(config_path)])
        assert (run_dir(config_path) / "lock").exists()
        write_config(tmp_path)

        assert 0 == main(["run", str(config_path)])
        assert 6 == len(done_lines(tmp_path))

    def test_restart_after_a_loss_runs_every_job_under_new_names(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--restart starts anew past every attempt the folder used, retries included."""
        config_path = write_config(tmp_path, command="test {i} -ne 2 || test -e fixed")
        assert 1 == main(["run", str(config_path)])
        (tmp_path / "fixed").touch()
        assert 0 == main(["retry", str(config_path)])  # row 2 was sent again as attempt 2
        (run_dir(config_path) / "journal.sqlite").unlink()

        assert 0 == main(["run", str(config_path), "--restart"])
        capsys.readouterr()
        main(["export", str(config_path), "--format", "jsonl"])
        names = capsys.readouterr().out

        assert names.count('"attempt":3') == 6
        assert '"state":"succeeded"' in names

    def test_restart_moves_a_stray_wal_aside_instead_of_replaying_it(self, tmp_path: Path) -> None:
        """SQLite replays a -wal into any database of its name: --restart archives it first."""
        config_path = write_config(tmp_path)
        folder = run_dir(config_path)
        folder.mkdir(parents=True)
        other = sqlite3.connect(tmp_path / "other.sqlite", isolation_level=None)
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("PRAGMA wal_autocheckpoint=0")
        other.execute("CREATE TABLE unrelated(x)")
        shutil.copy(tmp_path / "other.sqlite-wal", folder / "journal.sqlite-wal")
        other.close()

        assert 0 == main(["run", str(config_path), "--restart"])

        assert (folder / "journal-1.sqlite-wal").exists()
        with Journal.open(folder / "journal.sqlite") as journal:
            assert {"succeeded": 6} == journal.counts()
        with contextlib.closing(sqlite3.connect(folder / "journal.sqlite")) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "unrelated" not in tables


class TestAnotherRunsJournal:
    def test_a_journal_copied_from_another_run_is_refused_by_every_command(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """j1's journal copied into j2's folder would make j2 act on j1's rows and remote
        ids: run, status, stop, retry and export refuse it (exit 2, one line), untouched."""
        config_path = write_config(tmp_path, rows=3)
        assert 0 == main(["run", str(config_path)])
        other = tmp_path / "other.toml"
        other.write_text(config_path.read_text().replace('name = "demo"', 'name = "other"'))
        copied = tmp_path / ".bulk" / "other" / "journal.sqlite"
        copied.parent.mkdir(mode=0o700)
        shutil.copy(run_dir(config_path) / "journal.sqlite", copied)
        before = copied.read_bytes()
        capsys.readouterr()

        for command in ("run", "status", "stop", "retry", "export"):
            assert 2 == main([command, str(other)]), command
            line = one_error_line(capsys.readouterr().err)
            assert f"{copied}: this journal belongs to run 'demo', not to run 'other'" in line
            assert "bulk run --restart" in line

        assert before == copied.read_bytes()
        assert 3 == len(done_lines(tmp_path))

    def test_restart_starts_this_run_afresh(self, tmp_path: Path) -> None:
        """The way out the message names: --restart keeps the copy aside, runs every job."""
        config_path = write_config(tmp_path, rows=3)
        assert 0 == main(["run", str(config_path)])
        other = tmp_path / "other.toml"
        other.write_text(config_path.read_text().replace('name = "demo"', 'name = "other"'))
        copied = tmp_path / ".bulk" / "other" / "journal.sqlite"
        copied.parent.mkdir(mode=0o700)
        shutil.copy(run_dir(config_path) / "journal.sqlite", copied)

        assert 0 == main(["run", "--restart", str(other)])

        assert 6 == len(done_lines(tmp_path))
        with Journal.open(copied) as journal:
            assert "other" == journal.meta()["run"]


def damage(path: Path) -> None:
    """Zero a run of pages in the middle of a SQLite file (keeping its header page)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 3 // 4096 * 4096)
        f.write(b"\0" * (size // 3))


class TestDamagedJournal:
    def test_a_damaged_journal_is_refused_before_anything_changes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """run and status refuse a damaged journal (exit 2, one line); the file is untouched."""
        config_path = write_config(tmp_path, rows=3000)
        cfg = config.load(config_path)
        journal, _ = runs.open_run(cfg)
        journal.close()
        damage(cfg.journal_path)
        before = cfg.journal_path.read_bytes()

        for command in ("run", "status"):
            assert 2 == main([command, str(config_path)]), command
            line = one_error_line(capsys.readouterr().err)
            assert "the journal is damaged" in line
            assert "--restart" in line

        assert before == cfg.journal_path.read_bytes()
        assert not (tmp_path / "done.log").exists()

    @pytest.mark.parametrize("size", [100, 4096])
    def test_a_journal_cut_short_is_called_damaged(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], size: int
    ) -> None:
        """A journal that lost its tail (cut inside its header or first page) is damaged:
        the advice is what to do about it, not that bulk cannot write its folder."""
        config_path = write_config(tmp_path, rows=3000)
        cfg = config.load(config_path)
        journal, _ = runs.open_run(cfg)
        journal.close()
        with cfg.journal_path.open("r+b") as f:
            f.truncate(size)

        for command in ("run", "status", "stop"):
            assert 2 == main([command, str(config_path)]), command
            line = one_error_line(capsys.readouterr().err)
            assert "the journal is damaged" in line, line
            assert "needs to write" not in line

    def test_restart_archives_a_damaged_journal(self, tmp_path: Path) -> None:
        """--restart moves a damaged journal aside and starts a new run."""
        config_path = write_config(tmp_path, rows=3000)
        cfg = config.load(config_path)
        journal, _ = runs.open_run(cfg)
        journal.close()
        damage(cfg.journal_path)

        journal, resumed = runs.open_run(cfg, restart=True)
        with journal:
            assert (False, {"pending": 3000}) == (resumed, journal.counts())
            assert 2 == journal.max_attempt()  # run.json said attempt 1 had been used
        assert (run_dir(config_path) / "journal-1.sqlite").exists()

    def test_open_reports_damage_in_one_line(self, tmp_path: Path) -> None:
        """The quick_check report (several lines from SQLite) becomes one line."""
        config_path = write_config(tmp_path, rows=3000)
        cfg = config.load(config_path)
        journal, _ = runs.open_run(cfg)
        journal.close()
        damage(cfg.journal_path)

        with pytest.raises(JournalError) as info:
            Journal.open(cfg.journal_path)

        assert "\n" not in str(info.value)
        assert str(info.value).startswith(f"{cfg.journal_path}: the journal is damaged (")


@pytest.mark.slow
class TestDiskErrors:
    def test_disk_full_while_the_journal_is_built(self, tmp_path: Path) -> None:
        """A journal that cannot be written is one line, exit 2, and leaves no journal."""
        write_config(tmp_path, rows=20_000)

        done = bulk(tmp_path, "run", "run.toml", fsize=256 * 1024)
        line = one_error_line(done.stderr)

        assert 2 == done.returncode
        assert "journal" in line
        assert "cannot" in line
        assert ["lock"] == sorted(p.name for p in run_dir(tmp_path / "run.toml").iterdir())

    def test_disk_full_mid_run_stops_and_keeps_what_was_committed(self, tmp_path: Path) -> None:
        """The journal's WAL hits the limit mid-run: one line, exit 2; the rerun finishes."""
        config_path = write_config(tmp_path, rows=400, command="true")

        done = bulk(tmp_path, "run", "run.toml", "--progress-interval", "1000", fsize=300 * 1024)
        line = one_error_line(done.stderr)
        with Journal.open(run_dir(config_path) / "journal.sqlite") as journal:
            kept = journal.counts().get("succeeded", 0)

        assert 2 == done.returncode
        assert "cannot write the journal" in line
        assert 0 < kept < 400
        assert 0 == main(["run", str(config_path)])

    def test_a_journal_damaged_mid_run_ends_the_run_in_one_line(self, tmp_path: Path) -> None:
        """A job zeroes the journal's pages: bulk stops with one line at the first bad read."""
        (tmp_path / "damage.py").write_text(
            "import os\n"
            "path = '.bulk/demo/journal.sqlite'\n"
            "with open(path, 'r+b') as f:\n"
            "    f.seek(2 * 4096)\n"
            "    f.write(bytes(os.path.getsize(path) - 2 * 4096))\n"
        )
        write_config(tmp_path, rows=3000, command=f"test {{i}} -ne 0 || {sys.executable} damage.py")

        done = bulk(tmp_path, "run", "run.toml", "--progress-interval", "1000")
        line = one_error_line(done.stderr)

        assert 2 == done.returncode
        # A read or a commit finds the damage first, whichever comes first: both say so.
        assert "bulk: error: .bulk/demo/journal.sqlite: cannot " in line
        assert 2 == bulk(tmp_path, "status", "run.toml").returncode


class TestPermissions:
    def test_run_files_are_owner_only(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The run folder, journal, logs, lock, run.json, archives and exports: 0700/0600."""
        config_path = write_config(tmp_path)
        old = os.umask(0o022)
        try:
            assert 0 == main(["run", str(config_path)])
            assert 0 == main(["run", str(config_path), "--restart"])
            out = tmp_path / "export.csv"
            assert 0 == main(["export", str(config_path), "-o", str(out)])
        finally:
            os.umask(old)
        folder = run_dir(config_path)
        files = [
            folder / "journal.sqlite",
            folder / "journal-1.sqlite",
            folder / "lock",
            folder / "run.json",
            out,
            *(folder / "logs").iterdir(),
        ]

        assert {0o700} == {mode(p) for p in (folder, folder / "logs", folder / "pids")}
        assert {0o600} == {mode(p) for p in files}

    def test_a_live_journals_wal_and_shm_are_owner_only(self, tmp_path: Path) -> None:
        """SQLite gives the -wal and -shm the journal's own mode."""
        with Journal.create(tmp_path / "j.sqlite", {"run": "t"}) as journal:
            journal.set_meta({"x": "1"})
            sides = [tmp_path / "j.sqlite-wal", tmp_path / "j.sqlite-shm"]

            assert {0o600} == {mode(p) for p in sides}

    async def test_pid_files_are_owner_only(self, tmp_path: Path) -> None:
        """A local job's pid file (and its logs) are 0600 while it runs."""
        backend = LocalBackend(LocalOptions(base=tmp_path), run_dir=tmp_path / "run")
        try:
            await backend.submit(Submission("demo-1", b'{"command": "sleep 30"}'))
            pid_file = anyio.Path(tmp_path / "run" / "pids" / "demo-1")
            pid_mode = stat.S_IMODE((await pid_file.stat()).st_mode)
            log_mode = stat.S_IMODE(
                (await anyio.Path(tmp_path / "run" / "logs" / "demo-1.out").stat()).st_mode
            )
        finally:
            await backend.aclose()

        assert (0o600, 0o600) == (pid_mode, log_mode)

    @pytest.mark.slow
    def test_an_unwritable_run_folder_is_one_line(self, writable_again: Path) -> None:
        """A run folder bulk may not write to: exit 2 and what to do, nothing run."""
        write_config(writable_again)
        folder = run_dir(writable_again / "run.toml")
        folder.mkdir(parents=True, mode=0o555)
        folder.chmod(0o555)

        done = bulk(writable_again, "run", "run.toml", unprivileged=True)
        line = one_error_line(done.stderr)

        assert 2 == done.returncode
        assert "cannot use this run folder" in line
        assert not (writable_again / "done.log").exists()

    @pytest.mark.slow
    def test_restart_in_a_read_only_run_folder_is_one_line(self, writable_again: Path) -> None:
        """--restart where the old journal cannot be moved aside: exit 2, the journal kept."""
        config_path = write_config(writable_again, command="true")
        assert 0 == main(["run", str(config_path)])
        folder = run_dir(config_path)
        folder.chmod(0o555)

        done = bulk(writable_again, "run", "run.toml", "--restart", unprivileged=True)
        line = one_error_line(done.stderr)

        assert 2 == done.returncode
        assert "cannot move the old journal aside" in line
        assert (folder / "journal.sqlite").exists()
