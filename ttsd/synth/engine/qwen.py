"""The real engine: the official `qwen_tts.Qwen3TTSModel`, one per registry model."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ttsd.catalog import ModelKind
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest, Voices
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4
BROKEN_OUTPUT_CODES = frozenset({"nan_output", "silent_output", "empty_output"})
_CLONE_PROMPT_CACHE_SIZE = 64
# transformers' from_pretrained swaps process-wide state (default device, meta-tensor init): two
# models loading at once in different worker threads corrupt each other ("Cannot copy out of meta
# tensor"). Loads are rare; they take turns.
_LOAD_LOCK = threading.Lock()


def _supported(values: Any) -> tuple[str, ...]:
    return tuple(sorted(str(v) for v in values)) if values else ()


def check_waveform(audio: np.ndarray) -> None:
    """Refuse output that must not be delivered: NaN/inf or silence (a broken half-precision run)."""
    if audio.size == 0:
        raise TransientEngineError("the model returned no audio", code="empty_output")
    if not np.isfinite(audio).all():
        raise TransientEngineError("the model returned NaN or infinite samples", code="nan_output")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise TransientEngineError("the model returned silence", code="silent_output")


def _classify(exc: Exception) -> EngineError:
    """Map what qwen-tts and torch raise to ttsd's typed errors."""
    if isinstance(exc, EngineError):
        return exc
    text = str(exc)
    if "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return TransientEngineError(f"the device ran out of memory: {text[:300]}", code="out_of_memory")
    if isinstance(exc, ValueError):
        return PermanentEngineError(text[:500], code="invalid_request")
    return TransientEngineError(f"{type(exc).__name__}: {text[:500]}", code="engine_error")


