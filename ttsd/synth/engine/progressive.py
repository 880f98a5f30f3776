"""Progressive (windowed) codec decode: a row's audio while its codes are still being generated.

qwen-tts' 12 Hz codec decoder is strictly causal, so a row need not wait for its last frame to be
heard: every `window_frames` new frames are decoded as one window. A window [a, b) is decoded with
frames [max(0, a - context_frames), b) in front of the codec and the context's share of the output is
cut off; only the context's limited reach separates this from one decode of the whole row. The
decoder's transformer sees 72 frames back (its sliding window) and its convolutions a few more, so
80 frames of context reproduce the one-shot decode exactly and fewer give an error that falls with
the context (research notes, perf/FINDINGS.md, "Incremental / streaming codec decode").

Chosen by measurement (`scripts/progressive_decode.py`: tiny checkpoint, one greedy row of 240
frames, signal RMS 0.104, max abs error against one decode of the whole row; "frames" counts the
frames pushed through the codec, context included, relative to the row's):

    context          0      5       10      25      50      72      80
    max error        0.66   2.7e-2  9.6e-4  4.8e-4  2.4e-4  3.4e-5  2.9e-7 (float32 rounding)
    frames, W=12     1.0x   1.4x    1.8x    2.9x    4.6x    6.0x    6.4x

    window W         4      12      25      50      (context 25)
    frames           6.9x   2.9x    1.9x    1.4x
    first audio      0.32s  0.96s   2.0s    4.0s    of generated speech

* `CONTEXT_FRAMES = 25`: the error is 47 dB under the signal's RMS (43 dB with other windows),
  inaudible, where 5 frames leave an audible 2.7e-2. It is the left context qwen-tts itself uses in
  `chunked_decode`, which decodes any row longer than 300 frames in 300-frame chunks: the library's
  own one-shot decode of a long row carries errors of this size, so a progressive decode is as
  faithful. The exact 80 costs 2.2x the frames of 25 at a 12-frame window, for nothing audible.
* `WINDOW_FRAMES = 12` (0.96 s of audio): the first audio comes after about a second of speech is
  generated, then one decode call per second of speech. The real-width codec is compute-bound (0.09 s per
  frame on one CPU core, perf/FINDINGS.md), so its cost follows the frames column: 2.9x the one-shot
  decode, where a 25-frame window would cost 1.9x but double the wait for the first sound, and a
  4-frame window 6.9x to gain less than a second. On the tiny codec a fixed ~12 ms per call
  dominates instead (wall time 2.7-5x the one-shot decode at 12, noisy on a shared machine).

Progressive decode is a latency tool: for throughput, decode each row once when it ends.

torch is imported only where codes must be concatenated (a prefix in front of a window), so this
module imports without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    import torch

CONTEXT_FRAMES: Final = 25
"""Frames of left context decoded in front of each window (see the module docstring)."""
WINDOW_FRAMES: Final = 12
"""Undecoded frames that trigger a decode: the first audio comes after this many frames."""
SAMPLE_RATE: Final = 24_000
"""The output rate of qwen-tts' 12 Hz codec (all its checkpoints)."""

DecodeFn = Callable[[Any], np.ndarray]
"""codes [n, 16] -> float32 mono waveform of n * samples_per_frame samples."""


def speech_tokenizer_decoder(speech_tokenizer: Any) -> DecodeFn:
    """A `DecodeFn` over qwen-tts' speech tokenizer (`model.model.speech_tokenizer`): one row, one call.

    Not locked: the caller keeps it from running at the same time as another decode on the same
    tokenizer where that matters (QwenEngine decodes under its decode lock).
    """

    def decode(codes: Any) -> np.ndarray:
        wavs, _rate = speech_tokenizer.decode([{"audio_codes": codes}])
        return np.asarray(wavs[0], dtype=np.float32).reshape(-1)

    return decode


