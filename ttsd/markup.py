"""Inline pause markup in job text: ``[pause 1.5s]``, ``[pause 300ms]``.

A marker is a bracket that opens with the word "pause" (any case, spaces allowed after the ``[``);
every other bracket (``[1]``, ``[laughs]``, ``[paused here]``) is ordinary text. Markers split the
text into runs, each followed by the silence its markers ask for.

Pure and linear: the scanner looks at each bracket once and reads each character between brackets
at most twice, so hostile input (200,000 ``[``) fails as fast as it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_PAUSE_MS: Final = 10_000

# "pause" must be a whole word: "[paused]" and "[pauses]" are stage directions, not markup.
_OPENING: Final = re.compile(r"\[\s*pause(?![^\W\d_])", re.IGNORECASE)
_BRACKET: Final = re.compile(r"[\[\]]")
# Possessive quantifiers: the blanks around an empty unit could otherwise be shared out in n² ways.
_DURATION: Final = re.compile(
    r"\s*+(?P<number>[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++))\s*+(?P<unit>[^\W\d_]*+)\s*+", re.IGNORECASE
)
_MS_PER_UNIT: Final = {"s": 1000, "ms": 1}
_EXPECTED: Final = "expected a duration such as [pause 1.5s] or [pause 300ms]"
_QUOTE_CHARS: Final = 40


class MarkupError(ValueError):
    """A pause marker that cannot be read: `offset` is where it starts (0-based, in characters)."""

    def __init__(self, marker: str, offset: int, problem: str) -> None:
        quoted = marker if len(marker) <= _QUOTE_CHARS else marker[: _QUOTE_CHARS - 1] + "…"
        self.message = f"{quoted} at character {offset}: {problem}"
        self.offset = offset
        super().__init__(self.message)


@dataclass(frozen=True)
class Marked:
    """Text cut at its pause markers.

    `lead_ms` is the silence before the first words (markers before any text); each run is the
    text between markers, as written, and the pause in ms right after it (0 if no marker follows).
    """

    lead_ms: int
    runs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class _Marker:
    start: int
    end: int
    pause_ms: int


def only_pauses(text: str) -> bool:
    """Whether `text` is pause markers and nothing else but whitespace (a Markdown book's line of its
    own: a pause between paragraphs, not a paragraph); raises MarkupError for a malformed marker."""
    if not text.lstrip().startswith("["):
        return False
    markers = _markers(text)
    cursor = 0
    for marker in markers:
        if text[cursor : marker.start].strip():
            return False
        cursor = marker.end
    return bool(markers) and not text[cursor:].strip()


def parse_pauses(text: str) -> Marked:
    """Cut `text` at its pause markers.

    Whitespace-only runs vanish and their pauses merge with the run before (adjacent markers add
    up); markers before any words become `lead_ms`. Text without markers is one run (none when it
    is blank). Raises `MarkupError` for a marker that is malformed, not positive, over
    `MAX_PAUSE_MS` (alone or summed with its neighbours), and for text of markers but no words.
    """
    markers = _markers(text)
    lead_ms = 0
    runs: list[tuple[str, int]] = []
    cursor = 0
    for marker in markers:
        piece = text[cursor : marker.start]
        if piece.strip():
            runs.append((piece, marker.pause_ms))
        elif runs:
            runs[-1] = (runs[-1][0], _merged(runs[-1][1], marker, text))
        else:
            lead_ms = _merged(lead_ms, marker, text)
        cursor = marker.end
    tail = text[cursor:]
    if tail.strip():
        runs.append((tail, 0))
    if markers and not runs:
        raise MarkupError(_quote(text, markers[0]), markers[0].start, "the text holds pauses but no words to speak")
    return Marked(lead_ms=lead_ms, runs=tuple(runs))


def strip_pauses(text: str) -> str:
    """`text` without its pause markers, for display and subtitles; raises like `parse_pauses`.

    A marker between two words leaves a space behind, so "one[pause 1s]two" reads "one two".
    """
    parse_pauses(text)  # the same errors, the same rules for what counts as a marker
    kept: list[str] = []
    cursor = 0
    for marker in _markers(text):
        _append_apart(kept, text[cursor : marker.start])
        cursor = marker.end
    _append_apart(kept, text[cursor:])
    return "".join(kept)


def _append_apart(kept: list[str], piece: str) -> None:
    if not piece:
        return  # kept[-1] stays the text's last character, the one the next piece must not touch
    if kept and not kept[-1][-1].isspace() and not piece[0].isspace():
        kept.append(" ")
    kept.append(piece)


def _merged(total_ms: int, marker: _Marker, text: str) -> int:
    """`total_ms` plus the pause of an adjacent `marker`, refused past the cap."""
    summed = total_ms + marker.pause_ms
    if summed > MAX_PAUSE_MS:
        problem = f"adjacent pauses add up to {_seconds(summed)}; together they are at most {_seconds(MAX_PAUSE_MS)}"
        raise MarkupError(_quote(text, marker), marker.start, problem)
    return summed


def _markers(text: str) -> list[_Marker]:
    """Every pause marker of `text`, in order."""
    found: list[_Marker] = []
    position = text.find("[")
    while position != -1:
        opening = _OPENING.match(text, position)
        if opening is None:
            position = text.find("[", position + 1)
            continue
        marker = _read_marker(text, position, opening.end())
        found.append(marker)
        position = text.find("[", marker.end)
    return found


def _read_marker(text: str, start: int, body_start: int) -> _Marker:
    """The marker opening at `start`, whose duration starts at `body_start`."""
    bracket = _BRACKET.search(text, body_start)
    if bracket is None:
        raise MarkupError(text[start:], start, "the marker is not closed: expected ']' after the duration")
    if bracket.group() == "[":
        raise MarkupError(
            text[start : bracket.end()], start, "brackets do not nest in a pause marker: expected ']' before any '['"
        )
    marker = text[start : bracket.end()]
    return _Marker(
        start=start, end=bracket.end(), pause_ms=_duration_ms(marker, start, text[body_start : bracket.start()])
    )


def _duration_ms(marker: str, start: int, body: str) -> int:
    """The pause `body` (the marker between "pause" and "]") asks for, in whole milliseconds."""
    duration = _DURATION.fullmatch(body)
    if duration is None:
        raise MarkupError(marker, start, f"not a duration: {_EXPECTED}")
    unit = duration.group("unit").lower()
    if not unit:
        raise MarkupError(marker, start, f"the duration has no unit: {_EXPECTED}")
    if unit not in _MS_PER_UNIT:
        raise MarkupError(marker, start, f"unknown unit {duration.group('unit')!r}: use s or ms")
    # Compared before rounding: a thousand nines is infinity as a float, which round() refuses.
    amount_ms = float(duration.group("number")) * _MS_PER_UNIT[unit]
    if amount_ms > MAX_PAUSE_MS:
        raise MarkupError(marker, start, f"a pause is at most {_seconds(MAX_PAUSE_MS)}")
    pause_ms = round(amount_ms)
    if pause_ms < 1:
        raise MarkupError(marker, start, "a pause must be at least 1 ms")
    return pause_ms


def _quote(text: str, marker: _Marker) -> str:
    return text[marker.start : marker.end]


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"
