"""Subtitle files for spoken audio: SubRip (srt, written by the `srt` library) and WebVTT (vtt,
written by `webvtt-py`), one cue per caller's piece of text, timed to the millisecond.

A cue's text is reflowed into lines of at most LINE_CHARS characters, and whatever would end a
cue early or be read as markup is neutralised: a parser reading the file back gets every cue,
in order, with its text and times."""

from __future__ import annotations

import html
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

import srt
import webvtt

SubtitleFormat = Literal["srt", "vtt"]
SUBTITLE_FORMATS: Final = ("srt", "vtt")
LINE_CHARS: Final = 42
"""The longest line of a cue: the usual limit of broadcast and streaming subtitle guidelines."""

# "-->" separates a cue's times: inside a cue's text a parser takes the line for a new cue's timing.
_ARROW = "-->"
_ARROW_STAND_IN = "→"
_NO_BREAK_SPACE = "\u00a0"  # textwrap breaks lines only at ASCII whitespace
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Cue:
    """A piece of text shown from `start_s` to `end_s` seconds into the audio."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class _TimedCue:
    start_ms: int
    end_ms: int
    lines: list[str]


def render_subtitles(cues: Sequence[Cue], fmt: SubtitleFormat) -> str:
    """The text of a subtitle file of format `fmt` ("srt" or "vtt") holding `cues` in their order.

    Times are rounded to the millisecond, halves up; a cue that ends at or before its start is
    shown for 1 ms, and a cue whose text is only whitespace is left out. Cues that overlap (one
    starting before the one before it ends) are refused with ValueError, as are negative or
    non-finite times: the caller's timing is wrong."""
    if fmt not in SUBTITLE_FORMATS:
        raise ValueError(f"subtitle format must be one of {', '.join(SUBTITLE_FORMATS)}, not {fmt!r}")
    timed = _timed(cues, numbers_glued=fmt == "srt")
    return _srt_text(timed) if fmt == "srt" else _vtt_text(timed)


def _timed(cues: Sequence[Cue], numbers_glued: bool) -> list[_TimedCue]:
    """The cues in milliseconds, with their lines; a cue with no text is checked but left out, as an
    SRT cue cannot be empty (its blank text line would end it)."""
    timed: list[_TimedCue] = []
    previous_end = 0
    for position, cue in enumerate(cues):
        start = _milliseconds(cue.start_s, f"cue {position} start_s")
        end = max(_milliseconds(cue.end_s, f"cue {position} end_s"), start + 1)
        if start < previous_end:
            raise ValueError(
                f"cue {position} starts at {start} ms, before cue {position - 1} ends at {previous_end} ms: "
                "cues must be in order and must not overlap"
            )
        previous_end = end
        lines = _wrapped(cue.text, numbers_glued)
        if lines:
            timed.append(_TimedCue(start, end, lines))
    return timed


def _milliseconds(seconds: float, what: str) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {seconds!r}")
    # Through the float's shortest decimal form, so 0.0015 s is 1.5 ms and rounds up to 2 ms, not down
    # as its binary value (0.00149999...) would.
    return int((Decimal(repr(float(seconds))) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _wrapped(text: str, numbers_glued: bool) -> list[str]:
    """The cue's text as lines of at most LINE_CHARS characters, words kept whole unless one is longer
    than a line. All whitespace (line breaks included) becomes single spaces first, so no line is
    blank. A line that is only a number can pass for a cue's index in SRT, so there a number stays
    on the line of the word before it (after it, for a first word) whenever the two fit on one."""
    words = text.replace(_ARROW, _ARROW_STAND_IN).split()
    if numbers_glued:
        words = _numbers_glued(words)
    return textwrap.wrap(" ".join(words), width=LINE_CHARS)


def _numbers_glued(words: list[str]) -> list[str]:
    glued: list[str] = []
    for word in words:
        together = f"{glued[-1]} {word}" if glued else ""
        if together and (_NUMBER.fullmatch(word) or _NUMBER.fullmatch(glued[-1])) and len(together) <= LINE_CHARS:
            glued[-1] = together.replace(" ", _NO_BREAK_SPACE)
        else:
            glued.append(word)
    return glued


def _srt_text(cues: list[_TimedCue]) -> str:
    subtitles = [
        srt.Subtitle(
            index=index,
            start=timedelta(milliseconds=cue.start_ms),
            end=timedelta(milliseconds=cue.end_ms),
            content="\n".join(cue.lines),
        )
        for index, cue in enumerate(cues, start=1)
    ]
    # Not reindexed: srt would sort the cues and drop those without text.
    return str(srt.compose(subtitles, reindex=False))


def _vtt_text(cues: list[_TimedCue]) -> str:
    captions = [
        webvtt.Caption(
            start=_vtt_timestamp(cue.start_ms),
            end=_vtt_timestamp(cue.end_ms),
            # WebVTT cue text is markup: a literal '<' or '&' must be a character reference.
            text=[html.escape(line, quote=False) for line in cue.lines],
        )
        for cue in cues
    ]
    return webvtt.WebVTT(captions=captions).content


def _vtt_timestamp(milliseconds: int) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"
