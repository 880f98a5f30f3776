"""The queue's SQLite file: engines, PRAGMAs, transactions and file modes.

SQLite in WAL mode with `synchronous=FULL`, so a committed transaction survives a crash and a power
loss. pysqlite's own transaction handling is switched off and every write transaction starts with
`BEGIN IMMEDIATE` (a deferred one that upgrades to a write can fail with SQLITE_BUSY at once,
whatever the busy timeout says). No transaction is ever held while audio is synthesized: a claim
is a short write, and the result is recorded by a guarded update that only the lease holder wins.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlmodel import Session

from ttsd.jobqueue.tables import utcnow


def _make_engine(db_path: Path, immediate: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{db_path}",
        # Pooled connections are handed to one thread at a time; opening one per query (and running
        # its PRAGMAs) cost more than the queries themselves. ttsd never forks with a connection open
        # (hooks start programs through subprocess, which execs at once).
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=4,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        if sys.platform == "darwin":
            # macOS fsync does not reach the platter; F_FULLFSYNC does.
            cursor.execute("PRAGMA fullfsync=ON")
            cursor.execute("PRAGMA checkpoint_fullfsync=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


WAL_SWITCH_TIMEOUT_S = 30.0


def _enable_wal(db_path: Path) -> None:
    """Put the file in WAL mode (it stays so) before any pool opens it. Switching a new file needs an
    exclusive lock, and SQLite refuses that at once, busy timeout or not, while another process or
    thread opening the same new file holds a lock on it: so the switch is retried for a while. On a
    file already in WAL mode the pragma is a no-op that takes no lock."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT_S
    while True:
        try:
            with contextlib.closing(sqlite3.connect(db_path, timeout=WAL_SWITCH_TIMEOUT_S)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteFile:
    """The SQLite backend: a private file in WAL mode, a writer engine whose transactions begin
    `BEGIN IMMEDIATE` (so every write transaction is serialized, and read-modify-write is safe
    without row locks) and a reader engine. One machine only: the file lives in the state folder."""

    dialect = "sqlite"
    shared = False

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file private before SQLite opens it (SQLite gives -wal and -shm the same mode),
        # so the queue is never readable by others, not even for a moment.
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))
        _enable_wal(db_path)
        self.writer = _make_engine(db_path, immediate=True)
        self.reader = _make_engine(db_path, immediate=False)

    def finish_opening(self) -> None:
        """After the schema is in place: -wal and -shm exist now, private like the file."""
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.db_path}{suffix}")
            if path.exists():
                path.chmod(0o600)

    def describe(self) -> str:
        """Where the queue is, for messages."""
        return str(self.db_path)

    insert = staticmethod(sqlite.insert)
    """SQLite's INSERT, which knows ON CONFLICT."""

    def now(self, session: Session) -> datetime:
        """Now: the database lives on this host, so its clock is this host's."""
        return utcnow()

    def serialize(self, session: Session, what: str) -> None:
        """Nothing to take: every write transaction holds SQLite's one write lock already."""

    def announce(self, session: Session, models: Collection[str]) -> None:
        """Nothing to send: the one daemon of this queue wakes its own workers."""

    def integrity_check(self, session: Session) -> str:
        """SQLite's own verdict on the database file ("ok" when sound)."""
        return str(session.connection().exec_driver_sql("PRAGMA integrity_check").scalar())

    def is_transient(self, error: BaseException) -> bool:
        """SQLite has no connection to lose: a failed statement is never worth repeating."""
        return False

    def close(self) -> None:
        """Release the connection pools."""
        self.writer.dispose()
        self.reader.dispose()


def inspect_database(db_path: Path) -> str:
    """SQLite's verdict on a queue file, read-only and without migrating it ("ok" when sound), for
    `ttsd doctor`: anything else is what is wrong, such as "file is not a database"."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)) as connection:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    verdict = "; ".join(str(row[0]) for row in rows[:5])
    return verdict or "no answer"


def quarantine_damaged(db_path: Path) -> tuple[Path, str] | None:
    """Move a queue file that SQLite finds damaged aside (with its -wal and -shm), so the daemon can
    start on a fresh one; returns where it went and what was wrong, or None when it is sound."""
    if not db_path.exists():
        return None
    verdict = inspect_database(db_path)
    if verdict == "ok":
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db_path}{suffix}")
        if source.exists():
            source.replace(Path(f"{moved}{suffix}"))
    return moved, verdict
