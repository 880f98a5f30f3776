"""Making saved voices: a Base model's clone prompt computed once, from a recording or from a voice
designed in words.

The design workflow is the one Qwen recommends for a designed voice that stays the same: a
VoiceDesign model speaks a sample sentence in the described voice, and that audio with its text
becomes an in-context clone prompt of a Base model, which then speaks every job in that one voice
(a VoiceDesign model would redesign it, slightly differently, for every text).

Models load as a worker loads them (`qwen_loader`, with the torch thread setting), on the official
qwen-tts path: one short call each, where ttsd's own loop would gain nothing.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf

from ttsd.catalog import (
    DEFAULT_VOICE_BASE_MODEL,
    DEFAULT_VOICE_DESIGN_MODEL,
    ModelEntry,
    ModelKind,
    build_registry,
)
from ttsd.config import Settings
from ttsd.errors import JobNotFound
from ttsd.fsutil import NotRegularFile, read_regular_file
from ttsd.synth.engine.base import SynthesisRequest
from ttsd.synth.engine.clone_prompts import prompt_fields
from ttsd.synth.engine.pool import qwen_loader
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.runner import load_options
from ttsd.voicelib import SavedVoice, Source, VoiceLibrary, VoiceRejected

MAX_RECORDING_S: Final = 60.0
"""Longer references only slow every job down (the reference codes go in front of each one)."""
MAX_RECORDING_BYTES: Final = 64 * 2**20
"""Far above a minute of audio in any format soundfile reads (a minute of 96 kHz 32-bit stereo is 44 MiB)."""
DEFAULT_SAMPLE_TEXT: Final = (
    "Hello! This is the voice I read with: stories, the news and my notes, clearly and at an easy pace."
)
_KIND_NAMES: Final[dict[ModelKind, str]] = {
    "base": "Base (voice clone)",
    "voice_design": "VoiceDesign",
    "custom_voice": "CustomVoice",
}


def make_from_recording(
    settings: Settings, name: str, model: str, recording: Path, transcript: str | None, *, force: bool = False
) -> SavedVoice:
    """Save voice `name`: the clone prompt of Base model `model` for `recording` (any format
    soundfile reads, at most `MAX_RECORDING_S`), in-context when `transcript` is given, else from the
    speaker embedding only."""
    library = VoiceLibrary(settings.saved_voices_dir)
    library.check_new_name(name, force)
    entry = model_entry(settings, model, "base", "--model")
    audio, rate, data = read_recording(recording)
    engine = load_engine(settings, entry, "base")
    try:
        item = engine.clone_prompt(audio, rate, transcript or None)
    finally:
        engine.close()
    return _save(library, name, model, "recording", item, audio, rate, hashlib.sha256(data).hexdigest(), force)


def make_from_design(
    settings: Settings,
    name: str,
    base_model: str,
    design_model: str,
    description: str,
    sample_text: str = DEFAULT_SAMPLE_TEXT,
    language: str = "Auto",
    *,
    seed: int | None = None,
    force: bool = False,
) -> SavedVoice:
    """Save voice `name`: VoiceDesign model `design_model` speaks `sample_text` as `description`
    says, then that audio and text become Base model `base_model`'s in-context clone prompt."""
    if not description.strip():
        raise VoiceRejected("a designed voice needs a description (--design 'a warm, low narrator')")
    if not sample_text.strip():
        raise VoiceRejected("the sample text a designed voice speaks cannot be empty")
    library = VoiceLibrary(settings.saved_voices_dir)
    library.check_new_name(name, force)
    base_entry = model_entry(settings, base_model, "base", "--model")
    design_entry = model_entry(settings, design_model, "voice_design", "--design-model")
    # One model in memory at a time: the designer is gone before the Base model loads.
    designer = load_engine(settings, design_entry, "voice_design")
    try:
        request = SynthesisRequest(sample_text, language, instruct=description)
        audio = designer.synthesize([request], {}, seed)[0]
        rate = designer.sample_rate
    finally:
        designer.close()
    _check_length(len(audio) / rate, f"the designed sample ({design_model} speaking the sample text)")
    engine = load_engine(settings, base_entry, "base")
    try:
        item = engine.clone_prompt(audio, rate, sample_text)
    finally:
        engine.close()
    return _save(library, name, base_model, "design", item, audio, rate, None, force, description)


