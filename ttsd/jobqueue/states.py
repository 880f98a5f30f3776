"""The states a job moves through, and which of them are final."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is. A `rejected` row is a job file (or line) that could not become a job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        """True when the job will not change again unless a person retries it."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED)


TERMINAL_STATES = frozenset(state.value for state in JobState if state.terminal)
