"""What follows recording a job, whichever door it came in by (an inbox file or a request): its
status file, and a duplicate whose audio is gone spoken again."""

from __future__ import annotations

import logging

from ttsd.delivery.publish import StatusPublisher
from ttsd.delivery.status import status_document
from ttsd.errors import TtsdError
from ttsd.joblog import job_extra
from ttsd.jobqueue.protocols import IntakeQueue
from ttsd.jobqueue.records import EnqueueResult
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)


def announce(result: EnqueueResult, store: IntakeQueue, publisher: StatusPublisher) -> Job:
    """Write the status file of a job just recorded, and return the job as it now stands.

    A duplicate that was delivered before but whose audio was lost since, or whose name another job
    took meanwhile, is queued again (the cache makes that instant) and the name is its again."""
    job = result.job
    outbox = publisher.outbox
    if result.created:
        # Just created: it is its name's newest job, so its status is written from the row in hand.
        try:
            outbox.write_status(job.name, status_document(job))
        except OSError:
            publisher.owe(job.id)
        except TtsdError:
            log.exception("could not write the status file of %s", job.name, extra=job_extra(job))
        return job
    if job.state == JobState.DONE and not (_audio_exists(publisher, job) and _owns_name(store, publisher, job)):
        job = store.retry(job.id)
    publisher.publish(job.id)
    return job


def _audio_exists(publisher: StatusPublisher, job: Job) -> bool:
    return job.audio_file is not None and (publisher.outbox.root / job.audio_file).is_file()


def _owns_name(store: IntakeQueue, publisher: StatusPublisher, job: Job) -> bool:
    newest = store.newest_named(job.name, fold=publisher.outbox.folds_names)
    return newest is not None and newest.id == job.id
