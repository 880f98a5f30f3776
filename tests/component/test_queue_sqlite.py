"""The SQLite queue (`Store`): the whole queue contract, plus what only a SQLite file has: PRAGMAs,
WAL, file modes, and the query plan of the claim."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from tests.component.queue_contract import QueueContract, enqueue
from tests.support.fakes import FAKE_MODEL, scratch_dir
from tests.support.stores import store_opener
from ttsd.jobqueue.leasing import claim_query
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import utcnow


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    with scratch_dir(tmp_path) as folder:
        yield folder / "state" / "ttsd.sqlite3"


class TestSQLiteQueue(QueueContract):
    """Every contract test on a real SQLite file, and the tests only a SQLite file has."""

    @pytest.fixture
    def open_queue(self, db_path: Path) -> Iterator[Callable[[], Store]]:
        yield from store_opener(db_path)

    def test_database_file_is_private_durable_and_sound(self, store: Store) -> None:
        enqueue(store, "something")
        path = store.db_path
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with store._read():  # an open connection keeps -wal and -shm around
            for suffix in ("-wal", "-shm"):
                side = Path(f"{path}{suffix}")
                if side.exists():
                    assert stat.S_IMODE(side.stat().st_mode) == 0o600
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            raw.close()
        for engine in (store.backend.reader, store.backend.writer):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert store.integrity_check() == "ok"

    def test_the_claim_reads_its_index_in_claim_order(self, store: Store) -> None:
        query = claim_query(FAKE_MODEL, utcnow()).limit(1).compile(dialect=sqlite.dialect())
        with store._read() as session:
            plan = session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", tuple(query.params.values()))
            details = [row[-1] for row in plan]
        assert any("USING INDEX ix_job_claim (model=? AND state=?)" in detail for detail in details), details
        assert not any("TEMP B-TREE" in detail for detail in details), details
