"""A done job's audio as an HTTP client gets it: the delivered file, checked to be the job's own."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from fastapi.responses import StreamingResponse

from ttsd.encoding import MEDIA_TYPES, STREAM_FORMATS, media_type
from ttsd.fsutil import open_regular_file
from ttsd.http.door import FrontDoor, blocking
from ttsd.http.errors import HttpProblem
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

BLOCK_BYTES = 256 * 1024
AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the audio file, in the job's format",
        "content": {media: {} for media in MEDIA_TYPES.values()},
    }
}
"""How routes that answer with a done job's file describe it in the schema."""
SPEECH_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the audio, in the requested format (with stream_format sse: server-sent events)",
        "content": {media: {} for media in (*(MEDIA_TYPES[fmt] for fmt in STREAM_FORMATS), "text/event-stream")},
    }
}
"""How the speech route describes its answer: only formats that stream (no m4b)."""


REQUEST_FAULTS = frozenset(
    {
        "unknown_speaker",
        "unknown_language",
        "missing_reference",
        "bad_reference",
        "missing_voice",
        "damaged_voice",
        "voice_model_mismatch",
        "invalid_markup",
    }
)
"""Failures a job met because of what the request named (a speaker the model lacks, a voice that is
gone): the worker finds them, but they are the client's to fix, so they answer 400, not 500."""


def ended_problem(job: Job) -> HttpProblem:
    """Why a job has no audio to give (it failed, was cancelled, or is not done yet)."""
    if job.state == JobState.FAILED:
        status = 400 if job.error_code in REQUEST_FAULTS else 500
        return HttpProblem(status, job.error_code or "failed", f"job {job.id} failed: {job.error_message}")
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


def open_audio(door: FrontDoor, job: Job) -> tuple[BinaryIO, int]:
    """A done job's delivered file, opened (a regular file reached without a symlink), and its size."""
    try:
        handle = open_regular_file(audio_path(door, job))
    except OSError:
        raise HttpProblem(410, "audio_gone", f"the audio of job {job.id} cannot be read from the outbox") from None
    return handle, os.fstat(handle.fileno()).st_size


def read_audio(door: FrontDoor, job: Job, max_bytes: int) -> bytes | None:
    """A done job's delivered file as bytes, or None when it is over `max_bytes`."""
    handle, size = open_audio(door, job)
    with handle:
        return handle.read() if size <= max_bytes else None


async def file_blocks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """A file's bytes in blocks, each read off the event loop; the file is closed at the end."""
    try:
        while block := await blocking(handle.read, BLOCK_BYTES):
            yield block
    finally:
        handle.close()


async def audio_response(door: FrontDoor, job: Job) -> StreamingResponse:
    """A done job's file as the answer, in blocks: a long job's audio is never held in memory whole."""
    handle, size = await blocking(open_audio, door, job)
    headers = {"X-Job-Id": job.id, "Content-Length": str(size)}
    return StreamingResponse(file_blocks(handle), media_type=media_type(job.audio_format or "wav"), headers=headers)


def as_base64(data: bytes) -> str:
    """Audio bytes for a JSON answer."""
    return base64.b64encode(data).decode("ascii")
