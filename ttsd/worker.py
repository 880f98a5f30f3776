"""Workers: per model, claim a batch -> synthesize -> deliver -> record, one guarded step at a time.

Order of delivery (so a crash anywhere leaves a state recovery can finish): audio file written
atomically, then the guarded `done` in the queue, then the status file (which is derived from the
queue and rebuilt at start when it lags behind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttsd.cache import AudioCache, cache_key, file_sha256
from ttsd.config import Settings
from ttsd.engine.base import SynthesisRequest
from ttsd.engine.pool import EnginePool
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError, TtsdError
from ttsd.faults import crash_point
from ttsd.jobs import JobSpec
from ttsd.models import Job, RunInfo
from ttsd.outbox import Outbox, resample
from ttsd.publish import publish
from ttsd.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


def retry_delay(attempt: int) -> float:
    """Exponential backoff for transient failures: 2 s, 4 s, 8 s ... capped at five minutes."""
    return float(min(MAX_BACKOFF_S, 2.0**attempt))


@dataclass(frozen=True)
class WorkContext:
    """Everything a worker needs, shared by all workers of a daemon."""

    settings: Settings
    store: Store
    outbox: Outbox
    engines: EnginePool
    voices_dir: Path
    cache: AudioCache | None = None
    revision: Callable[[str], str | None] = lambda model: None
    on_job_finished: Callable[[], None] = lambda: None


class _Heartbeat:
    """Renews a lease in the background while a batch is synthesized."""

    def __init__(self, store: Store, token: str, interval_s: float) -> None:
        self._store = store
        self._token = token
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._store.heartbeat(self._token)
            except Exception:
                log.exception("heartbeat failed")


def reference_path(voices_dir: Path, ref_audio: str) -> Path:
    """The reference file inside the voices folder; refused if it would resolve anywhere else."""
    root = voices_dir.resolve()
    path = (voices_dir / ref_audio).resolve()
    if path.parent != root:
        raise PermanentEngineError(
            f"ref_audio {ref_audio!r} does not name a file inside {voices_dir}", code="bad_reference"
        )
    if not path.is_file():
        raise PermanentEngineError(
            f"ref_audio {ref_audio!r} is not in {voices_dir}: put the reference recording there",
            code="missing_reference",
        )
    return path


class Worker(threading.Thread):
    """Serves one model's queue until `stop` is set; `wake` says new work may be there."""

    def __init__(self, model: str, index: int, context: WorkContext, stop: threading.Event) -> None:
        super().__init__(name=f"worker-{model}-{index}", daemon=True)
        self.model = model
        self.context = context
        self.stop = stop
        self.wake = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                worked = self.work_once()
            except Exception:
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
        with _Heartbeat(self.context.store, token, max(0.2, settings.lease_s / 4)):
            self._process(token, jobs)
        self.context.on_job_finished()
        return True

    def _process(self, token: str, jobs: Sequence[Job]) -> None:
        specs = [JobSpec.model_validate_json(job.spec_json) for job in jobs]
        todo: list[tuple[Job, JobSpec, str | None]] = []
        for job, spec in zip(jobs, specs, strict=True):
            try:
                key = self._cache_key(spec)
            except EngineError as error:
                self._fail(token, job, error)
                continue
            cached = self._cached(spec, key)
            if cached is None:
                todo.append((job, spec, key))
            else:
                hit = RunInfo(device=None, dtype=None, seed=spec.seed, cache_hit=True, synth_s=0.0)
                self._deliver_or_fail(token, job, spec, cached, hit)
        if not todo:
            return
        try:
            wavs, run = self._synthesize([spec for _job, spec, _key in todo])
        except EngineError as error:
            if len(todo) == 1:
                self._fail(token, todo[0][0], error)
                return
            log.warning("batch of %d failed (%s); retrying its jobs one by one", len(todo), error.message)
            for job, spec, key in todo:
                if self.context.store.holds_lease(job.id, token):
                    self._process_single(token, job, spec, key)
                else:
                    self._publish(job.id)
            return
        for (job, spec, key), wav in zip(todo, wavs, strict=True):
            self._remember(spec, key, wav)
            self._deliver_or_fail(token, job, spec, wav, run)

    def _cache_key(self, spec: JobSpec) -> str | None:
        """The job's cache address, or None when caching is off or the weights are not yet known."""
        cache = self.context.cache
        if cache is None:
            return None
        revision = self.context.revision(spec.model)
        if revision is None:
            return None
        reference = None
        if spec.ref_audio:
            reference = file_sha256(reference_path(self.context.voices_dir, spec.ref_audio))
        return cache_key(spec, spec.text, revision, reference)

    def _cached(self, spec: JobSpec, key: str | None) -> np.ndarray | None:
        if key is None or not spec.cache or self.context.cache is None:
            return None
        return self.context.cache.get(key)

    def _remember(self, spec: JobSpec, key: str | None, wav: np.ndarray) -> None:
        cache = self.context.cache
        if cache is None:
            return
        key = key or self._cache_key(spec)
        if key is None:
            return
        try:
            cache.put(key, wav)
        except OSError:
            log.exception("could not cache the audio of %s", spec.name)

    def _process_single(self, token: str, job: Job, spec: JobSpec, key: str | None) -> None:
        try:
            wavs, run = self._synthesize([spec])
        except EngineError as error:
            self._fail(token, job, error)
            return
        self._remember(spec, key, wavs[0])
        self._deliver_or_fail(token, job, spec, wavs[0], run)

    def _synthesize(self, specs: Sequence[JobSpec]) -> tuple[list[np.ndarray], RunInfo]:
        """Speak a batch; each waveform comes back at its job's sample rate.

        Every failure comes out as an EngineError: anything else an engine or loader raises is
        taken as transient, so the job is counted and retried with backoff instead of sitting in
        `running` until its lease runs out."""
        for spec in specs:
            crash_point("synthesis", spec.name)
        try:
            return self._synthesize_batch(specs)
        except EngineError:
            raise
        except Exception as exc:
            log.exception("worker %s: the engine raised an unexpected error", self.name)
            raise TransientEngineError(f"{type(exc).__name__}: {str(exc)[:500]}", code="engine_error") from exc

    def _synthesize_batch(self, specs: Sequence[JobSpec]) -> tuple[list[np.ndarray], RunInfo]:
        requests = [self._request(spec) for spec in specs]
        first = specs[0]
        with self.context.engines.use(self.model) as engine:
            started = time.perf_counter()
            wavs = engine.synthesize(requests, first.generation.as_kwargs(), first.seed)
            elapsed = time.perf_counter() - started
            if len(wavs) != len(requests):
                raise TransientEngineError(
                    f"the engine returned {len(wavs)} waveform(s) for {len(requests)} text(s)",
                    code="engine_error",
                )
            run = RunInfo(
                device=engine.plan.device,
                dtype=engine.plan.dtype,
                seed=first.seed,
                cache_hit=False,
                synth_s=round(elapsed / len(specs), 3),
            )
            rate = engine.sample_rate
        return [resample(wav, rate, spec.sample_rate) for wav, spec in zip(wavs, specs, strict=True)], run

    def _request(self, spec: JobSpec) -> SynthesisRequest:
        ref_audio = reference_path(self.context.voices_dir, spec.ref_audio) if spec.ref_audio else None
        return SynthesisRequest(
            text=spec.text,
            language=spec.language,
            speaker=spec.speaker,
            instruct=spec.instruct,
            ref_audio=ref_audio,
            ref_text=spec.ref_text,
        )

    def _deliver_or_fail(self, token: str, job: Job, spec: JobSpec, audio: np.ndarray, run: RunInfo) -> None:
        """Deliver one job; a failure to deliver it (disk full, encoder error) fails that job alone
        rather than stranding the rest of its batch in `running`."""
        try:
            self._deliver(token, job, spec, audio, run)
        except Exception as exc:
            log.exception("job %s (%s): could not deliver its audio", job.id, job.name)
            self._fail(token, job, delivery_error(exc))

    def _deliver(self, token: str, job: Job, spec: JobSpec, audio: np.ndarray, run: RunInfo) -> None:
        store = self.context.store
        if not store.holds_lease(job.id, token):
            log.info("job %s was cancelled or reclaimed during synthesis; result discarded", job.id)
            self._publish(job.id)
            return
        info = self.context.outbox.write_audio(spec.name, spec.format, audio, spec.sample_rate, spec.normalize)
        crash_point("after_audio", spec.name)
        if not store.finish_done(job.id, token, info, run):
            log.info("job %s lost its lease before it was recorded; result discarded", job.id)
        crash_point("after_done", spec.name)
        self._publish(job.id)
        log.info("job %s (%s) done: %.2fs of audio", job.id, spec.name, info.duration_s)

    def _fail(self, token: str, job: Job, error: EngineError) -> None:
        settings = self.context.settings
        transient = not isinstance(error, PermanentEngineError)
        delay = retry_delay(job.attempts - job.attempt_base + 1) if transient else None
        state = self.context.store.finish_failed(job.id, token, error.code, error.message, settings.max_attempts, delay)
        log.warning("job %s (%s): %s [%s] -> %s", job.id, job.name, error.message, error.code, state)
        self._publish(job.id)

    def _publish(self, job_id: str) -> None:
        # A status file that cannot be written now is rebuilt from the queue at the next start.
        try:
            publish(self.context.store, self.context.outbox, job_id)
        except (TtsdError, OSError):
            log.exception("could not write the status of job %s", job_id)


def delivery_error(exc: Exception) -> EngineError:
    """What a failed delivery means for its job: ttsd's own refusals repeat, anything else
    (disk full, an I/O error) may pass."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, TtsdError):
        return PermanentEngineError(exc.message, code=exc.code)
    return TransientEngineError(
        f"the audio could not be delivered: {type(exc).__name__}: {str(exc)[:300]}", code="delivery_failed"
    )
