"""Every move a job makes between states, each written once, and the table of moves that exist.

These functions change a loaded `Job` in memory and never touch the database: the caller holds the
write transaction (and has checked the lease where one is needed), so a move and its row update
commit together. Nothing else assigns `Job.state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Final

from ttsd.errors import StoreError
from ttsd.jobqueue.records import AudioInfo, Finished, Rejection, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

QUEUED, RUNNING, DONE, FAILED, CANCELLED, REJECTED = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.DONE,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.REJECTED,
)


class Transition(StrEnum):
    """The ways a job changes state."""

    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    INTERRUPT = "interrupt"
    RELEASE = "release"
    CANCEL = "cancel"
    RETRY = "retry"
    RESTORE = "restore"
    REJECT = "reject"
    POSTPONE = "postpone"
    RESUME = "resume"


MOVES: Final[Mapping[Transition, tuple[frozenset[JobState], frozenset[JobState]]]] = {
    Transition.CLAIM: (frozenset({QUEUED}), frozenset({RUNNING})),
    Transition.SUCCEED: (frozenset({RUNNING}), frozenset({DONE})),
    # A failed try either ends the job or, when transient and attempts are left, queues it again.
    Transition.FAIL: (frozenset({RUNNING}), frozenset({FAILED, QUEUED})),
    Transition.INTERRUPT: (frozenset({RUNNING}), frozenset({QUEUED, FAILED})),
    Transition.RELEASE: (frozenset({RUNNING}), frozenset({QUEUED})),
    Transition.CANCEL: (frozenset({QUEUED, RUNNING}), frozenset({CANCELLED})),
    Transition.RETRY: (frozenset({DONE, FAILED, CANCELLED}), frozenset({QUEUED})),
    # A lost queue rebuilt from disk: a new row takes the final state its status file recorded.
    Transition.RESTORE: (frozenset({QUEUED}), frozenset({DONE, FAILED, CANCELLED})),
    # A job file that cannot become a job is recorded as a new row, rejected at once.
    Transition.REJECT: (frozenset({QUEUED}), frozenset({REJECTED})),
    # A try stopped by the machine (a full disk), not by the job: back to the queue, uncounted.
    Transition.POSTPONE: (frozenset({RUNNING}), frozenset({QUEUED})),
    # The whole daemon stopped without a clean shutdown (kill -9, power cut): not the job's fault.
    Transition.RESUME: (frozenset({RUNNING}), frozenset({QUEUED})),
}
"""Transition -> (the states it starts from, the states it may end in). No other move exists."""


class IllegalTransition(StoreError):
    """A job was asked to make a move the table does not allow (e.g. cancelling a done job)."""


def _in_order(states: frozenset[JobState]) -> str:
    return " or ".join(state.value for state in JobState if state in states)


def _move(job: Job, transition: Transition, target: JobState) -> None:
    sources, targets = MOVES[transition]
    verb = transition.value
    if job.state not in sources:
        raise IllegalTransition(
            f"cannot {verb} job {job.id}: it is {job.state} ({verb} applies to {_in_order(sources)} jobs only)"
        )
    if target not in targets:
        raise IllegalTransition(f"{verb} never leads to {target}, only to {_in_order(targets)} (job {job.id})")
    job.state = target


def holds_lease(job: Job, token: str) -> bool:
    """Whether `token` is the live lease of `job` (it was not cancelled, recovered or finished)."""
    return job.state == RUNNING and job.lease_token == token


def claim(job: Job, token: str, now: datetime) -> None:
    """queued -> running, leased to `token` from `now`."""
    _move(job, Transition.CLAIM, RUNNING)
    job.lease_token = token
    job.heartbeat_at = now
    job.started_at = now
    job.not_before = None


def succeed(job: Job, audio: AudioInfo, run: RunInfo, now: datetime) -> None:
    """running -> done, with the delivered audio and how it was made; the try counts."""
    _move(job, Transition.SUCCEED, DONE)
    job.attempts += 1
    job.lease_token = None
    job.finished_at = now
    job.error_code = None
    job.error_message = None
    job.named_at = now  # delivered last: the name, its audio and its status are this job's now
    _record_audio(job, audio, run)


def _record_audio(job: Job, audio: AudioInfo, run: RunInfo) -> None:
    job.audio_file = audio.file
    job.audio_format = audio.format
    job.sample_rate = audio.sample_rate
    job.duration_s = audio.duration_s
    job.audio_bytes = audio.bytes
    job.audio_sha256 = audio.sha256
    job.outputs_json = audio.outputs.to_json() if audio.outputs is not None else None
    job.device = run.device
    job.dtype = run.dtype
    job.seed = run.seed
    job.cache_hit = run.cache_hit
    job.synth_s = run.synth_s
    job.chunks_done = job.chunks_total


def fail(job: Job, code: str, message: str, max_attempts: int, retry_at: datetime | None, now: datetime) -> JobState:
    """running -> queued again at `retry_at` (a transient failure with attempts left), else
    running -> failed for good. The try counts either way; returns the new state."""
    requeue = retry_at is not None and _tries(job) + 1 < max_attempts
    _move(job, Transition.FAIL, QUEUED if requeue else FAILED)
    _count_try(job)
    job.error_code = code
    job.error_message = message
    if requeue:
        job.not_before = retry_at
    else:
        job.finished_at = now
    return job.state


INTERRUPTED = "interrupted"
"""The error code of a job whose worker died holding it: it may be what killed it, so it runs alone."""


def interrupt(job: Job, max_attempts: int, now: datetime) -> JobState:
    """A running job whose worker is gone (it died, or stopped answering): the interrupted try
    counts, then the job is queued again, to run alone, or, out of attempts, fails."""
    tries = _tries(job) + 1
    _move(job, Transition.INTERRUPT, QUEUED if tries < max_attempts else FAILED)
    _count_try(job)
    job.error_code = INTERRUPTED
    if job.state == FAILED:
        job.finished_at = now
        job.error_message = (
            f"interrupted {tries} times (its worker crashed or stopped answering during synthesis); "
            "giving up after TTS_MAX_ATTEMPTS"
        )
    else:
        job.error_message = "its worker crashed or stopped answering during synthesis; it runs alone next"
    return job.state


def runs_alone(job: Job) -> bool:
    """Whether the job's last try ended with its worker's death (in this attempt budget): it may be
    what killed the worker, so it must not take fresh neighbours down with it."""
    return job.attempts > job.attempt_base and job.error_code == INTERRUPTED


def release(job: Job) -> None:
    """running -> queued at a clean shutdown: the try was not the job's fault, so it does not count."""
    _move(job, Transition.RELEASE, QUEUED)
    job.lease_token = None


