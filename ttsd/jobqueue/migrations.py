"""The queue's schema, as numbered steps applied in order.

A database records the last step applied to it: SQLite in `PRAGMA user_version`, PostgreSQL in the
`ttsd_schema` table. Opening one applies the steps it lacks, each in its own write transaction
together with the version bump, so a crash mid-upgrade leaves the previous version intact and the
next open finishes the job. Two processes (or hosts) opening the same old database at once
serialize, on `BEGIN IMMEDIATE` in SQLite and on an advisory lock in PostgreSQL (whose DDL is
transactional too), and the second finds the step already done.

ttsd 0.1.0 created its SQLite tables without recording a version (user_version 0). Step 1 is exactly
that schema, so such a file is recognized by its `job` table and marked as version 1 as it is.
PostgreSQL databases start at version 7, created at once (`schema_postgres`); steps after 7 are
written for both.

To change the schema, append a step; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from ttsd.errors import StoreError
from ttsd.jobqueue.postgres import lock_key
from ttsd.jobqueue.schema_postgres import POSTGRES_VERSION_7
from ttsd.names import name_key


@dataclass(frozen=True)
class Migration:
    """One step: the schema version it produces and the statements that get there."""

    version: int
    summary: str
    apply: Callable[[Connection], None]


SCHEMA_0_1_0 = (
    """
    CREATE TABLE job (
        id VARCHAR NOT NULL,
        content_key VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        client_id VARCHAR,
        model VARCHAR NOT NULL,
        batch_key VARCHAR NOT NULL,
        spec_json VARCHAR NOT NULL,
        source_file VARCHAR,
        state VARCHAR NOT NULL,
        priority INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        attempt_base INTEGER NOT NULL,
        not_before DATETIME,
        lease_token VARCHAR,
        heartbeat_at DATETIME,
        created_at DATETIME NOT NULL,
        started_at DATETIME,
        finished_at DATETIME,
        error_code VARCHAR,
        error_message VARCHAR,
        device VARCHAR,
        dtype VARCHAR,
        seed INTEGER,
        cache_hit BOOLEAN NOT NULL,
        synth_s FLOAT,
        chunks_done INTEGER NOT NULL,
        chunks_total INTEGER NOT NULL,
        audio_s_done FLOAT NOT NULL,
        audio_file VARCHAR,
        audio_format VARCHAR,
        sample_rate INTEGER,
        duration_s FLOAT,
        audio_bytes INTEGER,
        audio_sha256 VARCHAR,
        PRIMARY KEY (id)
    )
    """,
    "CREATE INDEX ix_job_content_key ON job (content_key)",
    "CREATE INDEX ix_job_name ON job (name)",
    "CREATE INDEX ix_job_model ON job (model)",
    "CREATE INDEX ix_job_state ON job (state)",
    """
    CREATE TABLE chunk (
        job_id VARCHAR NOT NULL,
        "index" INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        pause_after_ms INTEGER NOT NULL,
        done BOOLEAN NOT NULL,
        cache_hit BOOLEAN NOT NULL,
        duration_s FLOAT,
        PRIMARY KEY (job_id, "index")
    )
    """,
    """
    CREATE TABLE daemonrecord (
        id VARCHAR NOT NULL,
        pid INTEGER NOT NULL,
        hostname VARCHAR NOT NULL,
        started_at DATETIME NOT NULL,
        heartbeat_at DATETIME NOT NULL,
        stopped_at DATETIME,
        inbox VARCHAR NOT NULL,
        outbox VARCHAR NOT NULL,
        device_plan VARCHAR NOT NULL,
        loaded_models VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        PRIMARY KEY (id)
    )
    """,
    """
    CREATE TABLE cacheentry (
        "key" VARCHAR NOT NULL,
        bytes INTEGER NOT NULL,
        created_at DATETIME NOT NULL,
        last_used_at DATETIME NOT NULL,
        hits INTEGER NOT NULL,
        PRIMARY KEY ("key")
    )
    """,
    "CREATE INDEX ix_cacheentry_last_used_at ON cacheentry (last_used_at)",
    """
    CREATE TABLE counter (
        name VARCHAR NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (name)
    )
    """,
)
"""The tables and indexes ttsd 0.1.0 created (SQLModel's `create_all` of that release), verbatim."""


def _create_0_1_0_schema(connection: Connection) -> None:
    if _has_table(connection, "job"):
        return  # written by ttsd 0.1.0, which created all of it at once without a version
    for statement in SCHEMA_0_1_0:
        connection.exec_driver_sql(statement)


def _add_claim_index(connection: Connection) -> None:
    # The claim query filters on model and state and orders by priority DESC, created_at, id. With
    # only single-column indexes SQLite searched ix_job_state and sorted every queued job in a temp
    # B-tree on each claim; this index hands them over already in claim order. It starts with
    # `model`, so ix_job_model is a redundant prefix that only costs writes.
    connection.exec_driver_sql("CREATE INDEX ix_job_claim ON job (model, state, priority DESC, created_at, id)")
    connection.exec_driver_sql("DROP INDEX ix_job_model")


def _add_named_at(connection: Connection) -> None:
    # A name belongs to the job that took it last: by enqueue, retry or delivery. Until now that was
    # the newest by created_at, so an older job retried or re-dropped could never win its name back.
    # Existing jobs took their names when they were created.
    connection.exec_driver_sql("ALTER TABLE job ADD COLUMN named_at DATETIME")
    connection.exec_driver_sql("UPDATE job SET named_at = created_at")
    connection.exec_driver_sql("CREATE INDEX ix_job_name_owner ON job (name, named_at)")


def _add_name_key(connection: Connection) -> None:
    # On a case-insensitive outbox "Hello" and "hello" are one file, so they must be one name when
    # the queue decides who owns it. The key is computed in Python: SQLite's lower() is ASCII-only.
    connection.exec_driver_sql("ALTER TABLE job ADD COLUMN name_key VARCHAR")
    rows = connection.exec_driver_sql("SELECT id, name FROM job").fetchall()
    for job_id, name in rows:
        connection.exec_driver_sql("UPDATE job SET name_key = ? WHERE id = ?", (name_key(name), job_id))
    connection.exec_driver_sql("CREATE INDEX ix_job_name_key_owner ON job (name_key, named_at)")


def _add_error_field(connection: Connection) -> None:
    # Rejected job files are rows now (`ttsd jobs --state rejected`), and a rejection names the field.
    connection.exec_driver_sql("ALTER TABLE job ADD COLUMN error_field VARCHAR")


def _add_restarts(connection: Connection) -> None:
    # Worker processes: a job interrupted because the whole daemon stopped (a kill, a power cut) is
    # not charged a try; this counts such restarts so a job cannot loop through them forever.
    connection.exec_driver_sql("ALTER TABLE job ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0")


def _add_scripts(connection: Connection) -> None:
    # Scripts: a chunk knows the segment (so the voice) it belongs to, and a job keeps what it
    # delivered besides its audio (subtitles, chapter files, segment and chapter times).
    connection.exec_driver_sql("ALTER TABLE chunk ADD COLUMN segment INTEGER NOT NULL DEFAULT 0")
    connection.exec_driver_sql("ALTER TABLE job ADD COLUMN outputs_json VARCHAR")


def _add_shared_hosts(connection: Connection) -> None:
    # Several hosts on one queue: each inbox file is taken by one of them, decided here (the key is
    # the file as it was seen: name, size, times and content), and each daemon says its role.
    for statement in (
        """
        CREATE TABLE inbox_file (
            "key" VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            folder VARCHAR NOT NULL,
            taken_by VARCHAR NOT NULL,
            taken_at TIMESTAMP NOT NULL,
            PRIMARY KEY ("key")
        )
        """,
        "CREATE INDEX ix_inbox_file_taken_at ON inbox_file (taken_at)",
        "ALTER TABLE daemonrecord ADD COLUMN role VARCHAR NOT NULL DEFAULT 'run'",
        "ALTER TABLE daemonrecord ADD COLUMN host_id VARCHAR NOT NULL DEFAULT ''",
    ):
        connection.execute(text(statement))


def _create_postgres_version_7(connection: Connection) -> None:
    for statement in POSTGRES_VERSION_7:
        connection.execute(text(statement))


SHARED_MIGRATIONS: tuple[Migration, ...] = (
    Migration(8, "inbox files taken once across hosts, and each daemon's role", _add_shared_hosts),
)
"""Steps after version 7, the same on both backends (dialect-neutral SQL only)."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the ttsd 0.1.0 schema", _create_0_1_0_schema),
    Migration(2, "one index in claim order for the claim query", _add_claim_index),
    Migration(3, "when each job took its output name", _add_named_at),
    Migration(4, "output names as a case-insensitive file system sees them", _add_name_key),
    Migration(5, "the field a rejected job file got wrong", _add_error_field),
    Migration(6, "restarts of the daemon a job lived through, uncharged", _add_restarts),
    Migration(7, "the segment of each chunk, and what a job delivered besides its audio", _add_scripts),
    *SHARED_MIGRATIONS,
)
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(7, "the whole schema of version 7, at once", _create_postgres_version_7),
    *SHARED_MIGRATIONS,
)
LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(connection: Connection) -> int:
    """The last migration applied to the database (0: none recorded)."""
    if connection.dialect.name == "postgresql":
        if connection.execute(text("SELECT to_regclass('ttsd_schema')")).scalar() is None:
            return 0
        return int(connection.execute(text("SELECT coalesce(max(version), 0) FROM ttsd_schema")).scalar_one())
    return int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate(engine: Engine, location: str) -> int:
    """Apply the migrations the database at `location` lacks, in order, one transaction each;
    returns its version.

    A SQLite `engine` must start its transactions with `BEGIN IMMEDIATE`, so the version is read
    under the write lock that the step then uses; PostgreSQL takes an advisory lock for it. A
    database newer than this ttsd is refused untouched.
    """
    postgres = engine.dialect.name == "postgresql"
    steps = POSTGRES_MIGRATIONS if postgres else MIGRATIONS
    version = _version_outside_transactions(engine)
    _refuse_newer(version, location)
    for migration in steps:
        if version >= migration.version:
            continue
        with engine.begin() as connection:
            if postgres:
                _lock_schema(connection)
            version = schema_version(connection)
            _refuse_newer(version, location)
            if version < migration.version:
                migration.apply(connection)
                _record_version(connection, migration)
                version = migration.version
    return version


def _lock_schema(connection: Connection) -> None:
    # Taken before the version table is even created: two hosts creating it at once would collide.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("schema")})
    connection.execute(
        text(
            "CREATE TABLE IF NOT EXISTS ttsd_schema (version INTEGER PRIMARY KEY, summary VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))"
        )
    )


def _record_version(connection: Connection, migration: Migration) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("INSERT INTO ttsd_schema (version, summary) VALUES (:version, :summary)"),
            {"version": migration.version, "summary": migration.summary},
        )
    else:
        # PRAGMA takes no bound parameters; the version is our own integer.
        connection.exec_driver_sql(f"PRAGMA user_version = {migration.version:d}")


def _version_outside_transactions(engine: Engine) -> int:
    # A database that is up to date (nearly every open) is left without taking the write lock; the
    # SQLite driver connection runs in autocommit, where the engine's BEGIN IMMEDIATE is never issued.
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            return schema_version(connection)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA user_version")
        (version,) = cursor.fetchone() or (0,)
        cursor.close()
    finally:
        raw.close()
    return int(version)


def _refuse_newer(version: int, location: str) -> None:
    if version > LATEST_VERSION:
        raise StoreError(
            f"the queue database {location} has schema version {version}, but this ttsd knows versions "
            f"up to {LATEST_VERSION}: it was written by a newer ttsd; run that one (or a newer one)"
        )


def _has_table(connection: Connection, name: str) -> bool:
    found = connection.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.first() is not None
