"""What the two speech APIs share: a request's fields -> a job in the queue -> its audio, whole or
streamed, waiting no longer than TTS_HTTP_WAIT_S (the job itself goes on either way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import StreamingResponse

from ttsd.catalog import ModelEntry
from ttsd.encoding import media_type
from ttsd.errors import JobRejected, TtsdError
from ttsd.http.answers import ended_problem
from ttsd.http.door import FrontDoor, blocking
from ttsd.http.errors import HttpProblem
from ttsd.http.names import speaker_name
from ttsd.http.streams import audio_stream, first_piece
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job
from ttsd.voicelib import SavedVoice, VoiceLibrary, voice_name_problem

log = logging.getLogger(__name__)


def voice_fields(
    door: FrontDoor, model: str, voice: str | None, instruct: str | None, explicit_model: bool = False
) -> dict[str, Any]:
    """The job fields a voice and an instruction make for this model's kind (`model`: a registry
    name, as `names.model_name` gives it). A saved voice of the library speaks as itself, on its own
    model, unless the client named a registry model that is not a Base model (`explicit_model`): a
    saved voice never takes over a speaker's name on a CustomVoice model. Otherwise a CustomVoice
    model speaks as a speaker (OpenAI voice names mapped), a VoiceDesign model as the instruction
    describes, a Base model clones the recording of that name in the inbox's voices/ folder. Reads
    the library: call it off the event loop."""
    entry: ModelEntry | None = door.registry.get(model)
    kind = entry.kind if entry is not None else "custom_voice"
    saved = _saved_voice(door, voice) if kind == "base" or not explicit_model else None
    if saved is not None:
        return {"voice": saved.name} if explicit_model else {"voice": saved.name, "model": saved.model}
    fields: dict[str, Any] = {}
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


def _saved_voice(door: FrontDoor, voice: str | None) -> SavedVoice | None:
    if not voice or voice_name_problem(voice):
        return None
    try:
        return VoiceLibrary(door.settings.saved_voices_dir).get(voice)
    except TtsdError:
        return None


STREAM_FIRST_CHARS = 100
"""A streamed request's first chunk is cut at the most natural boundary within this many characters
(a sentence or a clause): its first audio waits for that, not for a whole chunk of
TTS_MAX_TEXT_LENGTH, which continuous batching speaks beside the job's other chunks."""


class StreamEndedEarly(Exception):
    """A stream whose job failed or was cancelled after its first audio went out. Raised out of the
    body so the server breaks the connection: a client must not take a cut stream for a whole one."""


async def queue_request(
    door: FrontDoor, job: dict[str, Any], name: str | None, fields: Mapping[str, str], streamed: bool
) -> Job:
    """Queue a request's job (refused with 429 while its model's queue is full). `fields` names the
    request field each job field came from, so a refusal names what the client sent."""
    if streamed:
        job = {**job, "chunking": {"first_max_chars": STREAM_FIRST_CHARS}}
    try:
        submitted = await blocking(lambda: door.submissions.submit(job, name=name))
    except JobRejected as rejected:
        raise in_request_terms(rejected, fields) from None
    return submitted.job


def in_request_terms(rejected: JobRejected, fields: Mapping[str, str]) -> JobRejected:
    """A job's refusal, naming the request field that set the job field at fault."""
    field = rejected.field
    if field is None or field not in fields:
        return rejected
    message = str(rejected).removeprefix(f"{field}: ")
    return JobRejected(rejected.code, f"{fields[field]}: {message}", fields[field])


async def finished_job(door: FrontDoor, job: Job) -> Job:
    """Wait for the job; its audio is ready when this returns, else HttpProblem says why not."""
    finished = job if job.state.terminal else await door.watch.finished(job.id, door.settings.http_wait_s)
    if finished is None:
        raise _still_running(door, job)
    if finished.state != JobState.DONE:
        raise ended_problem(finished)
    return finished


def _still_running(door: FrontDoor, job: Job) -> HttpProblem:
    return HttpProblem(
        504,
        "still_running",
        f"job {job.id} has no audio yet after {door.settings.http_wait_s:g}s; "
        f"it goes on: follow it at /v1/jobs/{job.id}",
    )


async def streamed_audio(door: FrontDoor, job: Job, fmt: str, headers: dict[str, str]) -> StreamingResponse:
    """Chunked audio, sent from the moment the first of it exists (within TTS_HTTP_WAIT_S)."""
    stream = audio_stream(door, job)
    try:
        async with asyncio.timeout(door.settings.http_wait_s):
            first = await first_piece(stream)
    except TimeoutError:
        raise _still_running(door, job) from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        try:
            async for data in stream:
                yield data
        except HttpProblem as problem:
            log.warning("stream of job %s ended early: %s", job.id, problem)
            raise StreamEndedEarly(str(problem)) from None

    return StreamingResponse(body(), media_type=media_type(fmt), headers={"X-Job-Id": job.id, **headers})
