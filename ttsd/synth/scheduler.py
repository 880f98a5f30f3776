"""The chunk scheduler of one worker: which chunks, of which active jobs, share the next generate call.

A worker holds several jobs at once. For each call the scheduler picks up to `max_rows` chunks:

- **priority first**: a job of higher priority anchors the call before any other;
- **shortest remaining first, fairly**: among equal priorities the job with the least speech left
  anchors the call, so a short job that arrives while a long one runs is spoken at the next call
  instead of after the long job; a job passed over `STARVE_CALLS` calls in a row anchors the next
  one, so a stream of short jobs cannot starve a long one;
- **similar lengths together**: a call costs what its longest row costs, so the call is filled,
  one chunk per job in turn (a fair share), only with chunks expected to be no longer than the
  anchor's (`LENGTH_SLACK`, `SLACK_FRAMES`), and only with chunks that may share a call (same sampling settings);
- **alone when it must**: a seeded job's chunk is spoken by itself with its own derived seed (its
  take must not depend on its batch mates), and so is a chunk whose batch failed (to find the one
  that breaks it).

The scheduler does no I/O: the worker admits jobs, asks for calls, and reports each chunk back.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

STARVE_CALLS: Final = 4
"""Calls a job with work may be passed over before it anchors the next call."""
LENGTH_SLACK: Final = 1.25
SLACK_FRAMES: Final = 12.0
"""A chunk joins a call when it is expected to be at most `LENGTH_SLACK` times the anchor's length
plus `SLACK_FRAMES` (a second of speech: among short chunks, a call's fixed cost outweighs it)."""


@dataclass(frozen=True)
class Piece:
    """One chunk of one job, waiting to be spoken."""

    job_id: str
    index: int
    frames: float
    """Expected frames (ttsd.synth.pacing), for grouping and for the call's budget."""
    alone: bool = False
    """Spoken in a call by itself (a seeded job, or a chunk whose batch failed)."""


@dataclass
class _Active:
    """A job the worker holds, with its chunks still to speak and those inside a call."""

    job_id: str
    priority: int
    group: str
    """Jobs of one group may share a call (same model settings and sampling)."""
    order: int
    pending: list[Piece] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)
    passed_over: int = 0

    def remaining(self) -> float:
        return sum(piece.frames for piece in self.pending)

    def rank(self) -> tuple[int, bool, float, int]:
        return (-self.priority, self.passed_over < STARVE_CALLS, self.remaining(), self.order)


class ChunkScheduler:
    """Active jobs and their chunks; thread-safe (the worker reports chunks from a second thread)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._jobs: dict[str, _Active] = {}
        self._order = itertools.count()
        self._lock = threading.Lock()

    def admit(self, job_id: str, priority: int, group: str, pieces: Sequence[Piece]) -> None:
        """Hold a job with the chunks it still needs (possibly none: then it is complete at once)."""
        with self._lock:
            self._jobs[job_id] = _Active(job_id, priority, group, next(self._order), list(pieces))

    def next_call(self, limit: int | None = None, fresh_only: bool = False) -> list[Piece]:
        """The chunks of the next generate call (at most `limit`, else `max_rows`), marked as in
        flight; empty when nothing waits. With `fresh_only`, only jobs with no chunk in flight."""
        with self._lock:
            waiting = sorted(
                (job for job in self._jobs.values() if job.pending and not (fresh_only and job.in_flight)),
                key=_Active.rank,
            )
            if not waiting:
                return []
            anchor_job = waiting[0]
            anchor = anchor_job.pending[0]
            if anchor.alone:
                chosen = [anchor]
            else:
                mates = [job for job in waiting if job.group == anchor_job.group]
                longest = anchor.frames * LENGTH_SLACK + SLACK_FRAMES
                chosen = list(itertools.islice(_fill(mates, longest), limit or self.max_rows))
            for job in waiting:
                taken = [piece for piece in chosen if piece.job_id == job.job_id]
                job.passed_over = 0 if taken else job.passed_over + 1
                for piece in taken:
                    job.pending.remove(piece)
                    job.in_flight.add(piece.index)
            return chosen

    def peek(self) -> Piece | None:
        """The chunk that would anchor the next call, left waiting; None when nothing waits."""
        with self._lock:
            waiting = sorted((job for job in self._jobs.values() if job.pending), key=_Active.rank)
            return waiting[0].pending[0] if waiting else None

    def finished(self, piece: Piece) -> None:
        """A chunk of a call is spoken and kept."""
        with self._lock:
            job = self._jobs.get(piece.job_id)
            if job is not None:
                job.in_flight.discard(piece.index)

    def put_back(self, pieces: Sequence[Piece], alone: bool) -> None:
        """Chunks of a call that did not produce them go back to the front of their jobs' lines;
        with `alone`, each is then spoken by itself."""
        with self._lock:
            for piece in reversed(pieces):
                job = self._jobs.get(piece.job_id)
                if job is None:
                    continue
                job.in_flight.discard(piece.index)
                job.pending.insert(0, Piece(piece.job_id, piece.index, piece.frames, alone or piece.alone))

    def isolate(self, job_ids: Sequence[str]) -> None:
        """From now on each waiting chunk of these jobs is spoken alone."""
        with self._lock:
            for job in (self._jobs[job_id] for job_id in job_ids if job_id in self._jobs):
                job.pending = [Piece(p.job_id, p.index, p.frames, alone=True) for p in job.pending]

    def is_complete(self, job_id: str) -> bool:
        """Every chunk of the job is spoken and kept (it can be joined and delivered)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job is not None and not job.pending and not job.in_flight

    def drop(self, job_id: str) -> None:
        """Forget a job (delivered, failed, cancelled, or no longer leased to this worker)."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def holds(self, job_id: str) -> bool:
        """Whether the job is active here."""
        with self._lock:
            return job_id in self._jobs


def _fill(jobs: Sequence[_Active], longest: float) -> Iterator[Piece]:
    """Chunks no longer than `longest`: every chunk of a higher priority before any of a lower one,
    and within a priority one chunk per job per round, in the jobs' order (a fair share). A job's
    own chunks keep their order, so it resumes where it stopped."""
    for _priority, tier in itertools.groupby(jobs, key=lambda job: job.priority):
        fitting = [[piece for piece in job.pending if not piece.alone and piece.frames <= longest] for job in tier]
        for round_pieces in itertools.zip_longest(*fitting):
            yield from (piece for piece in round_pieces if piece is not None)
