"""The open queue database, whichever backend holds it: a SQLite file (one machine, the default) or
a PostgreSQL database (`TTS_DATABASE_URL`, shared by several machines).

The aggregates (`ttsd.jobqueue.lifecycle` and the others) are written once for both. They take
their transactions, the database's clock, their locks and their notifications from here, and each
backend supplies what its engine needs: SQLite serializes every write transaction, so a lock here
is a no-op there; PostgreSQL locks rows and keys, and tells idle hosts that work arrived.

A transaction that fails because the connection to PostgreSQL was lost (a server restart, a
network cut) is run again from the start by `transient`, with backoff, for up to `reconnect_for_s`
(`RECONNECT_FOR_S` for a daemon). Every public method of the queue is one or a few whole
transactions. A commit can land with its answer lost; the methods whose second run would then do
harm (a claim, a finish, a cancel, a retry) recognize the try that committed, and the others
(counters, a take of a file) at worst report a duplicate.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from ttsd.database_url import is_postgres_url
from ttsd.errors import StoreError
from ttsd.jobqueue.migrations import migrate
from ttsd.jobqueue.postgres import PostgresDatabase
from ttsd.jobqueue.sqlite_file import SqliteFile

log = logging.getLogger(__name__)

RECONNECT_FOR_S: Final = 120.0
"""How long a daemon's transaction is retried while the database is unreachable before it fails."""
_BACKOFF_S: Final = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
LOG_EVERY_TRIES: Final = 10

P = ParamSpec("P")
R = TypeVar("R")


class Backend(Protocol):
    """What `Database` needs from a backend."""

    @property
    def dialect(self) -> str: ...

    @property
    def shared(self) -> bool:
        """Whether several hosts may use the database at once."""

    @property
    def db_path(self) -> Path | None: ...

    @property
    def writer(self) -> Engine: ...

    @property
    def reader(self) -> Engine: ...

    @property
    def insert(self) -> Any:
        """The dialect's INSERT construct, which knows ON CONFLICT (upserts)."""

    def now(self, session: Session) -> datetime:
        """Now, by the database's clock."""
        ...

    def serialize(self, session: Session, what: str) -> None:
        """Hold a lock named `what` until the transaction ends."""
        ...

    def announce(self, session: Session, models: Collection[str]) -> None:
        """Tell idle hosts, when the transaction commits, that these models' queues got work."""
        ...

    def finish_opening(self) -> None: ...

    def describe(self) -> str: ...

    def integrity_check(self, session: Session) -> str: ...

    def is_transient(self, error: BaseException) -> bool: ...

    def close(self) -> None: ...


def open_backend(target: Path | str) -> Backend:
    """The backend of `target`: a `postgresql://` URL, else the path of a SQLite file."""
    if isinstance(target, str) and is_postgres_url(target):
        return PostgresDatabase(target)
    return SqliteFile(Path(target))


def transient(method: Callable[P, R]) -> Callable[P, R]:
    """Run a queue method again, from the start, when its database connection was lost; after
    the database's `reconnect_for_s` the loss is a `StoreError`."""

    @functools.wraps(method)
    def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        database = args[0]
        assert isinstance(database, Database)
        return database._retried(functools.partial(method, *args, **kwargs))

    return retried


class Database:
    """The open queue: a writer and a reader engine, and a session from each per transaction.

    Opening brings the schema up to date (SQLite also creates its file, private, if needed).
    `reconnect_for_s` is how long an unreachable database is waited for, at opening and in each
    call: a daemon waits out a server restart; a command someone typed gives up sooner.
    """

    def __init__(self, target: Path | str, reconnect_for_s: float = RECONNECT_FOR_S) -> None:
        self.reconnect_for_s = reconnect_for_s
        self._lost_at: float | None = None  # time.monotonic() of the last lost connection
        self.backend = open_backend(target)
        self.location = self.backend.describe()
        self.db_path = self.backend.db_path
        self.shared = self.backend.shared
        try:
            self._retried(lambda: migrate(self.backend.writer, self.location))
        except StoreError:
            self.backend.close()
            raise
        except Exception as exc:
            self.backend.close()
            if not self.shared:
                raise
            raise StoreError(f"cannot open the queue database {self.location}: {failure_reason(exc)}") from exc
        except BaseException:
            self.backend.close()
            raise
        self.backend.finish_opening()

    def close(self) -> None:
        """Release the connection pools."""
        self.backend.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction, committed when the block ends without error."""
        with Session(self.backend.writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read transaction: one consistent snapshot for the block."""
        with Session(self.backend.reader, expire_on_commit=False) as session, session.begin():
            yield session

    def _retried(self, transaction: Callable[[], R]) -> R:
        """`transaction()`, run again while the backend calls its failure transient (see `transient`)."""
        deadline = time.monotonic() + self.reconnect_for_s
        attempt = 0
        while True:
            try:
                return transaction()
            except Exception as exc:
                if not self.backend.is_transient(exc):
                    raise
                self._lost_at = time.monotonic()
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the queue database {self.location} is unreachable: {failure_reason(exc)}"
                    ) from exc
                pause = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                if attempt % LOG_EVERY_TRIES == 0:  # the first loss, then now and then: not a line a second
                    log.warning(
                        "queue database %s unreachable (%s); retrying for up to %.0fs",
                        self.location,
                        failure_reason(exc)[:200],
                        deadline - time.monotonic(),
                    )
                time.sleep(pause)
                attempt += 1

    def lost_connection_within(self, seconds: float) -> bool:
        """Whether a call of this handle found its connection lost in the last `seconds`."""
        return self._lost_at is not None and time.monotonic() - self._lost_at < seconds

    def _now(self, session: Session) -> datetime:
        """Now, by the database's clock."""
        return self.backend.now(session)

    def _serialize(self, session: Session, what: str) -> None:
        """Hold a lock named `what` until the transaction ends."""
        self.backend.serialize(session, what)

    def _announce(self, session: Session, models: Collection[str]) -> None:
        """Tell idle hosts, when this transaction commits, that these models' queues got work."""
        self.backend.announce(session, models)

    def _insert(self) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (upserts)."""
        return self.backend.insert

    @transient
    def clock(self) -> datetime:
        """Now, by the database's clock: what leases and heartbeats are measured against."""
        with self._read() as session:
            return self._now(session)

    @transient
    def integrity_check(self) -> str:
        """The backend's verdict on the database ("ok" when sound)."""
        with self._read() as session:
            return self.backend.integrity_check(session)


def failure_reason(error: BaseException) -> str:
    """What went wrong, in one line: the driver's own words, without SQLAlchemy's wrapping."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return " ".join(" ".join(lines).split()) or type(error).__name__
