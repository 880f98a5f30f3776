"""Speaking chunks: the engine calls of one worker (generate, then decode, each waveform at its job's
rate), the quality guard that re-renders a bad take, and the audio cache in front of all of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ttsd.audio import resample
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError
from ttsd.faults import crash_point
from ttsd.joblog import job_extra
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec, VoiceFields
from ttsd.synth.audio_cache import cache_key
from ttsd.synth.batch_size import MAX_AUTO_BATCH, PROBE_TEXT, BatchChoice, longest_row_frames, probe_batch
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import DevicePlan, Engine, SynthesisRequest, Takes
from ttsd.synth.engine.stepping.engine import LoopEngine, Stream
from ttsd.synth.pacing import frame_budget
from ttsd.synth.quality import quality_problem
from ttsd.synth.references import ReferenceDigests, reference_path
from ttsd.synth.scheduler import Piece
from ttsd.voicelib import VoiceLibrary

log = logging.getLogger(__name__)

QUALITY_RERENDERS = 2


@dataclass(frozen=True)
class Unit:
    """One chunk of one job in a call, with what speaking and keeping it needs."""

    job: Job
    spec: JobSpec
    chunk: ChunkRow
    key: str | None
    piece: Piece


@dataclass(frozen=True)
class Generated:
    """A generated call, not yet decoded."""

    units: list[Unit]
    takes: Takes
    seconds: float
    number: int = 0
    """The worker's count of its calls, so what it reports about one call can be matched."""


def voice_of(spec: JobSpec, chunk: ChunkRow) -> VoiceFields:
    """Who speaks a chunk: its script segment's voice (a chunk planned for another script is this
    job's failure, not a voice to guess)."""
    script = spec.script()
    if not 0 <= chunk.segment < len(script):
        raise PermanentEngineError(
            f"chunk {chunk.index} belongs to segment {chunk.segment}, but the job has {len(script)}", code="bad_plan"
        )
    return script[chunk.segment].voice


