"""Following jobs from the event loop: one thread reads every followed job in one query per tick and
wakes the requests whose job changed. Workers run in other processes and write the queue there, so
the queue is what is watched; a request never polls the database itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ttsd.jobqueue.protocols import FrontDoorQueue
from ttsd.jobqueue.queries import job_mark
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)

TICK_S = 0.02  # a finished job is seen within 20 ms; one indexed query per tick, only while someone follows


@dataclass
class _Follower:
    loop: asyncio.AbstractEventLoop
    changes: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    seen: tuple[object, ...] | None = None


def _hand(follower: _Follower, job: Job) -> None:
    # A closed event loop (the server is stopping) has nobody waiting any more.
    with contextlib.suppress(RuntimeError):
        follower.loop.call_soon_threadsafe(follower.changes.put_nowait, job)


class JobWatch(threading.Thread):
    """Wakes async followers of jobs when their queue rows change."""

    def __init__(self, store: FrontDoorQueue, stop_event: threading.Event, tick_s: float = TICK_S) -> None:
        super().__init__(name="http-watch", daemon=True)
        self.store = store
        self.stop_event = stop_event
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._followers: dict[str, list[_Follower]] = {}
        self._nudge = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self._nudge.wait(self.tick_s)
            self._nudge.clear()
            try:
                self.tick()
            except Exception:
                log.exception("http: reading followed jobs failed")

    def tick(self) -> None:
        """Read what changed of every followed job (a light query), then the whole rows of the jobs
        that changed for someone, and hand each follower its row."""
        with self._lock:
            ids = list(self._followers)
        if not ids:
            return
        marks = self.store.job_marks(ids)
        with self._lock:
            changed = {
                job_id
                for job_id, mark in marks.items()
                if any(follower.seen != mark for follower in self._followers.get(job_id, []))
            }
        jobs = self.store.jobs_by_id(changed) if changed else {}
        with self._lock:
            for job_id, job in jobs.items():
                mark = job_mark(job)
                for follower in self._followers.get(job_id, []):
                    if mark != follower.seen:
                        follower.seen = mark
                        _hand(follower, job)

    @asynccontextmanager
    async def subscription(self, job_id: str) -> AsyncIterator[asyncio.Queue[Job]]:
        """A queue that receives the job's row now and at each change, for as long as the block runs
        (waiting on it with a timeout is safe: nothing is lost when a wait is cancelled)."""
        follower = _Follower(asyncio.get_running_loop())
        with self._lock:
            self._followers.setdefault(job_id, []).append(follower)
        self._nudge.set()
        try:
            yield follower.changes
        finally:
            with self._lock:
                followers = self._followers.get(job_id, [])
                if follower in followers:
                    followers.remove(follower)
                if not followers:
                    self._followers.pop(job_id, None)

    async def follow(self, job_id: str) -> AsyncIterator[Job]:
        """The job's row now and at each change, until it is finished (the last row yielded is terminal)."""
        async with self.subscription(job_id) as changes:
            while True:
                job = await changes.get()
                yield job
                if job.state.terminal:
                    return

    async def finished(self, job_id: str, timeout_s: float) -> Job | None:
        """The job once finished, or None after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                async for job in self.follow(job_id):
                    if job.state.terminal:
                        return job
        except TimeoutError:
            return None
        return None
