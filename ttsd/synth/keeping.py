"""Keeping what a worker made: each finished chunk (file, then row), each finished job (joined,
delivered, then its chunks forgotten), and each failure (recorded against the job, with backoff).

Order of delivery (so a crash anywhere leaves a state recovery can finish): audio file written
atomically, then the guarded `done` in the queue, then the status file (which is derived from the
queue and rebuilt at start when it lags behind).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from ttsd.audio import join_timed
from ttsd.delivery.deliver import deliver
from ttsd.delivery.extras import Timeline, needs_timeline
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError, TtsdError
from ttsd.faults import crash_point
from ttsd.joblog import job_extra, job_logger
from ttsd.jobqueue.records import RunInfo
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import DevicePlan
from ttsd.synth.failures import SPACE_CHECK_S, OutOfSpace, SpaceWait, failure_of
from ttsd.synth.script_plan import lead_ms, plan_script

if TYPE_CHECKING:
    from ttsd.synth.rendering import Renderer

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
SCRIPT_PROGRESS_EVERY_S = 1.0
"""A script's status file lists every segment and chapter (a book's runs to hundreds of KiB): its
progress is rewritten at most this often, not after each of its thousands of chunks."""


def retry_delay(attempt: int) -> float:
    """Exponential backoff for transient failures: 2 s, 4 s, 8 s ... capped at five minutes."""
    return float(min(MAX_BACKOFF_S, 2.0**attempt))


class Keeper:
    """Records chunks and outcomes of the jobs leased to one worker (`token`)."""

    def __init__(self, context: WorkContext, token: str, space: SpaceWait) -> None:
        self.context = context
        self.token = token
        self._space = space
        self._progress_at: dict[str, float] = {}

    def pending_chunks(self, job: Job, spec: JobSpec, renderer: Renderer) -> list[tuple[ChunkRow, str | None]] | None:
        """The job's chunks still to speak, with their cache keys; cached ones are kept at once.
        None: the lease is gone."""
        pieces = [(c.text, c.pause_after_ms, c.segment) for c in plan_script(spec).chunks]
        chunks = self.context.store.plan_chunks(job.id, self.token, pieces)
        if chunks is None:
            return None
        pending = []
        for chunk in chunks:
            if chunk.done and self.context.chunks.has(job.id, chunk.index):
                continue  # a damaged file is caught when the job is joined, and the job re-rendered
            key = renderer.cache_key(spec, chunk)
            cached = renderer.cached(spec, key)
            if cached is None:
                pending.append((chunk, key))
            elif not self.record_chunk(job, spec, chunk, cached, synth_s=0.0, cache_hit=True):
                return None
        return pending

    def record_chunk(
        self, job: Job, spec: JobSpec, chunk: ChunkRow, audio: np.ndarray, synth_s: float, cache_hit: bool
    ) -> bool:
        """Keep a finished chunk (file, then row); False when the job is no longer leased to us."""
        self.context.chunks.save(job.id, chunk.index, audio)
        duration = len(audio) / spec.sample_rate
        if not self.context.store.chunk_done(job.id, self.token, chunk.index, round(duration, 3), synth_s, cache_hit):
            return False
        crash_point("chunk_done", f"{job.name}#{chunk.index}")
        if spec.segments is None or self._progress_due(job.id):
            self.publish(job.id)
        return True

    def _progress_due(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._progress_at.get(job_id, -SCRIPT_PROGRESS_EVERY_S) < SCRIPT_PROGRESS_EVERY_S:
            return False
        self._progress_at[job_id] = now
        return True

    def finish(self, job: Job, spec: JobSpec, plan: DevicePlan | None) -> None:
        """Join a job whose chunks are all kept and deliver it (or fail it, saying why)."""
        try:
            self._finish(job, spec, plan)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
            self.fail(job, failure_of(exc, "joining its chunks"))

    def _finish(self, job: Job, spec: JobSpec, plan: DevicePlan | None) -> None:
        store, files = self.context.store, self.context.chunks
        chunks = store.chunks(job.id)
        audios = [files.load(job.id, chunk.index) for chunk in chunks]
        if not chunks or any(audio is None for audio in audios) or not all(chunk.done for chunk in chunks):
            store.drop_chunks(job.id)
            files.discard(job.id)
            self.fail(
                job, TransientEngineError("finished chunks were missing; rendering the job again", code="chunks_lost")
            )
            return
        kept = [a for a in audios if a is not None]
        joined, spans = join_timed(kept, [c.pause_after_ms for c in chunks], spec.sample_rate, lead_ms(spec))
        timeline = None
        if needs_timeline(spec):
            timeline = Timeline(
                tuple(spans), tuple(c.text for c in chunks), tuple(c.segment for c in chunks), len(joined)
            )
        current = store.get(job.id)
        all_hits = all(chunk.cache_hit for chunk in chunks)
        made_by = None if all_hits else plan
        run = RunInfo(
            device=made_by.device if made_by else None,
            dtype=made_by.dtype if made_by else None,
            seed=spec.seed,
            cache_hit=all_hits,
            synth_s=round(current.synth_s or 0.0, 3),
        )
        self._deliver_or_fail(job, spec, joined, run, timeline)
        if store.get(job.id).state.terminal:
            self.discard(job, None)

    def _deliver_or_fail(
        self, job: Job, spec: JobSpec, audio: np.ndarray, run: RunInfo, timeline: Timeline | None
    ) -> None:
        """Deliver one job; a failure to deliver it (disk full, encoder error) fails that job alone."""
        jlog = job_logger(log, job)
        store, outbox = self.context.store, self.context.outbox
        try:
            delivered = deliver(store, outbox, self.token, job.id, spec, audio, run, timeline)
        except Exception as exc:
            log.exception("job %s (%s): could not deliver its audio", job.id, job.name, extra=job_extra(job))
            self.fail(job, failure_of(exc, "delivering the audio"))
            return
        if delivered is None:
            jlog.info("job %s was cancelled or reclaimed before delivery; result discarded", job.id)
        else:
            jlog.info("job %s (%s) done: %.2fs of audio", job.id, spec.name, delivered.duration_s)
        self.publish(job.id)

    def discard(self, job: Job, reason: str | None) -> None:
        """Forget a job's chunks once it is finished. A job that is only no longer ours (taken
        back, queued again) keeps them: its next worker resumes from them."""
        self._progress_at.pop(job.id, None)
        if reason:
            log.info("job %s: result discarded because %s", job.id, reason, extra=job_extra(job))
            self.publish(job.id)
        if self.context.store.drop_finished_chunks(job.id):
            self.context.chunks.discard(job.id)

    def fail(self, job: Job, error: EngineError) -> None:
        """Record a failed try: a full disk postpones the job uncounted; a transient failure queues
        it again after a backoff while attempts are left; a permanent one fails it."""
        store, settings = self.context.store, self.context.settings
        self._progress_at.pop(job.id, None)
        if isinstance(error, OutOfSpace):
            # The machine's problem, not the job's: it waits for space, and so does this worker.
            self._space.out_of_space()
            postponed = store.postpone(job.id, self.token, error.code, error.message, SPACE_CHECK_S)
            outcome = "waiting for space" if postponed else "lost"
        else:
            transient = not isinstance(error, PermanentEngineError)
            current = store.get(job.id)
            delay = retry_delay(current.attempts - current.attempt_base + 1) if transient else None
            state = store.finish_failed(job.id, self.token, error.code, error.message, settings.max_attempts, delay)
            outcome = str(state)
        log.warning(
            "job %s (%s): %s [%s] -> %s", job.id, job.name, error.message, error.code, outcome, extra=job_extra(job)
        )
        self.publish(job.id)

    def publish(self, job_id: str) -> None:
        """Write the job's status file (a write that fails is owed, not lost)."""
        try:
            job = self.context.publisher.publish(job_id)
        except TtsdError:
            log.exception("could not write the status of job %s", job_id, extra={"job_id": job_id})
            job = None
        # A status write that failed is owed, but the job's hooks run now all the same.
        job = job or self.context.store.get(job_id)
        if job.state.terminal:
            self.context.on_job_finished(job)
