"""Workers: per model, claim a batch -> speak its chunks -> join -> deliver -> record, one guarded
step at a time. Every finished chunk is kept (file + row) before the next, so a job interrupted
halfway resumes where it stopped.

Order of delivery (so a crash anywhere leaves a state recovery can finish): audio file written
atomically, then the guarded `done` in the queue, then the status file (which is derived from the
queue and rebuilt at start when it lags behind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttsd.audio import join_chunks, resample
from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.deliver import deliver
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError, TtsdError
from ttsd.faults import crash_point
from ttsd.joblog import job_extra, job_logger
from ttsd.jobqueue.protocols import WorkerQueue
from ttsd.jobqueue.records import RunInfo
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec
from ttsd.synth.audio_cache import AudioCache, cache_key
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.chunking import split_text
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.pool import EnginePool
from ttsd.synth.failures import SPACE_CHECK_S, OutOfSpace, SpaceWait, failure_of
from ttsd.synth.lease import LeaseHeartbeat
from ttsd.synth.quality import quality_problem
from ttsd.synth.references import ReferenceDigests, reference_path

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
QUALITY_RERENDERS = 2


def retry_delay(attempt: int) -> float:
    """Exponential backoff for transient failures: 2 s, 4 s, 8 s ... capped at five minutes."""
    return float(min(MAX_BACKOFF_S, 2.0**attempt))


@dataclass(frozen=True)
class WorkContext:
    """Everything a worker needs, shared by all workers of a daemon."""

    settings: Settings
    store: WorkerQueue
    outbox: Outbox
    publisher: StatusPublisher
    engines: EnginePool
    voices_dir: Path
    chunks: ChunkFiles
    registry: Mapping[str, ModelEntry] = field(default_factory=dict)
    cache: AudioCache | None = None
    revision: Callable[[str], str | None] = lambda model: None
    on_batch_done: Callable[[], None] = lambda: None
    on_job_finished: Callable[[Job], None] = lambda job: None


@dataclass(frozen=True)
class _Unit:
    """One chunk of one job, waiting to be spoken."""

    job: Job
    spec: JobSpec
    chunk: ChunkRow
    key: str | None


class Worker(threading.Thread):
    """Serves one model's queue until `stop` is set; `wake` says new work may be there."""

    def __init__(self, model: str, index: int, context: WorkContext, stop_event: threading.Event) -> None:
        super().__init__(name=f"worker-{model}-{index}", daemon=True)
        self.model = model
        self.context = context
        self.stop_event = stop_event
        self.wake = threading.Event()
        self._last_plan: DevicePlan | None = None
        self._references = ReferenceDigests(context.voices_dir)
        self._space = SpaceWait([context.outbox.root, context.chunks.root])

    def run(self) -> None:
        while not self.stop_event.is_set():
            if not self._space.ready():
                self.stop_event.wait(SPACE_CHECK_S)
                continue
            try:
                worked = self.work_once()
            except Exception:
                # Failures are handled where they happen, per job; this only keeps the thread alive.
                log.exception("worker %s: unexpected error", self.name)
                worked = False
            if not worked:
                self.wake.wait(timeout=1.0)
                self.wake.clear()

    def work_once(self) -> bool:
        """Claim and process one batch; False when the queue had nothing ready."""
        settings = self.context.settings
        token, jobs = self.context.store.claim(self.model, settings.max_batch)
        if not jobs:
            return False
        for job in jobs:
            self._publish(job.id)
        with LeaseHeartbeat(self.context.store, token, max(0.2, settings.lease_s / 4)):
            self._process(token, jobs)
        self.context.on_batch_done()
        return True

    def _process(self, token: str, jobs: Sequence[Job]) -> None:
        """Plan each job's chunks, answer what the cache can, speak the rest in batches across the
        claimed jobs, then join and deliver every job whose chunks are all done."""
        plans: list[tuple[Job, JobSpec]] = []
        units: list[_Unit] = []
        for job in jobs:
            spec = JobSpec.model_validate_json(job.spec_json)
            try:
                pending = self._pending_units(token, job, spec)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
                self._fail(token, job, failure_of(exc, "planning its chunks"))
                continue
            if pending is None:
                self._discard(job, "it was cancelled or reclaimed")
                continue
            plans.append((job, spec))
            units += pending
        failed: set[str] = set()
        for group in self._groups(units):
            self._render(token, [unit for unit in group if unit.job.id not in failed], failed)
        for job, spec in plans:
            if job.id not in failed:
                try:
                    self._finish(token, job, spec)
                except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
                    self._fail(token, job, failure_of(exc, "joining its chunks"))

    def _pending_units(self, token: str, job: Job, spec: JobSpec) -> list[_Unit] | None:
        """The chunks still to speak; cached ones are recorded at once. None: the lease is gone."""
        pieces = [
            (chunk.text, chunk.pause_after_ms) for chunk in split_text(spec.text, spec.chunk_max_chars, spec.gap_ms)
        ]
        chunks = self.context.store.plan_chunks(job.id, token, pieces)
        if chunks is None:
            return None
        pending = []
        for chunk in chunks:
            if chunk.done and self.context.chunks.has(job.id, chunk.index):
                continue  # a damaged file is caught when the job is joined, and the job re-rendered
            key = self._cache_key(spec, chunk.text)
            cached = self._cached(spec, key)
            if cached is None:
                pending.append(_Unit(job, spec, chunk, key))
            elif not self._record_chunk(token, job, spec, chunk, cached, synth_s=0.0, cache_hit=True):
                return None
        return pending

    def _groups(self, units: Sequence[_Unit]) -> list[list[_Unit]]:
        """Batches for the engine: up to max_batch chunks, from one job or several. A seeded job's
        chunks go one at a time, each with its own derived seed, so its take never depends on
        how its chunks happened to be grouped (a resumed job sounds like an uninterrupted one)."""
        size = self.context.settings.max_batch
        groups: list[list[_Unit]] = []
        unseeded = [unit for unit in units if unit.spec.seed is None]
        groups += [unseeded[i : i + size] for i in range(0, len(unseeded), size)]
        groups += [[unit] for unit in units if unit.spec.seed is not None]
        return groups

    def _render(self, token: str, group: list[_Unit], failed: set[str]) -> None:
        if not group:
            return
        try:
            wavs, seconds = self._synthesize(group)
        except EngineError as error:
            if len(group) == 1:
                self._fail(token, group[0].job, error)
                failed.add(group[0].job.id)
                return
            log.warning("batch of %d chunks failed (%s); retrying them one by one", len(group), error.message)
            for unit in group:
                if unit.job.id not in failed:
                    self._render(token, [unit], failed)
            return
        for unit, wav in zip(group, wavs, strict=True):
            if unit.job.id in failed:
                # Its job failed or was taken away mid-call; a sound take still serves a retry.
                if self._problem(unit, wav) is None:
                    self._remember(unit, wav)
                continue
            try:
                wav = self._guarded(unit, wav)
            except EngineError as error:
                self._fail(token, unit.job, error)
                failed.add(unit.job.id)
                continue
            self._remember(unit, wav)
            try:
                recorded = self._record_chunk(
                    token, unit.job, unit.spec, unit.chunk, wav, seconds / len(group), cache_hit=False
                )
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
                self._fail(token, unit.job, failure_of(exc, "keeping a finished chunk"))
                failed.add(unit.job.id)
                continue
            if not recorded:
                failed.add(unit.job.id)
                self._discard(unit.job, "it was cancelled or reclaimed")

    def _guarded(self, unit: _Unit, wav: np.ndarray) -> np.ndarray:
        """The take, or a re-render with another seed when a quality guard refuses it."""
        problem = self._problem(unit, wav)
        attempt = 0
        while problem is not None:
            if attempt == QUALITY_RERENDERS:
                raise PermanentEngineError(
                    f"chunk {unit.chunk.index + 1} failed its quality check {attempt + 1} times: {problem}",
                    code="quality",
                )
            attempt += 1
            log.warning("job %s chunk %d: %s; re-rendering (%d/%d)", unit.job.id, unit.chunk.index, problem,
                        attempt, QUALITY_RERENDERS, extra=job_extra(unit.job))  # fmt: skip
            wav = self._synthesize([unit], seed=(unit.spec.seed or 0) + 7919 * attempt + unit.chunk.index)[0][0]
            problem = self._problem(unit, wav)
        return wav

    def _problem(self, unit: _Unit, wav: np.ndarray) -> str | None:
        """Why a quality guard refuses this take, or None."""
        entry = self.context.registry.get(self.model)
        check_length = entry is None or not entry.tiny  # tiny random weights never stop by themselves
        return quality_problem(wav, unit.spec.sample_rate, unit.chunk.text, check_length)

    def _record_chunk(
        self, token: str, job: Job, spec: JobSpec, chunk: ChunkRow, audio: np.ndarray, synth_s: float, cache_hit: bool
    ) -> bool:
        self.context.chunks.save(job.id, chunk.index, audio)
        duration = len(audio) / spec.sample_rate
        if not self.context.store.chunk_done(job.id, token, chunk.index, round(duration, 3), synth_s, cache_hit):
            return False
        crash_point("chunk_done", f"{job.name}#{chunk.index}")
        self._publish(job.id)
        return True

    def _finish(self, token: str, job: Job, spec: JobSpec) -> None:
        chunks = self.context.store.chunks(job.id)
        audios = [self.context.chunks.load(job.id, chunk.index) for chunk in chunks]
        if not chunks or any(audio is None for audio in audios) or not all(chunk.done for chunk in chunks):
            self.context.store.drop_chunks(job.id)
            self.context.chunks.discard(job.id)
            error = TransientEngineError("finished chunks were missing; rendering the job again", code="chunks_lost")
            self._fail(token, job, error)
            return
        joined = join_chunks([a for a in audios if a is not None], [c.pause_after_ms for c in chunks], spec.sample_rate)
        current = self.context.store.get(job.id)
        all_hits = all(chunk.cache_hit for chunk in chunks)
        plan = None if all_hits else self._last_plan
        run = RunInfo(
            device=plan.device if plan else None,
            dtype=plan.dtype if plan else None,
            seed=spec.seed,
            cache_hit=all_hits,
            synth_s=round(current.synth_s or 0.0, 3),
        )
        self._deliver_or_fail(token, job, spec, joined, run)
        if self.context.store.get(job.id).state.terminal:
            self._discard(job, None)

    def _discard(self, job: Job, reason: str | None) -> None:
        """Forget a job's chunks once it is finished (or no longer ours)."""
        if reason:
            log.info("job %s: result discarded because %s", job.id, reason, extra=job_extra(job))
            self._publish(job.id)
        self.context.chunks.discard(job.id)
        if self.context.store.get(job.id).state.terminal:
            self.context.store.drop_chunks(job.id)

    def _cache_key(self, spec: JobSpec, text: str) -> str | None:
        """A chunk's cache address, or None when caching is off or the weights are not yet known."""
        cache = self.context.cache
        if cache is None:
            return None
        revision = self.context.revision(spec.model)
        if revision is None:
            return None
        reference = self._references.digest(spec.ref_audio) if spec.ref_audio else None
        return cache_key(spec, text, revision, reference)

    def _cached(self, spec: JobSpec, key: str | None) -> np.ndarray | None:
        if key is None or not spec.cache or self.context.cache is None:
            return None
        return self.context.cache.get(key)

    def _remember(self, unit: _Unit, wav: np.ndarray) -> None:
        cache = self.context.cache
        key = unit.key or self._cache_key(unit.spec, unit.chunk.text)
        if cache is None or key is None:
            return
        try:
            cache.put(key, wav)
        except OSError:
            log.exception("could not cache a chunk of %s", unit.spec.name, extra=job_extra(unit.job))

    def _synthesize(self, group: Sequence[_Unit], seed: int | None = None) -> tuple[list[np.ndarray], float]:
        """Speak a group of chunks in one call; each waveform comes back at its job's sample rate,
        with the seconds the call took.

        Every failure comes out as an EngineError: anything else an engine or loader raises is
        taken as transient, so the job is counted and retried with backoff instead of sitting in
        `running` until its lease runs out."""
        for unit in group:
            crash_point("synthesis", unit.spec.name)
        try:
            return self._synthesize_group(group, seed)
        except EngineError:
            raise
        except Exception as exc:
            log.exception("worker %s: the engine raised an unexpected error", self.name)
            raise TransientEngineError(f"{type(exc).__name__}: {str(exc)[:500]}", code="engine_error") from exc

    def _synthesize_group(self, group: Sequence[_Unit], seed: int | None) -> tuple[list[np.ndarray], float]:
        requests = [self._request(unit.spec, unit.chunk.text) for unit in group]
        first = group[0]
        if seed is None and first.spec.seed is not None:
            seed = first.spec.seed + first.chunk.index
        with self.context.engines.use(self.model) as engine:
            started = time.perf_counter()
            wavs = engine.synthesize(requests, first.spec.generation.as_kwargs(), seed)
            elapsed = time.perf_counter() - started
            if len(wavs) != len(requests):
                raise TransientEngineError(
                    f"the engine returned {len(wavs)} waveform(s) for {len(requests)} text(s)", code="engine_error"
                )
            self._last_plan = engine.plan
            rate = engine.sample_rate
        log.info("synthesized %d chunk(s) in %.2fs: %s", len(group), elapsed,
                 ", ".join(f"{u.job.name}#{u.chunk.index}" for u in group))  # fmt: skip
        return [resample(wav, rate, unit.spec.sample_rate) for wav, unit in zip(wavs, group, strict=True)], elapsed

    def _request(self, spec: JobSpec, text: str) -> SynthesisRequest:
        ref_audio = reference_path(self.context.voices_dir, spec.ref_audio) if spec.ref_audio else None
        return SynthesisRequest(
            text=text,
            language=spec.language,
            speaker=spec.speaker,
            instruct=spec.instruct,
            ref_audio=ref_audio,
            ref_text=spec.ref_text,
        )

    def _deliver_or_fail(self, token: str, job: Job, spec: JobSpec, audio: np.ndarray, run: RunInfo) -> None:
        """Deliver one job; a failure to deliver it (disk full, encoder error) fails that job alone
        rather than stranding the rest of its batch in `running`."""
        jlog = job_logger(log, job)
        try:
            delivered = deliver(self.context.store, self.context.outbox, token, job.id, spec, audio, run)
        except Exception as exc:
            log.exception("job %s (%s): could not deliver its audio", job.id, job.name, extra=job_extra(job))
            self._fail(token, job, failure_of(exc, "delivering the audio"))
            return
        if delivered is None:
            jlog.info("job %s was cancelled or reclaimed before delivery; result discarded", job.id)
        else:
            jlog.info("job %s (%s) done: %.2fs of audio", job.id, spec.name, delivered.duration_s)
        self._publish(job.id)

    def _fail(self, token: str, job: Job, error: EngineError) -> None:
        store, settings = self.context.store, self.context.settings
        if isinstance(error, OutOfSpace):
            # The machine's problem, not the job's: it waits for space, and so does this worker.
            self._space.out_of_space()
            outcome = (
                "waiting for space"
                if store.postpone(job.id, token, error.code, error.message, SPACE_CHECK_S)
                else "lost"
            )
        else:
            transient = not isinstance(error, PermanentEngineError)
            delay = retry_delay(job.attempts - job.attempt_base + 1) if transient else None
            outcome = str(store.finish_failed(job.id, token, error.code, error.message, settings.max_attempts, delay))
        log.warning(
            "job %s (%s): %s [%s] -> %s", job.id, job.name, error.message, error.code, outcome, extra=job_extra(job)
        )
        self._publish(job.id)

    def _publish(self, job_id: str) -> None:
        try:
            job = self.context.publisher.publish(job_id)  # a write that fails is owed, not lost
        except TtsdError:
            log.exception("could not write the status of job %s", job_id, extra={"job_id": job_id})
            return
        if job is not None and job.state.terminal:
            self.context.on_job_finished(job)
