"""The qwen adapter's own decisions (output checks, float32 fallback, error typing), on a stand-in
for the loaded qwen-tts model. The real model is exercised end to end elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ttsd.errors import PermanentEngineError, TransientEngineError
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.qwen import QwenEngine

HALF = DevicePlan("mps", "float16", "sdpa")
FULL = DevicePlan("cpu", "float32", "sdpa")


class LoadedModelStandIn:
    """Answers like `qwen_tts.Qwen3TTSModel` after loading, with a chosen waveform or error."""

    def __init__(self, make: Callable[[int], np.ndarray] | Exception) -> None:
        self.make = make
        self.calls = 0
        self.model = SimpleNamespace(speech_tokenizer=SimpleNamespace(get_output_sample_rate=lambda: 24_000))

    def get_supported_speakers(self) -> list[str]:
        return ["ryan", "vivian"]

    def get_supported_languages(self) -> list[str]:
        return ["auto", "english"]

    def generate_custom_voice(self, text: list[str], **_kwargs: Any) -> tuple[list[np.ndarray], int]:
        self.calls += 1
        if isinstance(self.make, Exception):
            raise self.make
        return [self.make(i) for i in range(len(text))], 24_000


def noise(_index: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(1920).astype(np.float32) * 0.1


def nan(_index: int) -> np.ndarray:
    return np.full(1920, np.nan, dtype=np.float32)


def silence(_index: int) -> np.ndarray:
    return np.zeros(1920, dtype=np.float32)


REQUESTS = [SynthesisRequest("Hello.", "English", "Ryan"), SynthesisRequest("Again.", "Auto", "vivian")]


def engine_and_reloads(
    make: Callable[[int], np.ndarray] | Exception, plan: DevicePlan, twin: Any = None
) -> tuple[QwenEngine, list[DevicePlan]]:
    """An engine over a stand-in model, and the list of plans its float32 fallback was loaded with."""
    reloads: list[DevicePlan] = []

    def reload(other: DevicePlan) -> QwenEngine:
        reloads.append(other)
        return QwenEngine("m", "custom_voice", twin, other)

    return QwenEngine("m", "custom_voice", LoadedModelStandIn(make), plan, reload if twin else None), reloads


def engine(make: Callable[[int], np.ndarray] | Exception, plan: DevicePlan) -> QwenEngine:
    return engine_and_reloads(make, plan)[0]


def test_good_output_passes() -> None:
    wavs = engine(noise, HALF).synthesize(REQUESTS, {}, seed=None)
    assert len(wavs) == 2 and all(w.dtype == np.float32 for w in wavs)


@pytest.mark.parametrize("broken", [nan, silence])
def test_half_precision_breakage_is_retried_once_in_float32(broken: Callable[[int], np.ndarray]) -> None:
    twin = LoadedModelStandIn(noise)
    half, reloads = engine_and_reloads(broken, HALF, twin=twin)
    wavs = half.synthesize(REQUESTS, {}, seed=None)
    assert np.isfinite(wavs[0]).all() and twin.calls == 1
    assert reloads == [DevicePlan("mps", "float32", "sdpa")]
    half.synthesize(REQUESTS, {}, seed=None)
    assert len(reloads) == 1, "the float32 twin is loaded once"


def test_broken_in_float32_too_fails_for_good() -> None:
    with pytest.raises(PermanentEngineError, match="again in float32") as caught:
        engine_and_reloads(nan, HALF, twin=LoadedModelStandIn(nan))[0].synthesize(REQUESTS, {}, seed=None)
    assert caught.value.code == "nan_output"


def test_broken_float32_output_is_transient() -> None:
    with pytest.raises(TransientEngineError) as caught:
        engine(nan, FULL).synthesize(REQUESTS, {}, seed=None)
    assert caught.value.code == "nan_output"


def test_unknown_speaker_and_language_name_what_is_supported() -> None:
    with pytest.raises(PermanentEngineError, match=r"voices: ryan, vivian") as speaker:
        engine(noise, FULL).synthesize([SynthesisRequest("x", "Auto", "Nobody")], {}, seed=None)
    assert speaker.value.code == "unknown_speaker"
    with pytest.raises(PermanentEngineError, match=r"supported: auto, english") as language:
        engine(noise, FULL).synthesize([SynthesisRequest("x", "Klingon", "Ryan")], {}, seed=None)
    assert language.value.code == "unknown_language"


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (ValueError("Unsupported speakers"), PermanentEngineError, "invalid_request"),
        (RuntimeError("MPS backend out of memory"), TransientEngineError, "out_of_memory"),
        (RuntimeError("something odd"), TransientEngineError, "engine_error"),
    ],
)
def test_engine_exceptions_are_typed(raised: Exception, kind: type[Exception], code: str) -> None:
    with pytest.raises(kind) as caught:
        engine(raised, FULL).synthesize(REQUESTS, {}, seed=None)
    assert caught.value.code == code  # type: ignore[attr-defined]


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
