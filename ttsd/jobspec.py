"""The resolved job: every field a job file may set, with every default filled in. It is what
intake records, the queue stores, the worker speaks and the status file describes; its content key
makes the same job dropped twice one job, and its batch key says which jobs may share a generate
call."""

from __future__ import annotations

import bisect
import hashlib
import json
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from ttsd.encoding import AudioFormat

SCHEMA_VERSION = 1  # of job files and status files


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Generation(BaseModel):
    """The sampling settings a job may set; anything else would be silently dropped by qwen-tts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: "0.7" or true must not pass for a number (a JSON int still does).
    temperature: StrictFloat | None = Field(None, gt=0, le=5)
    top_k: StrictInt | None = Field(None, ge=0, le=10_000)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    repetition_penalty: StrictFloat | None = Field(None, gt=0, le=10)
    max_new_tokens: StrictInt | None = Field(None, ge=1, le=16_384)
    do_sample: StrictBool | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """Only the settings the job gave, ready for a generate call."""
        return self.model_dump(exclude_none=True)


SubtitleFormat = Literal["srt", "vtt"]


class VoiceFields(BaseModel):
    """Who speaks a piece of a job: the voice fields its model kind takes, resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speaker: str | None = None
    language: str = "Auto"
    instruct: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    voice: str | None = None
    """A saved voice of the library, by name."""
    voice_sha256: str | None = None
    """The saved voice's prompt hash when the job was accepted: a voice saved again under the same
    name is another voice, so another job and another cache entry."""


class Segment(BaseModel):
    """One piece of a script: its text (pause markup allowed), who speaks it, and the silence after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    voice: VoiceFields
    pause_ms: int | None = None
    """Silence after the segment; None: the paragraph pause (nothing after the last segment)."""


class ChapterStart(BaseModel):
    """A chapter of a book: its title and the segment it starts at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    segment: int


_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "speed": 1.0,
    "chunk_first_chars": None,
    "voice": None,
    "voice_sha256": None,
    "segments": None,
    "chapters": None,
    "subtitles": None,
    "chapter_files": False,
}
"""Fields added after schema 1 first shipped, with the value that means "not used"."""


class JobSpec(BaseModel):
    """A job with every default resolved: what the queue stores and the worker runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    text: str
    model: str
    kind: str
    speaker: str | None
    language: str
    instruct: str | None
    ref_audio: str | None
    ref_text: str | None
    format: AudioFormat
    sample_rate: int
    priority: int
    seed: int | None
    generation: Generation
    client_id: str | None
    cache: bool
    chunk_max_chars: int
    gap_ms: int | None
    normalize: bool
    speed: float = 1.0
    chunk_first_chars: int | None = None
    voice: str | None = None
    voice_sha256: str | None = None
    segments: tuple[Segment, ...] | None = None
    """A script: segments spoken in order, each with its own voice (`text` then holds their texts)."""
    chapters: tuple[ChapterStart, ...] | None = None
    subtitles: SubtitleFormat | None = None
    chapter_files: bool = False
    """Besides the whole book, one audio file per chapter."""

    def content_key(self) -> str:
        """Identity of the job as dropped: the same resolved job twice is one job."""
        fields = self.model_dump(mode="json")
        # Jobs recorded before these fields existed keep their keys: dropped again, still one job.
        for field, unset in _OPTIONAL_DEFAULTS.items():
            if fields[field] == unset:
                del fields[field]
        return _digest(fields)

    def voice_fields(self) -> VoiceFields:
        """The job's own voice fields (a script's segments state theirs)."""
        return VoiceFields(
            speaker=self.speaker,
            language=self.language,
            instruct=self.instruct,
            ref_audio=self.ref_audio,
            ref_text=self.ref_text,
            voice=self.voice,
            voice_sha256=self.voice_sha256,
        )

    def chapter_of(self, segment: int) -> int:
        """The chapter a script segment belongs to (0 for a job without chapters)."""
        return max(0, bisect.bisect_right(self._chapter_starts, segment) - 1)

    @cached_property
    def _chapter_starts(self) -> list[int]:
        # Asked once per chunk of a book: thousands of chunks, hundreds of chapters.
        return [chapter.segment for chapter in self.chapters or ()]

    def script(self) -> tuple[Segment, ...]:
        """What is spoken, in order: the segments, or the whole text as one segment."""
        if self.segments is not None:
            return self.segments
        return (Segment(text=self.text, voice=self.voice_fields()),)

    def batch_key(self) -> str:
        """Jobs with equal keys can share one generate call: same model, kind and sampling.

        A seeded job runs alone: its take must not depend on which other jobs shared its batch.
        """
        alone = self.content_key() if self.seed is not None else None
        return _digest([self.model, self.kind, self.generation.as_kwargs(), alone])
