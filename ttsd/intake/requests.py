"""Jobs that arrive as requests (the HTTP front door, or any program using ttsd as a library) rather
than as inbox files: the same parsing, limits, dedup and status files, answered at once with the job
or with the reason it was refused."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ttsd.delivery.publish import StatusPublisher
from ttsd.errors import JobRejected, TtsdError
from ttsd.intake.enqueued import announce
from ttsd.intake.jobfile import JobDefaults, parse_object
from ttsd.jobqueue.protocols import IntakeQueue
from ttsd.jobqueue.tables import Job
from ttsd.names import default_output_name, name_problem

REQUEST_SOURCE = "http"
"""The `source_file` of a job that came in as a request (an inbox job names its file)."""


class QueueFull(TtsdError):
    """A model's queue holds `TTS_MAX_QUEUE_SIZE` jobs: a request that waits for its audio is refused
    for now (the asynchronous form still takes the job)."""

    code = "queue_full"

    def __init__(self, model: str, pending: int, retry_after_s: int) -> None:
        super().__init__(
            f"the queue of model {model!r} holds {pending} jobs (TTS_MAX_QUEUE_SIZE): try again in "
            f"{retry_after_s}s, or submit it with POST /v1/jobs, which queues it durably and answers at once"
        )
        self.model = model
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Submitted:
    """A request's job, and whether this request created it (False: the same job was already there)."""

    job: Job
    created: bool


class Submissions:
    """Turns job objects into queued jobs, with the checks inbox files get."""

    def __init__(
        self,
        defaults: JobDefaults,
        max_queue_size: int,
        store: IntakeQueue,
        publisher: StatusPublisher,
        on_enqueued: Callable[[str], None] = lambda model: None,
        retry_after_s: int = 5,
    ) -> None:
        self.defaults = defaults
        self.max_queue_size = max_queue_size
        self.store = store
        self.publisher = publisher
        self.on_enqueued = on_enqueued
        self.retry_after_s = retry_after_s
        # Two requests for one model racing past the room check together would overshoot the limit.
        self._room = threading.Lock()

    def submit(self, job: Mapping[str, Any], name: str | None = None, bounded: bool = True) -> Submitted:
        """Queue `job` (the job-file schema) under output `name` (its `output`, else a name made from
        its content). `bounded`: refuse with QueueFull while the model's queue is full, unless the
        job is already queued. Raises JobRejected naming the field at fault."""
        name = name or job.get("output") or default_output_name(job)
        problem = name_problem(str(name))
        if problem:
            raise JobRejected("invalid_output", f"output: {problem}", "output")
        spec = parse_object(dict(job), str(name), self.defaults)
        with self._room:
            pending = self.store.pending_count(spec.model) if bounded else 0
            # The same request sent again (a client retrying) finds its job instead of a refusal.
            if pending >= self.max_queue_size and not self.store.is_known(spec):
                raise QueueFull(spec.model, pending, self.retry_after_s)
            result = self.store.enqueue_many([(spec, REQUEST_SOURCE)])[0]
        announced = announce(result, self.store, self.publisher)
        self.on_enqueued(announced.model)
        return Submitted(announced, result.created)
