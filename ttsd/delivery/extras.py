"""What a script, a subtitled job or a book delivers besides its audio: segment and chapter times,
a subtitle file with one cue per chunk, chapter marks inside an M4B, and one file per chapter.

Every time comes from where the chunks' speech actually landed in the joined waveform (the worker
measures it while joining), scaled by the speed change the delivered file went through, so cues and
chapter marks are exact, not estimated from text lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttsd.encoding import ChapterMark
from ttsd.jobqueue.records import Span
from ttsd.jobspec import JobSpec
from ttsd.subtitles import Cue, render_subtitles


@dataclass(frozen=True)
class Timeline:
    """Where each chunk's speech sits in a job's joined waveform, before any speed change."""

    spans: tuple[tuple[int, int], ...]
    """[start, end) in samples at the job's rate, one per chunk, pauses excluded."""
    texts: tuple[str, ...]
    """Each chunk's text (a subtitle cue)."""
    segments: tuple[int, ...]
    """Each chunk's script segment."""
    total: int
    """Samples in the joined waveform."""

    def scaled(self, total: int) -> Timeline:
        """The same timeline over a waveform stretched to `total` samples (a speed change)."""
        if total == self.total or self.total == 0:
            return self
        factor = total / self.total
        spans = tuple((round(a * factor), round(b * factor)) for a, b in self.spans)
        return Timeline(spans, self.texts, self.segments, total)


def needs_timeline(spec: JobSpec) -> bool:
    """Whether a job delivers anything that needs its chunks' times."""
    return spec.segments is not None or spec.subtitles is not None or spec.chapters is not None


def segment_spans(timeline: Timeline, count: int, rate: int) -> tuple[Span, ...]:
    """Each segment's speech, from the start of its first chunk to the end of its last, in seconds."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for (start, end), owner in zip(timeline.spans, timeline.segments, strict=True):
        first.setdefault(owner, start)
        last[owner] = end
    return tuple(
        (_seconds(first[segment], rate), _seconds(last[segment], rate)) if segment in first else (0.0, 0.0)
        for segment in range(count)
    )


def chunks_per_chapter(spec: JobSpec, timeline: Timeline) -> tuple[int, ...]:
    """How many chunks each chapter was spoken in."""
    counts = [0] * len(spec.chapters or ())
    for segment in timeline.segments if counts else ():
        counts[spec.chapter_of(segment)] += 1
    return tuple(counts)


def chapter_spans(spec: JobSpec, timeline: Timeline, rate: int) -> tuple[Span, ...]:
    """Each chapter from its first word to where the next one starts (the first from 0, the last to
    the end), so the chapters cover the whole file as players expect."""
    if not spec.chapters:
        return ()
    starts = [0] + [timeline.total] * (len(spec.chapters) - 1)
    for (start, _), segment in zip(timeline.spans, timeline.segments, strict=True):
        chapter = spec.chapter_of(segment)
        if chapter > 0 and starts[chapter] == timeline.total:
            starts[chapter] = start
    # A chapter that spoke no chunk starts where the next one does.
    for index in range(len(starts) - 2, 0, -1):
        starts[index] = min(starts[index], starts[index + 1])
    ends = [*starts[1:], timeline.total]
    return tuple((_seconds(a, rate), _seconds(b, rate)) for a, b in zip(starts, ends, strict=True))


def chapter_marks(spec: JobSpec, spans: Sequence[Span]) -> list[ChapterMark]:
    """The chapter marks an M4B carries."""
    titles = [chapter.title or f"Chapter {number}" for number, chapter in enumerate(spec.chapters or (), start=1)]
    return [ChapterMark(title, start, end) for title, (start, end) in zip(titles, spans, strict=True)]


def subtitle_text(spec: JobSpec, timeline: Timeline, rate: int) -> tuple[str, int]:
    """The subtitle file of a job (`spec.subtitles` says which format) and its number of cues."""
    assert spec.subtitles is not None
    cues = [
        Cue(_seconds(a, rate), _seconds(b, rate), text)
        for (a, b), text in zip(timeline.spans, timeline.texts, strict=True)
        if b > a
    ]
    return render_subtitles(cues, spec.subtitles), len(cues)


def chapter_audio(audio: np.ndarray, spans: Sequence[Span], rate: int) -> list[np.ndarray]:
    """The delivered waveform cut at the chapter boundaries."""
    return [audio[round(start * rate) : round(end * rate)] for start, end in spans]


def _seconds(samples: int, rate: int) -> float:
    return round(samples / rate, 3)
