"""How a tiny, randomly initialised model ends its speech.

Random weights practically never emit the codec's end-of-speech code, so every row would run to its
frame budget and nothing downstream (length bucketing, runaway detection, the budget itself) would
see the lengths a trained model produces. In `paced` mode row i is made to end after
round(expected_frames(text_i) * jitter) frames, jitter drawn in [0.8, 1.2] from a generator seeded
by the call's seed and the text: lengths follow the text like a trained model's, and the same call
gives the same lengths. In `never` mode end-of-speech is banned, so every row runs to its budget
(a runaway on demand, for tests of what happens then). Real checkpoints decide for themselves.

The rule is applied as a logits processor handed to the talker's HF `generate`, the one place a
frame's first code is chosen; torch is never imported here.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any, Final, Literal

from ttsd.synth.pacing import expected_frames

Ending = Literal["model", "paced", "never"]
"""Who ends a row: the model's own end-of-speech code (real checkpoints), the text's pace (tiny,
the default), or nobody (tiny in never-ending mode: every row runs to the budget)."""

JITTER: Final = 0.2
"""A row speaks expected_frames * [1 - JITTER, 1 + JITTER]: rows of one length class still differ."""


def paced_frames(texts: Sequence[str], seed: int | None) -> list[int]:
    """The frame after which each text's row ends in `paced` mode (at least 1)."""
    return [_paced_frame(text, seed or 0) for text in texts]


def _paced_frame(text: str, seed: int) -> int:
    # A digest, not hash(): Python salts str hashes per process, and the lengths must repeat across
    # daemon restarts for a resumed job to get the same take.
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (a speech length, not a secret)
    jitter = rng.uniform(1.0 - JITTER, 1.0 + JITTER)
    return max(1, round(expected_frames(text) * jitter))


class EndOfSpeech:
    """A logits processor for the talker's `generate` that decides when each row ends.

    `frames[i]` is the number of frames row i speaks: before that step its end-of-speech code is
    impossible, at it (and after, until HF retires the row) it is the only choice. `frames=None`
    bans end-of-speech on every row. Duck-typed as a transformers `LogitsProcessor` (HF only calls
    it), so importing this module does not import transformers.
    """

    def __init__(self, eos_id: int, frames: Sequence[int] | None) -> None:
        self.eos_id = eos_id
        self.frames = tuple(frames) if frames is not None else None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """Edit the scores of the step that follows `input_ids` (one code per frame spoken so far)."""
        # The talker generates from embeddings only, so input_ids holds exactly the codes sampled so far.
        step = int(input_ids.shape[1])
        if self.frames is None:
            scores[:, self.eos_id] = float("-inf")
            return scores
        if len(self.frames) != scores.shape[0]:
            raise ValueError(f"end-of-speech frames for {len(self.frames)} rows, but the batch has {scores.shape[0]}")
        for row, frames in enumerate(self.frames):
            if step >= frames:
                scores[row, :] = float("-inf")
                scores[row, self.eos_id] = 0.0
            else:
                scores[row, self.eos_id] = float("-inf")
        return scores


def end_of_speech(ending: Ending, eos_id: int, texts: Sequence[str], seed: int | None) -> EndOfSpeech | None:
    """The processor one call needs under `ending` (None: leave the model alone)."""
    if ending == "model":
        return None
    if ending == "never":
        return EndOfSpeech(eos_id, None)
    return EndOfSpeech(eos_id, paced_frames(texts, seed))
