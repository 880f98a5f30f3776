"""Progressive decode against one decode of the whole row, on real codes of the tiny checkpoints.

A row's codes are generated once by the engine (greedy, so the same every run); feeding them to a
`ProgressiveDecoder` one frame at a time, as a generator would, must give the one-shot waveform's
exact length and its samples within the error the chosen left context allows; with the decoder's
full reach as context (80 frames: 72 of sliding-window attention and the convolutions' few) it
must give the one-shot waveform up to float rounding. A causal stand-in for the codec covers the
bookkeeping (bursts, short rows, misuse) without a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.progressive import (
    CONTEXT_FRAMES,
    WINDOW_FRAMES,
    DecodeFn,
    ProgressiveDecoder,
    speech_tokenizer_decoder,
)
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.tiny_parts import SAMPLE_RATE, SAMPLES_PER_FRAME

FULL = DevicePlan("cpu", "float32", "sdpa")
GREEDY = {"do_sample": False, "subtalker_dosample": False}
SEED = 3
ROW_FRAMES = 60
# Paced, this text runs well past ROW_FRAMES; the budget cuts the row there (a budget of N gives N - 1).
LONG_TEXT = "The quick brown fox jumps over the lazy dog, and then it does so again, and again. " * 3
TOLERANCE = 2e-3
"""Max abs error allowed at CONTEXT_FRAMES (25) against the one-shot decode (signal RMS ~0.1). This
row gives 3.3e-4 (4.1e-4 in 1-frame windows), the script's 240-frame row 4.8e-4 to 7e-4; left
context 5 gives 2.4e-2, 0 gives 0.5-0.7."""
FULL_REACH = 80
"""Left context beyond which the codec decoder sees nothing: the progressive decode is then exact."""
ROUNDING = 1e-5
"""Float32 rounding between the same samples computed in windows of different lengths."""


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


@pytest.fixture(scope="module")
def custom(tiny_models: Path) -> Iterator[QwenEngine]:
    engine = QwenEngine.load("tiny", "custom_voice", tiny_models / "tiny", FULL, "paced")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def row(custom: QwenEngine) -> tuple[Any, np.ndarray]:
    """A ~60-frame row's codes and its one-shot waveform as the engine decodes it."""
    takes = custom.generate([SynthesisRequest(LONG_TEXT, "English", "ryan")], GREEDY, SEED, ROW_FRAMES + 1)
    assert takes.frames == (ROW_FRAMES,)
    return takes.rows[0], custom.decode(takes)[0]


def decoder_of(engine: QwenEngine) -> DecodeFn:
    assert engine._model is not None
    return speech_tokenizer_decoder(engine._model.model.speech_tokenizer)


