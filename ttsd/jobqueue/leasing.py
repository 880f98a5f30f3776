"""Which jobs a lease covers: claiming them (in claim order, skipping rows another host is
claiming), and finding leases again by the moment they were taken, by the host that minted them,
or by whether that host is still alive. Functions inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from ttsd.jobqueue import transitions
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import DaemonRecord, Job

HOST_SILENT_S = 5.0
"""A host whose daemon has not beaten for this long is taken for dead (its daemon beats each second)."""


def claim_query(model: str, now: datetime) -> SelectOfScalar[Job]:
    """Queued jobs of `model` that may start at `now`, in claim order: highest priority, then oldest."""
    return (
        select(Job)
        .where(
            Job.model == model,
            Job.state == JobState.QUEUED,
            (col(Job.not_before).is_(None)) | (col(Job.not_before) <= now),
        )
        .order_by(col(Job.priority).desc(), col(Job.created_at), col(Job.id))
    )


def lease(
    session: Session,
    model: str,
    max_batch: int,
    token: str,
    now: datetime,
    alone_ok: bool,
    min_priority: int | None,
) -> list[Job]:
    """`JobLifecycle.claim` inside its transaction."""
    query = claim_query(model, now).with_for_update(skip_locked=True)
    if min_priority is not None:
        query = query.where(col(Job.priority) >= min_priority)
    first = session.exec(query.limit(1)).first()
    if first is None or (transitions.runs_alone(first) and not alone_ok):
        return []
    jobs = [first]
    if not transitions.runs_alone(first) and max_batch > 1:
        fresh = (
            (col(Job.attempts) == col(Job.attempt_base))
            | (col(Job.error_code).is_(None))
            | (col(Job.error_code) != transitions.INTERRUPTED)
        )
        jobs += session.exec(query.where(fresh, col(Job.id) != first.id).limit(max_batch - 1))
    for job in jobs:
        transitions.claim(job, token, now)
        session.add(job)
    return jobs


def claimed_at(session: Session, token: str, moments: Collection[datetime]) -> list[Job]:
    """Jobs leased to `token` by a claim at one of `moments` (a claim stamps `started_at` with its own)."""
    query = select(Job).where(
        Job.state == JobState.RUNNING, Job.lease_token == token, col(Job.started_at).in_(list(moments))
    )
    return list(session.exec(query.order_by(col(Job.priority).desc(), col(Job.created_at), col(Job.id))))


def owned(query: SelectOfScalar[Job], owner: str | None) -> SelectOfScalar[Job]:
    """Only the jobs leased under tokens `owner` minted (`<owner>.<random>`), when given."""
    if owner is None:
        return query
    return query.where(col(Job.lease_token).startswith(f"{owner}.", autoescape=True))


def host_of(token: str | None) -> str | None:
    """The host that minted a lease token (`<host>.<model>-<random>`), if it says."""
    host, dot, _rest = (token or "").partition(".")
    return host if dot else None


def hosts_alive_since(session: Session, since: datetime) -> set[str]:
    """Hosts with a running daemon that heartbeat since `since`."""
    rows = session.exec(
        select(DaemonRecord.host_id).where(
            col(DaemonRecord.stopped_at).is_(None), col(DaemonRecord.heartbeat_at) >= since
        )
    )
    return set(rows)


def locked(query: SelectOfScalar[Job]) -> SelectOfScalar[Job]:
    """The rows locked until the transaction ends, always in one order (two hosts recovering the
    same rows then queue up instead of deadlocking)."""
    return query.order_by(col(Job.id)).with_for_update()
