"""Keeping status files true to the queue."""

from __future__ import annotations

from ttsd.delivery.outbox import Outbox
from ttsd.delivery.status import iso, status_document
from ttsd.jobqueue.protocols import JobLookup, StatusRebuild
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job


def publish(store: JobLookup, outbox: Outbox, job_id: str) -> Job:
    """Rewrite a job's status file from the queue, unless a newer job has since taken its name
    (reusing an output name replaces that name's status)."""
    job = store.get(job_id)
    # By name only (a name may look like another job's id), as the outbox's file system sees names.
    newest = store.newest_named(job.name, fold=outbox.folds_names)
    if newest is not None and newest.id == job.id:
        outbox.write_status(job.name, status_document(job))
    return job


def rebuild_status_files(store: StatusRebuild, outbox: Outbox) -> int:
    """At start: rewrite every status file that is missing or disagrees with the queue."""
    rewritten = 0
    for job in store.latest_per_name(fold=outbox.folds_names):
        current = outbox.read_status(job.name)
        if current is not None and _newer_rejection(current, job):
            continue
        if current is None or current.get("job_id") != job.id or current.get("state") != job.state:
            outbox.write_status(job.name, status_document(job))
            rewritten += 1
    return rewritten


def _newer_rejection(document: dict[str, object], job: Job) -> bool:
    """A rejected file dropped after the job took the name is the name's latest word."""
    created = document.get("created_at")
    return (
        document.get("state") == JobState.REJECTED
        and isinstance(created, str)
        and created > (iso(job.named_at or job.created_at) or "")
    )
