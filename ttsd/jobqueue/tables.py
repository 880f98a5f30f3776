"""SQLModel tables (the job states are in ttsd.jobqueue.states), shared by the daemon and the CLI.

These classes map rows to objects; they do not create anything. The schema itself (tables and
indexes) is written out in `ttsd.jobqueue.migrations`, one numbered step per change, and a test
checks that these classes and the migrated database agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Enum
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from ttsd.jobqueue.states import JobState


def utcnow() -> datetime:
    """Now, in UTC, as every timestamp in the queue is."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite itself keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _state_values(states: type[JobState]) -> list[str]:
    return [state.value for state in states]


JOB_STATE_TYPE = Enum(
    JobState,
    # Stored as the plain strings ttsd 0.1.0 wrote ('queued', 'running', ...), without a CHECK
    # constraint: existing databases need no rewrite, and any other string is refused on the way in.
    native_enum=False,
    create_constraint=False,
    values_callable=_state_values,
    length=16,
    validate_strings=True,
)
"""The column type of `Job.state`: a `JobState` in Python, its value in the database."""


class Job(SQLModel, table=True):
    """One job. `attempts` counts finished or interrupted tries and never decreases; a retry moves
    `attempt_base` up to it, so the attempt limit applies afresh to each retry."""

    id: str = Field(primary_key=True)
    content_key: str
    name: str
    # `name` folded as a case-insensitive file system sees it (ttsd.names.name_key).
    name_key: str | None = None
    client_id: str | None = None
    model: str
    batch_key: str
    spec_json: str
    source_file: str | None = None

    state: JobState = Field(default=JobState.QUEUED, sa_type=JOB_STATE_TYPE)
    priority: int = 0
    attempts: int = 0
    attempt_base: int = 0
    # Interruptions by a daemon that stopped without a clean shutdown: uncharged, up to a cap.
    restarts: int = 0
    not_before: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_token: str | None = None
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the job last took its output name (enqueue, retry, delivery): the latest owns the name.
    named_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None

    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    cache_hit: bool = False
    synth_s: float | None = None
    chunks_done: int = 0
    chunks_total: int = 1
    audio_s_done: float = 0.0

    audio_file: str | None = None
    audio_format: str | None = None
    sample_rate: int | None = None
    duration_s: float | None = None
    audio_bytes: int | None = None
    audio_sha256: str | None = None
    # JSON: what the job delivered besides its audio file (ttsd.jobqueue.records.Outputs).
    outputs_json: str | None = None


class ChunkRow(SQLModel, table=True):
    """One piece of a job's text. Finished pieces survive a crash, so the job resumes after them."""

    __tablename__ = "chunk"

    job_id: str = Field(primary_key=True)
    index: int = Field(primary_key=True)
    text: str
    pause_after_ms: int
    segment: int = 0
    """The script segment the chunk belongs to (0 for a job without segments)."""
    done: bool = False
    cache_hit: bool = False
    duration_s: float | None = None


class DaemonRecord(SQLModel, table=True):
    """One row per daemon start: who served the queue, when, and on which device plan."""

    id: str = Field(primary_key=True)
    pid: int
    hostname: str
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    inbox: str
    outbox: str
    device_plan: str = "{}"
    loaded_models: str = "[]"
    version: str = ""
    role: str = "run"
    """`run` (intake and workers) or `worker` (synthesis only)."""
    host_id: str = ""
    """The daemon's state directory's id (`ttsd.ops.identity`): the same across its restarts."""


class CacheEntry(SQLModel, table=True):
    """One cached take: its file's size and when it was last used (for LRU eviction)."""

    key: str = Field(primary_key=True)
    bytes: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    hits: int = 0


class InboxFile(SQLModel, table=True):
    """An inbox file some host took: the database, not a rename race, decides which host did, and
    `folder` is where it goes (`accepted` or `rejected`), should that host die before moving it."""

    __tablename__ = "inbox_file"

    key: str = Field(primary_key=True)
    name: str
    folder: str
    taken_by: str
    taken_at: datetime = Field(sa_type=UTCDateTime)


class Counter(SQLModel, table=True):
    """Named running totals (cache hits and misses) that outlive restarts."""

    name: str = Field(primary_key=True)
    value: int = 0
