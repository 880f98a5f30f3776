"""Progressive (windowed) codec decode against one decode of the whole row: error and cost.

Generates one long row with a checkpoint (the tiny custom-voice one, built into a temporary folder,
unless `--model-dir` names another), greedy, with end of speech banned so the row has exactly
`--frames` frames. The row is decoded once in one call (the reference), then, for every window size
in `--windows` and every left context in `--contexts`, fed to a `ProgressiveDecoder` one frame at a
time as a generator would, and finished. Columns:

  max err      max |progressive - one-shot| over the row
  rms          RMS of the one-shot signal (the scale of the error)
  dB           max err relative to rms, in dB
  cost         decode wall time relative to the one-shot decode (best of `--repeats` each)
  frames       frames pushed through the codec (context included) relative to the row's frames
  calls        decode calls
  first s      seconds of speech generated before the first audio comes out
  *            marks the row of the module's WINDOW_FRAMES and CONTEXT_FRAMES

A row longer than 300 frames is itself decoded by qwen-tts in 300-frame chunks with 25 frames of
context, so the one-shot reference is then only as exact as that; keep `--frames` at 300 or below
to compare against the exact causal decode.

    .venv/bin/python scripts/progressive_decode.py
    .venv/bin/python scripts/progressive_decode.py --frames 120 --contexts 0,25,80 --windows 1,12,50
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import functools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.progressive import (
    CONTEXT_FRAMES,
    WINDOW_FRAMES,
    ProgressiveDecoder,
    speech_tokenizer_decoder,
)

GREEDY = {"do_sample": False, "subtalker_dosample": False}
TEXT = "The quick brown fox jumps over the lazy dog, and then it does so again, and again. " * 8
LIBRARY_CHUNK_FRAMES = 300


def int_list(text: str) -> list[int]:
    """'0,5,10' -> [0, 5, 10]."""
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=240, help="frames of the generated row (default 240)")
    parser.add_argument("--contexts", type=int_list, default=[0, 5, 10, 25, 50, 72], help="left contexts, frames")
    parser.add_argument("--windows", type=int_list, default=[WINDOW_FRAMES], help="window sizes, frames")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats; the best counts (default 3)")
    parser.add_argument("--model-dir", type=Path, help="a checkpoint (default: the tiny one, built)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=3)
    return parser.parse_args()


def best_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of `repeats` runs (a shared machine's noise only ever adds time) and its result."""
    best, result = math.inf, None
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def progressive(decode: Callable[[Any], np.ndarray], codes: Any, spf: int, context: int, window: int) -> Any:
    """Feed the row one frame at a time, then finish: (audio, decoder, frames generated at first audio)."""
    decoder = ProgressiveDecoder(decode, spf, context_frames=context, window_frames=window)
    parts: list[np.ndarray] = []
    first: int | None = None
    for n in range(1, int(codes.shape[0]) + 1):
        part = decoder.feed(codes[:n])
        if part.size and first is None:
            first = n
        parts.append(part)
    parts.append(decoder.finish(codes))
    return np.concatenate(parts), decoder, first if first is not None else int(codes.shape[0])


def main() -> None:
    """Generate, decode both ways, print the table."""
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ttsd.synth.engine.qwen import QwenEngine
    from ttsd.synth.engine.tiny import ensure_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="ttsd-progressive-") as scratch:
        model_dir = args.model_dir or ensure_tiny_checkpoint(Path(scratch) / "tiny", "custom_voice")
        # "never": end of speech is banned, so the row runs to the budget: exactly --frames frames.
        engine = QwenEngine.load(
            "probe", "custom_voice", model_dir, DevicePlan(args.device, "float32", "sdpa"), "never"
        )
        try:
            speaker = engine.voices().speakers[0] if engine.voices().speakers else None
            started = time.perf_counter()
            takes = engine.generate([SynthesisRequest(TEXT, "English", speaker)], GREEDY, args.seed, args.frames + 1)
            generate_s = time.perf_counter() - started
            codes = takes.rows[0]
            frames = int(codes.shape[0])
            tokenizer = engine._model.model.speech_tokenizer
            spf = int(tokenizer.get_decode_upsample_rate())
            rate = int(tokenizer.get_output_sample_rate())
            decode = speech_tokenizer_decoder(tokenizer)
            decode(codes[:4])  # warm-up: the first call pays one-off allocations
            one_shot_s, reference = best_time(lambda: decode(codes), args.repeats)
            rms = float(np.sqrt(np.mean(np.square(reference.astype(np.float64)))))
            print(
                f"row: {frames} frames ({frames * spf / rate:.1f} s) generated in {generate_s:.1f} s; "
                f"one-shot decode {one_shot_s * 1000:.0f} ms; signal rms {rms:.4f}; "
                f"{spf} samples/frame at {rate} Hz; torch threads {torch.get_num_threads()}"
            )
            if frames > LIBRARY_CHUNK_FRAMES:
                print(f"note: above {LIBRARY_CHUNK_FRAMES} frames the one-shot decode is itself chunked")
            print(
                "\n| window | context | max err | rms | dB | cost | frames | calls | first s |\n"
                "|---|---|---|---|---|---|---|---|---|"
            )
            for window in args.windows:
                for context in args.contexts:
                    run = functools.partial(progressive, decode, codes, spf, context, window)
                    seconds, (audio, decoder, first) = best_time(run, args.repeats)
                    assert audio.shape == reference.shape, (audio.shape, reference.shape)
                    error = float(np.max(np.abs(audio - reference)))
                    db = 20 * math.log10(error / rms) if error > 0 else -math.inf
                    chosen = "*" if (window, context) == (WINDOW_FRAMES, CONTEXT_FRAMES) else ""
                    print(
                        f"| {window}{chosen} | {context}{chosen} | {error:.2e} | {rms:.3f} | {db:.0f} "
                        f"| {seconds / one_shot_s:.2f}x "
                        f"| {decoder.frames_computed / frames:.2f}x | {decoder.decode_calls} "
                        f"| {first * spf / rate:.2f} |"
                    )
        finally:
            engine.close()


if __name__ == "__main__":
    main()
