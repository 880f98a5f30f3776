"""What every route works with: the queue, the outbox, the submissions core and the watcher, handed
over by the daemon (or by a test) as one object, and the errors every route answers alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.errors import JobNotFound, JobRejected, TtsdError
from ttsd.http.watch import JobWatch
from ttsd.intake.requests import QueueFull, Submissions
from ttsd.jobqueue.protocols import FrontDoorQueue
from ttsd.jobqueue.transitions import IllegalTransition
from ttsd.synth.chunk_files import ChunkFiles

T = TypeVar("T")


@dataclass(frozen=True)
class FrontDoor:
    """The daemon's parts the HTTP layer uses; nothing here knows about HTTP."""

    settings: Settings
    store: FrontDoorQueue
    outbox: Outbox
    submissions: Submissions
    watch: JobWatch
    chunk_files: ChunkFiles
    registry: Mapping[str, ModelEntry]
    workers: Callable[[], list[dict[str, Any]]]
    started: float = field(default_factory=time.monotonic)


def door_of(request: Request) -> FrontDoor:
    """The front door the app was built with."""
    door: FrontDoor = request.app.state.door
    return door


async def blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a call that touches the database or the disk off the event loop."""
    return await run_in_threadpool(function, *args)


class HttpProblem(TtsdError):
    """A request that cannot be served as asked, with the HTTP status that says so."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """One error shape for every route: OpenAI's (`error.message/type/param/code`), plus FastAPI's
    `detail`, which the original service's clients read."""
    kind = "invalid_request_error" if code not in ("internal", "queue_full") else code
    return {"error": {"message": message, "type": kind, "param": field, "code": code}, "detail": message}


_STATUS_OF: dict[type[TtsdError], int] = {
    JobRejected: 400,
    JobNotFound: 404,
    QueueFull: 429,
    IllegalTransition: 409,
}


def error_response(exc: TtsdError) -> JSONResponse:
    """The HTTP answer to one of ttsd's errors."""
    if isinstance(exc, HttpProblem):
        return JSONResponse(error_body(exc.code, str(exc), exc.field), status_code=exc.status)
    status = next((code for kind, code in _STATUS_OF.items() if isinstance(exc, kind)), 500)
    field = exc.field if isinstance(exc, JobRejected) else None
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    return JSONResponse(error_body(exc.code, str(exc), field), status_code=status, headers=headers)
