"""Following jobs from the event loop: one thread reads every followed job in one query per tick and
wakes the requests whose job changed. Workers run in other processes and write the queue there, so
the queue is what is watched; a request never polls the database itself."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ttsd.jobqueue.protocols import FrontDoorQueue
from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)

TICK_S = 0.02  # a finished job is seen within 20 ms; one indexed query per tick, only while someone follows


def _mark(job: Job) -> tuple[object, ...]:
    """What a follower is told about: a new state, a finished chunk, another attempt."""
    return (job.state, job.chunks_done, job.chunks_total, job.attempts, job.audio_file, job.error_code)


@dataclass
class _Follower:
    loop: asyncio.AbstractEventLoop
    changes: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    seen: tuple[object, ...] | None = None


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
        """Read every followed job once and hand each follower the rows that changed for it."""
        with self._lock:
            ids = list(self._followers)
        if not ids:
            return
        jobs = self.store.jobs_by_id(ids)
        with self._lock:
            for job_id, job in jobs.items():
                for follower in self._followers.get(job_id, []):
                    mark = _mark(job)
                    if mark != follower.seen:
                        follower.seen = mark
                        follower.loop.call_soon_threadsafe(follower.changes.put_nowait, job)

    async def follow(self, job_id: str) -> AsyncIterator[Job]:
        """The job's row now and at each change, until it is finished (the last row yielded is terminal)."""
        follower = _Follower(asyncio.get_running_loop())
        with self._lock:
            self._followers.setdefault(job_id, []).append(follower)
        self._nudge.set()
        try:
            while True:
                job = await follower.changes.get()
                yield job
                if job.state.terminal:
                    return
        finally:
            with self._lock:
                followers = self._followers.get(job_id, [])
                if follower in followers:
                    followers.remove(follower)
                if not followers:
                    self._followers.pop(job_id, None)

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

    def following(self) -> int:
        """How many jobs are followed now."""
        with self._lock:
            return len(self._followers)