def stream(decoder: ProgressiveDecoder, codes: Any) -> tuple[np.ndarray, list[int]]:
    """Feed the row one frame at a time, then finish: the audio, and the frames returned per feed."""
    parts, per_feed = [], []
    for n in range(1, int(codes.shape[0]) + 1):
        part = decoder.feed(codes[:n])
        assert part.dtype == np.float32 and part.ndim == 1
        assert part.size % decoder.samples_per_frame == 0
        per_feed.append(part.size // decoder.samples_per_frame)
        parts.append(part)
    parts.append(decoder.finish(codes))
    return np.concatenate(parts), per_feed


def test_progressive_audio_is_the_one_shot_audio_within_the_context_tolerance(
    custom: QwenEngine, row: tuple[Any, np.ndarray]
) -> None:
    codes, one_shot = row
    decoder = ProgressiveDecoder(decoder_of(custom), SAMPLES_PER_FRAME)
    audio, per_feed = stream(decoder, codes)

    assert audio.shape == one_shot.shape == (ROW_FRAMES * SAMPLES_PER_FRAME,)
    error = float(np.max(np.abs(audio - one_shot)))
    assert error <= TOLERANCE, f"max abs error {error:.2e} at {CONTEXT_FRAMES} frames of context"
    assert error > 0, "with less context than the decoder's reach the windows cannot be exact"
    # Nothing until a full window is there, then one window per WINDOW_FRAMES frames.
    assert per_feed[: WINDOW_FRAMES - 1] == [0] * (WINDOW_FRAMES - 1)
    assert per_feed[WINDOW_FRAMES - 1] == WINDOW_FRAMES
    assert sum(per_feed) == ROW_FRAMES // WINDOW_FRAMES * WINDOW_FRAMES
    assert decoder.frames_decoded == ROW_FRAMES and decoder.finished
    assert decoder.audio_s == pytest.approx(ROW_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE)
    assert decoder.decode_calls == -(-ROW_FRAMES // WINDOW_FRAMES)


def test_with_the_decoders_full_reach_as_context_the_windows_are_exact(
    custom: QwenEngine, row: tuple[Any, np.ndarray]
) -> None:
    codes, one_shot = row
    # 7 does not divide 60: the last, shorter window comes from finish.
    decoder = ProgressiveDecoder(decoder_of(custom), SAMPLES_PER_FRAME, context_frames=FULL_REACH, window_frames=7)
    audio, _ = stream(decoder, codes)
    np.testing.assert_allclose(audio, one_shot, rtol=0, atol=ROUNDING)
    coarse = ProgressiveDecoder(decoder_of(custom), SAMPLES_PER_FRAME, context_frames=0, window_frames=7)
    assert float(np.max(np.abs(stream(coarse, codes)[0] - one_shot))) > 100 * TOLERANCE, "context matters"


def test_windows_of_one_frame(custom: QwenEngine, row: tuple[Any, np.ndarray]) -> None:
    codes, one_shot = row
    # The first 36 frames, past the context (a decode call each): the codec is causal, so their
    # one-shot audio is the prefix of the row's.
    frames = CONTEXT_FRAMES + 11
    decoder = ProgressiveDecoder(decoder_of(custom), SAMPLES_PER_FRAME, window_frames=1)
    audio, per_feed = stream(decoder, codes[:frames])
    assert per_feed == [1] * frames, "every frame is heard as soon as it is generated"
    assert decoder.decode_calls == frames
    assert audio.shape == (frames * SAMPLES_PER_FRAME,)
    assert float(np.max(np.abs(audio - one_shot[: audio.size]))) <= TOLERANCE


def reference_wav(directory: Path) -> Path:
    noise = np.random.default_rng(5).standard_normal(2 * 16_000).astype(np.float32) * 0.1
    path = directory / "reference.wav"
    sf.write(path, noise, 16_000)
    return path


def test_a_voice_clone_row_decodes_behind_its_reference_codes(tiny_models: Path, tmp_path: Path) -> None:
    import torch

    engine = QwenEngine.load("tiny-base", "base", tiny_models / "tiny-base", FULL, "paced")
    try:
        request = SynthesisRequest(LONG_TEXT, "English", ref_audio=reference_wav(tmp_path), ref_text="Hello world.")
        takes = engine.generate([request], GREEDY, SEED, 41)
        (codes,), (ref_codes,) = takes.rows, takes.context.ref_codes
        assert ref_codes is not None, "ICL mode: the reference codes go in front of the row"
        decode = decoder_of(engine)
        official = engine.decode(takes)[0]
        reference_frames = int(ref_codes.shape[0])
        whole = decode(torch.cat([ref_codes, codes]))[reference_frames * SAMPLES_PER_FRAME :]
    finally:
        engine.close()
    frames = takes.frames[0]
    assert frames == 40
    assert reference_frames > 10, "the contexts below reach into the prefix, or past it"
    # qwen-tts cuts the reference's share proportionally: at most a rounding sample away.
    assert abs(official.shape[0] - whole.shape[0]) <= 1
    n = min(official.shape[0], whole.shape[0])
    np.testing.assert_array_equal(official[-n:], whole[-n:])

    for context in (FULL_REACH, CONTEXT_FRAMES, 10):
        decoder = ProgressiveDecoder(
            decode, SAMPLES_PER_FRAME, context_frames=context, window_frames=9, prefix=ref_codes
        )
        audio, per_feed = stream(decoder, codes)
        assert audio.shape == (frames * SAMPLES_PER_FRAME,), "none of the reference's audio is returned"
        assert per_feed[8] == 9 and sum(per_feed[:8]) == 0
        tolerance = ROUNDING if context >= FULL_REACH else TOLERANCE
        np.testing.assert_allclose(audio, whole, rtol=0, atol=tolerance, err_msg=f"context {context}")
        # The first window sees min(context, reference) frames of the reference, no more.
        assert decoder.frames_computed >= frames + min(context, reference_frames)


class Causal:
    """A stand-in codec: frame i's samples are the sum of code column 0 over frames [i - reach, i],
    as far back as the given codes go; records the length of every call."""

    def __init__(self, reach: int, spf: int = 4) -> None:
        self.reach, self.spf, self.calls = reach, spf, list[int]()

    def __call__(self, codes: Any) -> np.ndarray:
        column = np.asarray(codes[:, 0], dtype=np.float32)
        self.calls.append(len(column))
        sums = [column[max(0, i - self.reach) : i + 1].sum() for i in range(len(column))]
        return np.repeat(np.asarray(sums, dtype=np.float32), self.spf)


def codes_of(frames: int, start: int = 1) -> Any:
    import torch

    return torch.arange(start, start + frames).unsqueeze(1).repeat(1, 16)


def test_a_burst_of_frames_is_one_window_and_a_short_row_comes_out_at_finish() -> None:
    codec = Causal(reach=3)
    codes = codes_of(30)
    decoder = ProgressiveDecoder(codec, codec.spf, context_frames=3, window_frames=10)
    assert decoder.feed(codes[:9]).size == 0
    burst = decoder.feed(codes[:25])
    assert burst.size == 25 * codec.spf and codec.calls == [25]
    assert decoder.feed(codes[:25]).size == 0, "nothing new"
    tail = decoder.finish(codes)
    assert codec.calls == [25, 3 + 5], "the last window decodes behind 3 frames of context"
    np.testing.assert_array_equal(np.concatenate([burst, tail]), Causal(reach=3)(codes))

    short = ProgressiveDecoder(codec, codec.spf, window_frames=WINDOW_FRAMES)
    assert short.feed(codes[:5]).size == 0
    assert short.finish(codes[:5]).size == 5 * codec.spf
    empty = ProgressiveDecoder(codec, codec.spf)
    assert empty.finish(codes[:0]).size == 0


def test_a_prefix_is_context_only() -> None:
    codec = Causal(reach=4)
    prefix, codes = codes_of(6, start=100), codes_of(12)
    import torch

    whole = Causal(reach=4)(torch.cat([prefix, codes]))[6 * codec.spf :]
    decoder = ProgressiveDecoder(codec, codec.spf, context_frames=4, window_frames=5, prefix=prefix)
    audio = np.concatenate([decoder.feed(codes[:n]) for n in range(1, 13)] + [decoder.finish(codes)])
    np.testing.assert_array_equal(audio, whole)
    assert codec.calls == [4 + 5, 4 + 5, 4 + 2], "the first window's context comes from the prefix"


def test_misuse_is_refused() -> None:
    codec = Causal(reach=1)
    codes = codes_of(8)
    with pytest.raises(ValueError, match="window_frames"):
        ProgressiveDecoder(codec, codec.spf, window_frames=0)
    with pytest.raises(ValueError, match="context_frames"):
        ProgressiveDecoder(codec, codec.spf, context_frames=-1)
    decoder = ProgressiveDecoder(codec, codec.spf, window_frames=4)
    decoder.feed(codes[:6])
    with pytest.raises(ValueError, match="shrank"):
        decoder.feed(codes[:5])
    decoder.finish(codes)
    with pytest.raises(RuntimeError, match="finished"):
        decoder.feed(codes)
    wrong = ProgressiveDecoder(lambda c: np.zeros(3, dtype=np.float32), codec.spf, window_frames=1)
    with pytest.raises(ValueError, match="samples"):
        wrong.feed(codes[:1])
