"""The plain values the queue takes and gives besides its rows, shared by every backend: what was
delivered and how it was made, what enqueueing did, the cache's figures, and job ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job


def new_job_id() -> str:
    """A short random id; sortable ids are not needed since every job has created_at."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class AudioInfo:
    """What was delivered: the file in the outbox and its measured properties."""

    file: str
    format: str
    sample_rate: int
    duration_s: float
    bytes: int
    sha256: str


@dataclass(frozen=True)
class RunInfo:
    """How a job's audio was made."""

    device: str | None
    dtype: str | None
    seed: int | None
    cache_hit: bool
    synth_s: float


@dataclass(frozen=True)
class Finished:
    """How a job ended, as its status file recorded it: what a rebuilt queue restores."""

    state: JobState
    finished_at: datetime | None
    audio: AudioInfo | None = None
    run: RunInfo | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A job file (or one line of one) that cannot become a job, as the queue records it."""

    name: str
    source_file: str
    code: str
    message: str
    field: str | None


@dataclass(frozen=True)
class EnqueueResult:
    """The job a spec landed in, and whether this call created it (False: a duplicate)."""

    job: Job
    created: bool


@dataclass(frozen=True)
class CacheStats:
    """The audio cache at a glance."""

    entries: int
    bytes: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups, or None before the first lookup."""
        lookups = self.hits + self.misses
        return None if lookups == 0 else round(self.hits / lookups, 4)
