"""A model's worker: it leases jobs, keeps them active, and runs generate calls over their chunks as
the scheduler picks them, so a job that arrives while others run joins at the next call, and each job
is finished (joined and delivered, in a thread of its own) the moment its own last chunk is kept.
Every finished chunk is kept (file + row) before its job is joined, so a job interrupted halfway
resumes where it stopped. With `overlap`, decoding and keeping one call run in a second thread while
the next call generates (the codec and the disk work then use the other core)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ttsd.errors import EngineError
from ttsd.joblog import job_extra
from ttsd.jobqueue.tables import Job
from ttsd.jobqueue.transitions import runs_alone
from ttsd.jobspec import JobSpec
from ttsd.synth import wire
from ttsd.synth.batch_size import BatchChoice
from ttsd.synth.context import WorkContext
from ttsd.synth.decoding import DecodeLane
from ttsd.synth.engine.stepping.engine import LoopUnavailable
from ttsd.synth.failures import SPACE_CHECK_S, SpaceWait, failure_of
from ttsd.synth.finishing import Finisher
from ttsd.synth.keeping import Keeper
from ttsd.synth.lease import LeaseHeartbeat
from ttsd.synth.ledger import CallLedger, Report
from ttsd.synth.pacing import expected_frames
from ttsd.synth.rendering import Generated, Renderer, Unit
from ttsd.synth.scheduler import ChunkScheduler, Piece
from ttsd.synth.streaming import Streaming

log = logging.getLogger(__name__)

ACTIVE_PER_ROW = 2
"""Jobs held per row of a call: enough to group similar lengths, few enough that `running` means being worked on."""
MIN_ACTIVE = 4
STREAM_ADMIT_S = 0.2
"""While a batch runs, how often the queue is asked for new jobs (unless woken by the supervisor)."""


@dataclass
class _Held:
    """A job leased to this worker."""

    job: Job
    spec: JobSpec
    units: dict[int, Unit] = field(default_factory=dict)


class Worker:
    """Serves one model's queue until `stop_event` is set; `wake` says new work may be there."""

    def __init__(
        self,
        model: str,
        context: WorkContext,
        stop_event: threading.Event,
        token: str | None = None,
        overlap: bool = False,
        report: Report = lambda event, fields: None,
    ) -> None:
        self.model = model
        self.context = context
        self.stop_event = stop_event
        self.token = token or f"{model}-{uuid.uuid4().hex}"
        self.overlap = overlap
        self.wake = threading.Event()
        self.poll_s = context.settings.queue_poll_s  # how often an idle worker looks at the queue unasked
        self.batch: BatchChoice | None = None
        self._report = report
        self._space = SpaceWait([context.outbox.root, context.chunks.root])
        self.keeper = Keeper(context, self.token, self._space)
        self.finisher = Finisher(self.keeper.finish)
        self.renderer = Renderer(model, context)
        fixed = context.settings.max_batch
        self.scheduler = ChunkScheduler(fixed if isinstance(fixed, int) else 1)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._state = "starting"
        self.calls = CallLedger(report)
        self._calls_only = False  # the engine speaks in generate calls only (official path, or the loop failed)
        self._streaming: Streaming | None = None
        self._next_admit = 0.0
        self._plan: dict[str, str] = {}

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, idle_exit_s: float | None = None) -> str:
        """Serve until stopped ("stopped") or, with `idle_exit_s`, until nothing was held or ready
        for that long ("idle"). On the way out the call in progress (or the rows running) is
        finished and kept, and the jobs still held go back to the queue uncounted."""
        keeping = DecodeLane(self) if self.overlap else None
        self.finisher.start()
        idle_since = time.monotonic()
        outcome = "stopped"
        try:
            beat = max(0.2, self.context.settings.lease_s / 4)
            with LeaseHeartbeat(self.context.store, self.token, beat, on_beat=lambda: self._report(wire.BEAT, {})):
                while not self.stop_event.is_set():
                    if self._step_safely(keeping):
                        idle_since = time.monotonic()
                        self._tell(wire.BUSY)
                        continue
                    if not self._held:
                        self._tell(wire.IDLE)
                        if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                            outcome = "idle"
                            break
                    self.context.publisher.settle()
                    self.wake.wait(timeout=self.poll_s)
                    self.wake.clear()
                if self._streaming is not None:
                    self._streaming.finish(keeping)
        finally:
            if keeping is not None:
                keeping.close()
            self.finisher.close()
            self._release()
        return outcome

    def _tell(self, state: str) -> None:
        """Report busy/idle to whoever watches (the supervisor), on changes only."""
        if state != self._state:
            self._state = state
            self._report(state, {})

    def work_once(self) -> bool:
        """Lease what is ready and speak and finish it all, leasing no more (tests); False: nothing ready."""
        with LeaseHeartbeat(self.context.store, self.token, max(0.2, self.context.settings.lease_s / 4)):
            if not self._admit():
                return False
            while self.step(None, admit=False):
                pass
        return True

    def step(self, keeping: DecodeLane | None, admit: bool = True) -> bool:
        """Admit newly queued jobs, forget lost ones, and run one generate call (or, with a running
        batch, one frame step); False when no chunk waited or ran."""
        streaming = self._streaming is not None and len(self._streaming) > 0
        admitted = 0
        if not streaming or self.wake.is_set() or time.monotonic() >= self._next_admit:
            self.wake.clear()  # before the claim: a wake during it is then not lost
            self._next_admit = time.monotonic() + STREAM_ADMIT_S
            admitted = self._admit() if admit else 0
            self._forget_lost()
        if not self._calls_only:
            ran = self._stream_step(keeping)
            if ran is not None:
                return ran or admitted > 0
        units = [unit for unit in map(self.unit_of, self.scheduler.next_call()) if unit is not None]
        if not units:
            return admitted > 0
        # Said before the call: if the worker dies in it, these jobs (and those still being kept)
        # are the ones charged; the others it held go back uncounted.
        call = self.call_started(units)
        try:
            self._ensure_batch(units[0])
            generated = replace(self.renderer.generate(units), number=call)
        except EngineError as error:
            self.call_failed(units, error)
            self.settle(call, len(units))
            return True
        if keeping is None:
            self.keep_call(generated)
        else:
            keeping.put(generated)
        return True

    def _stream_step(self, keeping: DecodeLane | None) -> bool | None:
        """A frame step of the running batch; None when this model speaks in calls instead."""
        if self._streaming is None:
            first = self.scheduler.peek()
            unit = None if first is None else self.unit_of(first)
            if unit is None:
                return False
            try:
                self._ensure_batch(unit)
                stream = self.renderer.open_stream()
            except EngineError as error:  # the model cannot load: its jobs fail as in a call
                self.call_failed([u for u in map(self.unit_of, self.scheduler.next_call()) if u is not None], error)
                return True
            if stream is None:
                self._calls_only = True
                return None
            self._streaming = Streaming(self, stream)
        try:
            return self._streaming.step(keeping)
        except LoopUnavailable:
            self._streaming, self._calls_only = None, True
            self.renderer.loop_off = True
            self._ready()
            # The official path seeds a whole call: seeded chunks must now be spoken alone.
            with self._lock:
                self.scheduler.isolate([job_id for job_id, held in self._held.items() if held.spec.seed is not None])
            return None

    def _step_safely(self, keeping: DecodeLane | None) -> bool:
        if not self._space.ready():
            self.stop_event.wait(SPACE_CHECK_S)
            return False
        try:
            return self.step(keeping)
        except Exception:  # failures are handled where they happen, per job: this keeps the worker alive
            log.exception("worker %s: unexpected error", self.model)
            return False

    # -- admission ------------------------------------------------------------------------------------

    def _admit(self) -> int:
        """Lease queued jobs while there is room; returns how many were leased. When full, a job
        more urgent than every held one still gets in: it must not wait for a whole book."""
        with self._lock:
            held = list(self._held.values())
        if any(runs_alone(h.job) for h in held):
            return 0  # a job that may have crashed a worker runs alone
        room = max(MIN_ACTIVE, ACTIVE_PER_ROW * self.scheduler.max_rows) - len(held)
        urgent = None if room > 0 else max(h.job.priority for h in held) + 1
        _, jobs = self.context.store.claim(
            self.model, max(room, 1), token=self.token, alone_ok=not held, min_priority=urgent
        )
        for job in jobs:
            try:
                self._take(job)
            except Exception as exc:
                log.exception("job %s: could not be taken", job.id, extra=job_extra(job))
                self._fail(job, failure_of(exc, "taking it"))
        return len(jobs)

    def _take(self, job: Job) -> None:
        self.keeper.publish(job.id)
        spec = JobSpec.model_validate_json(job.spec_json)
        held = _Held(job, spec)
        try:
            chunks = self.keeper.pending_chunks(job, spec, self.renderer)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
            self.keeper.fail(job, failure_of(exc, "planning its chunks"))
            return
        if chunks is None:
            self.keeper.discard(job, "it was cancelled or reclaimed")
            return
        for chunk, key in chunks:
            alone = spec.seed is not None and not self.renderer.seeds_rows_apart()
            piece = Piece(job.id, chunk.index, expected_frames(chunk.text), alone=alone)
            held.units[chunk.index] = Unit(job, spec, chunk, key, piece)
        with self._lock:
            self._held[job.id] = held
        self.scheduler.admit(job.id, job.priority, job.batch_key, [unit.piece for unit in held.units.values()])
        if self.scheduler.is_complete(job.id):
            self._deliver(held)

    def preload(self) -> None:
        """Load the model now, before any job asks for it (`TTS_PRELOAD_MODELS`); the batch size is
        still measured with the first real request. A model that cannot load is logged here and
        fails the jobs that need it."""
        try:
            with self.renderer.engine_errors(), self.context.engines.use(self.model) as engine:
                self._plan = engine.plan.as_dict()
        except EngineError as error:
            log.error("could not preload model %s: %s", self.model, error.message)
            return
        self._ready()

    def _ensure_batch(self, unit: Unit) -> None:
        """With `TTS_MAX_BATCH=auto`, measure the batch size once the model is loaded, with the
        first real request (valid for the model's kind by construction)."""
        if self.batch is not None:
            return
        self.batch, self._plan = self.renderer.batch_size(unit.spec)
        self.scheduler.max_rows = self.batch.size
        log.info("worker %s: batch size %d (%s)", self.model, self.batch.size, self.batch.reason)
        self._ready()

    def _ready(self) -> None:
        """Say how the model runs: device plan, engine, batch size (again when the engine changes)."""
        plan = {**self._plan, "engine": self.renderer.engine_label()}
        batch = None if self.batch is None else self.batch.as_dict()
        self._report(wire.READY, {"plan": plan, "batch": batch, "loaded": self.context.engines.loaded()})

    # -- calls ----------------------------------------------------------------------------------------

    def unit_of(self, piece: Piece) -> Unit | None:
        """The unit a scheduled piece stands for (None: its job is no longer held)."""
        with self._lock:
            held = self._held.get(piece.job_id)
        return None if held is None else held.units.get(piece.index)

    def call_started(self, units: Sequence[Unit]) -> int:
        """Number a call (or an admission into the running batch) and say which jobs it holds."""
        return self.calls.started([unit.job.id for unit in units])

    def settle(self, call: int, rows: int = 1) -> None:
        """Rows of a call are kept (or failed, or gone)."""
        self.calls.settle(call, rows)

    def keep_call(self, generated: Generated) -> None:
        """Decode a generated call and keep each take; deliver every job it completed."""
        self.keep_rows(generated, range(len(generated.units)))
        self.call_kept(generated)

    def call_kept(self, generated: Generated) -> None:
        """Every row of a call is kept: say so, and look again at the inbox (room may have opened)."""
        self.settle(generated.number, len(generated.units))
        self.context.on_batch_done()
        if not self._held:
            self.wake.set()  # the main loop then says "idle" now, not at its next poll

    def row_limit(self) -> tuple[int, int]:
        """Rows a running batch prefers, and the most it may hold (the memory bound)."""
        batch = self.batch
        return (self.scheduler.max_rows, self.scheduler.max_rows if batch is None else max(batch.room, batch.size))

    def keep_rows(self, generated: Generated, rows: Sequence[int]) -> None:
        """Decode some rows of a call and keep their takes."""
        units = [generated.units[i] for i in rows]
        try:
            wavs = self.renderer.decode(generated, rows)
        except EngineError as error:
            self.call_failed(units, error)
            return
        share = generated.seconds / len(generated.units)
        for index, unit, wav in zip(rows, units, wavs, strict=True):
            try:
                self._keep_take(unit, wav, generated.takes.capped[index], share)
            except Exception as exc:  # a take that cannot be kept fails its job only
                log.exception("job %s: could not keep chunk %d", unit.job.id, unit.chunk.index,
                              extra=job_extra(unit.job))  # fmt: skip
                self._fail(unit.job, failure_of(exc, "keeping a finished chunk"))

    def _keep_take(self, unit: Unit, wav: Any, capped: bool, synth_s: float) -> None:
        held = self.unit_of(unit.piece)
        if held is None:
            # Its job failed or was taken away mid-call; a sound take still serves a retry.
            if self.renderer.problem(unit, wav, capped) is None:
                self.renderer.remember(unit, wav)
            return
        try:
            wav = self.renderer.guarded(unit, wav, capped)
        except EngineError as error:
            self._fail(unit.job, error)
            return
        self.renderer.remember(unit, wav)
        try:
            kept = self.keeper.record_chunk(unit.job, unit.spec, unit.chunk, wav, synth_s, cache_hit=False)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this job's failure
            self._fail(unit.job, failure_of(exc, "keeping a finished chunk"))
            return
        if not kept:
            self._forget(unit.job.id)
            self.keeper.discard(unit.job, "it was cancelled or reclaimed")
            return
        self.scheduler.finished(unit.piece)
        if self.scheduler.is_complete(unit.job.id):
            with self._lock:
                complete = self._held.get(unit.job.id)
            if complete is not None:
                self._deliver(complete)

    def call_failed(self, units: list[Unit], error: EngineError) -> None:
        """A call's chunks failed together: a lone chunk fails its job, more are retried one by one."""
        if len(units) == 1:
            self._fail(units[0].job, error)
            return
        log.warning("batch of %d chunks failed (%s); retrying them one by one", len(units), error.message)
        self.scheduler.put_back([unit.piece for unit in units], alone=True)

    # -- outcomes -------------------------------------------------------------------------------------

    def _deliver(self, held: _Held) -> None:
        # Forgotten first: from here on the job is no longer this worker's to schedule or to lose.
        self._forget(held.job.id)
        self.finisher.put(held.job, held.spec, self.renderer.last_plan)

    def _fail(self, job: Job, error: EngineError) -> None:
        self._forget(job.id)
        self.keeper.fail(job, error)

    def _forget(self, job_id: str) -> None:
        self.scheduler.drop(job_id)
        with self._lock:  # as `listen` checks: a LISTEN racing this is kept before the drop or not at all
            self._held.pop(job_id, None)
            if (streaming := self._streaming) is not None:  # read once: the main thread may drop it
                streaming.drop_job(job_id)

    def _forget_lost(self) -> None:
        """Jobs cancelled or taken back since the last call are dropped before the next one."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        still = self.context.store.leased_ids(self.token)
        for job_id, lost in held.items():
            if job_id not in still and self.scheduler.holds(job_id):
                self._forget(job_id)
                self.keeper.discard(lost.job, "it was cancelled or reclaimed")

    def _release(self) -> None:
        """Give back every job still held: queued again, uncounted, finished chunks kept."""
        with self._lock:
            self._held.clear()
        for job_id in self.context.store.release_lease(self.token):
            self.scheduler.drop(job_id)
            log.info("job %s back to the queue (its worker stopped)", job_id, extra={"job_id": job_id})
            self.keeper.publish(job_id)

    def listen(self, job_id: str) -> None:
        """Someone listens to a held job (any thread): its rows write live audio until it leaves, see live.py."""
        with self._lock:
            if job_id in self._held and (streaming := self._streaming) is not None:
                streaming.listen(job_id)

    def held_jobs(self) -> list[str]:
        """The jobs leased to this worker now."""
        with self._lock:
            return list(self._held)
