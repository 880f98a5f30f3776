"""The plain values the queue takes and gives besides its rows, shared by every backend: what was
delivered and how it was made, what enqueueing did, the cache's figures, and job ids."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec


def new_job_id() -> str:
    """A short random id; sortable ids are not needed since every job has created_at."""
    return uuid.uuid4().hex[:12]


Span = tuple[float, float]
"""Start and end, in seconds of the delivered audio."""


@dataclass(frozen=True)
class Outputs:
    """What a job delivered besides its audio file, and where its parts sit in the audio."""

    segments: tuple[Span, ...] = ()
    """Each script segment's speech, from its first word to its last (pauses outside)."""
    chapters: tuple[Span, ...] = ()
    subtitles: str | None = None
    """The subtitle file's name in the outbox."""
    cues: int = 0
    chapter_files: tuple[str, ...] = ()
    chapter_chunks: tuple[int, ...] = ()
    """How many chunks each chapter was spoken in (its progress, once its chunk rows are gone)."""

    def to_json(self) -> str:
        """The form the queue keeps."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Outputs:
        """Read back what `to_json` wrote."""
        raw: dict[str, Any] = json.loads(text)
        return cls(
            segments=tuple((float(a), float(b)) for a, b in raw.get("segments", ())),
            chapters=tuple((float(a), float(b)) for a, b in raw.get("chapters", ())),
            subtitles=raw.get("subtitles"),
            cues=int(raw.get("cues", 0)),
            chapter_files=tuple(raw.get("chapter_files", ())),
            chapter_chunks=tuple(int(n) for n in raw.get("chapter_chunks", ())),
        )


@dataclass(frozen=True)
class AudioInfo:
    """What was delivered: the file in the outbox and its measured properties."""

    file: str
    format: str
    sample_rate: int
    duration_s: float
    bytes: int
    sha256: str
    outputs: Outputs | None = None
    """Only for scripts, subtitled jobs and books."""


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


@dataclass(frozen=True)
class InboxTake:
    """One inbox file, parsed, for `take_files`: its identity as it was seen (`key`: name, size,
    times and content), where it goes once recorded, and the jobs and rejections it holds."""

    key: str
    name: str
    folder: str
    jobs: tuple[tuple[JobSpec, str | None], ...]
    rejections: tuple[Rejection, ...]


@dataclass(frozen=True)
class TakeResult:
    """What `take_files` did with one file: taken now (with its jobs and rejected rows, in order), or
    taken before, by `taken_by`, `taken_s_ago` seconds ago, into `folder`."""

    taken: bool
    folder: str
    taken_s_ago: float
    taken_by: str
    results: tuple[EnqueueResult, ...] = ()
    rejected: tuple[Job, ...] = ()
