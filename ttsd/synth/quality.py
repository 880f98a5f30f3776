"""Quality guards on every chunk before it is accepted: clipping, and a length far from what the
text predicts (runaway generation that never stopped, or a take cut short). NaN and silence are
caught earlier, by the engine, where a float32 retry can still help."""

from __future__ import annotations

import unicodedata

import numpy as np

CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 0.01
# Typical read-aloud rates: ~14 characters per second in alphabetic scripts, ~5 for CJK, where each
# character is a syllable or a word.
CHARS_PER_S_ALPHABETIC = 14.0
CHARS_PER_S_WIDE = 5.0
RUNAWAY_FACTOR = 4.0
RUNAWAY_FLOOR_S = 8.0
TRUNCATED_FACTOR = 0.25
TRUNCATED_MIN_EXPECTED_S = 2.0


def expected_seconds(text: str) -> float:
    """Roughly how long `text` takes to say."""
    wide = alphabetic = 0
    for char in text:
        if char.isspace() or not (char.isalnum() or unicodedata.category(char).startswith("L")):
            continue
        if unicodedata.east_asian_width(char) in ("W", "F"):
            wide += 1
        else:
            alphabetic += 1
    return wide / CHARS_PER_S_WIDE + alphabetic / CHARS_PER_S_ALPHABETIC


def quality_problem(audio: np.ndarray, sample_rate: int, text: str, check_length: bool) -> str | None:
    """Why this take must not be delivered, or None when it may be."""
    if audio.size:
        clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL))
        if clipped > MAX_CLIPPED_FRACTION:
            return f"{clipped:.1%} of the samples are clipped"
    if not check_length:
        return None
    seconds = len(audio) / sample_rate
    expected = expected_seconds(text)
    if seconds > max(RUNAWAY_FLOOR_S, RUNAWAY_FACTOR * expected):
        return f"{seconds:.1f}s of audio for text that takes about {expected:.1f}s to say (runaway generation)"
    if expected >= TRUNCATED_MIN_EXPECTED_S and seconds < TRUNCATED_FACTOR * expected:
        return f"only {seconds:.1f}s of audio for text that takes about {expected:.1f}s to say (cut short)"
    return None
