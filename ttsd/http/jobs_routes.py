"""Jobs over HTTP: the job-file schema in, the status document out; the same queue, names and
status files as the inbox, so a job dropped as a file can be followed here and the other way round."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ttsd.delivery.publish import publish
from ttsd.delivery.status import status_document
from ttsd.errors import JobRejected
from ttsd.http.answers import AUDIO_RESPONSE, audio_response
from ttsd.http.door import FrontDoor, blocking, door_of
from ttsd.http.errors import HttpProblem
from ttsd.intake.jobfile import decode_json, decode_text
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
LIST_LIMIT = 500


def links(job: Job) -> dict[str, str]:
    """Where to follow a job."""
    base = f"/v1/jobs/{job.id}"
    return {"status_url": base, "audio_url": f"{base}/audio", "events_url": f"{base}/events"}


@router.post("", status_code=202, summary="Queue a job (the job-file schema); answers at once")
async def submit_job(request: Request) -> JSONResponse:
    """The asynchronous form: the job is queued durably and the answer comes at once with its id and
    URLs. It is taken even when the model's queue is at TTS_MAX_QUEUE_SIZE (a queued row waits at no
    cost), so work is never refused for being too much."""
    door = door_of(request)
    raw = await request.body()
    obj = decode_json(decode_text(raw, door.settings.http_max_body_bytes))
    if not isinstance(obj, dict):
        raise JobRejected("not_an_object", f"a job must be a JSON object, not {type(obj).__name__}")
    submitted = await blocking(lambda: door.submissions.submit(obj, bounded=False))
    body = {**status_document(submitted.job), **links(submitted.job), "created": submitted.created}
    return JSONResponse(body, status_code=202 if submitted.created else 200)


@router.get("", summary="Jobs, newest first")
async def list_jobs(
    request: Request,
    state: JobState | None = None,
    since: Annotated[datetime | None, Query(description="Only jobs created at or after this moment (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT)] = 100,
) -> dict[str, Any]:
    """Jobs filtered by state and creation time, as status documents."""
    door = door_of(request)
    if since is not None:
        since = _as_utc(since)
    jobs = await blocking(door.store.jobs, state.value if state else None, None, since, limit)
    return {"jobs": [status_document(job) for job in jobs]}


def _as_utc(moment: datetime) -> datetime:
    """A moment without an offset is read as UTC, like the queue's own."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise HttpProblem(400, "invalid_field", f"since: {moment.isoformat()} is out of range", "since") from None


async def _job(door: FrontDoor, ref: str) -> Job:
    return await blocking(door.store.get, ref)


@router.get("/{job_ref}", summary="A job's status document (the same as its status file)")
async def get_job(request: Request, job_ref: str) -> dict[str, Any]:
    """The job by id, unique id prefix or output name."""
    door = door_of(request)
    job = await _job(door, job_ref)
    # Off the event loop: a book's document is built from a large spec and its chunk rows.
    return {**await blocking(status_document, job, door.store.chunks), **links(job)}


@router.get("/{job_ref}/audio", summary="A done job's audio file", responses=AUDIO_RESPONSE)
async def job_audio(request: Request, job_ref: str) -> Response:
    """The delivered file, in the job's format; 409 while it is not done."""
    door = door_of(request)
    job = await _job(door, job_ref)
    return await audio_response(door, job)


@router.delete("/{job_ref}", summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_ref: str) -> dict[str, Any]:
    """Cancel it (a running job's result is discarded); 409 when it already finished."""
    door = door_of(request)
    job = await _job(door, job_ref)

    def cancel() -> Job:
        door.store.cancel(job.id)
        return publish(door.store, door.outbox, job.id)

    return status_document(await blocking(cancel))


@router.get(
    "/{job_ref}/events",
    summary="Server-sent status documents until the job finishes",
    responses={200: {"description": "`status` events", "content": {"text/event-stream": {}}}},
)
async def job_events(request: Request, job_ref: str) -> StreamingResponse:
    """An event `status` with the status document at every change, the last one terminal."""
    door = door_of(request)
    job = await _job(door, job_ref)

    async def events() -> AsyncIterator[bytes]:
        async for current in door.watch.follow(job.id):
            document = await blocking(status_document, current, door.store.chunks)
            yield f"event: status\ndata: {json.dumps(document)}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
