"""The two-stage engine against the official qwen-tts wrappers it splits, on the tiny checkpoints.

With greedy decoding the waveforms of `QwenEngine.generate` + `decode` must equal those of the
official `generate_custom_voice` / `generate_voice_design` / `generate_voice_clone` for the same
batch. The official model here is loaded on its own, untouched but for the same end-of-speech
processor (so rows end where the engine's do), which also shows the hidden-state trim changes no
code. A pin test fails when an upgrade of qwen-tts changes a function the split replicates.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.support.requests import TEXTS, batch_of
from ttsd.catalog import ModelKind
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.qwen_calls import PINNED_QWEN_TTS, Batch, generate_codes
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.talker_hooks import install_talker_hooks
from ttsd.synth.engine.tiny_eos import EndOfSpeech, paced_frames
from ttsd.synth.engine.tiny_parts import SAMPLE_RATE, SAMPLES_PER_FRAME

FULL = DevicePlan("cpu", "float32", "sdpa")
GREEDY = {"do_sample": False, "subtalker_dosample": False}
BUDGET = 40
SEED = 3
CHECKPOINTS: dict[ModelKind, str] = {"custom_voice": "tiny", "voice_design": "tiny-design", "base": "tiny-base"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


@pytest.fixture(scope="module")
def engines(tiny_models: Path) -> Iterator[Callable[[ModelKind], QwenEngine]]:
    loaded: dict[ModelKind, QwenEngine] = {}

    def get(kind: ModelKind) -> QwenEngine:
        if kind not in loaded:
            loaded[kind] = QwenEngine.load(CHECKPOINTS[kind], kind, tiny_models / CHECKPOINTS[kind], FULL, "paced")
        return loaded[kind]

    yield get
    for engine in loaded.values():
        engine.close()


def official(checkpoint: Path) -> Any:
    """The official model as `QwenEngine.load` loads it, without ttsd's talker hooks."""
    import torch

    qwen_tts = import_qwen_tts_quietly()
    model = qwen_tts.Qwen3TTSModel.from_pretrained(
        str(checkpoint), device_map="cpu", dtype=torch.float32, attn_implementation="sdpa"
    )
    model.model.talker.generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id
    return model


def ending_rows_at(model: Any, frames: list[int]) -> None:
    """Give the official talker's generate the same end-of-speech processor the engine uses."""
    from transformers import LogitsProcessorList

    talker = model.model.talker
    real = talker.generate
    processor = EndOfSpeech(model.model.config.talker_config.codec_eos_token_id, frames)

    def generate(*args: Any, **kwargs: Any) -> Any:
        return real(*args, logits_processor=LogitsProcessorList([processor]), **kwargs)

    talker.generate = generate


def official_waves(model: Any, kind: ModelKind, requests: list[SynthesisRequest], **kwargs: Any) -> list[Any]:
    texts = [r.text for r in requests]
    languages = [r.language for r in requests]
    if kind == "custom_voice":
        speakers = [r.speaker or "" for r in requests]
        instructs = [r.instruct or "" for r in requests]
        wavs, rate = model.generate_custom_voice(
            text=texts, speaker=speakers, language=languages, instruct=instructs, **kwargs
        )
    elif kind == "voice_design":
        instructs = [r.instruct or "" for r in requests]
        wavs, rate = model.generate_voice_design(text=texts, instruct=instructs, language=languages, **kwargs)
    else:
        refs = [sf.read(r.ref_audio, dtype="float32", always_2d=True) for r in requests if r.ref_audio]
        wavs, rate = model.generate_voice_clone(
            text=texts,
            language=languages,
            ref_audio=[(audio.mean(axis=1), int(sr)) for audio, sr in refs],
            ref_text=[r.ref_text for r in requests],
            x_vector_only_mode=[not r.ref_text for r in requests],
            **kwargs,
        )
    assert rate == SAMPLE_RATE
    return list(wavs)


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
def test_split_path_speaks_what_the_official_wrapper_speaks(
    engines: Callable[[ModelKind], QwenEngine], tiny_models: Path, tmp_path: Path, kind: ModelKind
) -> None:
    engine = engines(kind)
    requests = batch_of(kind, tmp_path)
    takes = engine.generate(requests, GREEDY, SEED, max_frames=BUDGET)
    ours = engine.decode(takes)

    frames = paced_frames(TEXTS, SEED)
    model = official(tiny_models / CHECKPOINTS[kind])
    ending_rows_at(model, frames)
    theirs = official_waves(model, kind, requests, max_new_tokens=BUDGET, **GREEDY)

    assert takes.frames == tuple(min(n, BUDGET - 1) for n in frames)
    assert takes.capped == tuple(n > BUDGET - 1 for n in frames)
    assert len(set(takes.frames)) == 3, "rows of different lengths exercise padding and per-row trims"
    for mine, official_wave in zip(ours, theirs, strict=True):
        assert mine.shape == official_wave.shape
        np.testing.assert_allclose(mine, official_wave, rtol=0, atol=1e-6)
    if kind != "base":
        assert [len(w) for w in ours] == [n * SAMPLES_PER_FRAME for n in takes.frames]