def model_entry(settings: Settings, model: str, kind: ModelKind, option: str) -> ModelEntry:
    """The registry entry of `model`, which must be of `kind`."""
    registry = build_registry(settings.models)
    entry = registry.get(model)
    if entry is None:
        raise JobNotFound(f"no model named {model!r} (known: {', '.join(sorted(registry))})")
    if entry.kind != kind:
        raise VoiceRejected(_wrong_kind(model, entry.kind, kind, option))
    return entry


def _wrong_kind(model: str, actual: ModelKind, wanted: ModelKind, option: str) -> str:
    example = DEFAULT_VOICE_BASE_MODEL if wanted == "base" else DEFAULT_VOICE_DESIGN_MODEL
    return (
        f"{option} {model!r} is a {_KIND_NAMES[actual]} model; it must be a {_KIND_NAMES[wanted]} model "
        f"(such as {example})"
    )


def load_engine(settings: Settings, entry: ModelEntry, kind: ModelKind) -> QwenEngine:
    """`entry`'s model loaded as a worker loads it (official path), checked to be of `kind` by what
    its checkpoint declares."""
    engine = qwen_loader(replace(load_options(settings), loop=False))(entry)
    assert isinstance(engine, QwenEngine)
    if engine.kind != kind:
        engine.close()
        raise VoiceRejected(_wrong_kind(entry.name, engine.kind, kind, "its checkpoint says model"))
    return engine


def read_recording(path: Path) -> tuple[np.ndarray, int, bytes]:
    """A recording as a mono float32 waveform, its rate and the file's bytes; VoiceRejected when it is
    unreadable, empty or longer than `MAX_RECORDING_S`."""
    if path.is_dir():
        raise VoiceRejected(f"the recording {path} is a folder, not an audio file")
    try:
        # A regular file only, and a bounded read: /dev/zero or a pipe would be read forever.
        data = read_regular_file(path.resolve(), MAX_RECORDING_BYTES + 1)
        if len(data) > MAX_RECORDING_BYTES:
            raise VoiceRejected(f"the recording {path} is over {MAX_RECORDING_BYTES // 2**20} MiB")
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except NotRegularFile:
        raise VoiceRejected(f"the recording {path} is not a regular file (a device, a pipe?)") from None
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise VoiceRejected(f"the recording {path} cannot be read as audio: {exc}") from exc
    if not len(audio):
        raise VoiceRejected(f"the recording {path} holds no audio")
    _check_length(len(audio) / rate, f"the recording {path}")
    return audio.mean(axis=1), int(rate), data


def _check_length(seconds: float, what: str) -> None:
    if seconds > MAX_RECORDING_S:
        raise VoiceRejected(
            f"{what} is {seconds:.1f} s long; a voice's reference is at most {MAX_RECORDING_S:g} s "
            "(5-15 s of clear speech is best)"
        )


def _save(
    library: VoiceLibrary,
    name: str,
    model: str,
    source: Source,
    item: object,
    audio: np.ndarray,
    rate: int,
    recording_sha256: str | None,
    force: bool,
    description: str | None = None,
) -> SavedVoice:
    # float32 WAV: exactly the waveform the prompt was computed from, so the voice can be remade.
    with tempfile.TemporaryDirectory(prefix="ttsd-voice-") as scratch:
        reference = Path(scratch) / "reference.wav"
        sf.write(reference, audio, rate, subtype="FLOAT")
        return library.save(
            name,
            model=model,
            source=source,
            prompt=prompt_fields(item),
            recording=reference,
            recording_sha256=recording_sha256,
            description=description,
            force=force,
        )
