"""What each part of ttsd asks of the queue, as small protocols.

Consumers are typed against these rather than against `Store`, so each one's dependency on the
queue is exactly what it calls, and another backend only has to provide these methods. `Store`
satisfies all of them (mypy checks that wherever one is handed over, and `Queue` names the whole).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ttsd.jobqueue.records import (
    AudioInfo,
    CacheStats,
    EnqueueResult,
    Finished,
    InboxTake,
    RunInfo,
    TakeResult,
)
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import ChunkRow, DaemonRecord, Job
from ttsd.jobspec import JobSpec


class JobLookup(Protocol):
    """What publishing a job's status file reads: the job, whether it still owns its name, and (for
    a book's progress per chapter) its chunks."""

    def get(self, ref: str) -> Job: ...

    def newest_named(self, name: str, fold: bool = False) -> Job | None: ...

    def chunks(self, job_id: str) -> list[ChunkRow]: ...


class IntakeQueue(JobLookup, Protocol):
    """The intake thread's queue (ttsd.intake.intake) and the status-file rebuild (ttsd.delivery.publish)."""

    def enqueue_many(self, items: Sequence[tuple[JobSpec, str | None]]) -> list[EnqueueResult]: ...

    def take_files(self, takes: Sequence[InboxTake], taken_by: str) -> list[TakeResult]: ...

    def pending_count(self, model: str) -> int: ...

    def is_known(self, spec: JobSpec) -> bool: ...

    def retry(self, ref: str) -> Job: ...


class StatusRebuild(JobLookup, Protocol):
    """Rewriting every status file from the queue at start (ttsd.delivery.publish)."""

    def latest_per_name(self, fold: bool = False) -> list[Job]: ...


class ChunkSweep(Protocol):
    """Forgetting the chunks of finished jobs at start (ttsd.synth.chunk_files)."""

    def jobs_with_chunks(self) -> dict[str, JobState]: ...

    def drop_finished_chunks(self, job_id: str) -> bool: ...


class WorkerQueue(JobLookup, Protocol):
    """A synthesis worker's queue (ttsd.synth.worker and the delivery step it runs)."""

    def claim(
        self,
        model: str,
        max_batch: int,
        now: datetime | None = None,
        token: str | None = None,
        alone_ok: bool = True,
        min_priority: int | None = None,
    ) -> tuple[str, list[Job]]: ...

    def leased_ids(self, token: str) -> set[str]: ...

    def release_lease(self, token: str) -> list[str]: ...

    def heartbeat(self, token: str) -> int: ...

    def holds_lease(self, job_id: str, token: str) -> bool: ...

    def plan_chunks(self, job_id: str, token: str, pieces: list[tuple[str, int, int]]) -> list[ChunkRow] | None: ...

    def chunk_done(
        self, job_id: str, token: str, index: int, duration_s: float, synth_s: float, cache_hit: bool
    ) -> bool: ...

    def chunks(self, job_id: str) -> list[ChunkRow]: ...

    def drop_chunks(self, job_id: str) -> None: ...

    def drop_finished_chunks(self, job_id: str) -> bool: ...

    def finish_done(
        self, job_id: str, token: str, audio: AudioInfo, run: RunInfo, install: Callable[[], None] | None = None
    ) -> bool: ...

    def finish_failed(
        self, job_id: str, token: str, code: str, message: str, max_attempts: int, retry_after_s: float | None
    ) -> JobState | None: ...

    def postpone(self, job_id: str, token: str, code: str, message: str, retry_after_s: float) -> bool: ...


class CacheIndexStore(Protocol):
    """The audio cache's index (ttsd.synth.audio_cache)."""

    def cache_lookup(self, key: str) -> bool: ...

    def cache_record(self, key: str, size: int) -> None: ...

    def cache_forget(self, key: str, count_miss: bool = False) -> None: ...

    def cache_evict(self, max_entries: int, max_bytes: int) -> list[str]: ...

    def cache_stats(self) -> CacheStats: ...

    def cache_clear(self) -> list[str]: ...


class PeopleQueue(JobLookup, CacheIndexStore, Protocol):
    """The command line's queue (ttsd.cli): looking, steering, and the cache through `AudioCache`."""

    def jobs(
        self,
        state: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
    ) -> list[Job]: ...

    def counts(self) -> dict[str, dict[str, int]]: ...

    def finished_since(self, since: datetime) -> list[Job]: ...

    def failed_job_ids(self) -> list[str]: ...

    def source_files(self) -> set[str]: ...

    def cancel(self, ref: str) -> Job: ...

    def retry(self, ref: str) -> Job: ...

    def latest_daemon(self, host_id: str | None = None) -> DaemonRecord | None: ...

    def daemons(self, limit: int = 50) -> list[DaemonRecord]: ...

    def clock(self) -> datetime: ...

    @property
    def location(self) -> str:
        """Where the queue is, for messages (a file, or a URL without its password)."""


class FrontDoorQueue(IntakeQueue, PeopleQueue, Protocol):
    """The HTTP front door (ttsd.http): requests become jobs, and clients follow, list and cancel
    them, and stream their chunks as they are made."""

    def jobs_by_id(self, ids: Collection[str]) -> dict[str, Job]: ...

    def job_marks(self, ids: Collection[str]) -> dict[str, tuple[object, ...]]: ...

    def chunks(self, job_id: str) -> list[ChunkRow]: ...


class DaemonQueue(Protocol):
    """What the daemon itself does with the queue, besides handing it to the parts above."""

    @property
    def location(self) -> str:
        """Where the queue is, for messages (a file, or a URL without its password)."""

    def clock(self) -> datetime: ...

    def lost_connection_within(self, seconds: float) -> bool: ...

    def register_daemon(
        self, inbox: Path, outbox: Path, version: str, role: str = "run", host_id: str = ""
    ) -> DaemonRecord: ...

    def daemon_heartbeat(self, daemon_id: str, device_plan: str, loaded_models: str) -> None: ...

    def daemon_stopped(self, daemon_id: str) -> None: ...

    def recover_interrupted(
        self,
        max_attempts: int,
        stale_before: datetime | None = None,
        free_restarts: int = 0,
        spare: Collection[str] = (),
        owner: str | None = None,
    ) -> list[Job]: ...

    def interrupt_lease(self, token: str, max_attempts: int, only: Collection[str] | None = None) -> list[Job]: ...

    def release_lease(self, token: str) -> list[str]: ...

    def release_all_running(self, owner: str | None = None) -> list[str]: ...

    def forget_taken_files(self, before: datetime | None = None, older_than_s: float = 7 * 86400.0) -> int: ...

    def models_with_queued_jobs(self) -> list[str]: ...

    def pending_total(self) -> int: ...

    def close(self) -> None: ...


class Queue(FrontDoorQueue, StatusRebuild, ChunkSweep, WorkerQueue, DaemonQueue, Protocol):
    """Everything a queue backend provides: what the contract tests (tests/component/queue_contract.py)
    hold every backend to."""

    def enqueue(self, spec: JobSpec, source_file: str | None = None) -> EnqueueResult: ...

    def restore(
        self, spec: JobSpec, source_file: str | None, job_id: str | None, finished: Finished | None
    ) -> EnqueueResult: ...

    def integrity_check(self) -> str: ...
