"""Keeping status files true to the queue."""

from __future__ import annotations

import logging
import threading

from ttsd.delivery.outbox import Outbox
from ttsd.delivery.status import iso, status_document
from ttsd.errors import TtsdError
from ttsd.jobqueue.protocols import JobLookup, StatusRebuild
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)


def publish(store: JobLookup, outbox: Outbox, job_id: str) -> Job:
    """Rewrite a job's status file from the queue, unless a newer job has since taken its name
    (reusing an output name replaces that name's status)."""
    job = store.get(job_id)
    # By name only (a name may look like another job's id), as the outbox's file system sees names.
    newest = store.newest_named(job.name, fold=outbox.folds_names)
    if newest is not None and newest.id == job.id:
        outbox.write_status(job.name, status_document(job, store.chunks))
    return job


def rebuild_status_files(store: StatusRebuild, outbox: Outbox, finished_only: bool = False) -> int:
    """At start: rewrite every status file (or, `finished_only`, every finished job's) that is
    missing or disagrees with the queue."""
    rewritten = 0
    for job in store.latest_per_name(fold=outbox.folds_names):
        if finished_only and not job.state.terminal:
            continue
        current = outbox.read_status(job.name)
        if current is not None and _newer_rejection(current, job):
            continue
        if current is None or current.get("job_id") != job.id or current.get("state") != job.state:
            outbox.write_status(job.name, status_document(job))
            rewritten += 1
    return rewritten


def _newer_rejection(document: dict[str, object], job: Job) -> bool:
    """A rejection that ttsd 0.1.0 wrote (before rejections were queue rows, so with no job id)
    after the job took the name is the name's latest word."""
    created = document.get("created_at")
    return (
        document.get("state") == JobState.REJECTED
        and document.get("job_id") is None
        and isinstance(created, str)
        and created > (iso(job.named_at or job.created_at) or "")
    )


class StatusPublisher:
    """Writes status files from the queue for the daemon's threads. A status file that cannot be
    written now (a full disk, an I/O error) is owed, and `settle` writes what is owed again until it
    is written: a script polling for a status file never waits on a write that failed once."""

    def __init__(self, store: JobLookup, outbox: Outbox) -> None:
        self._store = store
        self.outbox = outbox
        self._owed: set[str] = set()
        self._lock = threading.Lock()

    def publish(self, job_id: str) -> Job | None:
        """Write a job's status file (see `publish`); the job, or None when the write is owed."""
        try:
            job = publish(self._store, self.outbox, job_id)
        except OSError:
            self.owe(job_id)
            return None
        with self._lock:
            self._owed.discard(job_id)
        return job

    def owed(self) -> list[str]:
        """The jobs whose status files are still owed."""
        with self._lock:
            return sorted(self._owed)

    def owe(self, job_id: str) -> None:
        """Remember a status file that could not be written, to write it again later."""
        with self._lock:
            first = not self._owed
            self._owed.add(job_id)
        if first:
            log.warning("could not write the status file of job %s; it will be written when it can", job_id)

    def settle(self) -> int:
        """Write owed status files, stopping at the first that still fails (the disk is still full,
        so the others would fail too); returns how many are still owed."""
        with self._lock:
            owed = sorted(self._owed)
        for job_id in owed:
            try:
                publish(self._store, self.outbox, job_id)
            except OSError:
                break
            except TtsdError:
                log.exception("the status file of job %s cannot be written; giving up on it", job_id)
            with self._lock:
                self._owed.discard(job_id)
                if not self._owed:
                    log.info("every owed status file is written")
        with self._lock:
            return len(self._owed)
