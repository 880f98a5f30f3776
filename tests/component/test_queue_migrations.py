"""The queue's schema versions: a database written by ttsd 0.1.0 (tests/fixtures/queue-0.1.0.sqlite3,
built by make_queue_0_1_0.py.txt with that release's own Store) opens with everything in it, ends
with the same schema as a fresh one, and a database from a newer ttsd is refused untouched."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlmodel import SQLModel

import ttsd.jobqueue.migrations as migrations
from tests.support.fakes import scratch_dir
from ttsd.errors import StoreError
from ttsd.jobqueue.migrations import LATEST_VERSION, Migration
from ttsd.jobqueue.records import AudioInfo, CacheStats, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobspec import JobSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "queue-0.1.0.sqlite3"
AUDIO = AudioInfo(file="x.wav", format="wav", sample_rate=24_000, duration_s=1.0, bytes=100, sha256="0" * 64)
RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.1)

# name: (state, priority, attempts), as make_queue_0_1_0.py.txt left them
JOBS_0_1_0 = {
    "queued-a": (JobState.QUEUED, 0, 0),
    "queued-b": (JobState.QUEUED, 1, 0),
    "running-c": (JobState.RUNNING, 2, 0),
    "done-d": (JobState.DONE, 3, 1),
    "failed-e": (JobState.FAILED, 4, 1),
    "cancelled-f": (JobState.CANCELLED, 5, 0),
    "long-g": (JobState.RUNNING, 6, 0),
    "seeded-h": (JobState.QUEUED, 0, 0),
}


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    with scratch_dir(tmp_path) as scratch:
        yield scratch


@pytest.fixture
def old_db(folder: Path) -> Path:
    copy = folder / "old" / "ttsd.sqlite3"
    copy.parent.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE, copy)
    return copy


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
        return int(raw.execute("PRAGMA user_version").fetchone()[0])


def schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    """sqlite_master, with each statement's layout (newlines, indentation) ignored."""
    with contextlib.closing(sqlite3.connect(path)) as raw:
        rows = raw.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    return [(kind, name, table, None if sql is None else " ".join(sql.split())) for kind, name, table, sql in rows]


def open_store(path: Path) -> Store:
    store = Store(path)
    store.close()
    return store


def test_the_fixture_is_what_ttsd_0_1_0_wrote() -> None:
    assert user_version(FIXTURE) == 0
    assert {name for _, name, _, _ in schema(FIXTURE)} >= {"job", "chunk", "cacheentry", "counter", "daemonrecord"}


def test_a_0_1_0_queue_opens_with_everything_in_it(old_db: Path) -> None:
    store = Store(old_db)
    try:
        assert user_version(old_db) == LATEST_VERSION
        jobs = {job.name: job for job in store.jobs(limit=None)}
        assert {name: (job.state, job.priority, job.attempts) for name, job in jobs.items()} == JOBS_0_1_0
        assert all(isinstance(job.state, JobState) for job in jobs.values())
        assert (jobs["done-d"].audio_file, jobs["done-d"].duration_s) == ("done-d.wav", 1.5)
        assert jobs["failed-e"].error_code == "engine_permanent"
        assert jobs["cancelled-f"].error_code == "cancelled"
        chunks = store.chunks(jobs["long-g"].id)
        assert [(c.text, c.pause_after_ms, c.done, c.duration_s) for c in chunks] == [
            ("First part.", 350, True, 1.25),
            ("Second part.", 0, False, None),
        ]
        assert store.cache_stats() == CacheStats(entries=1, bytes=4096, hits=1, misses=1)
        daemon = store.latest_daemon()
        assert daemon is not None and (daemon.version, daemon.stopped_at is not None) == ("0.1.0", True)
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_0_1_0_queue_recovers_and_serves_as_before(old_db: Path) -> None:
    store = Store(old_db)
    try:
        recovered = store.recover_interrupted(max_attempts=3)
        assert sorted(job.name for job in recovered) == ["long-g", "running-c"]
        for name in ("long-g", "running-c"):
            job = store.get(name)
            assert (job.state, job.attempts, job.lease_token) == (JobState.QUEUED, 1, None)
        token, claimed = store.claim("tiny", max_batch=4)
        assert [job.name for job in claimed] == ["long-g"]  # tried before, so it runs alone
        resumed = store.plan_chunks(claimed[0].id, token, [])
        assert resumed is not None and [c.done for c in resumed] == [True, False]
        assert store.finish_done(claimed[0].id, token, AUDIO, RUN)
        token, claimed = store.claim("tiny", max_batch=4)
        assert [job.name for job in claimed] == ["running-c"]
        token, claimed = store.claim("tiny", max_batch=4)
        assert [job.name for job in claimed] == ["queued-b", "queued-a", "seeded-h"]  # one lease, any batch key
        for job in claimed:
            assert store.finish_done(job.id, token, AUDIO, RUN)
        assert store.get("queued-a").state == JobState.DONE
        done = store.get("done-d")
        again = JobSpec.model_validate_json(done.spec_json)
        assert again.content_key() == done.content_key
        assert store.enqueue(again).job.id == done.id  # still deduplicated against 0.1.0's rows
    finally:
        store.close()


def test_fresh_and_upgraded_databases_have_the_same_schema(folder: Path, old_db: Path) -> None:
    fresh = folder / "fresh" / "ttsd.sqlite3"
    open_store(fresh)
    open_store(old_db)
    assert user_version(fresh) == user_version(old_db) == LATEST_VERSION
    assert schema(fresh) == schema(old_db)
    assert "ix_job_claim" in {name for _, name, _, _ in schema(fresh)}


def test_the_table_classes_match_the_migrated_schema(folder: Path) -> None:
    path = folder / "ttsd.sqlite3"
    open_store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
        for table in SQLModel.metadata.sorted_tables:
            columns = raw.execute(f'PRAGMA table_info("{table.name}")').fetchall()
            in_database = {name: (bool(notnull), bool(pk)) for _, name, _, notnull, _, pk in columns}
            in_classes = {column.name: (not column.nullable, column.primary_key) for column in table.columns}
            assert in_database == in_classes, table.name


def test_a_database_from_a_newer_ttsd_is_refused_untouched(folder: Path) -> None:
    path = folder / "ttsd.sqlite3"
    open_store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
        raw.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    before = schema(path)
    with pytest.raises(StoreError, match=rf"schema version {LATEST_VERSION + 1}\b.*up to {LATEST_VERSION}\b"):
        Store(path)
    assert user_version(path) == LATEST_VERSION + 1
    assert schema(path) == before


def test_a_failing_migration_leaves_the_previous_version_whole(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "ttsd.sqlite3"
    open_store(path)

    def half_done(connection: Connection) -> None:
        connection.exec_driver_sql("CREATE TABLE half_done (id INTEGER)")
        raise RuntimeError("the disk is gone")

    broken = Migration(LATEST_VERSION + 1, "breaks halfway", half_done)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST_VERSION", broken.version)
    with pytest.raises(RuntimeError, match="the disk is gone"):
        Store(path)
    assert user_version(path) == LATEST_VERSION
    assert "half_done" not in {name for _, name, _, _ in schema(path)}


def test_processes_opening_a_new_database_at_once_migrate_it_once(folder: Path) -> None:
    path = folder / "ttsd.sqlite3"
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            start.wait(timeout=10)
            open_store(path)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert user_version(path) == LATEST_VERSION
    open_store(folder / "alone.sqlite3")
    assert schema(path) == schema(folder / "alone.sqlite3")
