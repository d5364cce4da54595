"""The journal: filling, duplicate detection, state changes, the writer and the run lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from bulk._journal import Journal, JournalWriter, Record, RunLock, State
from bulk._naming import Point, point_key
from bulk.errors import JournalError, RunLockedError


def make_points(values: list[int]) -> list[Point]:
    return [Point(i, point_key({"x": v}), f"s.csv:{i + 2}", {"x": v}) for i, v in enumerate(values)]


def filled(tmp_path: Path, values: list[int], allow: bool = False) -> tuple[Journal, list[Any]]:
    journal = Journal.create(tmp_path / "j.sqlite", {"run": "t"})
    stored = list(journal.fill(make_points(values)))
    return journal, [stored, journal.finish(allow_duplicates=allow)]


class TestFill:
    def test_points_are_stored_pending_in_order(self, tmp_path: Path) -> None:
        """Every point becomes one pending row; variables round-trip."""
        journal, (stored, dups) = filled(tmp_path, [5, 6, 7])

        assert [] == dups
        assert 3 == len(stored) == journal.total()
        assert {"pending": 3} == journal.counts()
        assert [{"x": 5}, {"x": 6}, {"x": 7}] == [j.variables for j in journal.jobs()]

    def test_duplicates_are_reported_with_both_origins(self, tmp_path: Path) -> None:
        """A repeated point is reported against the first one, in file order."""
        _, (_, dups) = filled(tmp_path, [1, 2, 1, 3, 2, 1])

        assert [("s.csv:4", "s.csv:2"), ("s.csv:6", "s.csv:3"), ("s.csv:7", "s.csv:2")] == dups

    def test_allowed_duplicates_get_distinct_stable_keys(self, tmp_path: Path) -> None:
        """With allow_duplicates, repeats are kept under keys that count their occurrence."""
        journal, (_, dups) = filled(tmp_path, [1, 1, 1], allow=True)
        keys = [j.key for j in journal.jobs()]

        assert [] == dups
        assert [point_key({"x": 1}, n) for n in range(3)] == keys

    def test_open_refuses_a_foreign_file(self, tmp_path: Path) -> None:
        """A file that is not a bulk journal is a JournalError, not a traceback."""
        path = tmp_path / "j.sqlite"
        path.write_bytes(b"not a database" * 100)

        with pytest.raises(JournalError, match="not a readable bulk journal"):
            Journal.open(path)


class TestStates:
    def test_apply_and_retry_reset(self, tmp_path: Path) -> None:
        """Records update only the fields they set; retry resets failed rows to a new attempt."""
        journal, _ = filled(tmp_path, [1, 2])
        journal.apply([Record(0, State.SUBMITTED, attempt=1, remote_id="r0", submitted_at=1.0)])
        journal.apply([Record(0, State.FAILED, finished_at=2.0, error="exit code 3")])

        (job,) = journal.jobs([State.FAILED])
        assert ("r0", 1.0, 2.0, "exit code 3") == (
            job.remote_id,
            job.submitted_at,
            job.finished_at,
            job.error,
        )
        assert 1 == journal.reset_failed()
        (again,) = journal.jobs([State.PENDING], limit=1)
        assert (0, 2, None) == (again.index, again.attempt, again.remote_id)

    def test_iter_jobs_pages_through_everything(self, tmp_path: Path) -> None:
        """Paged reading returns every row exactly once, in order."""
        journal, _ = filled(tmp_path, list(range(25)))

        assert list(range(25)) == [j.index for j in journal.iter_jobs(page=7)]

    def test_a_journal_deleted_while_open_refuses_writes(self, tmp_path: Path) -> None:
        """SQLite would go on writing to the deleted file: bulk stops at the next commit."""
        journal, _ = filled(tmp_path, [1, 2])
        journal.path.unlink()

        with pytest.raises(JournalError, match="deleted or replaced while this run was using"):
            journal.apply([Record(0, State.SUBMITTING, attempt=1)])


class TestWriter:
    async def test_write_returns_once_committed(self, tmp_path: Path) -> None:
        """After `await write`, another connection sees the change; batches share commits."""
        journal, _ = await anyio.to_thread.run_sync(filled, tmp_path, list(range(50)))
        writer = JournalWriter(journal)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            async with anyio.create_task_group() as writers:
                for i in range(50):
                    writers.start_soon(writer.write, Record(i, State.SUBMITTING, attempt=1))
            other = await anyio.to_thread.run_sync(Journal.open, journal.path)
            seen = await anyio.to_thread.run_sync(other.counts)
            writer.record_nowait(Record(0, State.SUBMITTED))
            await writer.aclose()

        assert {"submitting": 50} == seen
        assert 51 == writer.records
        assert writer.commits < 51
        assert {"submitted": 1, "submitting": 49} == await anyio.to_thread.run_sync(journal.counts)


def test_run_lock_is_exclusive(tmp_path: Path) -> None:
    """A second lock on the same run folder is refused while the first is held."""
    with (
        RunLock(tmp_path),
        pytest.raises(RunLockedError, match="in use by another bulk process"),
    ):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path):
        pass  # released: can be taken again
