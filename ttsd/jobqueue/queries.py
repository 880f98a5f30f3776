"""Reading jobs: by reference, lists and counts for people, and what backpressure and leases ask."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from ttsd.errors import JobNotFound
from ttsd.jobqueue import transitions
from ttsd.jobqueue.database import Database, transient
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec
from ttsd.names import name_key

PENDING_STATES = (JobState.QUEUED, JobState.RUNNING)
LIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.DONE)
"""A new spec equal to a job in one of these states is that job again (a duplicate)."""


def leased(session: Session, job_id: str, token: str) -> Job | None:
    """The job, if it is running under `token` (not cancelled, recovered or finished meanwhile)."""
    # Locked (on PostgreSQL) until the transaction ends: nothing else moves the job meanwhile.
    job = session.get(Job, job_id, with_for_update=True)
    return job if job is not None and transitions.holds_lease(job, token) else None


def _newest_named(session: Session, name: str, fold: bool = False) -> Job | None:
    same_file = col(Job.name_key) == name_key(name) if fold else col(Job.name) == name
    query = select(Job).where(same_file).order_by(col(Job.named_at).desc(), col(Job.id))
    return session.exec(query.limit(1)).first()


_PART = 500  # ids per IN (...): SQLite caps the variables of one statement


def _parts(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + _PART] for start in range(0, len(ids), _PART)]


def job_mark(job: Job) -> tuple[object, ...]:
    """What `JobQueries.job_marks` reads, from a job in hand."""
    return (job.state, job.chunks_done, job.chunks_total, job.attempts, job.audio_file, job.error_code)


class JobQueries(Database):
    """Reads of the job table."""

    @transient
    def get(self, ref: str) -> Job:
        """A job by id, by output name (the newest with that name), or by a unique id prefix."""
        with self._read() as session:
            job = session.get(Job, ref)
            if job is None:
                job = _newest_named(session, ref)
            if job is None and len(ref) >= 4:
                # autoescape: a `_` or `%` in what was typed is not a LIKE wildcard.
                prefixed = select(Job).where(col(Job.id).startswith(ref, autoescape=True)).limit(2)
                matches = list(session.exec(prefixed))
                job = matches[0] if len(matches) == 1 else None
        if job is None:
            raise JobNotFound(f"no job with id or name {ref!r}")
        return job

    @transient
    def newest_named(self, name: str, fold: bool = False) -> Job | None:
        """The job that took output `name` last (enqueued, retried or delivered): it owns the name's
        audio and status. With `fold`, names one case-insensitive file are one name."""
        with self._read() as session:
            return _newest_named(session, name, fold)

    @transient
    def holds_lease(self, job_id: str, token: str) -> bool:
        """Whether `token` still owns the running job (it was not cancelled or recovered meanwhile)."""
        with self._read() as session:
            return leased(session, job_id, token) is not None

    @transient
    def pending_count(self, model: str) -> int:
        """Jobs of `model` queued or running: what backpressure measures."""
        with self._read() as session:
            return session.exec(
                select(func.count()).select_from(Job).where(Job.model == model, col(Job.state).in_(PENDING_STATES))
            ).one()

    @transient
    def pending_total(self) -> int:
        """Jobs queued or running, across every model."""
        with self._read() as session:
            return session.exec(select(func.count()).select_from(Job).where(col(Job.state).in_(PENDING_STATES))).one()

    @transient
    def is_known(self, spec: JobSpec) -> bool:
        """Whether enqueueing `spec` would find a job already there (a duplicate, not a new one)."""
        key = spec.content_key()
        with self._read() as session:
            query = select(Job.id).where(Job.content_key == key, col(Job.state).in_(LIVE_STATES)).limit(1)
            return session.exec(query).first() is not None

    @transient
    def jobs_by_id(self, ids: Collection[str]) -> dict[str, Job]:
        """The jobs among `ids` that exist, by id."""
        found: dict[str, Job] = {}
        with self._read() as session:
            for part in _parts(list(ids)):
                found.update((job.id, job) for job in session.exec(select(Job).where(col(Job.id).in_(part))))
        return found

    @transient
    def job_marks(self, ids: Collection[str]) -> dict[str, tuple[object, ...]]:
        """For each of `ids` that exists, what a follower of the job is told about (its state, chunks
        done and planned, attempts, audio file, error), without the job's text: a watcher asks for
        this many times a second."""
        names = ("id", "state", "chunks_done", "chunks_total", "attempts", "audio_file", "error_code")
        columns = [col(getattr(Job, name)) for name in names]
        marks: dict[str, tuple[object, ...]] = {}
        with self._read() as session:
            for part in _parts(list(ids)):
                for row in session.execute(sa_select(*columns).where(col(Job.id).in_(part))):
                    marks[row[0]] = tuple(row[1:])
        return marks

    @transient
    def leased_ids(self, token: str) -> set[str]:
        """The jobs still running under `token` (a cancel or a recovery takes a job out of it)."""
        with self._read() as session:
            query = select(Job.id).where(Job.state == JobState.RUNNING, Job.lease_token == token)
            return set(session.exec(query))

    @transient
    def models_with_queued_jobs(self) -> list[str]:
        """Models that have work waiting."""
        with self._read() as session:
            return list(session.exec(select(Job.model).where(Job.state == JobState.QUEUED).distinct()))

    @transient
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

    @transient
    def latest_per_name(self, fold: bool = False) -> list[Job]:
        """For each output name, the job that took it last: the one its status file must describe.
        With `fold`, names one case-insensitive file are one name."""
        name = col(Job.name_key) if fold else col(Job.name)
        newest = select(name.label("name"), func.max(Job.named_at).label("named_at")).group_by(name).subquery()
        query = select(Job).join(newest, (name == newest.c.name) & (col(Job.named_at) == newest.c.named_at))
        with self._read() as session:
            return list(session.exec(query))

    @transient
    def counts(self) -> dict[str, dict[str, int]]:
        """Number of jobs per model and state."""
        with self._read() as session:
            rows = session.exec(select(Job.model, Job.state, func.count()).group_by(col(Job.model), col(Job.state)))
            counts: dict[str, dict[str, int]] = {}
            for model, state, number in rows:
                counts.setdefault(model, {})[state] = number
            return counts

    @transient
    def finished_since(self, since: datetime) -> list[Job]:
        """Jobs that reached done or failed since `since` (for per-model metrics)."""
        with self._read() as session:
            return list(
                session.exec(
                    select(Job).where(
                        col(Job.state).in_((JobState.DONE, JobState.FAILED)),
                        col(Job.finished_at) >= since,
                    )
                )
            )

    @transient
    def source_files(self) -> set[str]:
        """The inbox names of every job file the queue has taken (accepted or rejected)."""
        with self._read() as session:
            return {name for name in session.exec(select(Job.source_file).distinct()) if name is not None}

    @transient
    def failed_job_ids(self) -> list[str]:
        """Ids of every failed job."""
        with self._read() as session:
            return list(session.exec(select(Job.id).where(Job.state == JobState.FAILED)))
