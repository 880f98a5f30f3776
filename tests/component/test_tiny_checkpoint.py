"""The tiny checkpoint builder: the official qwen_tts loader reads what it writes, offline, and
`ensure_tiny_checkpoint` builds once even when called concurrently."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttsd.synth.engine import tiny
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.tiny import (
    BUILDER_VERSION,
    MARKER_NAME,
    TinyBuildReport,
    build_tiny_checkpoint,
    ensure_tiny_checkpoint,
)
from ttsd.synth.engine.tiny_parts import SAMPLE_RATE, SAMPLES_PER_FRAME, TinyKind

MAX_NEW_TOKENS = 8
# Called directly (without the engine's paced end of speech), random weights never emit EOS: a call
# yields max_new_tokens - 1 frames at most.
MAX_SAMPLES = (MAX_NEW_TOKENS - 1) * SAMPLES_PER_FRAME

Built = Callable[[TinyKind], tuple[TinyBuildReport, Any]]


def _load(path: Path) -> Any:
    import torch

    qwen_tts = import_qwen_tts_quietly()
    model = qwen_tts.Qwen3TTSModel.from_pretrained(str(path), device_map="cpu", dtype=torch.float32)
    # Without this every call logs "Setting pad_token_id ...".
    model.model.talker.generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build and load each kind on first use, once per module."""
    cache: dict[TinyKind, tuple[TinyBuildReport, Any]] = {}

    def get(kind: TinyKind) -> tuple[TinyBuildReport, Any]:
        if kind not in cache:
            report = build_tiny_checkpoint(tmp_path_factory.mktemp(kind), kind)
            cache[kind] = (report, _load(report.out_dir))
        return cache[kind]

    return get


