"""What the two speech APIs share: a request's fields -> a job in the queue -> its audio, whole or
streamed, waiting no longer than TTS_HTTP_WAIT_S (the job itself goes on either way)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from ttsd.catalog import ModelEntry
from ttsd.encoding import media_type
from ttsd.errors import JobRejected
from ttsd.http.answers import audio_stream, ended_problem, first_piece
from ttsd.http.door import FrontDoor, HttpProblem, blocking
from ttsd.http.names import model_name, speaker_name
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)


def voice_fields(door: FrontDoor, model: str, voice: str | None, instruct: str | None) -> dict[str, Any]:
    """The job fields a voice and an instruction make for this model's kind: a CustomVoice model
    speaks as a speaker (OpenAI voice names mapped), a VoiceDesign model as the instruction
    describes, a Base model clones the recording of that name in the inbox's voices/ folder."""
    entry: ModelEntry | None = door.registry.get(model_name(model, door.registry, door.settings.default_model))
    fields: dict[str, Any] = {}
    kind = entry.kind if entry is not None else "custom_voice"
    if kind == "custom_voice":
        if voice:
            fields["speaker"] = speaker_name(voice)
        if instruct:
            fields["instruct"] = instruct
    elif kind == "voice_design":
        fields["instruct"] = instruct
    elif voice:
        fields["ref_audio"] = voice
    return fields


STREAM_FIRST_CHARS = 100
"""A speech request's first chunk is cut at the most natural boundary within this many characters
(a sentence or a clause): a streamed answer's first audio waits for that, not for a whole chunk
of TTS_MAX_TEXT_LENGTH, which continuous batching speaks beside the job's other chunks."""


async def queue_request(door: FrontDoor, job: dict[str, Any], name: str | None) -> Job:
    """Queue a request's job (refused with 429 while its model's queue is full)."""
    job = {**job, "chunking": {"first_max_chars": STREAM_FIRST_CHARS}}
    submitted = await blocking(lambda: door.submissions.submit(job, name=name))
    return submitted.job


async def finished_job(door: FrontDoor, job: Job) -> Job:
    """Wait for the job; its audio is ready when this returns, else HttpProblem says why not."""
    finished = job if job.state.terminal else await door.watch.finished(job.id, door.settings.http_wait_s)
    if finished is None:
        raise HttpProblem(
            504,
            "still_running",
            f"job {job.id} is not finished after {door.settings.http_wait_s:g}s; it goes on: "
            f"follow it at /v1/jobs/{job.id}",
        )
    if finished.state != JobState.DONE:
        raise ended_problem(finished)
    return finished


async def streamed_audio(door: FrontDoor, job: Job, fmt: str, headers: dict[str, str]) -> StreamingResponse:
    """Chunked audio: sent from the moment the first chunk exists."""
    stream = audio_stream(door, job)
    first = await first_piece(stream)

    async def body() -> AsyncIterator[bytes]:
        yield first
        try:
            async for data in stream:
                yield data
        except HttpProblem as problem:
            # The status line went out with the first audio: all that is left is to end early.
            log.warning("stream of job %s ended early: %s", job.id, problem)

    return StreamingResponse(body(), media_type=media_type(fmt), headers={"X-Job-Id": job.id, **headers})


def rejected(field: str, message: str) -> JobRejected:
    """A request field the job cannot take."""
    return JobRejected("invalid_field", f"{field}: {message}", field)
