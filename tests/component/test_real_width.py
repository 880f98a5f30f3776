"""The tiny checkpoint at the published Qwen3-TTS-12Hz-0.6B widths: what the builder writes, that
ttsd's engine loads it in float32 and that a greedy call yields codes of the real shape.

The checkpoint and the engine are module fixtures of tests/component/conftest.py
(`real_width_checkpoint`, `real_width_engine`) for other modules to reuse: equivalence checks of a
generation loop must also run at the real model's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttsd.synth.engine.base import SynthesisRequest
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.tiny import BUILDER_VERSION, MARKER_NAME, build_tiny_checkpoint, ensure_tiny_checkpoint
from ttsd.synth.engine.tiny_parts import CODEBOOK_SIZE, NUM_CODE_GROUPS

GREEDY = {"do_sample": False, "subtalker_dosample": False}


@pytest.fixture(scope="module", autouse=True)
def _torch_threads() -> Iterator[None]:
    # 600 M parameters on CPU: the thread count decides the runtime, and the machine may be shared.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or before))
    yield
    torch.set_num_threads(before)


def _config(engine: QwenEngine) -> Any:
    return engine._model.model.config


def test_the_config_has_the_published_06b_widths(real_width_engine: QwenEngine) -> None:
    talker = _config(real_width_engine).talker_config
    assert (talker.hidden_size, talker.intermediate_size, talker.num_hidden_layers) == (1024, 3072, 28)
    assert (talker.num_attention_heads, talker.num_key_value_heads, talker.head_dim) == (16, 8, 128)
    assert talker.rope_scaling["mrope_section"] == [24, 20, 20]
    assert talker.rope_scaling["interleaved"] is True
    assert talker.text_hidden_size == 2048
    predictor = talker.code_predictor_config
    assert (predictor.hidden_size, predictor.intermediate_size, predictor.num_hidden_layers) == (1024, 3072, 5)
    assert (predictor.num_attention_heads, predictor.num_key_value_heads, predictor.head_dim) == (16, 8, 128)
    assert predictor.num_code_groups == NUM_CODE_GROUPS


def test_the_weights_load_as_float32_at_the_real_parameter_count(real_width_engine: QwenEngine) -> None:
    import torch

    model = real_width_engine._model.model
    parameters = list(model.parameters())
    assert {p.dtype for p in parameters} == {torch.float32}
    # The talker and code predictor at 0.6B widths; the real model has ~0.3 B more in its text
    # embedding (151936 x 2048), which the tiny vocabulary leaves out.
    assert 590e6 < sum(p.numel() for p in parameters) < 600e6
    # As wide as the talker, the code predictor needs no projection, as in the real 0.6B model.
    assert isinstance(model.talker.code_predictor.small_to_mtp_projection, torch.nn.Identity)


def test_the_checkpoint_is_saved_in_bfloat16(real_width_checkpoint: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(real_width_checkpoint / "model.safetensors"), "pt") as weights:
        first = weights.get_slice(next(iter(weights.keys())))
        assert first.get_dtype() == "BF16"
    size = (real_width_checkpoint / "model.safetensors").stat().st_size
    assert 1.1e9 < size < 1.3e9
    marker = json.loads((real_width_checkpoint / MARKER_NAME).read_text())
    assert marker == {"kind": "custom_voice", "seed": 0, "builder_version": BUILDER_VERSION, "widths": "0.6b"}


def test_a_greedy_call_yields_frames_of_sixteen_codes(real_width_engine: QwenEngine) -> None:
    takes = real_width_engine.generate([SynthesisRequest("Hello there.")], GREEDY, None, max_frames=4)

    # qwen-tts never speaks the code sampled at the last step: a budget of 4 gives 3 frames.
    assert takes.frames == (3,)
    (row,) = takes.rows
    assert tuple(row.shape) == (3, NUM_CODE_GROUPS)
    assert int(row.min()) >= 0
    assert int(row.max()) < CODEBOOK_SIZE
    # Random weights at this depth still give varied codes, not one value repeated.
    assert len(set(row.flatten().tolist())) > NUM_CODE_GROUPS
    assert takes.capped == (True,)


def test_a_tiny_marker_does_not_pass_for_06b_widths(tmp_path: Path) -> None:
    out_dir = tmp_path / "tiny"
    out_dir.mkdir()
    marker = {"kind": "custom_voice", "seed": 0, "builder_version": BUILDER_VERSION}
    (out_dir / MARKER_NAME).write_text(json.dumps(marker))

    assert ensure_tiny_checkpoint(out_dir, "custom_voice") == out_dir
    with pytest.raises(ValueError, match="widths 'tiny'"):
        ensure_tiny_checkpoint(out_dir, "custom_voice", widths="0.6b")


def test_scale_does_not_combine_with_06b_widths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale applies to the tiny widths only"):
        build_tiny_checkpoint(tmp_path, "custom_voice", scale=2, widths="0.6b")


def test_unknown_widths_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown widths"):
        build_tiny_checkpoint(tmp_path, "custom_voice", widths="1.7b")  # type: ignore[arg-type]