def _assert_tiny_audio(wavs: list[Any], sample_rate: int) -> None:
    assert sample_rate == SAMPLE_RATE
    assert len(wavs) == 1
    wav = wavs[0]
    assert isinstance(wav, np.ndarray)
    assert wav.dtype == np.float32
    assert wav.ndim == 1
    assert 0 < len(wav) <= MAX_SAMPLES
    assert len(wav) % SAMPLES_PER_FRAME == 0
    assert np.isfinite(wav).all()


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, ttsd.synth.engine.tiny; print(sorted({'torch', 'qwen_tts'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
def test_build_report_describes_the_checkpoint(built: Built, kind: TinyKind) -> None:
    report, model = built(kind)
    assert report.kind == kind
    assert 5_000_000 < report.bytes_on_disk < 30_000_000
    assert report.build_seconds >= 0
    assert (report.out_dir / "model.safetensors").is_file()
    assert (report.out_dir / "speech_tokenizer" / "model.safetensors").is_file()
    # The marker belongs to ensure_tiny_checkpoint alone: its presence means "complete".
    assert not (report.out_dir / MARKER_NAME).exists()
    assert model.model.config.tts_model_type == kind


def test_custom_voice_generates_noise_frames(built: Built) -> None:
    _, model = built("custom_voice")
    wavs, sample_rate = model.generate_custom_voice(
        text="Hello world.", speaker="Ryan", language="English", max_new_tokens=MAX_NEW_TOKENS
    )
    _assert_tiny_audio(wavs, sample_rate)
    # The decoder calibration aims at std ~0.1: audible, not silent, not clipped.
    assert 0.01 < float(wavs[0].std()) < 0.5
    assert "ryan" in model.get_supported_speakers()


def test_voice_design_honours_an_instruct(built: Built) -> None:
    _, model = built("voice_design")
    wavs, sample_rate = model.generate_voice_design(
        text="Hello world.",
        instruct="A calm male narrator.",
        language="English",
        max_new_tokens=MAX_NEW_TOKENS,
    )
    _assert_tiny_audio(wavs, sample_rate)


def test_base_clones_from_a_reference_array(built: Built) -> None:
    _, model = built("base")
    noise = np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE).astype(np.float32) * 0.1
    wavs, sample_rate = model.generate_voice_clone(
        text="Clone me.",
        language="English",
        ref_audio=(noise, SAMPLE_RATE),
        ref_text="This is the reference transcript.",
        max_new_tokens=MAX_NEW_TOKENS,
    )
    _assert_tiny_audio(wavs, sample_rate)


def test_greedy_decoding_repeats_bit_for_bit(built: Built) -> None:
    _, model = built("custom_voice")
    kwargs = {
        "text": "Same input.",
        "speaker": "Ryan",
        "language": "English",
        "do_sample": False,
        "subtalker_dosample": False,
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    first, _ = model.generate_custom_voice(**kwargs)
    second, _ = model.generate_custom_voice(**kwargs)
    np.testing.assert_array_equal(first[0], second[0])


def test_seed_decides_the_weights(tmp_path: Path) -> None:
    weights = [
        (build_tiny_checkpoint(tmp_path / name, "voice_design", seed=seed).out_dir / "model.safetensors")
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    assert weights[0].read_bytes() == weights[1].read_bytes()
    assert weights[0].read_bytes() != weights[2].read_bytes()


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny checkpoint kind"):
        build_tiny_checkpoint(tmp_path, "nonsense")  # type: ignore[arg-type]


@pytest.fixture
def build_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count the real builds that ensure_tiny_checkpoint starts."""
    calls: list[Path] = []
    real_build = tiny.build_tiny_checkpoint

    def counting_build(out_dir: Path, kind: TinyKind = "custom_voice", **kwargs: Any) -> TinyBuildReport:
        calls.append(out_dir)
        return real_build(out_dir, kind, **kwargs)

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", counting_build)
    return calls


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".building-"))


def test_ensure_builds_once_then_reuses(tmp_path: Path, build_calls: list[Path]) -> None:
    out_dir = tmp_path / "tiny-cv"
    assert ensure_tiny_checkpoint(out_dir, "custom_voice") == out_dir
    marker = out_dir / MARKER_NAME
    assert json.loads(marker.read_text()) == {
        "kind": "custom_voice",
        "seed": 0,
        "builder_version": BUILDER_VERSION,
    }
    first_mtime = marker.stat().st_mtime_ns

    assert ensure_tiny_checkpoint(out_dir, "custom_voice") == out_dir
    assert marker.stat().st_mtime_ns == first_mtime
    assert len(build_calls) == 1
    assert _leftovers(tmp_path) == []


def test_concurrent_ensure_calls_share_one_build(tmp_path: Path, build_calls: list[Path]) -> None:
    out_dir = tmp_path / "tiny-base"
    start = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            results.append(ensure_tiny_checkpoint(out_dir, "base"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert results == [out_dir, out_dir]
    assert len(build_calls) == 1
    assert (out_dir / MARKER_NAME).is_file()
    assert _leftovers(tmp_path) == []


def test_ensure_uses_the_winner_when_the_rename_loses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "tiny-vd"
    real_build = tiny.build_tiny_checkpoint

    def build_then_lose_race(staging: Path, kind: TinyKind = "custom_voice", **kwargs: Any) -> TinyBuildReport:
        report = real_build(staging, kind, **kwargs)
        # A builder that ignores the lock finishes first.
        shutil.copytree(staging, out_dir)
        marker = {"kind": kind, "seed": 0, "builder_version": BUILDER_VERSION}
        (out_dir / MARKER_NAME).write_text(json.dumps(marker))
        return report

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", build_then_lose_race)
    assert ensure_tiny_checkpoint(out_dir, "voice_design") == out_dir
    assert _leftovers(tmp_path) == []


def test_ensure_rejects_a_checkpoint_of_another_kind(tmp_path: Path, build_calls: list[Path]) -> None:
    out_dir = tmp_path / "tiny"
    out_dir.mkdir()
    marker = {"kind": "base", "seed": 0, "builder_version": BUILDER_VERSION}
    (out_dir / MARKER_NAME).write_text(json.dumps(marker))
    with pytest.raises(ValueError, match="kind 'base'"):
        ensure_tiny_checkpoint(out_dir, "custom_voice")
    assert build_calls == []


def test_ensure_refuses_a_foreign_directory(tmp_path: Path, build_calls: list[Path]) -> None:
    out_dir = tmp_path / "tiny"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ensure_tiny_checkpoint(out_dir, "custom_voice")
    assert build_calls == []


def test_scale_grows_the_talker_and_still_generates(tmp_path: Path) -> None:
    report = build_tiny_checkpoint(tmp_path / "scaled", "custom_voice", scale=2)
    model = _load(report.out_dir)
    config = model.model.config
    talker = config.talker_config
    predictor = talker.code_predictor_config
    assert (talker.hidden_size, talker.intermediate_size, talker.num_hidden_layers) == (64, 128, 4)
    assert talker.num_attention_heads * talker.head_dim == talker.hidden_size
    assert (predictor.hidden_size, predictor.intermediate_size, predictor.num_hidden_layers) == (48, 96, 2)
    assert config.speaker_encoder_config.enc_dim == talker.hidden_size
    weights = (report.out_dir / "model.safetensors").stat().st_size
    assert weights > 12_000_000  # about 16 MB; at scale=1 it is about 8 MB

    wavs, sample_rate = model.generate_custom_voice(
        text="Hello world.", speaker="Ryan", language="English", max_new_tokens=MAX_NEW_TOKENS
    )
    _assert_tiny_audio(wavs, sample_rate)


def test_scale_below_one_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        build_tiny_checkpoint(tmp_path, "custom_voice", scale=0)
