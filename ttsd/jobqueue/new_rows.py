"""Rows for new jobs, inside the caller's transaction: a job is created once per content (a spec
equal to a live job is that job again), and a job file that cannot become a job is a rejected row.
Callers hold `ENQUEUE_LOCK`, so two hosts recording the same content at once make one job."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from ttsd.jobqueue import records, transitions
from ttsd.jobqueue.queries import LIVE_STATES
from ttsd.jobqueue.records import EnqueueResult, Rejection
from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec
from ttsd.names import name_key

ENQUEUE_LOCK = "enqueue"
"""Held by every transaction that may create jobs: one job per content, whichever host records it."""


def new_job(key: str, spec: JobSpec, source_file: str | None, now: datetime, job_id: str | None = None) -> Job:
    """A queued job for `spec` (whose content key is `key`), created at `now`."""
    return Job(
        id=job_id or records.new_job_id(),
        created_at=now,
        named_at=now,
        content_key=key,
        name=spec.name,
        name_key=name_key(spec.name),
        client_id=spec.client_id,
        model=spec.model,
        batch_key=spec.batch_key(),
        spec_json=spec.model_dump_json(),
        source_file=source_file,
        priority=spec.priority,
        seed=spec.seed,
        chunks_total=1,
    )


def rejected_row(rejection: Rejection, now: datetime) -> Job:
    """A row, rejected at once, for what could not become a job (it takes its output name)."""
    row = Job(
        id=records.new_job_id(),
        content_key=f"rejected:{uuid.uuid4().hex}",  # never a duplicate of anything
        name=rejection.name,
        name_key=name_key(rejection.name),
        model="",
        batch_key="",
        spec_json="{}",
        source_file=rejection.source_file,
        created_at=now,
        named_at=now,
    )
    transitions.reject(row, rejection, now)
    return row


def add_jobs(session: Session, items: Sequence[tuple[JobSpec, str | None]], now: datetime) -> list[EnqueueResult]:
    """A job for each (spec, source file), unless the same job is live already (or earlier in
    `items`): then that job, not created."""
    results: list[EnqueueResult] = []
    keyed = [(spec.content_key(), spec, source_file) for spec, source_file in items]
    live = session.exec(
        select(Job)
        .where(col(Job.content_key).in_({key for key, _, _ in keyed}), col(Job.state).in_(LIVE_STATES))
        .order_by(col(Job.created_at))
    )
    known: dict[str, Job] = {job.content_key: job for job in live}  # the newest wins
    for key, spec, source_file in keyed:
        existing = known.get(key)
        if existing is not None:
            results.append(EnqueueResult(existing, created=False))
            continue
        job = known[key] = new_job(key, spec, source_file, now)
        results.append(EnqueueResult(job, created=True))
    session.add_all([result.job for result in results if result.created])
    return results
