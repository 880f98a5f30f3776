"""Inbox files taken once: when several hosts scan one shared inbox, the database decides which of
them takes each file (a row keyed by the file as it was seen), in the same transaction that records
the file's jobs. A host that finds a file taken leaves it to its taker, or, when the taker has not
moved it out of the inbox in a while (it died between recording and moving), moves it itself."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from ttsd.jobqueue.database import Database, transient
from ttsd.jobqueue.new_rows import ENQUEUE_LOCK, add_jobs, rejected_row
from ttsd.jobqueue.records import InboxTake, TakeResult
from ttsd.jobqueue.tables import InboxFile


class InboxFiles(Database):
    """Which inbox files were taken, by whom, and where they go."""

    @transient
    def take_files(self, takes: Sequence[InboxTake], taken_by: str) -> list[TakeResult]:
        """Take each file not taken before, and record its jobs and rejections, all in one
        transaction; a file taken before is reported as such, its jobs untouched."""
        with self._write() as session:
            self._serialize(session, ENQUEUE_LOCK)
            now = self._now(session)
            keys = [take.key for take in takes]
            before = {row.key: row for row in session.exec(select(InboxFile).where(col(InboxFile.key).in_(keys)))}
            fresh: list[int] = []  # positions in `takes` of the files this call takes
            for position, take in enumerate(takes):
                if take.key in before:
                    continue
                row = InboxFile(key=take.key, name=take.name, folder=take.folder, taken_by=taken_by, taken_at=now)
                before[take.key] = row
                session.add(row)
                fresh.append(position)
            # The jobs of every file taken now, looked up and created together: one query for the
            # burst, and the same job in two files is one job, as ever.
            created = iter(add_jobs(session, [item for position in fresh for item in takes[position].jobs], now))
            results: list[TakeResult] = []
            models: set[str] = set()
            taken_now = set(fresh)
            for position, take in enumerate(takes):
                if position not in taken_now:
                    earlier = before[take.key]
                    age = max(0.0, (now - earlier.taken_at).total_seconds())
                    results.append(TakeResult(False, earlier.folder, age, earlier.taken_by))
                    continue
                jobs = tuple(next(created) for _ in take.jobs)
                rejected = tuple(rejected_row(rejection, now) for rejection in take.rejections)
                session.add_all(rejected)
                models.update(result.job.model for result in jobs if result.created)
                results.append(TakeResult(True, take.folder, 0.0, taken_by, jobs, rejected))
            self._announce(session, models)
            return results

    @transient
    def forget_taken_files(self, before: datetime | None = None, older_than_s: float = 7 * 86400.0) -> int:
        """Forget files taken over `older_than_s` ago (long moved out of the inbox); returns how many."""
        with self._write() as session:
            cutoff = (before or self._now(session)) - timedelta(seconds=older_than_s)
            result = session.execute(delete(InboxFile).where(col(InboxFile.taken_at) < cutoff))
            return int(result.rowcount)  # type: ignore[attr-defined]
