"""The qwen adapter's own decisions, on the real qwen-tts code path with the tiny checkpoints: the two
stages and what `Takes` says about each row, frame budgets, decoding while the next call
generates, output checks and the float32 fallback (on a model whose codec is broken on purpose),
validation and error typing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.qwen import QwenEngine, classify_error
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.tiny_parts import SAMPLES_PER_FRAME

HALF = DevicePlan("cpu", "bfloat16", "sdpa")
FULL = DevicePlan("cpu", "float32", "sdpa")
GREEDY = {"do_sample": False, "subtalker_dosample": False}
REQUESTS = [SynthesisRequest("Hello.", "English", "Ryan"), SynthesisRequest("Again, once more.", "Auto", "vivian")]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


@pytest.fixture(scope="module")
def checkpoint(tiny_models: Path) -> Path:
    return tiny_models / "tiny"


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Iterator[QwenEngine]:
    loaded = QwenEngine.load("tiny", "custom_voice", checkpoint, FULL, "paced")
    yield loaded
    loaded.close()


def load_model(checkpoint: Path, plan: DevicePlan, breakage: str | None = None) -> Any:
    """The official model as the engine loads it; `breakage` ("nan" or "silence") ruins its codec's
    output layer, the way a half-precision overflow ruins real output."""
    import torch

    model = import_qwen_tts_quietly().Qwen3TTSModel.from_pretrained(
        str(checkpoint), device_map=plan.device, dtype=getattr(torch, plan.dtype), attn_implementation=plan.attention
    )
    model.model.talker.generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id
    if breakage is not None:
        last = model.model.speech_tokenizer.model.decoder.decoder[-1].conv
        with torch.no_grad():
            last.weight.fill_(float("nan") if breakage == "nan" else 0.0)
            if last.bias is not None:
                last.bias.zero_()
    return model


def engine_with_reloads(
    checkpoint: Path, plan: DevicePlan, breakage: str | None, twin_breakage: str | None = None
) -> tuple[QwenEngine, list[DevicePlan]]:
    """An engine over a (possibly broken) model, and the plans its float32 fallback was loaded with."""
    reloads: list[DevicePlan] = []

    def reload(other: DevicePlan) -> QwenEngine:
        reloads.append(other)
        return QwenEngine("tiny", "custom_voice", load_model(checkpoint, other, twin_breakage), other, reload, "paced")

    return QwenEngine("tiny", "custom_voice", load_model(checkpoint, plan, breakage), plan, reload, "paced"), reloads


def test_two_stages_give_checked_waveforms_one_per_row(engine: QwenEngine) -> None:
    takes = engine.generate(REQUESTS, {}, seed=1)
    assert len(takes.rows) == len(takes.frames) == len(takes.capped) == 2
    wavs = engine.decode(takes)
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in wavs)
    assert [len(w) for w in wavs] == [n * SAMPLES_PER_FRAME for n in takes.frames]
    assert engine.stops_by_itself


def test_the_budget_is_the_checkpoints_unless_the_call_or_the_job_sets_a_smaller_one(
    engine: QwenEngine, checkpoint: Path
) -> None:
    # Paced like a trained model, the tiny model gets a trained model's cap; its checkpoint says 24.
    assert engine.max_frames == 2048
    engine = QwenEngine.load("tiny", "custom_voice", checkpoint, FULL, "never")
    assert engine.max_frames == 24  # the tiny checkpoint's generation_config.json
    runaway = [SynthesisRequest("A sentence long enough to outlast every budget in this test. " * 2, "Auto", "ryan")]
    assert engine.generate(runaway, GREEDY, None).frames == (23,)
    assert engine.generate(runaway, GREEDY, None, max_frames=9).frames == (8,)
    assert engine.generate(runaway, {**GREEDY, "max_new_tokens": 6}, None, max_frames=9).frames == (5,)
    assert engine.generate(runaway, {**GREEDY, "max_new_tokens": 12}, None, max_frames=9).capped == (True,)
    engine.close()


def test_memory_per_row_frame_comes_from_the_config_and_dtype(engine: QwenEngine, checkpoint: Path) -> None:
    # Tiny talker: 2 layers, 1 KV head of 16, hidden 32, 16 code groups. KV 2*2*1*16*4 = 256 bytes;
    # retained: the last layer's state 32*4 = 128, 16 codec ids and the sampled code at 8 bytes each.
    assert engine.bytes_per_row_frame() == 256 + 128 + 17 * 8
    half = QwenEngine("tiny", "custom_voice", load_model(checkpoint, HALF), HALF)
    assert half.bytes_per_row_frame() == 128 + 64 + 17 * 8


def test_decode_runs_while_the_next_call_generates(engine: QwenEngine) -> None:
    first = engine.generate(REQUESTS, GREEDY, seed=None)
    expected = engine.decode(first)
    long_call = [SynthesisRequest("Twenty words or so to keep the talker busy for a good while, " * 3, "Auto")] * 4
    generating = threading.Thread(target=engine.generate, args=(long_call, GREEDY, None, 200))
    generating.start()
    try:
        time.sleep(0.3)  # let it take the engine's lock
        wavs = engine.decode(first)
        overlapped = generating.is_alive()
    finally:
        generating.join(timeout=120)
    assert overlapped, "decode waited for the generate call to finish"
    for got, want in zip(wavs, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("breakage", ["nan", "silence"])
def test_half_precision_breakage_is_spoken_again_in_float32(checkpoint: Path, breakage: str) -> None:
    half, reloads = engine_with_reloads(checkpoint, HALF, breakage)
    wavs = half.decode(half.generate(REQUESTS, {}, seed=None))
    assert all(np.isfinite(w).all() and np.abs(w).max() > 1e-3 for w in wavs)
    assert reloads == [DevicePlan("cpu", "float32", "sdpa")]
    half.synthesize(REQUESTS, {}, seed=None)
    assert len(reloads) == 1, "the float32 twin is loaded once"
    half.close()


def test_broken_in_float32_too_fails_for_good(checkpoint: Path) -> None:
    half, _ = engine_with_reloads(checkpoint, HALF, "nan", twin_breakage="nan")
    with pytest.raises(PermanentEngineError, match="again in float32") as caught:
        half.synthesize(REQUESTS, {}, seed=None)
    assert caught.value.code == "nan_output"


def test_broken_float32_output_is_transient(checkpoint: Path) -> None:
    full, reloads = engine_with_reloads(checkpoint, FULL, "silence")
    with pytest.raises(TransientEngineError) as caught:
        full.synthesize(REQUESTS, {}, seed=None)
    assert caught.value.code == "silent_output"
    assert reloads == []


def test_unknown_speaker_and_language_name_what_is_supported(engine: QwenEngine) -> None:
    with pytest.raises(PermanentEngineError, match=r"voices: aiden, dylan") as speaker:
        engine.generate([SynthesisRequest("x", "Auto", "Nobody")], {}, seed=None)
    assert speaker.value.code == "unknown_speaker"
    with pytest.raises(PermanentEngineError, match=r"supported: auto, chinese, english") as language:
        engine.generate([SynthesisRequest("x", "Klingon", "Ryan")], {}, seed=None)
    assert language.value.code == "unknown_language"


def test_a_clone_without_reference_audio_is_refused(tiny_models: Path) -> None:
    base = QwenEngine.load("tiny-base", "base", tiny_models / "tiny-base", FULL, "paced")
    with pytest.raises(PermanentEngineError) as caught:
        base.generate([SynthesisRequest("x", "English")], {}, seed=None)
    assert caught.value.code == "missing_reference"
    base.close()


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (ValueError("Unsupported speakers"), PermanentEngineError, "invalid_request"),
        (RuntimeError("MPS backend out of memory"), TransientEngineError, "out_of_memory"),
        (RuntimeError("something odd"), TransientEngineError, "engine_error"),
    ],
)
def test_engine_exceptions_are_typed(raised: Exception, kind: type[EngineError], code: str) -> None:
    typed = classify_error(raised)
    assert isinstance(typed, kind)
    assert typed.code == code


def test_importing_qwen_tts_writes_nothing_to_the_terminal_without_sox() -> None:
    # Without the SoX binary, sox's import-time probe used to print "sox: not found" on every start.
    code = "from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly; import_qwen_tts_quietly()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