def test_seeded_sampling_equals_the_official_wrapper(
    engines: Callable[[ModelKind], QwenEngine], tiny_models: Path
) -> None:
    import torch

    engine = engines("custom_voice")
    requests = [SynthesisRequest(t, "English", "ryan") for t in TEXTS]
    ours = engine.synthesize(requests, {}, seed=11, max_frames=BUDGET)

    model = official(tiny_models / "tiny")
    ending_rows_at(model, paced_frames(TEXTS, 11))
    torch.manual_seed(11)
    theirs = official_waves(model, "custom_voice", requests, max_new_tokens=BUDGET)
    for mine, official_wave in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, official_wave, rtol=0, atol=1e-6)


def retained_bytes(model: Any) -> dict[str, int]:
    """Wrap (outermost) the talker's generate to weigh the hidden states HF keeps for the call."""
    talker = model.model.talker
    real = talker.generate
    weighed: dict[str, int] = {}

    def size(step: tuple[Any, Any]) -> int:
        layers, ids = step
        return sum(t.numel() * t.element_size() for t in (*(layers or ()), *((ids,) if ids is not None else ())))

    def generate(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        steps = result.hidden_states
        weighed.update(prefill=size(steps[0]), per_step=size(steps[1]), steps=len(steps))
        return result

    talker.generate = generate
    return weighed


def test_the_trim_keeps_the_codes_and_drops_all_but_the_last_layer(tiny_models: Path) -> None:
    model = official(tiny_models / "tiny")
    config = model.model.config.talker_config
    rows = 4
    text = "The quick brown fox jumps over the lazy dog."
    batch = Batch([text] * rows, ["Auto"] * rows, speakers=["ryan"] * rows, instructs=[""] * rows)
    kwargs = {**GREEDY, "max_new_tokens": 20}

    weighed = retained_bytes(model)
    before_codes, before = generate_codes(model, "custom_voice", batch, kwargs).rows, dict(weighed)
    install_talker_hooks(model)
    weighed = retained_bytes(model)
    after_codes, after = generate_codes(model, "custom_voice", batch, kwargs).rows, dict(weighed)

    assert all(a.equal(b) for a, b in zip(before_codes, after_codes, strict=True))
    layers, hidden, ids = config.num_hidden_layers, config.hidden_size, rows * config.num_code_groups * 8
    assert before["per_step"] == rows * (layers + 1) * hidden * 4 + ids
    assert after["per_step"] == rows * hidden * 4 + ids
    assert after["prefill"] == rows * hidden * 4, "only the prompt's last position is kept"
    assert before["prefill"] > (layers + 1) * after["prefill"]
    print(f"\nretained per step, B={rows}: {before['per_step']} -> {after['per_step']} bytes; prefill {before}")


# qwen-tts functions whose bodies the split path replicates or relies on. A change in any of them
# means: compare it with ttsd/synth/engine/qwen_calls.py (and talker_hooks.py), then update the hash.
REPLICATED = {
    "Qwen3TTSModel.generate_custom_voice": "1bc2cadda8069cf2",
    "Qwen3TTSModel.generate_voice_design": "e192307aa69fff03",
    "Qwen3TTSModel.generate_voice_clone": "df00396e7af21072",
    "Qwen3TTSModel._merge_generate_kwargs": "4414d89642bf36a3",
    "Qwen3TTSModel._tokenize_texts": "7652e16f7d55f99e",
    "Qwen3TTSModel._prompt_items_to_voice_clone_prompt": "a997daa133b8dda6",
    "Qwen3TTSForConditionalGeneration.generate": "af9dd8f14f312ecc",
    "Qwen3TTSTalkerForConditionalGeneration.forward": "b9f98959190263a7",
}


def _source_digest(qualified: str) -> str:
    import qwen_tts.core.models.modeling_qwen3_tts as modeling

    qwen_tts = import_qwen_tts_quietly()
    owner_name, attribute = qualified.split(".")
    owner = getattr(qwen_tts, owner_name, None) or getattr(modeling, owner_name)
    return hashlib.sha256(inspect.getsource(getattr(owner, attribute)).encode()).hexdigest()[:16]


def test_qwen_tts_is_the_version_the_split_replicates() -> None:
    assert importlib.metadata.version("qwen-tts") == PINNED_QWEN_TTS
    changed = {name: _source_digest(name) for name, digest in REPLICATED.items() if _source_digest(name) != digest}
    assert not changed, f"qwen-tts changed what ttsd replicates; re-check qwen_calls.py, then pin: {changed}"