class QwenEngine:
    """A loaded Qwen3-TTS checkpoint behind the Engine protocol."""

    def __init__(
        self,
        name: str,
        kind: ModelKind,
        model: Any,
        plan: DevicePlan,
        reload: Callable[[DevicePlan], QwenEngine] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.plan = plan
        self._model = model
        self.sample_rate = int(model.model.speech_tokenizer.get_output_sample_rate())
        self._voices = Voices(
            speakers=_supported(model.get_supported_speakers()),
            languages=_supported(model.get_supported_languages()),
        )
        self._clone_prompts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._reload = reload
        self._float32_twin: QwenEngine | None = None

    @classmethod
    def load(cls, name: str, kind: ModelKind, checkpoint: Path, plan: DevicePlan) -> QwenEngine:
        """Load `checkpoint` with the device plan; the kind declared by the checkpoint wins."""
        import torch

        qwen_tts = import_qwen_tts_quietly()
        started = time.perf_counter()
        try:
            with _LOAD_LOCK:
                model = qwen_tts.Qwen3TTSModel.from_pretrained(
                    str(checkpoint),
                    device_map=plan.device,
                    dtype=getattr(torch, plan.dtype),
                    attn_implementation=plan.attention,
                )
        except Exception as exc:
            raise PermanentEngineError(
                f"model {name!r} could not be loaded from {checkpoint}: {type(exc).__name__}: {str(exc)[:300]}",
                code="model_load_failed",
            ) from exc
        # Otherwise every generate call logs "Setting pad_token_id to eos_token_id".
        model.model.talker.generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id
        declared = getattr(model.model, "tts_model_type", kind)
        log.info(
            "loaded model %s (%s) on %s/%s with %s attention in %.2fs",
            name,
            declared,
            plan.device,
            plan.dtype,
            plan.attention,
            time.perf_counter() - started,
        )
        kind = declared if declared in ("custom_voice", "voice_design", "base") else kind

        def reload(other_plan: DevicePlan) -> QwenEngine:
            return cls.load(name, kind, checkpoint, other_plan)

        return cls(name, kind, model, plan, reload)

    def voices(self) -> Voices:
        """The speakers and languages the checkpoint declares."""
        return self._voices

    def synthesize(
        self, requests: Sequence[SynthesisRequest], generation: Mapping[str, Any], seed: int | None
    ) -> list[np.ndarray]:
        """One generate call for the whole batch; each result checked before it is returned.

        Half precision sometimes yields NaN or silence (reported on MPS): such a batch is spoken once
        more by a float32 copy of the model, and fails for good only if that is broken too.
        """
        try:
            return self._synthesize_checked(requests, generation, seed)
        except TransientEngineError as bad:
            if bad.code not in BROKEN_OUTPUT_CODES or self.plan.dtype == "float32" or self._reload is None:
                raise
            log.warning("model %s gave %s in %s; retrying in float32", self.name, bad.code, self.plan.dtype)
            twin = self._float32()
            try:
                return twin._synthesize_checked(requests, generation, seed)
            except TransientEngineError as again:
                if again.code not in BROKEN_OUTPUT_CODES:
                    raise
                raise PermanentEngineError(
                    f"{again.message}, in {self.plan.dtype} and again in float32", code=again.code
                ) from again

    def _float32(self) -> QwenEngine:
        if self._float32_twin is None:
            assert self._reload is not None
            self._float32_twin = self._reload(replace(self.plan, dtype="float32"))
        return self._float32_twin

    def _synthesize_checked(
        self, requests: Sequence[SynthesisRequest], generation: Mapping[str, Any], seed: int | None
    ) -> list[np.ndarray]:
        self._validate(requests)
        import torch

        with self._lock:
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                wavs = self._generate(requests, dict(generation))
            except Exception as exc:
                raise _classify(exc) from exc
        results = [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs]
        for audio in results:
            check_waveform(audio)
        return results

    def _generate(self, requests: Sequence[SynthesisRequest], generation: dict[str, Any]) -> list[Any]:
        texts = [r.text for r in requests]
        languages = [r.language for r in requests]
        if self.kind == "custom_voice":
            wavs, _ = self._model.generate_custom_voice(
                text=texts,
                speaker=[r.speaker or self._default_speaker() for r in requests],
                language=languages,
                instruct=[r.instruct or "" for r in requests],
                **generation,
            )
        elif self.kind == "voice_design":
            wavs, _ = self._model.generate_voice_design(
                text=texts, instruct=[r.instruct or "" for r in requests], language=languages, **generation
            )
        else:
            prompts = [self._clone_prompt(r) for r in requests]
            wavs, _ = self._model.generate_voice_clone(
                text=texts, language=languages, voice_clone_prompt=prompts, **generation
            )
        return list(wavs)

    def _default_speaker(self) -> str:
        return self._voices.speakers[0] if self._voices.speakers else ""

    def _validate(self, requests: Sequence[SynthesisRequest]) -> None:
        speakers = {s.lower() for s in self._voices.speakers}
        languages = {lang.lower() for lang in self._voices.languages}
        for request in requests:
            if languages and request.language.lower() not in languages:
                raise PermanentEngineError(
                    f"language {request.language!r} is not supported by model {self.name!r} "
                    f"(supported: {', '.join(self._voices.languages)})",
                    code="unknown_language",
                )
            speaker = (request.speaker or "").lower()
            if self.kind == "custom_voice" and speaker and speakers and speaker not in speakers:
                raise PermanentEngineError(
                    f"speaker {request.speaker!r} is not a voice of model {self.name!r} "
                    f"(voices: {', '.join(self._voices.speakers)})",
                    code="unknown_speaker",
                )

    def _clone_prompt(self, request: SynthesisRequest) -> Any:
        """The voice-clone prompt for a reference file, built once per reference content."""
        if request.ref_audio is None:
            raise PermanentEngineError("a voice clone job needs ref_audio", code="missing_reference")
        try:
            data = request.ref_audio.read_bytes()
            audio, rate = sf.read(request.ref_audio, dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise PermanentEngineError(
                f"reference audio {request.ref_audio.name!r} cannot be read: {exc}", code="bad_reference"
            ) from exc
        key = hashlib.sha256(data + (request.ref_text or "").encode("utf-8")).hexdigest()
        prompt = self._clone_prompts.get(key)
        if prompt is None:
            mono = audio.mean(axis=1)
            items = self._model.create_voice_clone_prompt(
                ref_audio=(mono, int(rate)),
                ref_text=request.ref_text,
                x_vector_only_mode=not request.ref_text,
            )
            prompt = items[0]
            if len(self._clone_prompts) >= _CLONE_PROMPT_CACHE_SIZE:
                self._clone_prompts.pop(next(iter(self._clone_prompts)))
            self._clone_prompts[key] = prompt
        return prompt

    def close(self) -> None:
        """Drop the model and give its memory back to the device."""
        import gc

        import torch

        self._model = None
        self._clone_prompts.clear()
        if self._float32_twin is not None:
            self._float32_twin.close()
            self._float32_twin = None
        gc.collect()
        _return_freed_heap()
        if self.plan.device == "cuda":
            torch.cuda.empty_cache()
        elif self.plan.device == "mps":
            torch.mps.empty_cache()


def _return_freed_heap() -> None:
    """glibc keeps freed heap for reuse; after unloading a model that is tens of MiB (more in half
    precision, where weights are converted copies) that the process no longer needs."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
