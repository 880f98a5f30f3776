"""The parts of a status document that only scripts, subtitled jobs and books have: each segment's
voice and times, the subtitle file, and each chapter's times, file and progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttsd.jobqueue.records import Outputs, Span
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec


def script_fields(job: Job, spec: JobSpec, chunks: Sequence[ChunkRow] | None) -> dict[str, Any]:
    """The keys a job's status document adds for its script (none for a plain job). Times are known
    once the job is delivered; a book's per-chapter progress comes from its chunk rows (`chunks`,
    while it runs)."""
    outputs = Outputs.from_json(job.outputs_json) if job.outputs_json else None
    fields: dict[str, Any] = {}
    if spec.segments is not None:
        times = outputs.segments if outputs else ()
        fields["segments"] = [
            {
                "index": index,
                "speaker": segment.voice.speaker,
                "voice": segment.voice.voice,
                "instruct": segment.voice.instruct,
                "language": segment.voice.language,
                **_times(times, index),
            }
            for index, segment in enumerate(spec.segments)
        ]
    if spec.subtitles is not None:
        fields["subtitles"] = {
            "format": spec.subtitles,
            "file": outputs.subtitles if outputs else None,
            "cues": outputs.cues if outputs else None,
        }
    if spec.chapters is not None:
        fields["chapters"] = _chapters(spec, outputs, chunks)
    return fields


def _times(spans: Sequence[Span], index: int) -> dict[str, float | None]:
    start, end = spans[index] if index < len(spans) else (None, None)
    return {"start_s": start, "end_s": end}


def _chapters(spec: JobSpec, outputs: Outputs | None, chunks: Sequence[ChunkRow] | None) -> list[dict[str, Any]]:
    chapters = spec.chapters or ()
    if outputs is not None:
        done: Sequence[int | None] = outputs.chapter_chunks
        total: Sequence[int | None] = outputs.chapter_chunks
    elif chunks:
        counted_done, counted = [0] * len(chapters), [0] * len(chapters)
        for chunk in chunks:
            owner = spec.chapter_of(chunk.segment)
            counted[owner] += 1
            counted_done[owner] += chunk.done
        done, total = counted_done, counted
    else:
        done, total = [0] * len(chapters), [None] * len(chapters)
    files = outputs.chapter_files if outputs else ()
    return [
        {
            "index": index,
            "title": chapter.title,
            **_times(outputs.chapters if outputs else (), index),
            "file": files[index] if index < len(files) else None,
            "chunks_done": done[index] if index < len(done) else None,
            "chunks_total": total[index] if index < len(total) else None,
        }
        for index, chapter in enumerate(chapters)
    ]


def outputs_of(document: dict[str, Any]) -> Outputs | None:
    """What a done job's status document says it delivered besides its audio (the inverse of
    `script_fields`, for rebuilding a lost queue); None for a plain job or a document that does
    not hold it whole."""
    segments, chapters, subtitles = document.get("segments"), document.get("chapters"), document.get("subtitles")
    if segments is None and chapters is None and subtitles is None:
        return None
    try:
        return Outputs(
            segments=tuple((float(s["start_s"]), float(s["end_s"])) for s in segments or ()),
            chapters=tuple((float(c["start_s"]), float(c["end_s"])) for c in chapters or ()),
            subtitles=str(subtitles["file"]) if subtitles else None,
            cues=int(subtitles["cues"]) if subtitles else 0,
            chapter_files=tuple(str(c["file"]) for c in chapters or () if c.get("file")),
            chapter_chunks=tuple(int(c["chunks_total"]) for c in chapters or ()),
        )
    except (KeyError, TypeError, ValueError):
        return None
