"""Delivering a finished job: its audio file (and a script's subtitle and chapter files) is staged,
then installed inside the guarded `done` transaction, so a worker that lost its lease (the job was
cancelled or taken back) never replaces the audio of the job's newer result, and audio and queue
never disagree after a crash."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ttsd.delivery.extras import (
    Timeline,
    chapter_audio,
    chapter_marks,
    chapter_spans,
    chunks_per_chapter,
    segment_spans,
    subtitle_text,
)
from ttsd.delivery.outbox import Outbox, StagedAudio, StagedFile, finished_audio
from ttsd.faults import crash_point
from ttsd.jobqueue.protocols import WorkerQueue
from ttsd.jobqueue.records import AudioInfo, Outputs, RunInfo
from ttsd.jobspec import JobSpec


def deliver(
    store: WorkerQueue,
    outbox: Outbox,
    token: str,
    job_id: str,
    spec: JobSpec,
    audio: np.ndarray,
    run: RunInfo,
    timeline: Timeline | None = None,
) -> AudioInfo | None:
    """Write the job's audio into the outbox and record the job done, both only while `token` holds
    its lease. Returns what was delivered, or None when the lease was lost (nothing is installed).
    `timeline` (where each chunk landed in `audio`) is given for jobs that deliver times or files
    besides their audio (scripts, subtitles, books)."""
    if not store.holds_lease(job_id, token):
        return None
    audio = finished_audio(audio, spec.sample_rate, spec.normalize, spec.speed)
    extras: list[StagedFile] = []
    try:
        staged, outputs = _stage(outbox, spec, audio, timeline, extras)
        info = replace(staged.info, outputs=outputs)

        stale = outbox.stale_extras(spec.name, {extra.target.name for extra in extras})

        def install() -> None:
            # The audio last: once it is there, everything the job delivers is.
            for extra in extras:
                outbox.install(extra)
            for path in stale:
                path.unlink(missing_ok=True)
            crash_point("after_audio", spec.name)

        recorded = store.finish_done(job_id, token, info, run, install=install)
    finally:
        for extra in extras:
            outbox.discard(extra)
    crash_point("after_done", spec.name)
    return info if recorded else None


def _stage(
    outbox: Outbox, spec: JobSpec, audio: np.ndarray, timeline: Timeline | None, extras: list[StagedFile]
) -> tuple[StagedAudio, Outputs | None]:
    """Stage the job's other files, then its audio, each appended to `extras` as it is staged (so
    the caller discards them whatever happens, and installs them in that order)."""
    rate = spec.sample_rate
    if timeline is None:
        staged = outbox.stage_audio(spec.name, spec.format, audio, rate)
        extras.append(staged)
        return staged, None
    timeline = timeline.scaled(len(audio))
    chapters = chapter_spans(spec, timeline, rate)
    subtitles, cues = None, 0
    if spec.subtitles is not None:
        text, cues = subtitle_text(spec, timeline, rate)
        extras.append(outbox.stage_bytes(spec.name, f".{spec.subtitles}", text.encode("utf-8")))
        subtitles = extras[-1].target.name
    files: list[str] = []
    if spec.chapter_files and chapters:
        width = max(2, len(str(len(chapters))))
        for number, piece in enumerate(chapter_audio(audio, chapters, rate), start=1):
            extras.append(outbox.stage_audio(spec.name, spec.format, piece, rate, part=f".ch{number:0{width}d}"))
            files.append(extras[-1].target.name)
    marks = chapter_marks(spec, chapters) if spec.format == "m4b" else []
    staged = outbox.stage_audio(spec.name, spec.format, audio, rate, chapters=marks)
    extras.append(staged)
    outputs = Outputs(
        segments=segment_spans(timeline, len(spec.script()), rate) if spec.segments is not None else (),
        chapters=chapters,
        subtitles=subtitles,
        cues=cues,
        chapter_files=tuple(files),
        chapter_chunks=chunks_per_chapter(spec, timeline),
    )
    return staged, outputs