def resume(job: Job) -> None:
    """running -> queued after the daemon itself died: the try does not count, the restart does
    (`restarts`, so the caller can charge a job that lives through too many)."""
    _move(job, Transition.RESUME, QUEUED)
    job.lease_token = None
    job.restarts += 1


def postpone(job: Job, code: str, message: str, retry_at: datetime) -> None:
    """running -> queued again at `retry_at`, the try not counted: what stopped it was the machine
    (no space left), not the job; `code` and `message` say what it waits for."""
    _move(job, Transition.POSTPONE, QUEUED)
    job.lease_token = None
    job.not_before = retry_at
    job.error_code = code
    job.error_message = message


def cancel(job: Job, now: datetime) -> None:
    """queued or running -> cancelled (a running job's lease dies with it, so its result is discarded)."""
    _move(job, Transition.CANCEL, CANCELLED)
    job.lease_token = None
    job.finished_at = now
    job.error_code = "cancelled"
    job.error_message = "cancelled by request"


def retry(job: Job, now: datetime) -> None:
    """done, failed or cancelled -> queued, with a fresh attempt budget and no progress; the job
    takes its output name back from any job that took it since."""
    _move(job, Transition.RETRY, QUEUED)
    job.named_at = now
    job.attempt_base = job.attempts
    job.not_before = None
    job.finished_at = None
    job.started_at = None
    job.error_code = None
    job.error_message = None
    job.chunks_done = 0
    job.audio_s_done = 0.0


def restore(job: Job, finished: Finished) -> None:
    """A row rebuilt from disk (still queued, never claimed) takes the outcome its status file
    recorded: done with its audio, or failed or cancelled with the reason."""
    _move(job, Transition.RESTORE, finished.state)
    job.attempts = 1
    job.finished_at = finished.finished_at
    job.error_code = finished.error_code
    job.error_message = finished.error_message
    if finished.audio is not None and finished.run is not None:
        _record_audio(job, finished.audio, finished.run)


def reject(job: Job, rejection: Rejection, now: datetime) -> None:
    """A new row for a job file that cannot become a job: rejected, saying which field and why."""
    _move(job, Transition.REJECT, REJECTED)
    job.finished_at = now
    job.error_code = rejection.code
    job.error_message = rejection.message
    job.error_field = rejection.field


def _count_try(job: Job) -> None:
    job.attempts += 1
    job.lease_token = None


def _tries(job: Job) -> int:
    return job.attempts - job.attempt_base