class Renderer:
    """The engine side of one model's worker."""

    def __init__(self, model: str, context: WorkContext) -> None:
        self.model = model
        self.context = context
        self.last_plan: DevicePlan | None = None
        # Known from the engine once it has generated; every take it judges comes after that.
        self.stops_by_itself = True
        self.max_frames = 0
        self.loop_off = False
        self._references = ReferenceDigests(context.voices_dir)
        self._saved_voices = VoiceLibrary(context.settings.saved_voices_dir)

    def cache_key(self, spec: JobSpec, chunk: ChunkRow) -> str | None:
        """A chunk's cache address, or None when caching is off or the weights are not yet known."""
        if self.context.cache is None:
            return None
        revision = self.context.revision(spec.model)
        if revision is None:
            return None
        voice = voice_of(spec, chunk)
        reference = self._references.digest(voice.ref_audio) if voice.ref_audio else None
        return cache_key(spec, chunk.text, revision, reference, voice)

    def cached(self, spec: JobSpec, key: str | None) -> np.ndarray | None:
        """The cached take of a chunk, if the job allows the cache and there is one."""
        if key is None or not spec.cache or self.context.cache is None:
            return None
        return self.context.cache.get(key)

    def remember(self, unit: Unit, wav: np.ndarray) -> None:
        """Keep a sound take in the cache (a failure to cache is logged, never the job's failure)."""
        cache = self.context.cache
        key = unit.key or self.cache_key(unit.spec, unit.chunk)
        if cache is None or key is None:
            return
        try:
            cache.put(key, wav)
        except OSError:
            log.exception("could not cache a chunk of %s", unit.spec.name, extra=job_extra(unit.job))

    def generate(self, units: Sequence[Unit], seed: int | None = None) -> Generated:
        """The codes of one call over `units`, with a frame budget bounded by their longest text, so
        one runaway row cannot hold the call to the model's cap. Every failure is an EngineError:
        anything else an engine or loader raises is taken as transient, so the job is counted and
        retried with backoff instead of sitting in `running` until its lease runs out."""
        for unit in units:
            crash_point("synthesis", unit.spec.name)
        first = units[0]
        if seed is None and first.spec.seed is not None:
            seed = first.spec.seed + first.chunk.index
        requests = [self.request(voice_of(unit.spec, unit.chunk), unit.chunk.text) for unit in units]
        with self.engine_errors(), self.context.engines.use(self.model) as engine:
            budget = frame_budget([unit.chunk.text for unit in units], engine.max_frames)
            started = time.perf_counter()
            takes = engine.generate(requests, first.spec.generation.as_kwargs(), seed, budget)
            seconds = time.perf_counter() - started
            self._learn(engine)
        if len(takes.rows) != len(units):
            raise TransientEngineError(
                f"the engine returned {len(takes.rows)} take(s) for {len(units)} text(s)", code="engine_error"
            )
        log.info("generated %d chunk(s) in %.2fs: %s", len(units), seconds,
                 ", ".join(f"{u.job.name}#{u.chunk.index}" for u in units))  # fmt: skip
        return Generated(list(units), takes, seconds)

    def batch_size(self, spec: JobSpec) -> tuple[BatchChoice, dict[str, str]]:
        """The batch size (`TTS_MAX_BATCH`, or with "auto" measured on the loaded model with a
        request of this job, valid for the model's kind by construction) and the device plan."""
        fixed = self.context.settings.max_batch
        with self.engine_errors(), self.context.engines.use(self.model) as engine:
            self._learn(engine)
            if isinstance(fixed, int):
                choice = BatchChoice(size=fixed, rates={}, limit=fixed, reason="set by TTS_MAX_BATCH")
            else:
                choice = probe_batch(
                    engine,
                    MAX_AUTO_BATCH,
                    request=self.request(spec.script()[0].voice, PROBE_TEXT),
                    generation=spec.generation.as_kwargs(),
                    longest_text_frames=longest_row_frames(self.context.settings.max_text_length, engine.max_frames),
                )
            return choice, engine.plan.as_dict()

    def _learn(self, engine: Engine) -> None:
        self.last_plan = engine.plan
        self.stops_by_itself = engine.stops_by_itself
        self.max_frames = engine.max_frames
        self.loop_off = isinstance(engine, LoopEngine) and engine.loop_failed is not None

    def open_stream(self) -> Stream | None:
        """A running batch on the model (loading it), or None when its engine speaks in calls only
        (the official path, or ttsd's loop after it failed on this device)."""
        with self.engine_errors(), self.context.engines.use(self.model) as engine:
            self._learn(engine)
            if isinstance(engine, LoopEngine) and engine.loop_failed is None:
                return engine.stream()
        return None

    def engine_label(self) -> str:
        """Which generation path the model uses, as `ttsd status` shows it."""
        if self.context.settings.engine == "qwen-tts":
            return "qwen-tts"
        return "qwen-tts (ttsd's loop failed here)" if self.loop_off else "ttsd"

    def seeds_rows_apart(self) -> bool:
        """Whether a seeded chunk's take is the same in any batch (per-row random streams), so it
        need not be spoken alone."""
        return self.context.settings.engine == "ttsd" and not self.loop_off

    def decode(self, generated: Generated, rows: Sequence[int] | None = None) -> list[np.ndarray]:
        """The waveforms of a generated call (or of its `rows` only), each at its job's sample rate."""
        indices = list(range(len(generated.units))) if rows is None else list(rows)
        takes = generated.takes if rows is None else generated.takes.part(indices)
        units = [generated.units[i] for i in indices]
        with self.engine_errors(), self.context.engines.use(self.model) as engine:
            wavs = engine.decode(takes)
            rate = engine.sample_rate
        if len(wavs) != len(units):
            raise TransientEngineError(
                f"the engine decoded {len(wavs)} waveform(s) for {len(units)} take(s)", code="engine_error"
            )
        return [resample(wav, rate, unit.spec.sample_rate) for wav, unit in zip(wavs, units, strict=True)]

    def guarded(self, unit: Unit, wav: np.ndarray, capped: bool) -> np.ndarray:
        """The take, or a re-render with another seed when a quality guard refuses it (a runaway row
        cut at its budget is refused too)."""
        problem = self.problem(unit, wav, capped)
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
            generated = self.generate([unit], seed=(unit.spec.seed or 0) + 7919 * attempt + unit.chunk.index)
            wav = self.decode(generated)[0]
            problem = self.problem(unit, wav, generated.takes.capped[0])
        return wav

    def problem(self, unit: Unit, wav: np.ndarray, capped: bool = False) -> str | None:
        """Why a quality guard refuses this take, or None."""
        entry = self.context.registry.get(self.model)
        stops = self.stops_by_itself
        if capped and stops:
            return "it did not stop within its frame budget (a runaway take, cut)"
        check_length = stops and (entry is None or not entry.tiny)
        return quality_problem(wav, unit.spec.sample_rate, unit.chunk.text, check_length)

    def request(self, voice: VoiceFields, text: str, seed: int | None = None) -> SynthesisRequest:
        """The engine request for one text spoken by `voice`."""
        ref_audio = reference_path(self.context.voices_dir, voice.ref_audio) if voice.ref_audio else None
        saved = self._saved_voices.prompt_path(voice.voice) if voice.voice else None
        return SynthesisRequest(
            text=text,
            language=voice.language,
            speaker=voice.speaker,
            instruct=voice.instruct,
            ref_audio=ref_audio,
            ref_text=voice.ref_text,
            seed=seed,
            voice=voice.voice,
            voice_prompt=saved,
            voice_sha256=voice.voice_sha256,
        )

    def row_request(self, unit: Unit) -> SynthesisRequest:
        """A chunk's request with its own seed (the job's seed plus the chunk's index, as when the
        chunk is spoken alone), for engines that seed rows apart."""
        seed = None if unit.spec.seed is None else unit.spec.seed + unit.chunk.index
        return self.request(voice_of(unit.spec, unit.chunk), unit.chunk.text, seed)

    @contextmanager
    def engine_errors(self) -> Iterator[None]:
        """Whatever an engine or loader raises comes out as an EngineError (a bare exception is
        taken as transient)."""
        try:
            yield
        except EngineError:
            raise
        except Exception as exc:
            log.exception("worker %s: the engine raised an unexpected error", self.model)
            raise TransientEngineError(f"{type(exc).__name__}: {str(exc)[:500]}", code="engine_error") from exc
