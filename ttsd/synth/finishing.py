"""Finishing jobs beside the synthesis: joining a job's chunks, encoding and delivering it take as
long as its audio is long (minutes for a book in M4B with chapter files), so long jobs are finished
in a thread of their own. The worker's other jobs go on being spoken, kept and delivered meanwhile
(a short job is finished at once, never queued behind a book)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec
from ttsd.synth.engine.base import DevicePlan

log = logging.getLogger(__name__)

Finish = Callable[[Job, JobSpec, DevicePlan | None], None]
INLINE_CHARS = 2_000
"""A job of at most this much text (a few minutes of audio: joined and encoded in well under a
second) is finished at once, in the caller's thread."""


class Finisher:
    """Finishes jobs whose chunks are all kept: at once, in the caller's thread, until `start`; from
    then until `close`, long ones are queued and finished in order by a thread of its own."""

    def __init__(self, finish: Finish, name: str = "finishing") -> None:
        self._finish = finish
        self._name = name
        self._jobs: queue.Queue[tuple[Job, JobSpec, DevicePlan | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Finish in a thread of its own from now on."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def put(self, job: Job, spec: JobSpec, plan: DevicePlan | None) -> None:
        """Finish `job`: now, or when it is long, once the long jobs put before it are finished."""
        if self._thread is None or len(spec.text) <= INLINE_CHARS:
            self._finish(job, spec, plan)
        else:
            self._jobs.put((job, spec, plan))

    def close(self) -> None:
        """Finish what was put, then stop the thread (and finish at once again)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            try:
                self._finish(*item)
            except Exception:  # a finish records its own failures; anything else must not stop the rest
                log.exception("finishing job %s failed", item[0].id)