class ProgressiveDecoder:
    """Decodes ONE row's codes window by window while they are generated.

    `feed` and `finish` take the row's codes *so far*: the whole [n, 16] tensor each time, growing
    (not only the new frames). The caller already holds the row (the talker's output, or a buffer it
    appends to), so nothing is copied here per frame, and the frames a window needs as context are a
    slice away. Frames already decoded must not change between calls.

    `prefix` ([r, 16], e.g. the reference codes of an ICL voice clone) stands in front of the row as
    its history: it is decoded only as left context (within `context_frames`, like any earlier frame)
    and none of its audio is returned. The concatenated output of all calls has exactly
    n * samples_per_frame samples.

    Not thread-safe: one row, one caller.
    """

    def __init__(
        self,
        decode: DecodeFn,
        samples_per_frame: int,
        context_frames: int = CONTEXT_FRAMES,
        window_frames: int = WINDOW_FRAMES,
        *,
        prefix: torch.Tensor | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        """`decode` turns codes into audio (`speech_tokenizer_decoder` for qwen-tts); each window of at
        least `window_frames` frames is decoded with up to `context_frames` earlier frames in front."""
        if samples_per_frame < 1 or sample_rate < 1:
            raise ValueError(f"samples_per_frame and sample_rate must be positive: {samples_per_frame}, {sample_rate}")
        if context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {context_frames}")
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        if prefix is not None and len(prefix.shape) != 2:
            raise ValueError(f"prefix must be codes [frames, groups], got shape {tuple(prefix.shape)}")
        self._decode = decode
        self.samples_per_frame = samples_per_frame
        self.context_frames = context_frames
        self.window_frames = window_frames
        self.sample_rate = sample_rate
        # An empty prefix is no prefix: it saves a concatenation per window.
        self._prefix = prefix if prefix is not None and int(prefix.shape[0]) > 0 else None
        self._done = 0
        self._computed = 0
        self._calls = 0
        self._finished = False

    @property
    def frames_decoded(self) -> int:
        """Frames of the row whose audio has been returned."""
        return self._done

    @property
    def audio_s(self) -> float:
        """Seconds of audio returned so far."""
        return self._done * self.samples_per_frame / self.sample_rate

    @property
    def frames_computed(self) -> int:
        """Frames pushed through the codec so far, context included: the decode's cost in frames."""
        return self._computed

    @property
    def decode_calls(self) -> int:
        """Calls of the decode function so far."""
        return self._calls

    @property
    def finished(self) -> bool:
        """Whether `finish` has been called."""
        return self._finished

    def feed(self, codes: torch.Tensor) -> np.ndarray:
        """The audio of the frames not yet decoded, once there are at least `window_frames` of them;
        otherwise an empty array. All undecoded frames go into one window (a caller feeding every
        frame gets windows of exactly `window_frames`)."""
        available = self._check(codes)
        if available - self._done < self.window_frames:
            return np.zeros(0, dtype=np.float32)
        return self._window(codes, available)

    def finish(self, codes: torch.Tensor) -> np.ndarray:
        """The audio of every frame not yet decoded (possibly empty); the row is then done."""
        available = self._check(codes)
        audio = np.zeros(0, dtype=np.float32) if available == self._done else self._window(codes, available)
        # Only now: a decode that raised leaves the row open for the caller to try again.
        self._finished = True
        return audio

    def _check(self, codes: torch.Tensor) -> int:
        if self._finished:
            raise RuntimeError("this row is finished: a ProgressiveDecoder decodes one row once")
        if len(codes.shape) != 2:
            raise ValueError(f"codes must be [frames, groups], got shape {tuple(codes.shape)}")
        available = int(codes.shape[0])
        if available < self._done:
            raise ValueError(f"the row shrank: {available} frames given, {self._done} already decoded")
        return available

    def _window(self, codes: torch.Tensor, end: int) -> np.ndarray:
        """Decode row frames [done, end) behind up to `context_frames` earlier ones (prefix included)."""
        reference = 0 if self._prefix is None else int(self._prefix.shape[0])
        # Positions in the prefix-then-row sequence: the window starts at reference + done.
        start = reference + self._done
        first = max(0, start - self.context_frames)
        if first >= reference:
            frames = codes[first - reference : end]
        else:
            import torch

            assert self._prefix is not None
            frames = torch.cat([self._prefix[first:].to(codes.device), codes[:end]], dim=0)
        expected = (reference + end - first) * self.samples_per_frame
        audio = np.asarray(self._decode(frames), dtype=np.float32).reshape(-1)
        if audio.shape[0] != expected:
            raise ValueError(
                f"the decode function returned {audio.shape[0]} samples for {reference + end - first} frames; "
                f"expected {expected} ({self.samples_per_frame} per frame)"
            )
        self._computed += reference + end - first
        self._calls += 1
        self._done = end
        # The context's samples were only there to warm the codec up.
        return audio[(start - first) * self.samples_per_frame :]
