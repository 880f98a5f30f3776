"""What every route works with: the queue, the outbox, the submissions core and the watcher, handed
over by the daemon (or by a test) as one object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.http.watch import JobWatch
from ttsd.intake.requests import Submissions
from ttsd.jobqueue.protocols import FrontDoorQueue
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
    # Tells the model's worker that someone listens to the job: it then decodes its rows as they grow.
    listen: Callable[[str, str], None] = lambda model, job_id: None
    started: float = field(default_factory=time.monotonic)


def door_of(request: Request) -> FrontDoor:
    """The front door the app was built with."""
    door: FrontDoor = request.app.state.door
    return door


async def blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a call that touches the database or the disk off the event loop."""
    return await run_in_threadpool(function, *args)
