"""The schema of version 7 on PostgreSQL, created at once: there were no PostgreSQL queues before
it, so its earlier steps (written for SQLite files) are never replayed there.

The same tables and indexes as a SQLite file migrated to version 7, in PostgreSQL's types: TIMESTAMP
(naive, always UTC: every connection sets its time zone to UTC) and BIGINT where SQLite's 64-bit
integers may hold more than 32 bits (seeds, byte counts). Never edit it: add a migration step.
"""

from __future__ import annotations

POSTGRES_VERSION_7 = (
    """
    CREATE TABLE job (
        id VARCHAR NOT NULL,
        content_key VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        name_key VARCHAR,
        client_id VARCHAR,
        model VARCHAR NOT NULL,
        batch_key VARCHAR NOT NULL,
        spec_json VARCHAR NOT NULL,
        source_file VARCHAR,
        state VARCHAR(16) NOT NULL,
        priority INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        attempt_base INTEGER NOT NULL,
        restarts INTEGER NOT NULL DEFAULT 0,
        not_before TIMESTAMP,
        lease_token VARCHAR,
        heartbeat_at TIMESTAMP,
        created_at TIMESTAMP NOT NULL,
        named_at TIMESTAMP,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        error_code VARCHAR,
        error_message VARCHAR,
        error_field VARCHAR,
        device VARCHAR,
        dtype VARCHAR,
        seed BIGINT,
        cache_hit BOOLEAN NOT NULL,
        synth_s FLOAT,
        chunks_done INTEGER NOT NULL,
        chunks_total INTEGER NOT NULL,
        audio_s_done FLOAT NOT NULL,
        audio_file VARCHAR,
        audio_format VARCHAR,
        sample_rate INTEGER,
        duration_s FLOAT,
        audio_bytes BIGINT,
        audio_sha256 VARCHAR,
        outputs_json VARCHAR,
        PRIMARY KEY (id)
    )
    """,
    "CREATE INDEX ix_job_content_key ON job (content_key)",
    "CREATE INDEX ix_job_name ON job (name)",
    "CREATE INDEX ix_job_state ON job (state)",
    "CREATE INDEX ix_job_claim ON job (model, state, priority DESC, created_at, id)",
    "CREATE INDEX ix_job_name_owner ON job (name, named_at)",
    "CREATE INDEX ix_job_name_key_owner ON job (name_key, named_at)",
    """
    CREATE TABLE chunk (
        job_id VARCHAR NOT NULL,
        "index" INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        pause_after_ms INTEGER NOT NULL,
        segment INTEGER NOT NULL DEFAULT 0,
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
        started_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL,
        stopped_at TIMESTAMP,
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
        bytes BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        last_used_at TIMESTAMP NOT NULL,
        hits INTEGER NOT NULL,
        PRIMARY KEY ("key")
    )
    """,
    "CREATE INDEX ix_cacheentry_last_used_at ON cacheentry (last_used_at)",
    """
    CREATE TABLE counter (
        name VARCHAR NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (name)
    )
    """,
)
"""Every statement, in order."""
