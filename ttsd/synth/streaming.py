"""Continuous batching in a worker: one running batch that chunks join and leave at frame steps.

With ttsd's own loop (`TTS_ENGINE=ttsd`) a worker keeps one `Stream` open on its model. Before each
frame step the free rows are filled from the chunk scheduler (most urgent job first, similar lengths
together); a chunk that ends leaves at once and goes to decoding, so its row is free at the next
step. A job that arrives while the batch is full may still join, up to `HEADROOM` extra rows within
the batch size's memory limit: a short job starts within one step, not after a long chunk ends.
A job more urgent than the rows running (higher priority, or short beside long chunks) then steps
alone while they wait, so it speaks at the speed of a small batch, not of the whole one.

For crash attribution each admission is a "call": the jobs it brings are reported as generating, and
the call counts as kept once every row it brought is kept.

The rows of jobs someone listens to (`listen`) also write their audio as it grows, after each step
(`ttsd.synth.live`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from ttsd.errors import EngineError
from ttsd.faults import crash_point
from ttsd.joblog import job_extra
from ttsd.synth.engine.stepping.engine import LoopUnavailable, Spoken, Stream
from ttsd.synth.live import LiveRow, LiveRows
from ttsd.synth.pacing import frame_budget
from ttsd.synth.rendering import Generated, Unit
from ttsd.synth.scheduler import ChunkScheduler, Piece

if TYPE_CHECKING:
    from ttsd.synth.decoding import DecodeLane
    from ttsd.synth.rendering import Renderer

log = logging.getLogger(__name__)

HEADROOM: Final = 0.25
"""Extra rows, as a share of the batch size, for jobs that have no row running yet."""
PAUSE_FRAMES: Final = 150
"""A job of equal priority this short (12 s of speech) may have the others paused while it speaks."""
PAUSE_CREDIT: Final = 300
"""Steps of pause the others can owe at most (they earn one per step of everyone)."""


class StreamOwner(Protocol):
    """What the running batch asks of its worker."""

    scheduler: ChunkScheduler
    renderer: Renderer

    def unit_of(self, piece: Piece) -> Unit | None: ...

    def call_failed(self, units: list[Unit], error: EngineError) -> None: ...

    def call_started(self, units: Sequence[Unit]) -> int: ...

    def settle(self, call: int, rows: int = 1) -> None: ...

    def keep_call(self, generated: Generated) -> None: ...

    def row_limit(self) -> tuple[int, int]: ...


class Streaming:
    """A worker's running batch and the units in it."""

    def __init__(self, owner: StreamOwner, stream: Stream) -> None:
        self._owner = owner
        self._stream = stream
        self._units: dict[Hashable, tuple[Unit, int]] = {}
        """Per running row: its unit and the call (admission) it came in."""
        self._dropped: set[str] = set()
        self._listened: set[str] = set()
        """Jobs someone listens to, until they leave the worker (`drop_job`)."""
        self._live = LiveRows(stream, owner.renderer.context.chunks.save_live)
        self._lock = threading.Lock()
        self._alone = False
        self._credit = PAUSE_CREDIT

    def __len__(self) -> int:
        return len(self._stream)

    def drop_job(self, job_id: str) -> None:
        """Stop a job's rows at the next step, and stop listening to it (safe from any thread): the
        worker calls this for every job that leaves it."""
        with self._lock:
            self._dropped.add(job_id)
            self._listened.discard(job_id)

    def listen(self, job_id: str) -> None:
        """Someone listens to a job the worker holds: its rows write live audio from the next step
        until `drop_job` (safe from any thread)."""
        with self._lock:
            self._listened.add(job_id)

    def step(self, keeping: DecodeLane | None, fill: bool = True) -> bool:
        """Fill free rows (unless not `fill`: the worker is stopping), then one frame step; False
        when nothing runs or waits. Raises LoopUnavailable (its rows are back with the scheduler)
        when the loop is off for good."""
        try:
            with self._owner.renderer.engine_errors():
                self._apply_drops()
                if fill:
                    self._fill(keeping)
                if not len(self._stream):
                    return False
                spoken = self._stream.step()
        except LoopUnavailable:
            self._give_back(list(self._units))
            raise
        except EngineError as error:
            self._fail_running(error)
            return True
        self._count_step()
        self._hand_over(spoken, keeping)
        self._update_live()
        return True

    def _update_live(self) -> None:
        """The running rows of listened jobs decode what is new (rows that ended are forgotten)."""
        with self._lock:
            listened = set(self._listened)
        # Nobody listens in the usual case: then no row is looked at, as this runs at every step.
        running = (
            [LiveRow(tag, unit.job.id, unit.chunk.index) for tag, (unit, _) in self._units.items()] if listened else []
        )
        self._live.update(running, listened)

    def _count_step(self) -> None:
        """Pausing costs credit, a step of everyone earns it; out of credit, the paused rows resume."""
        if not self._stream.paused:
            self._credit = min(PAUSE_CREDIT, self._credit + 1)
            return
        self._credit -= 1
        if self._credit <= 0:
            self._stream.resume()

    def _fail_running(self, error: EngineError) -> None:
        """The batch failed as a whole (out of memory, say): its rows fail together, as a call's do."""
        running = list(self._units.values())
        self._units.clear()
        self._alone = False
        self._stream.abandon()
        self._owner.call_failed([unit for unit, _ in running], error)
        for _, call in running:
            self._owner.settle(call)

    def finish(self, keeping: DecodeLane | None) -> None:
        """Stopping: the rows already generating end and are kept (no new ones join), as a call in
        progress would be; the supervisor kills the worker if that outlasts its grace period."""
        while len(self._stream):
            try:
                self.step(keeping, fill=False)
            except Exception:
                log.exception("could not finish the rows running")
                return

    # -- joining --------------------------------------------------------------------------------

    def _fill(self, keeping: DecodeLane | None) -> None:
        if self._alone:
            return  # a row that must run alone is running
        preferred, limit = self._owner.row_limit()
        running = len(self._stream)
        free = preferred - running
        fresh_only = free <= 0
        if fresh_only:
            free = min(limit - running, max(1, round(preferred * HEADROOM)) - (running - preferred))
        if free <= 0:
            return
        scheduler = self._owner.scheduler
        pieces = scheduler.next_call(limit=free, fresh_only=fresh_only)
        if not pieces:
            return
        if pieces[0].alone and running:
            scheduler.put_back(pieces, alone=True)  # waits for the batch to drain
            return
        units = [unit for unit in map(self._owner.unit_of, pieces) if unit is not None]
        if units:
            self._admit(units, alone=pieces[0].alone, keeping=keeping)

    def _admit(self, units: list[Unit], alone: bool, keeping: DecodeLane | None) -> None:
        renderer = self._owner.renderer
        for unit in units:
            crash_point("synthesis", unit.spec.name)
        tags = [(unit.job.id, unit.chunk.index) for unit in units]
        try:
            requests = [renderer.row_request(unit) for unit in units]
        except EngineError as error:  # a reference file gone since the job was taken, say
            self._owner.call_failed(units, error)
            return
        budgets = [frame_budget([unit.chunk.text], renderer.max_frames) for unit in units]
        call = self._owner.call_started(units)
        try:
            with renderer.engine_errors():
                spoken = self._stream.admit(tags, requests, units[0].spec.generation.as_kwargs(), budgets)
        except LoopUnavailable:
            self._owner.scheduler.put_back([unit.piece for unit in units], alone=False)
            self._owner.settle(call, len(units))
            self._give_back(list(self._units))
            raise
        except EngineError as error:
            self._owner.call_failed(units, error)
            self._owner.settle(call, len(units))
            return
        for tag, unit in zip(tags, units, strict=True):
            self._units[tag] = (unit, call)
        self._alone = alone
        self._hand_over(spoken, keeping)
        self._maybe_pause_others(units)

    def _maybe_pause_others(self, units: list[Unit]) -> None:
        """A job that just joined steps alone with its chunks while the others wait, when it is more
        urgent: of higher priority, or of equal priority and short (at most `PAUSE_FRAMES` expected
        frames, at most half what any other row still has to speak). A batch's step costs more the
        more rows it has (on a CPU or an Apple GPU nearly in proportion), so a short job would
        otherwise speak at the speed of the whole batch. The others' wait is paid from a credit
        earned by their own steps, so they get at least half of all steps."""
        joined = {unit.job.id for unit in units}
        spoken = self._stream.frames()
        others = [(unit, spoken.get(tag, 0)) for tag, (unit, _) in self._units.items() if unit.job.id not in joined]
        if not others or self._stream.paused:
            return
        frames = sum(unit.piece.frames for unit in units)
        priority, other_priority = min(u.job.priority for u in units), max(u.job.priority for u, _ in others)
        shortest_left = min(unit.piece.frames - done for unit, done in others)
        short = priority == other_priority and frames <= PAUSE_FRAMES and 2 * frames <= shortest_left
        if (priority > other_priority or short) and self._credit >= frames:
            self._stream.pause(running=[tag for tag, (unit, _) in self._units.items() if unit.job.id in joined])

    # -- leaving --------------------------------------------------------------------------------

    def _hand_over(self, spoken: Sequence[Spoken], keeping: DecodeLane | None) -> None:
        for row in spoken:
            unit, call = self._units.pop(row.tag)
            log.info("spoke %s#%d: %d frames in %.2fs (%d rows running)", unit.job.name, unit.chunk.index,
                     row.takes.frames[0], row.wall_s, len(self._stream), extra=job_extra(unit.job))  # fmt: skip
            generated = Generated([unit], row.takes, row.seconds, number=call)
            if keeping is None:
                self._owner.keep_call(generated)
            else:
                keeping.put(generated)
        if not self._units:
            self._alone = False

    def _apply_drops(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, set()
        if not dropped:
            return
        gone = [tag for tag, (unit, _) in self._units.items() if unit.job.id in dropped]
        if gone:
            self._stream.drop(gone)  # raises before anything is dropped: the batch stays whole
            for tag in gone:
                self._owner.settle(self._units.pop(tag)[1])
            if not self._units:
                self._alone = False  # the row that ran alone was dropped: the batch is free again

    def _give_back(self, tags: list[Any]) -> None:
        running = [self._units.pop(tag) for tag in tags]
        self._alone = False
        self._owner.scheduler.put_back([unit.piece for unit, _ in running], alone=False)
        for _, call in running:
            self._owner.settle(call)
