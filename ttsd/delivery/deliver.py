"""Delivering a finished job: its audio file is staged, then installed inside the guarded `done`
transaction, so a worker that lost its lease (the job was cancelled or taken back) never replaces
the audio of the job's newer result, and audio and queue never disagree after a crash."""

from __future__ import annotations

import numpy as np

from ttsd.delivery.outbox import Outbox
from ttsd.faults import crash_point
from ttsd.jobqueue.protocols import WorkerQueue
from ttsd.jobqueue.records import AudioInfo, RunInfo
from ttsd.jobspec import JobSpec


def deliver(
    store: WorkerQueue, outbox: Outbox, token: str, job_id: str, spec: JobSpec, audio: np.ndarray, run: RunInfo
) -> AudioInfo | None:
    """Write the job's audio into the outbox and record the job done, both only while `token` holds
    its lease. Returns what was delivered, or None when the lease was lost (nothing is installed)."""
    if not store.holds_lease(job_id, token):
        return None
    staged = outbox.stage_audio(spec.name, spec.format, audio, spec.sample_rate, spec.normalize, spec.speed)

    def install() -> None:
        outbox.install(staged)
        crash_point("after_audio", spec.name)

    try:
        recorded = store.finish_done(job_id, token, staged.info, run, install=install)
    finally:
        outbox.discard(staged)
    crash_point("after_done", spec.name)
    return staged.info if recorded else None
