"""The original "Qwen3-TTS backend" API that ttsd grew out of, field for field: `POST /v1/tts`,
`GET /v1/voices`, `GET /v1/audio/{id}`, `GET /health`. What differs: nothing is lost across a
restart, 429 comes only when the model's durable queue is full, and `stream` works."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ttsd.audio import SPEED_RANGE
from ttsd.encoding import STREAM_FORMATS
from ttsd.http.answers import AUDIO_RESPONSE, as_base64, audio_response, read_audio
from ttsd.http.door import blocking, door_of
from ttsd.http.errors import HttpProblem
from ttsd.http.names import language_name, model_name
from ttsd.http.speech import finished_job, queue_request, streamed_audio, voice_fields
from ttsd.synth.voices import list_voices

router = APIRouter(tags=["original API"])
MAX_INLINE_BYTES = 32 * 1024**2
"""Audio larger than this is answered with its `audio_url` even in base64 mode: a JSON answer holds
it whole in memory, a third bigger."""
# The job field each request field becomes, the other way round: a refusal names what was sent.
REQUEST_FIELDS = {
    "speaker": "voice",
    "ref_audio": "voice",
    "voice": "voice",
    "instruct": "tone",
    "output": "request_id",
    "id": "request_id",
}


class TtsRequest(BaseModel):
    """`POST /v1/tts`, as the original service took it."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr
    model: StrictStr | None = None
    voice: StrictStr | None = Field(None, max_length=255)
    language: StrictStr | None = Field(None, max_length=100)
    tone: StrictStr | None = Field(None, max_length=2_000, description="A style instruction (the job's `instruct`)")
    # Its own list: an m4b cannot be streamed, and is made by job files and /v1/jobs.
    format: Literal[STREAM_FORMATS] = "wav"  # type: ignore[valid-type]
    sample_rate: StrictInt | None = Field(None, ge=8_000, le=192_000)
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1)
    speed: StrictFloat = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    request_id: StrictStr | None = Field(None, max_length=100, description="Also the output name in the outbox")
    stream: StrictBool = False


class TtsAnswer(BaseModel):
    """The original service's answer, plus the job's id."""

    request_id: str
    job_id: str
    audio_format: str
    sample_rate: int
    duration_sec: float
    audio_base64: str | None = None
    audio_url: str | None = None


def _job_of(request: TtsRequest, model: str, voice: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = {"text": request.text, "model": model, "format": request.format, "speed": request.speed}
    job.update(voice)  # a saved voice may bring its own model
    optional = {
        "language": language_name(request.language),
        "sample_rate": request.sample_rate,
        "seed": request.seed,
        "id": request.request_id,
    }
    job.update({key: value for key, value in optional.items() if value is not None})
    return job


@router.post("/v1/tts", response_model=TtsAnswer, summary="Speak a text (the original service's API)")
async def tts(request: Request, body: TtsRequest) -> Any:
    """Queue the text as a job and answer with its audio: inline (TTS_OUTPUT_MODE=base64) or as a URL
    (file), or as the audio itself, chunk by chunk, with `stream`."""
    door = door_of(request)
    model = model_name(body.model or door.settings.default_model, door.registry, door.settings.default_model)
    explicit = body.model is not None and body.model in door.registry
    voice = await blocking(voice_fields, door, model, body.voice, body.tone, explicit)
    job = await queue_request(door, _job_of(body, model, voice), body.request_id, REQUEST_FIELDS, body.stream)
    request_id = body.request_id or job.id
    if body.stream:
        return await streamed_audio(door, job, body.format, {"X-Request-Id": request_id})
    done = await finished_job(door, job)
    answer = TtsAnswer(
        request_id=request_id,
        job_id=done.id,
        audio_format=done.audio_format or body.format,
        sample_rate=done.sample_rate or 0,
        duration_sec=done.duration_s or 0.0,
    )
    inline = None
    if door.settings.output_mode == "base64":
        inline = await blocking(read_audio, door, done, MAX_INLINE_BYTES)
    if inline is None:
        answer.audio_url = f"/v1/audio/{done.id}"
    else:
        answer.audio_base64 = as_base64(inline)
    return answer


@router.get("/v1/voices", summary="Speakers and languages of each model")
async def voices(request: Request, model: str | None = None, refresh: bool = False) -> dict[str, Any]:
    """What `ttsd voices` lists."""
    door = door_of(request)
    settings = door.settings
    if model is not None and model not in door.registry:
        known = ", ".join(sorted(door.registry))
        raise HttpProblem(404, "unknown_model", f"model: no model named {model!r} (known: {known})", "model")
    listing = await blocking(list_voices, door.registry, settings.models_dir, settings.voices_cache, refresh)
    return {"voices": [entry.as_dict() for entry in listing if model in (None, entry.model)]}


@router.get(
    "/v1/audio/{audio_id}", summary="The audio of a done job (by job id or output name)", responses=AUDIO_RESPONSE
)
async def audio(request: Request, audio_id: str) -> Response:
    """The delivered file. The id is looked up in the queue, never used as a path."""
    door = door_of(request)
    job = await blocking(door.store.get, audio_id)
    return await audio_response(door, job)


@router.get("/health", summary="Whether the daemon serves, on what, and how much is waiting")
async def health(request: Request) -> dict[str, Any]:
    """The original fields (`status`, `device`, `models_loaded`, `uptime_sec`) plus the queue and workers."""
    door = door_of(request)
    workers = await blocking(door.workers)  # the supervisor's lock may be held while it starts a worker
    counts = await blocking(door.store.counts)
    totals: dict[str, int] = {}
    for by_state in counts.values():
        for state, count in by_state.items():
            totals[state] = totals.get(state, 0) + count
    devices = sorted({str(w["device"]) for w in workers if w.get("device")})
    return {
        "status": "ok",
        "device": devices[0] if len(devices) == 1 else (devices or None),
        "models_loaded": sorted({str(w["model"]) for w in workers if w.get("device")}),
        "uptime_sec": round(time.monotonic() - door.started, 1),
        "queue": {"queued": totals.get("queued", 0), "running": totals.get("running", 0), "by_model": counts},
        "workers": workers,
    }
