"""A job's audio as an HTTP client gets it: the delivered file, or a stream that sends each chunk as
soon as it is made (the pieces are cut exactly as the delivered file joins them, so a stream and the
file hold the same audio)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttsd.audio import change_speed, chunk_piece
from ttsd.encoding import StreamEncoder, decode_file
from ttsd.fsutil import read_regular_file
from ttsd.http.door import FrontDoor, HttpProblem, blocking
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec

MAX_AUDIO_BYTES = 2 * 1024**3


def ended_problem(job: Job) -> HttpProblem:
    """Why a job has no audio to give (it failed, was cancelled, or is not done yet)."""
    if job.state == JobState.FAILED:
        return HttpProblem(500, job.error_code or "failed", f"job {job.id} failed: {job.error_message}")
    if job.state == JobState.CANCELLED:
        return HttpProblem(409, "cancelled", f"job {job.id} was cancelled")
    return HttpProblem(409, "not_done", f"job {job.id} is {job.state}: its audio is not made yet")


def audio_path(door: FrontDoor, job: Job) -> Path:
    """The delivered file of a done job that still owns its name; HttpProblem otherwise. The path is
    the one the queue recorded for the job, never anything a request spelled."""
    if job.state != JobState.DONE or job.audio_file is None:
        raise ended_problem(job)
    newest = door.store.newest_named(job.name, fold=door.outbox.folds_names)
    if newest is not None and newest.id != job.id:
        raise HttpProblem(410, "replaced", f"job {job.id}'s audio was replaced by job {newest.id} of the same name")
    path = door.outbox.root / job.audio_file
    if path.parent != door.outbox.root or not path.is_file() or path.is_symlink():
        raise HttpProblem(410, "audio_gone", f"the audio of job {job.id} is no longer in the outbox")
    return path


def read_audio(door: FrontDoor, job: Job) -> bytes:
    """The bytes of a done job's delivered file (regular files only)."""
    try:
        return read_regular_file(audio_path(door, job), MAX_AUDIO_BYTES)
    except OSError as exc:
        raise HttpProblem(410, "audio_gone", f"the audio of job {job.id} cannot be read: {exc}") from exc


def as_base64(data: bytes) -> str:
    """Audio bytes for a JSON answer."""
    return base64.b64encode(data).decode("ascii")


@dataclass
class _Progress:
    next_index: int = 0
    sent_samples: int = 0
    rows: list[ChunkRow] | None = None


async def first_piece(stream: AsyncIterator[bytes]) -> bytes:
    """Wait for a stream's first bytes, so a job that fails before any audio exists is still an error
    status rather than a 200 with an empty body."""
    async for data in stream:
        if data:
            return data
    return b""


async def audio_stream(door: FrontDoor, job: Job) -> AsyncIterator[bytes]:
    """The job's audio, encoded in its own format, chunk by chunk as its chunks are finished.

    A job already done is its delivered file, byte for byte. Chunk files are the worker's and go
    when the job is delivered: whatever was not read by then comes from the delivered file."""
    spec = JobSpec.model_validate_json(job.spec_json)
    encoder = StreamEncoder(spec.format, spec.sample_rate)
    progress = _Progress()
    async for current in door.watch.follow(job.id):
        if current.state in (JobState.FAILED, JobState.CANCELLED):
            raise ended_problem(current)
        if current.state == JobState.DONE and progress.next_index == 0 and progress.rows is None:
            yield await blocking(read_audio, door, current)
            return
        for piece in await blocking(_ready_pieces, door, current, spec, progress):
            yield encoder.feed(piece)
        if current.state == JobState.DONE:
            if progress.rows is None or progress.next_index < len(progress.rows):
                yield encoder.feed(await blocking(_rest_of_file, door, current, spec, progress))
            yield encoder.finish()
            return


def _ready_pieces(door: FrontDoor, job: Job, spec: JobSpec, progress: _Progress) -> list[np.ndarray]:
    """Pieces of the chunks finished since the last look, in order; stops at the first chunk whose
    file is not there (yet, or any more)."""
    if progress.rows is None and job.chunks_total:
        rows = door.store.chunks(job.id)
        progress.rows = rows if rows else None
    pieces: list[np.ndarray] = []
    rows = progress.rows or []
    while progress.next_index < len(rows):
        row = rows[progress.next_index]
        # A chunk file is written whole (atomically) before its chunk is recorded done: there is one
        # exactly when the chunk is finished, in whatever order the batch finishes them.
        audio = door.chunk_files.load(job.id, row.index)
        if audio is None:
            break
        piece = chunk_piece(audio, row.pause_after_ms, spec.sample_rate, alone=len(rows) == 1)
        piece = change_speed(piece, spec.sample_rate, spec.speed)
        pieces.append(piece)
        progress.next_index += 1
        progress.sent_samples += len(piece)
    return pieces


def _rest_of_file(door: FrontDoor, job: Job, spec: JobSpec, progress: _Progress) -> np.ndarray:
    whole = decode_file(audio_path(door, job), spec.format, spec.sample_rate)
    return whole[progress.sent_samples :]
