"""The queue on PostgreSQL: one database that the daemons and workers of several machines share.

Transactions run at READ COMMITTED. What SQLite gets from serializing every write (`BEGIN
IMMEDIATE`), PostgreSQL gets from locks taken where they matter: claims take their rows with
`FOR UPDATE SKIP LOCKED` (two hosts never wait on, nor take, each other's rows), every other change
of a job locks its row first, enqueueing takes a transaction-scoped advisory lock (one new job per
content, whichever host records it), and counters are upserts. Time is the database's `now()`, in
UTC on every connection, so leases and heartbeats mean the same on every host whatever its clock.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from datetime import datetime
from typing import Final

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from ttsd.database_url import masked

TRANSIENT_CLASSES: Final = frozenset({"08", "40", "53", "57"})
"""SQLSTATE classes worth a retry: connection exceptions, transaction rollbacks (deadlocks,
serialization), insufficient resources (too many connections), operator intervention (shutdown)."""
TRANSIENT_STATES: Final = frozenset({"55P03"})
"""Single SQLSTATEs worth a retry: a lock not available."""
PERMANENT_CONNECT_FAILURES: Final = (
    "does not exist",
    "authentication failed",
    "password",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid",
    "could not translate host name",
    "failed to resolve host",
    "Name or service not known",
    "nodename nor servname",
)
"""libpq's words for a connection refused for who or what was asked: no retry brings it in."""
WORK_CHANNEL: Final = "ttsd_work"
"""The NOTIFY channel: its payload is the model whose queue got work."""


def lock_key(name: str) -> int:
    """A stable 32-bit advisory lock key for `name` (the same on every host and Python)."""
    return zlib.crc32(f"ttsd:{name}".encode())


def engine_url(url: str) -> URL:
    """The URL for SQLAlchemy, always through psycopg 3 (SQLAlchemy 2.0 reads a bare `postgresql://`
    as psycopg2, which ttsd does not use)."""
    return make_url(url).set(drivername="postgresql+psycopg")


CONNECTION_OPTIONS: Final[dict[str, str | int]] = {
    "options": "-c timezone=UTC",
    "connect_timeout": 10,
    # A connection whose peer vanished (a cable pulled, a VPN dropped, a NAT that forgot it) fails
    # within about half a minute instead of the kernel's quarter of an hour, so the retry (or the
    # listener's reconnection) starts. libpq ignores these on a unix socket.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq options of every connection: UTC, and a dead peer found soon."""


def server_version(url: str) -> str:
    """The version the server announces when it accepts a connection (one plain connection, which
    fails within the connect timeout: opening the queue would retry an unreachable server)."""
    with connect_listener(url) as connection:
        return connection.info.parameter_status("server_version") or "unknown"


def connect_listener(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of its own (never a pooled one) in autocommit, for LISTEN."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(make_conninfo(plain, **CONNECTION_OPTIONS), autocommit=True)


class PostgresDatabase:
    """The PostgreSQL backend: one pooled engine for reads and writes."""

    dialect = "postgresql"
    shared = True
    db_path = None

    def __init__(self, url: str) -> None:
        self.url = url
        engine = create_engine(
            engine_url(url),
            # Every timestamp is UTC: `now()` and the naive TIMESTAMP columns then agree.
            connect_args=dict(CONNECTION_OPTIONS),
            # No ping before each use (a round trip per transaction): a pooled connection that a server
            # restart broke fails its transaction, the whole pool is discarded, and `transient`
            # runs the transaction again on a new connection.
            pool_size=4,
            max_overflow=16,
        )
        self.writer: Engine = engine
        self.reader: Engine = engine

    def finish_opening(self) -> None:
        """Nothing to do once the schema is in place."""

    def describe(self) -> str:
        """Where the queue is, for messages (without the password)."""
        return masked(self.url)

    insert = staticmethod(postgresql.insert)
    """PostgreSQL's INSERT, which knows ON CONFLICT."""

    def now(self, session: Session) -> datetime:
        """The transaction's time by the server's clock: the same for every host."""
        moment: datetime = session.execute(select(func.now())).scalar_one()
        return moment

    def serialize(self, session: Session, what: str) -> None:
        """A transaction-scoped advisory lock named `what`, held until commit or rollback."""
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(what)})

    def announce(self, session: Session, models: Collection[str]) -> None:
        """NOTIFY, delivered when the transaction commits (and not at all if it rolls back)."""
        for model in sorted(set(models)):
            session.execute(text("SELECT pg_notify(:channel, :model)"), {"channel": WORK_CHANNEL, "model": model})

    def integrity_check(self, session: Session) -> str:
        """PostgreSQL keeps its own data sound; "ok" when the server answers."""
        return "ok" if session.execute(text("SELECT 1")).scalar() == 1 else "no answer"

    def is_transient(self, error: BaseException) -> bool:
        """Whether repeating the transaction may succeed: the server could not be reached or went
        away (a restart, a network cut), or chose this transaction as a deadlock's victim. A wrong
        database name, user or password is not: waiting would only delay saying so."""
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        cause = error.orig if isinstance(error, DBAPIError) else error
        if not isinstance(cause, psycopg.OperationalError):
            return False
        if cause.sqlstate is not None:
            return cause.sqlstate[:2] in TRANSIENT_CLASSES or cause.sqlstate in TRANSIENT_STATES
        # A failed connection attempt carries no SQLSTATE; libpq's message says what went wrong.
        return not any(words in str(cause) for words in PERMANENT_CONNECT_FAILURES)

    def close(self) -> None:
        """Release the connection pool."""
        self.writer.dispose()
