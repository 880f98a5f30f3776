"""Requests of every model kind for engine tests: voices, languages, instructs and both clone modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ttsd.catalog import ModelKind
from ttsd.synth.engine.base import SynthesisRequest

TEXTS = ["Hi.", "She said she would be here by noon.", "The quick brown fox jumps over the lazy dog, twice over."]


def reference_wav(directory: Path) -> Path:
    """A 2 s noise reference at 16 kHz, so the speaker encoder's resampling is on the path too."""
    noise = np.random.default_rng(5).standard_normal(2 * 16_000).astype(np.float32) * 0.1
    path = directory / "reference.wav"
    sf.write(path, noise, 16_000)
    return path


def batch_of(kind: ModelKind, tmp_path: Path, texts: list[str] = TEXTS) -> list[SynthesisRequest]:
    """Three requests of `kind` with different voice fields (texts cycled over them)."""
    texts = [texts[i % len(texts)] for i in range(3)]
    if kind == "custom_voice":
        voices = [("English", "ryan", None), ("Chinese", "dylan", "Cheerfully."), ("Auto", "vivian", None)]
        return [SynthesisRequest(t, lang, spk, ins) for t, (lang, spk, ins) in zip(texts, voices, strict=True)]
    if kind == "voice_design":
        instructs = ["A calm male narrator.", "", "Speak slowly and calmly."]
        return [SynthesisRequest(t, "English", instruct=i) for t, i in zip(texts, instructs, strict=True)]
    ref = reference_wav(tmp_path)
    # Rows 0 and 2 clone in ICL mode (reference codes prepended, then trimmed); row 1 by x-vector only.
    ref_texts = ["This is the reference transcript.", None, "Hello world."]
    return [SynthesisRequest(t, "English", ref_audio=ref, ref_text=r) for t, r in zip(texts, ref_texts, strict=True)]
