"""The durable queue: the only module with SQL.

SQLite in WAL mode with `synchronous=FULL`, so a committed transaction survives a crash and a power
loss. pysqlite's own transaction handling is switched off and every write transaction starts with
`BEGIN IMMEDIATE` (a deferred one that upgrades to a write can fail with SQLITE_BUSY at once,
whatever the busy timeout says). No transaction is ever held while audio is synthesized: a claim
is a short write, and the result is recorded by a guarded update that only the lease holder wins.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, update
from sqlmodel import Session, SQLModel, col, select

from ttsd.errors import JobNotFound, StoreError
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import AudioInfo, CacheEntry, ChunkRow, Counter, DaemonRecord, Job, RunInfo, utcnow
from ttsd.jobspec import JobSpec

_LIVE_STATES = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.DONE.value)
_PENDING_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)


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
class EnqueueResult:
    """The job a spec landed in, and whether this call created it (False: a duplicate)."""

    job: Job
    created: bool


def new_job_id() -> str:
    """A short random id; sortable ids are not needed since every job has created_at."""
    return uuid.uuid4().hex[:12]


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


class Store:
    """Every read and write of the queue database."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file private before SQLite opens it (SQLite gives -wal and -shm the same mode),
        # so the queue is never readable by others, not even for a moment.
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))
        self._writer = _make_engine(db_path, immediate=True)
        self._reader = _make_engine(db_path, immediate=False)
        with self._write():
            pass
        SQLModel.metadata.create_all(self._writer)
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{db_path}{suffix}")
            if path.exists():
                path.chmod(0o600)

    def close(self) -> None:
        """Release the connection pools."""
        self._writer.dispose()
        self._reader.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    # -- intake ---------------------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, source_file: str | None = None) -> EnqueueResult:
        """Record a job, unless the same resolved job is already queued, running or done."""
        return self.enqueue_many([(spec, source_file)])[0]

    def enqueue_many(self, items: Sequence[tuple[JobSpec, str | None]]) -> list[EnqueueResult]:
        """`enqueue` for several jobs (spec, source file) in one transaction: a burst of files pays
        one commit instead of one each. The same job twice in `items` is one job."""
        results: list[EnqueueResult] = []
        keyed = [(spec.content_key(), spec, source_file) for spec, source_file in items]
        with self._write() as session:
            live = session.exec(
                select(Job)
                .where(col(Job.content_key).in_({key for key, _, _ in keyed}), col(Job.state).in_(_LIVE_STATES))
                .order_by(col(Job.created_at))
            )
            known: dict[str, Job] = {job.content_key: job for job in live}  # the newest wins
            for key, spec, source_file in keyed:
                existing = known.get(key)
                if existing is not None:
                    results.append(EnqueueResult(existing, created=False))
                    continue
                job = Job(
                    id=new_job_id(),
                    content_key=key,
                    name=spec.name,
                    client_id=spec.client_id,
                    model=spec.model,
                    batch_key=spec.batch_key(),
                    spec_json=spec.model_dump_json(),
                    source_file=source_file,
                    priority=spec.priority,
                    seed=spec.seed,
                    chunks_total=1,
                )
                known[key] = job
                results.append(EnqueueResult(job, created=True))
            session.add_all([result.job for result in results if result.created])
        return results

    def pending_count(self, model: str) -> int:
        """Jobs of `model` queued or running: what backpressure measures."""
        with self._read() as session:
            return session.exec(
                select(func.count()).select_from(Job).where(Job.model == model, col(Job.state).in_(_PENDING_STATES))
            ).one()

    def pending_total(self) -> int:
        """Jobs queued or running, across every model."""
        with self._read() as session:
            return session.exec(select(func.count()).select_from(Job).where(col(Job.state).in_(_PENDING_STATES))).one()

    def models_with_queued_jobs(self) -> list[str]:
        """Models that have work waiting."""
        with self._read() as session:
            rows = session.exec(select(Job.model).where(Job.state == JobState.QUEUED.value).distinct())
            return list(rows)

    # -- workers --------------------------------------------------------------------------------

    def claim(self, model: str, max_batch: int, now: datetime | None = None) -> tuple[str, list[Job]]:
        """Lease up to `max_batch` compatible queued jobs of `model`, highest priority then oldest first.

        A job that was tried before without finishing runs alone: if it is what crashes the process,
        it must not take fresh neighbours down with it (and use up their attempts) every time.
        Returns the lease token (needed for heartbeats and the guarded finish) and the jobs.
        """
        now = now or utcnow()
        token = uuid.uuid4().hex
        ready = (
            Job.model == model,
            Job.state == JobState.QUEUED.value,
            (col(Job.not_before).is_(None)) | (col(Job.not_before) <= now),
        )
        order = (col(Job.priority).desc(), col(Job.created_at), col(Job.id))
        with self._write() as session:
            first = session.exec(select(Job).where(*ready).order_by(*order).limit(1)).first()
            if first is None:
                return token, []
            fresh = col(Job.attempts) == col(Job.attempt_base)
            jobs = [first]
            if first.attempts == first.attempt_base and max_batch > 1:
                jobs += session.exec(
                    select(Job)
                    .where(*ready, fresh, Job.batch_key == first.batch_key, col(Job.id) != first.id)
                    .order_by(*order)
                    .limit(max_batch - 1)
                )
            for job in jobs:
                job.state = JobState.RUNNING.value
                job.lease_token = token
                job.heartbeat_at = now
                job.started_at = now
                job.not_before = None
                session.add(job)
        return token, jobs

    def heartbeat(self, token: str) -> int:
        """Renew a lease; returns how many of its jobs are still running under it."""
        with self._write() as session:
            result = session.execute(
                update(Job)
                .where(col(Job.lease_token) == token, col(Job.state) == JobState.RUNNING.value)
                .values(heartbeat_at=utcnow())
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _leased(session: Session, job_id: str, token: str) -> Job | None:
        """The job, if it is running under `token` (not cancelled, recovered or finished meanwhile)."""
        job = session.get(Job, job_id)
        return job if job is not None and job.state == JobState.RUNNING.value and job.lease_token == token else None

    def holds_lease(self, job_id: str, token: str) -> bool:
        """Whether `token` still owns the running job (it was not cancelled or recovered meanwhile)."""
        with self._read() as session:
            return self._leased(session, job_id, token) is not None

    def finish_done(
        self, job_id: str, token: str, audio: AudioInfo, run: RunInfo, install: Callable[[], None] | None = None
    ) -> bool:
        """Mark a job done, only if `token` still holds it. False: the result must be discarded.

        `install` (making the audio file visible) runs inside the same write transaction, after the
        lease check: no other finish can slip in between, so a worker that lost its lease never
        replaces the audio of the job's newer result.
        """
        with self._write() as session:
            job = self._leased(session, job_id, token)
            if job is None:
                return False
            if install is not None:
                install()
            job.state = JobState.DONE.value
            job.attempts += 1
            job.lease_token = None
            job.finished_at = utcnow()
            job.error_code = None
            job.error_message = None
            job.audio_file = audio.file
            job.audio_format = audio.format
            job.sample_rate = audio.sample_rate
            job.duration_s = audio.duration_s
            job.audio_bytes = audio.bytes
            job.audio_sha256 = audio.sha256
            job.device = run.device
            job.dtype = run.dtype
            job.seed = run.seed
            job.cache_hit = run.cache_hit
            job.synth_s = run.synth_s
            job.chunks_done = job.chunks_total
            session.add(job)
            return True

    # -- chunks of long jobs ---------------------------------------------------------------------

    def chunks(self, job_id: str) -> list[ChunkRow]:
        """A job's chunks in order (empty before its first claim)."""
        with self._read() as session:
            return list(session.exec(select(ChunkRow).where(ChunkRow.job_id == job_id).order_by(col(ChunkRow.index))))

    def plan_chunks(self, job_id: str, token: str, pieces: list[tuple[str, int]]) -> list[ChunkRow] | None:
        """The job's chunks: the ones recorded earlier (a resumed job), else `pieces` (text, pause
        after in ms) recorded now. None if `token` no longer holds the job."""
        with self._write() as session:
            job = self._leased(session, job_id, token)
            if job is None:
                return None
            rows = list(session.exec(select(ChunkRow).where(ChunkRow.job_id == job_id).order_by(col(ChunkRow.index))))
            if rows:
                return rows
            rows = [
                ChunkRow(job_id=job_id, index=index, text=text, pause_after_ms=pause)
                for index, (text, pause) in enumerate(pieces)
            ]
            session.add_all(rows)
            job.chunks_total = len(rows)
            job.chunks_done = 0
            job.audio_s_done = 0.0
            job.synth_s = 0.0
            session.add(job)
            return rows

    def chunk_done(
        self, job_id: str, token: str, index: int, duration_s: float, synth_s: float, cache_hit: bool
    ) -> bool:
        """Record a finished chunk and the job's progress, only while `token` holds the job."""
        with self._write() as session:
            job = self._leased(session, job_id, token)
            chunk = session.get(ChunkRow, (job_id, index))
            if job is None or chunk is None:
                return False
            if not chunk.done:
                chunk.done = True
                chunk.cache_hit = cache_hit
                chunk.duration_s = duration_s
                job.chunks_done += 1
                job.audio_s_done = round(job.audio_s_done + duration_s, 3)
                job.synth_s = round((job.synth_s or 0.0) + synth_s, 3)
                session.add_all([chunk, job])
            return True

    def drop_chunks(self, job_id: str) -> None:
        """Forget a finished job's chunks (their audio is in the delivered file now)."""
        with self._write() as session:
            for chunk in session.exec(select(ChunkRow).where(ChunkRow.job_id == job_id)):
                session.delete(chunk)

    def jobs_with_chunks(self) -> dict[str, str]:
        """Job id -> state, for every job that still has chunk rows."""
        with self._read() as session:
            rows = session.exec(select(Job.id, Job.state).where(col(Job.id).in_(select(ChunkRow.job_id).distinct())))
            return {str(job_id): str(state) for job_id, state in rows.all()}

    def finish_failed(
        self, job_id: str, token: str, code: str, message: str, max_attempts: int, retry_after_s: float | None
    ) -> JobState | None:
        """Record a failed try. With `retry_after_s` and attempts left, the job is queued again after
        that delay; otherwise it fails. Returns the new state, or None if the lease was lost."""
        with self._write() as session:
            job = self._leased(session, job_id, token)
            if job is None:
                return None
            job.attempts += 1
            job.error_code = code
            job.error_message = message
            job.lease_token = None
            if retry_after_s is not None and job.attempts - job.attempt_base < max_attempts:
                job.state = JobState.QUEUED.value
                job.not_before = utcnow() + timedelta(seconds=retry_after_s)
            else:
                job.state = JobState.FAILED.value
                job.finished_at = utcnow()
            session.add(job)
            return JobState(job.state)

    def release_all_running(self) -> list[str]:
        """At shutdown, with the daemon lock held: every running job goes back to the queue, uncounted."""
        with self._write() as session:
            jobs = list(session.exec(select(Job).where(Job.state == JobState.RUNNING.value)))
            for job in jobs:
                job.state = JobState.QUEUED.value
                job.lease_token = None
                session.add(job)
            return [job.id for job in jobs]

    # -- recovery -------------------------------------------------------------------------------

    def recover_interrupted(self, max_attempts: int, stale_before: datetime | None = None) -> list[Job]:
        """Running jobs whose worker is gone: count the interrupted try, then queue or fail them.

        At start every running job is interrupted (`stale_before` None); while running, only those
        whose heartbeat is older than `stale_before`.
        """
        conditions = [col(Job.state) == JobState.RUNNING.value]
        if stale_before is not None:
            conditions.append(col(Job.heartbeat_at) < stale_before)
        with self._write() as session:
            jobs = list(session.exec(select(Job).where(*conditions)))
            for job in jobs:
                job.attempts += 1
                job.lease_token = None
                tries = job.attempts - job.attempt_base
                if tries >= max_attempts:
                    job.state = JobState.FAILED.value
                    job.finished_at = utcnow()
                    job.error_code = "interrupted"
                    job.error_message = (
                        f"interrupted {tries} times (the daemon stopped or crashed during synthesis); "
                        "giving up after TTS_MAX_ATTEMPTS"
                    )
                else:
                    job.state = JobState.QUEUED.value
                session.add(job)
            return jobs

    # -- people ---------------------------------------------------------------------------------

    def get(self, ref: str) -> Job:
        """A job by id, by output name (the newest with that name), or by a unique id prefix."""
        with self._read() as session:
            job = session.get(Job, ref)
            if job is None:
                job = self._newest_named(session, ref)
            if job is None and len(ref) >= 4:
                # autoescape: a `_` or `%` in what was typed is not a LIKE wildcard.
                prefixed = select(Job).where(col(Job.id).startswith(ref, autoescape=True)).limit(2)
                matches = list(session.exec(prefixed))
                job = matches[0] if len(matches) == 1 else None
        if job is None:
            raise JobNotFound(f"no job with id or name {ref!r}")
        return job

    def newest_named(self, name: str) -> Job | None:
        """The newest job with output `name`: the one that owns the name's audio and status."""
        with self._read() as session:
            return self._newest_named(session, name)

    @staticmethod
    def _newest_named(session: Session, name: str) -> Job | None:
        query = select(Job).where(Job.name == name).order_by(col(Job.created_at).desc(), col(Job.id))
        return session.exec(query.limit(1)).first()

    def jobs(
        self,
        state: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
    ) -> list[Job]:
        """Jobs, newest first, optionally filtered."""
        query = select(Job).order_by(col(Job.created_at).desc(), col(Job.id))
        if state is not None:
            query = query.where(Job.state == state)
        if model is not None:
            query = query.where(Job.model == model)
        if since is not None:
            query = query.where(col(Job.created_at) >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return list(session.exec(query))

    def latest_per_name(self) -> list[Job]:
        """For each output name, its newest job: the one its status file must describe."""
        newest = select(Job.name, func.max(Job.created_at).label("created_at")).group_by(col(Job.name)).subquery()
        query = select(Job).join(
            newest, (col(Job.name) == newest.c.name) & (col(Job.created_at) == newest.c.created_at)
        )
        with self._read() as session:
            return list(session.exec(query))

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of jobs per model and state."""
        with self._read() as session:
            rows = session.exec(select(Job.model, Job.state, func.count()).group_by(col(Job.model), col(Job.state)))
            counts: dict[str, dict[str, int]] = {}
            for model, state, number in rows:
                counts.setdefault(model, {})[state] = number
            return counts

    def finished_since(self, since: datetime) -> list[Job]:
        """Jobs that reached done or failed since `since` (for per-model metrics)."""
        with self._read() as session:
            return list(
                session.exec(
                    select(Job).where(
                        col(Job.state).in_((JobState.DONE.value, JobState.FAILED.value)),
                        col(Job.finished_at) >= since,
                    )
                )
            )

    def cancel(self, ref: str) -> Job:
        """Cancel a queued or running job (a running job's result will be discarded)."""
        job = self.get(ref)
        with self._write() as session:
            current = session.get(Job, job.id)
            if current is None or current.state not in _PENDING_STATES:
                raise StoreError(
                    f"job {job.id} is {current.state if current else 'gone'}; only queued or "
                    "running jobs can be cancelled"
                )
            current.state = JobState.CANCELLED.value
            current.lease_token = None
            current.finished_at = utcnow()
            current.error_code = "cancelled"
            current.error_message = "cancelled by request"
            session.add(current)
            return current

    def retry(self, ref: str) -> Job:
        """Queue a failed, cancelled or done job again, with a fresh attempt budget."""
        job = self.get(ref)
        with self._write() as session:
            current = session.get(Job, job.id)
            if current is None or current.state in _PENDING_STATES:
                raise StoreError(f"job {job.id} is already {current.state if current else 'gone'}")
            current.state = JobState.QUEUED.value
            current.attempt_base = current.attempts
            current.not_before = None
            current.finished_at = None
            current.started_at = None
            current.error_code = None
            current.error_message = None
            current.chunks_done = 0
            current.audio_s_done = 0.0
            session.add(current)
            for chunk in session.exec(select(ChunkRow).where(ChunkRow.job_id == current.id)):
                session.delete(chunk)
            return current

    def failed_job_ids(self) -> list[str]:
        """Ids of every failed job."""
        with self._read() as session:
            return list(session.exec(select(Job.id).where(Job.state == JobState.FAILED.value)))

    # -- the daemon's own row -------------------------------------------------------------------

    def register_daemon(self, inbox: Path, outbox: Path, version: str) -> DaemonRecord:
        """Record this daemon's start."""
        record = DaemonRecord(
            id=uuid.uuid4().hex[:12],
            pid=os.getpid(),
            hostname=os.uname().nodename,
            inbox=str(inbox),
            outbox=str(outbox),
            version=version,
        )
        with self._write() as session:
            session.add(record)
        return record

    def daemon_heartbeat(self, daemon_id: str, device_plan: str, loaded_models: str) -> None:
        """Show that the daemon is alive, with what it has loaded."""
        with self._write() as session:
            session.execute(
                update(DaemonRecord)
                .where(col(DaemonRecord.id) == daemon_id)
                .values(heartbeat_at=utcnow(), device_plan=device_plan, loaded_models=loaded_models)
            )

    def daemon_stopped(self, daemon_id: str) -> None:
        """Record a clean stop."""
        with self._write() as session:
            session.execute(update(DaemonRecord).where(col(DaemonRecord.id) == daemon_id).values(stopped_at=utcnow()))

    def latest_daemon(self) -> DaemonRecord | None:
        """The most recently started daemon, running or not."""
        with self._read() as session:
            return session.exec(select(DaemonRecord).order_by(col(DaemonRecord.started_at).desc()).limit(1)).first()

    def integrity_check(self) -> str:
        """SQLite's own verdict on the database file ("ok" when sound)."""
        with self._read() as session:
            return str(session.connection().exec_driver_sql("PRAGMA integrity_check").scalar())

    # -- the audio cache's index ----------------------------------------------------------------

    @staticmethod
    def _bump(session: Session, name: str) -> None:
        counter = session.get(Counter, name) or Counter(name=name)
        counter.value += 1
        session.add(counter)

    def cache_lookup(self, key: str) -> bool:
        """Whether `key` is cached; counts a hit (and marks the entry used) or a miss."""
        with self._write() as session:
            entry = session.get(CacheEntry, key)
            if entry is None:
                self._bump(session, "cache_misses")
                return False
            entry.hits += 1
            entry.last_used_at = utcnow()
            session.add(entry)
            self._bump(session, "cache_hits")
            return True

    def cache_record(self, key: str, size: int) -> None:
        """Index a cached file (replacing an older entry of the same key)."""
        with self._write() as session:
            entry = session.get(CacheEntry, key) or CacheEntry(key=key, bytes=size)
            entry.bytes = size
            entry.last_used_at = utcnow()
            session.add(entry)

    def cache_forget(self, key: str, count_miss: bool = False) -> None:
        """Drop an entry whose file is unusable; its lookup becomes a miss instead of a hit."""
        with self._write() as session:
            entry = session.get(CacheEntry, key)
            if entry is not None:
                session.delete(entry)
            if count_miss:
                hits = session.get(Counter, "cache_hits")
                if hits is not None and hits.value > 0:
                    hits.value -= 1
                    session.add(hits)
                self._bump(session, "cache_misses")

    def cache_evict(self, max_entries: int, max_bytes: int) -> list[str]:
        """Remove least recently used entries until both limits hold; returns their keys."""
        with self._write() as session:
            rows = session.exec(
                select(CacheEntry.key, CacheEntry.bytes).order_by(col(CacheEntry.last_used_at).desc())
            ).all()
            kept = total = 0
            victims = []
            for key, size in rows:
                if kept < max_entries and total + size <= max_bytes:
                    kept += 1
                    total += size
                else:
                    victims.append(key)
            for key in victims:
                entry = session.get(CacheEntry, key)
                if entry is not None:
                    session.delete(entry)
            return victims

    def cache_stats(self) -> CacheStats:
        """Entries, bytes and the lifetime hit and miss counts."""
        with self._read() as session:
            entries, size = session.exec(
                select(func.count(), func.coalesce(func.sum(CacheEntry.bytes), 0)).select_from(CacheEntry)
            ).one()
            hits = session.get(Counter, "cache_hits")
            misses = session.get(Counter, "cache_misses")
            return CacheStats(
                entries=int(entries),
                bytes=int(size),
                hits=hits.value if hits else 0,
                misses=misses.value if misses else 0,
            )

    def cache_clear(self) -> list[str]:
        """Forget every entry and reset the counters; returns the keys that were cached."""
        with self._write() as session:
            keys = list(session.exec(select(CacheEntry.key)))
            session.execute(CacheEntry.__table__.delete())  # type: ignore[attr-defined]
            session.execute(Counter.__table__.delete())  # type: ignore[attr-defined]
            return keys
