"""The voice-clone prompts of one loaded Base model: computed from a job's reference recording, or
read from a saved voice's prompt file, and kept by content hash, so a worker builds or reads each
prompt once however many jobs use it.

A prompt is qwen-tts' `VoiceClonePromptItem`: the speaker embedding and, in in-context mode, the
reference's codes and transcript. A saved voice's file holds exactly those fields (see
`ttsd.voicelib.prompt_file`), so a job naming a saved voice gets the very prompt the recording would
give, without the speech tokenizer and speaker encoder running again.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import soundfile as sf

from ttsd.errors import PermanentEngineError
from ttsd.synth.engine.base import SynthesisRequest
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.voicelib import DamagedVoice, VoiceNotFound, load_prompt

CACHE_SIZE: Final = 64


class ClonePrompts:
    """A model's prompts by content: the reference's bytes and transcript, or a saved prompt's hash.
    The least recently used goes first when `size` are kept."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._kept: dict[str, Any] = {}

    def of(self, model: Any, request: SynthesisRequest) -> Any:
        """The prompt item of a voice-clone request: its saved voice's, else its reference's."""
        if request.voice_prompt is not None:
            if not request.voice_sha256:
                raise PermanentEngineError(
                    f"saved voice {voice_label(request)!r} comes without its prompt hash", code="invalid_request"
                )
            return self._kept_or(f"voice:{request.voice_sha256}", lambda: saved_prompt(model, request))
        if request.ref_audio is None:
            raise PermanentEngineError("a voice clone job needs ref_audio or a saved voice", code="missing_reference")
        audio, rate, data = read_reference(request.ref_audio)
        key = hashlib.sha256(data + (request.ref_text or "").encode("utf-8")).hexdigest()
        return self._kept_or(f"ref:{key}", lambda: make_prompt(model, audio, rate, request.ref_text))

    def clear(self) -> None:
        """Forget every prompt (the model is going)."""
        self._kept.clear()

    def _kept_or(self, key: str, make: Callable[[], Any]) -> Any:
        prompt = self._kept.pop(key, None)
        if prompt is None:
            prompt = make()
            if len(self._kept) >= self._size:
                self._kept.pop(next(iter(self._kept)))
        self._kept[key] = prompt
        return prompt


def voice_label(request: SynthesisRequest) -> str:
    """The saved voice's name as the job gave it, else its folder's."""
    return request.voice or (request.voice_prompt.parent.name if request.voice_prompt is not None else "")


def read_reference(path: Path) -> tuple[np.ndarray, int, bytes]:
    """A reference recording as a mono float32 waveform, its rate, and the file's bytes."""
    try:
        data = path.read_bytes()
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        problem = f"reference audio {path.name!r} cannot be read: {exc}"
        raise PermanentEngineError(problem, code="bad_reference") from exc
    return audio.mean(axis=1), int(rate), data


def make_prompt(model: Any, audio: np.ndarray, rate: int, ref_text: str | None) -> Any:
    """qwen-tts' prompt item for a mono recording: in-context with a transcript, else the speaker
    embedding only (x-vector mode)."""
    items = model.create_voice_clone_prompt(ref_audio=(audio, rate), ref_text=ref_text, x_vector_only_mode=not ref_text)
    return items[0]


def prompt_fields(item: Any) -> dict[str, Any]:
    """A prompt item's fields with numpy arrays, as a saved voice stores them: the embedding in
    float32 (exact for the half-precision types it may come in; qwen-tts casts it to the talker's
    dtype on use), the codes in int64."""
    import torch

    code = item.ref_code
    return {
        "ref_code": None if code is None else code.detach().cpu().to(dtype=torch.int64).numpy(),
        "ref_spk_embedding": item.ref_spk_embedding.detach().cpu().float().numpy(),
        "x_vector_only_mode": bool(item.x_vector_only_mode),
        "icl_mode": bool(item.icl_mode),
        "ref_text": item.ref_text,
    }


def saved_prompt(model: Any, request: SynthesisRequest) -> Any:
    """The prompt item of a saved voice, checked against its hash and against `model`'s widths, on
    the model's device and in its dtype."""
    assert request.voice_prompt is not None and request.voice_sha256 is not None
    voice = voice_label(request)
    try:
        fields = load_prompt(request.voice_prompt, request.voice_sha256, voice)
    except (VoiceNotFound, DamagedVoice) as exc:
        raise PermanentEngineError(exc.message, code=exc.code) from exc
    _check_fits(model, voice, fields)
    import torch

    qwen_tts = import_qwen_tts_quietly()
    code = fields["ref_code"]
    embedding = torch.from_numpy(fields["ref_spk_embedding"]).to(device=model.device, dtype=model.model.dtype)
    return qwen_tts.VoiceClonePromptItem(
        ref_code=None if code is None else torch.from_numpy(code).to(model.device),
        ref_spk_embedding=embedding,
        x_vector_only_mode=fields["x_vector_only_mode"],
        icl_mode=fields["icl_mode"],
        ref_text=fields["ref_text"],
    )


def _check_fits(model: Any, voice: str, fields: dict[str, Any]) -> None:
    """A prompt computed by a model of other widths would fail deep inside generate."""
    config = model.model.config
    width = int(config.speaker_encoder_config.enc_dim)
    groups = int(config.talker_config.num_code_groups)
    embedding, code = fields["ref_spk_embedding"], fields["ref_code"]
    if embedding.shape[0] != width or (code is not None and code.shape[1] != groups):
        raise PermanentEngineError(
            f"saved voice {voice!r} was made for a model of other widths (speaker embedding "
            f"{embedding.shape[0]}, codes of {groups if code is None else code.shape[1]} groups; this model: "
            f"{width}, {groups}): make it again for this model (`ttsd voices add {voice} --force --model ...`)",
            code="voice_model_mismatch",
        )
