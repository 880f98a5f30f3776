"""How much speech a text makes: expected frames per chunk, for grouping chunks of similar length
into one generate call, for bounding a call's frame budget, and for the tiny model's end of speech.

Qwen3-TTS speaks 12.5 frames per second. A normal speaking rate is about 15 characters a second in
alphabetic scripts; CJK characters carry a syllable or a word each, about 4.5 a second. Digits,
punctuation and spaces are counted with the alphabetic rate (a heuristic: numbers read aloud are
longer, pauses at punctuation shorter; the budget's margin covers both).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Final

FRAMES_PER_S: Final = 12.5
ALPHABETIC_CHARS_PER_S: Final = 15.0
CJK_CHARS_PER_S: Final = 4.5
MIN_FRAMES: Final = 4.0
"""Even one word takes a third of a second, with the model's lead-in and tail."""
BUDGET_FACTOR: Final = 2.0
BUDGET_MARGIN_FRAMES: Final = 24
"""A call's budget is twice its longest row's expectation plus about two seconds: slow speakers,
numbers and long pauses fit; a runaway row is cut well before the model's 2,048-frame cap."""

_CJK_PREFIXES: Final = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")


def _is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_CJK_PREFIXES)


def expected_seconds(text: str) -> float:
    """Seconds of speech `text` makes at a normal rate."""
    cjk = sum(1 for char in text if ord(char) >= 0x2E80 and _is_cjk(char))
    other = len(text.strip()) - cjk
    return max(0, other) / ALPHABETIC_CHARS_PER_S + cjk / CJK_CHARS_PER_S


def expected_frames(text: str) -> float:
    """Frames the model is expected to generate for `text` (at least `MIN_FRAMES`)."""
    return max(MIN_FRAMES, expected_seconds(text) * FRAMES_PER_S)


def frame_budget(texts: Sequence[str], cap: int) -> int:
    """`max_new_tokens` for one call over `texts`: room for the longest, never above `cap`."""
    longest = max((expected_frames(text) for text in texts), default=MIN_FRAMES)
    return max(1, min(cap, math.ceil(longest * BUDGET_FACTOR) + BUDGET_MARGIN_FRAMES))
