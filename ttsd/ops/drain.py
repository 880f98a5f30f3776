"""When the queue drains: one batch of work is everything finished between two moments of an
empty queue. The drain hook and the macOS notification fire once per batch, not once per job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainSummary:
    """What one batch of work (everything finished since the queue last drained) came to."""

    done: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Jobs finished in the batch."""
        return self.done + self.failed + self.cancelled

    def message(self) -> str:
        """One line for a person, such as `3 done, 1 failed`."""
        parts = [
            f"{count} {label}"
            for count, label in ((self.done, "done"), (self.failed, "failed"), (self.cancelled, "cancelled"))
            if count
        ]
        return ", ".join(parts) or "nothing finished"


class DrainTracker:
    """Decides when a batch of work is over, so one drain hook and one notification fire per
    batch, not per job.

    The daemon reports each finished job (`job_finished`) and calls `poll` now and then (the
    housekeeping tick). A batch is drained when `pending()` (jobs queued or running) is zero and
    has stayed so for `settle_s` since the last job finished: files dropped a moment apart, or two
    workers finishing together, stay one batch. With `settle_s=0`, `job_finished` itself reports
    the drain. Thread-safe.
    """

    def __init__(
        self, pending: Callable[[], int], settle_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pending = pending
        self._settle_s = settle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = {JobState.DONE: 0, JobState.FAILED: 0, JobState.CANCELLED: 0}
        self._quiet_since: float | None = None

    def job_finished(self, job: Job) -> DrainSummary | None:
        """Count a job that reached a final state (others are ignored); returns the batch's
        summary if this drained the queue."""
        state = JobState(job.state)
        with self._lock:
            if state in self._counts:
                self._counts[state] += 1
                self._quiet_since = None  # activity: the settle period starts again
            return self._check()

    def poll(self) -> DrainSummary | None:
        """The batch's summary if the queue has now drained, else None."""
        with self._lock:
            return self._check()

    def _check(self) -> DrainSummary | None:
        if not any(self._counts.values()):
            return None
        try:
            busy = self._pending() > 0
        except Exception:
            # A database hiccup delays the drain to the next poll; it must not fail a worker.
            log.exception("could not count pending jobs")
            return None
        if busy:
            self._quiet_since = None
            return None
        now = self._clock()
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < self._settle_s:
            return None
        summary = DrainSummary(
            done=self._counts[JobState.DONE],
            failed=self._counts[JobState.FAILED],
            cancelled=self._counts[JobState.CANCELLED],
        )
        self._counts = dict.fromkeys(self._counts, 0)
        self._quiet_since = None
        return summary
