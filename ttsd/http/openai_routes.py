"""OpenAI's speech API (`POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`), so the
clients people point at local TTS servers (Open WebUI, SillyTavern, Home Assistant through
wyoming_openai, Pipecat, LiveKit agents, the `openai` package itself) speak through ttsd's queue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from ttsd.audio import SPEED_RANGE
from ttsd.http.answers import SPEECH_RESPONSE, as_base64
from ttsd.http.door import FrontDoor, blocking, door_of
from ttsd.http.errors import HttpProblem, error_body
from ttsd.http.names import OPENAI_MODELS, OPENAI_VOICES, language_name, model_name
from ttsd.http.speech import queue_request, streamed_audio, voice_fields
from ttsd.http.streams import audio_stream
from ttsd.jobqueue.tables import Job
from ttsd.synth.voices import list_voices

router = APIRouter(tags=["OpenAI speech API"])
DELTA_BYTES = 64 * 1024
"""The most audio one `speech.audio.delta` event carries (a done job's whole file would be one)."""
# The job field each request field becomes, the other way round: a refusal names what was sent.
REQUEST_FIELDS = {
    "text": "input",
    "speaker": "voice",
    "ref_audio": "voice",
    "voice": "voice",
    "instruct": "instructions",
    "format": "response_format",
}


class VoiceId(BaseModel):
    """A voice given as an object, as newer OpenAI clients may."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr = Field(max_length=255)


class SpeechRequest(BaseModel):
    """OpenAI's `CreateSpeechRequest`, plus `language` and `seed` as other Qwen3-TTS servers take them."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(max_length=200)
    input: StrictStr
    voice: StrictStr | VoiceId = Field("alloy")
    instructions: StrictStr | None = Field(None, max_length=4_096)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: StrictFloat = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    stream_format: Literal["audio", "sse"] = "audio"
    language: StrictStr | None = Field(None, max_length=100)
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1)


def _job_of(door: FrontDoor, body: SpeechRequest) -> dict[str, Any]:
    model = model_name(body.model, door.registry, door.settings.default_model)
    voice = body.voice.id if isinstance(body.voice, VoiceId) else body.voice
    job: dict[str, Any] = {"text": body.input, "model": model, "format": body.response_format, "speed": body.speed}
    job.update(voice_fields(door, model, voice, body.instructions, explicit_model=body.model in door.registry))
    if body.language is not None:
        job["language"] = language_name(body.language)
    if body.seed is not None:
        job["seed"] = body.seed
    return job


@router.post("/v1/audio/speech", summary="Speak a text (OpenAI's speech API)", responses=SPEECH_RESPONSE)
async def speech(request: Request, body: SpeechRequest) -> StreamingResponse:
    """The audio in `response_format`, sent chunk by chunk as the job's chunks are made (`audio`), or
    as `speech.audio.delta` events and a closing `speech.audio.done` (`sse`)."""
    door = door_of(request)
    job = await queue_request(door, await blocking(_job_of, door, body), None, REQUEST_FIELDS, streamed=True)
    if body.stream_format == "sse":
        events = _events(door, job, len(body.input))
        return StreamingResponse(events, media_type="text/event-stream", headers={"X-Job-Id": job.id})
    return await streamed_audio(door, job, body.response_format, {})


async def _events(door: FrontDoor, job: Job, characters: int) -> AsyncIterator[bytes]:
    try:
        async for data in audio_stream(door, job):
            for start in range(0, len(data), DELTA_BYTES):
                delta = {"type": "speech.audio.delta", "audio": as_base64(data[start : start + DELTA_BYTES])}
                yield f"data: {json.dumps(delta)}\n\n".encode()
    except HttpProblem as problem:
        yield f"data: {json.dumps({'type': 'error', **error_body(problem.code, str(problem))})}\n\n".encode()
        return
    # ttsd counts no tokens: the input's characters stand in, as OpenAI bills speech by characters.
    usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
    yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n".encode()


@router.get("/v1/models", summary="Models, by ttsd's names and OpenAI's")
async def models(request: Request) -> dict[str, Any]:
    """Every registry model, then the OpenAI names that map onto them."""
    door = door_of(request)
    names = [*door.registry, *OPENAI_MODELS]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ttsd"} for name in names],
    }


@router.get("/v1/audio/voices", summary="Voices: OpenAI's names, Qwen speakers and reference recordings")
async def audio_voices(request: Request) -> dict[str, Any]:
    """OpenAI's voice names (with the speaker each maps to), each model's speakers, and the recordings
    in the inbox's voices/ folder that Base models clone."""
    door = door_of(request)
    settings = door.settings
    listing = await blocking(list_voices, door.registry, settings.models_dir, settings.voices_cache, False)
    speakers = sorted({speaker for entry in listing for speaker in entry.speakers})
    recordings = await blocking(_recordings, settings.voices_dir)
    voices = [
        *({"id": name, "name": name, "kind": "openai", "speaker": speaker} for name, speaker in OPENAI_VOICES.items()),
        *({"id": name, "name": name, "kind": "speaker"} for name in speakers),
        *({"id": name, "name": name, "kind": "recording"} for name in recordings),
    ]
    return {"voices": voices}


def _recordings(folder: Path) -> list[str]:
    """The reference recordings a Base model can clone: the files in the inbox's voices/ folder."""
    return sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
