"""A worker's running batch (continuous batching, `TTS_ENGINE=ttsd`) on a real tiny LoopEngine.

The worker runs over a real queue, outbox and chunk files, and the engine is ttsd's own loop on the
tiny checkpoint (nothing mocked where the point is the loop): chunks join free rows at frame steps,
a job with no row running may take headroom when the batch is full, rows that end go to keeping at
once, and each admission is a call in the worker's ledger. The tests drive `Worker.step` one frame
step at a time and watch what the worker reports (`generating` / `kept`), what the queue says, and
the rows in the batch. Also: cancelling mid-flight, the fallback to the official path when the loop
fails on a device (stepping, or admitting next to running rows), a row running alone whose job is
cancelled, seeded jobs sharing the batch, and `TTS_ENGINE=qwen-tts` speaking in calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import soundfile as sf

import ttsd.synth.worker as worker_module
from tests.support.fakes import scratch_dir
from ttsd.catalog import ModelEntry, build_registry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.errors import EngineError
from ttsd.intake.jobfile import JobDefaults, parse_object
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec
from ttsd.synth import wire
from ttsd.synth.batch_size import BatchChoice
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.chunking import split_text
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import DevicePlan, Engine, SynthesisRequest, Takes
from ttsd.synth.engine.pool import EnginePool
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.stepping import batch as batch_module
from ttsd.synth.engine.stepping.engine import LoopEngine
from ttsd.synth.engine.tiny_eos import paced_frames
from ttsd.synth.rendering import Unit
from ttsd.synth.worker import Worker

MODEL = "tiny"
FULL = DevicePlan("cpu", "float32", "sdpa")
RATE = 24_000
SAMPLES_PER_FRAME = 1920
"""The tiny codec, like the real one, makes 80 ms of audio per frame (12.5 frames a second)."""
REGISTRY = build_registry({})
DEFAULTS = JobDefaults(
    default_model=MODEL,
    default_sample_rate=RATE,
    max_text_length=600,
    max_job_chars=200_000,
    max_file_bytes=4 * 1024**2,
    registry=REGISTRY,
)
# Sentences of about 40 characters: with chunks of at most 50, one chunk each, 31 to 37 frames long.
SENTENCES = (
    "One morning the river was high and loud.",
    "The boats stayed tied at the dock all day.",
    "Children watched the water from the bridge.",
    "By evening the rain had finally stopped.",
)
BY_SENTENCE = {"max_chars": 50}
STEP_TIMEOUT_S = 60.0
"""A bound on any run of steps (far above the few seconds each takes), so a stuck worker fails."""


@pytest.fixture(scope="module", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


@pytest.fixture(scope="module")
def loop_engine(tiny_models: Path) -> Iterator[LoopEngine]:
    """ttsd's loop on the tiny CustomVoice checkpoint, rows ended at a text-paced length; shared by
    the tests that leave its loop on."""
    engine = LoopEngine.load(MODEL, "custom_voice", tiny_models / MODEL, FULL, "paced")
    try:
        yield engine
    finally:
        engine.close()


Event = tuple[str, dict[str, Any]]


@dataclass
class Rig:
    """A worker of the tiny model over a real store, outbox and chunk files in a temp folder."""

    store: Store
    outbox: Outbox
    chunks: ChunkFiles
    worker: Worker
    events: list[Event]
    """What the worker reported, with the test's own marks (`step`, `row`, ...) in between."""
    finished: list[str] = field(default_factory=list)
    """Job ids in the order they reached a final state."""

    def add(self, text: str, name: str, **fields: Any) -> Job:
        result = self.store.enqueue(parse_object({"text": text, **fields}, name, DEFAULTS))
        assert result.created
        return result.job

    def job(self, job: Job) -> Job:
        return self.store.get(job.id)

    def done(self, job: Job) -> bool:
        return self.job(job).state == JobState.DONE

    def rows(self) -> list[tuple[str, int]]:
        """(job id, chunk index) of every row running in the batch now."""
        streaming = self.worker._streaming
        tags = [] if streaming is None else streaming._stream.tags()
        return sorted(cast("tuple[str, int]", tag) for tag in tags)

    def calls(self, event: str = wire.GENERATING) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]

    def open_calls(self) -> dict[int, list[str]]:
        """Calls reported generating and not yet kept: number -> jobs."""
        kept = {fields["call"] for fields in self.calls(wire.KEPT)}
        return {f["call"]: f["jobs"] for f in self.calls(wire.GENERATING) if f["call"] not in kept}

    def call_of(self, job: Job) -> int:
        """The number of the one call that brought `job`'s rows."""
        numbers = [f["call"] for f in self.calls(wire.GENERATING) if job.id in f["jobs"]]
        assert len(numbers) == 1, f"{job.name}: calls {numbers}"
        return int(numbers[0])

    def step(self) -> bool:
        ran = self.worker.step(None)
        self.events.append(("step", {"rows": len(self.rows())}))
        return ran

    def steps(self, count: int) -> None:
        for _ in range(count):
            assert self.step(), "the batch went idle"

    def step_until(self, condition: Callable[[], bool]) -> int:
        """Step until `condition` holds (it must before the worker runs out of work)."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        steps = 0
        while not condition():
            assert time.monotonic() < deadline, "the condition never came true"
            assert self.step(), f"the worker went idle, holding {self.worker.held_jobs()}"
            steps += 1
        return steps

    def drain(self) -> int:
        """Step until the worker has nothing left to run; it must then hold no job."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        steps = 0
        while self.step():
            assert time.monotonic() < deadline, "the worker never ran out of work"
            steps += 1
        assert not self.worker.held_jobs(), f"the worker went idle holding {self.worker.held_jobs()}"
        return steps

    def max_rows(self) -> int:
        return max((fields["rows"] for name, fields in self.events if name == "step"), default=0)


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[MakeRig]:
    """Rigs whose engine pool hands out `engine` (any number per test, each with its own folders)."""
    stores: list[Store] = []
    with contextlib.ExitStack() as folders:
        root = folders.enter_context(scratch_dir(tmp_path))

        def make(engine: Engine, /, **settings: Any) -> Rig:
            home = root / f"rig{len(stores)}"
            options: dict[str, Any] = {"max_batch": 4, "max_attempts": 3, "lease_s": 60.0, **settings}
            config = Settings(inbox=home / "inbox", outbox=home / "outbox", state_dir=home / "state", **options)
            store = Store(config.db_path)
            stores.append(store)
            outbox = Outbox(config.outbox)
            chunks = ChunkFiles(config.state_dir / "chunks")
            events: list[Event] = []
            finished: list[str] = []

            def load(_entry: ModelEntry) -> Engine:
                return engine

            context = WorkContext(
                settings=config,
                store=store,
                outbox=outbox,
                publisher=StatusPublisher(store, outbox),
                engines=EnginePool(REGISTRY, load, idle_s=600),
                voices_dir=config.inbox / "voices",
                chunks=chunks,
                registry=REGISTRY,
                on_job_finished=lambda job: finished.append(job.id),
            )
            worker = Worker(MODEL, context, threading.Event(), report=lambda event, f: events.append((event, f)))
            return Rig(store, outbox, chunks, worker, events, finished)

        yield make
        for store in stores:
            store.close()


def spy_rows(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> dict[int, list[tuple[str, int]]]:
    """Record each call's rows (call number -> (job id, chunk index)) and mark each kept row in
    `rig.events` as ("row", {"job", "index"})."""
    rows: dict[int, list[tuple[str, int]]] = {}
    worker = rig.worker
    started, record = worker.call_started, worker.keeper.record_chunk

    def call_started(units: Sequence[Unit]) -> int:
        call = started(units)
        rows[call] = [(unit.job.id, unit.chunk.index) for unit in units]
        return call

    def record_chunk(job: Job, *args: Any, **kwargs: Any) -> bool:
        kept = record(job, *args, **kwargs)
        rig.events.append(("row", {"job": job.id, "index": args[1].index, "kept": kept}))
        return kept

    monkeypatch.setattr(worker, "call_started", call_started)
    monkeypatch.setattr(worker.keeper, "record_chunk", record_chunk)
    return rows


def assert_every_call_settled(events: Sequence[Event]) -> None:
    """Every call reported generating is reported kept once, after it started, and nothing else is."""
    started = [fields["call"] for name, fields in events if name == wire.GENERATING]
    kept = [fields["call"] for name, fields in events if name == wire.KEPT]
    assert started == sorted(set(started)), "calls are numbered in order, once each"
    assert sorted(kept) == started, f"calls started {started}, kept {kept}"
    position = {(name, fields.get("call")): i for i, (name, fields) in enumerate(events)}
    for call in started:
        assert position[(wire.GENERATING, call)] < position[(wire.KEPT, call)]


def chunk_texts(text: str, max_chars: int = 600) -> list[str]:
    return [chunk.text for chunk in split_text(text, max_chars)]


def paced_seconds(texts: Sequence[str], seed: int | None = None) -> list[float]:
    """What the tiny model speaks for each chunk, alone (paced by the row's seed, else seed 0)."""
    return [
        paced_frames([text], None if seed is None else seed + i)[0] * SAMPLES_PER_FRAME / RATE
        for i, text in enumerate(texts)
    ]


def planned(rig: Rig, job: Job) -> tuple[list[str], list[int], int | None]:
    """A job's chunk texts and pauses (ms) as the worker plans them, and its seed."""
    spec = JobSpec.model_validate_json(rig.job(job).spec_json)
    chunks = split_text(spec.text, spec.chunk_max_chars, spec.gap_ms)
    return [chunk.text for chunk in chunks], [chunk.pause_after_ms for chunk in chunks], spec.seed


def assert_delivered(rig: Rig, job: Job) -> bytes:
    """The job is done, uncharged, with one audio file as its status says and its chunks as long as
    the tiny model speaks them; returns the file's bytes."""
    texts, pauses, seed = planned(rig, job)
    seconds = paced_seconds(texts, seed)
    current = rig.job(job)
    assert current.state == JobState.DONE, f"{job.name}: {current.state} {current.error_code} {current.error_message}"
    assert current.error_code is None and current.attempts == 1
    status = rig.outbox.read_status(job.name)
    assert status is not None and status["state"] == "done" and status["attempts"] == 1
    assert status["progress"]["chunks_done"] == status["progress"]["chunks_total"] == len(texts)
    audio = status["audio"]
    path = Path(rig.outbox.root, audio["file"])
    data = path.read_bytes()
    assert audio["bytes"] == len(data) and audio["sha256"] == hashlib.sha256(data).hexdigest()
    samples, rate = sf.read(path, dtype="float32")
    assert rate == audio["sample_rate"] == RATE
    assert np.isfinite(samples).all() and float(np.abs(samples).max()) > 0.0
    assert audio["duration_s"] == round(len(samples) / RATE, 3)
    # Each chunk was kept as long as the model spoke it (rounded to the millisecond).
    assert current.audio_s_done == pytest.approx(sum(seconds), abs=1e-3 * len(texts))
    if len(texts) == 1:
        assert len(samples) == round(seconds[0] * RATE), "a one-chunk job is the take as spoken"
    else:
        # Joined: every chunk trimmed of silent edges (random weights speak noise: barely any) and
        # followed by its pause.
        silence = sum(pauses) / 1000
        assert silence + 0.5 * sum(seconds) <= audio["duration_s"] <= silence + sum(seconds) + 1e-3
    assert not any(rig.chunks.has(job.id, i) for i in range(len(texts))), "a delivered job's chunk files go"
    return data


# -- speaking jobs through the running batch ---------------------------------------------------------


def test_queued_jobs_of_different_lengths_are_spoken_through_the_running_batch(
    make_rig: MakeRig, loop_engine: LoopEngine
) -> None:
    rig = make_rig(loop_engine)
    plans = {
        "hi": ("Hi.", {}),
        "noon": ("She said she would be here by noon.", {}),
        "two-parts": ("The first part is here. And then the second part.", {"chunking": {"max_chars": 30}}),
        "river": (" ".join(SENTENCES[:3]), {"chunking": BY_SENTENCE}),
        "short": ("Short one.", {}),
    }
    jobs = {name: rig.add(text, name, **fields) for name, (text, fields) in plans.items()}
    assert rig.worker.work_once()
    assert rig.worker._streaming is not None, "the ttsd engine speaks through a running batch"
    assert [len(planned(rig, job)[0]) for job in jobs.values()] == [1, 1, 2, 3, 1]
    for job in jobs.values():
        assert_delivered(rig, job)
    assert_every_call_settled(rig.events)
    # Eight chunks, rows of four: they joined the batch in several admissions.
    assert len(rig.calls()) > 1
    assert rig.store.counts() == {MODEL: {"done": 5}}
    assert not rig.worker.work_once()


def test_the_batch_never_holds_more_rows_than_the_batch_size(make_rig: MakeRig, loop_engine: LoopEngine) -> None:
    rig = make_rig(loop_engine, max_batch=3)
    for i, sentence in enumerate(SENTENCES):
        rig.add(sentence, f"s{i}")
    rig.add("Hi.", "hi")
    rig.add("Okay then.", "okay")
    rig.drain()
    assert rig.max_rows() == 3, "the batch is filled, never beyond TTS_MAX_BATCH (no memory headroom measured)"
    assert rig.store.counts() == {MODEL: {"done": 6}}
    assert_every_call_settled(rig.events)


def test_the_daemons_loop_keeps_the_rows_in_a_second_thread(make_rig: MakeRig, loop_engine: LoopEngine) -> None:
    """`Worker.run` with `overlap` (as the daemon runs it): rows that end are decoded and kept by the
    decode lane while the batch steps on."""
    rig = make_rig(loop_engine)
    rig.worker.poll_s = 0.05  # nobody wakes it when the lane is done
    rig.worker.overlap = True
    jobs = [
        rig.add("Hi.", "hi"),
        rig.add(" ".join(SENTENCES[:2]), "river", chunking=BY_SENTENCE),
        rig.add("She said she would be here by noon.", "noon"),
        rig.add("The first part is here. And then the second part.", "parts", chunking={"max_chars": 30}),
    ]
    assert rig.worker.run(idle_exit_s=0.0) == "idle"
    for job in jobs:
        assert_delivered(rig, job)
    assert rig.finished[0] == jobs[0].id
    assert [name for name, _ in rig.events if name in (wire.BUSY, wire.IDLE)][-2:] == [wire.BUSY, wire.IDLE]
    assert_every_call_settled(rig.events)
    assert rig.store.leased_ids(rig.worker.token) == set()


# -- continuous admission ------------------------------------------------------------------------------


def test_a_short_job_joins_a_free_row_at_the_next_step_and_is_delivered_first(
    make_rig: MakeRig, loop_engine: LoopEngine
) -> None:
    rig = make_rig(loop_engine)
    long = rig.add(" ".join(SENTENCES[:3]), "long", chunking=BY_SENTENCE)
    rig.steps(3)
    assert [f["jobs"] for f in rig.calls()] == [[long.id]]
    assert len(rig.rows()) == 3

    short = rig.add("Hi.", "short")
    rig.worker.wake.set()
    before = len(rig.events)
    assert rig.step()
    assert [f["jobs"] for name, f in rig.events[before:] if name == wire.GENERATING] == [[short.id]]
    assert {job for job, _ in rig.rows()} == {long.id, short.id}
    assert not any(chunk.done for chunk in rig.store.chunks(long.id)), "no long chunk had ended"
    stream = rig.worker._streaming._stream  # type: ignore[union-attr]
    assert stream.paused == 3, "the short job steps alone while the long chunks wait"

    rig.step_until(lambda: rig.done(short))
    rig.step()
    assert stream.paused == 0, "then the long chunks step again"
    assert rig.job(long).state == JobState.RUNNING
    assert rig.call_of(long) in rig.open_calls(), "the long chunks are still being spoken"
    rig.drain()
    assert rig.finished == [short.id, long.id]
    assert_delivered(rig, long)
    assert_delivered(rig, short)
    assert_every_call_settled(rig.events)


def test_a_job_as_long_as_the_running_ones_does_not_pause_them(make_rig: MakeRig, loop_engine: LoopEngine) -> None:
    rig = make_rig(loop_engine)
    rig.add(" ".join(SENTENCES[:2]), "first", chunking=BY_SENTENCE)
    rig.steps(3)
    rig.add(SENTENCES[2], "second")
    rig.worker.wake.set()
    rig.step()
    assert len(rig.rows()) == 3
    assert rig.worker._streaming._stream.paused == 0  # type: ignore[union-attr]
    rig.drain()
    assert_every_call_settled(rig.events)


def test_with_the_batch_full_a_new_job_takes_headroom(make_rig: MakeRig, loop_engine: LoopEngine) -> None:
    rig = make_rig(loop_engine)
    # As if measured with TTS_MAX_BATCH=auto: 4 rows preferred, memory for 8.
    rig.worker.batch = BatchChoice(size=4, limit=4, reason="measured (test)", room=8)
    long = rig.add(" ".join(SENTENCES), "long", chunking=BY_SENTENCE)
    rig.steps(3)
    assert len(rig.rows()) == 4, "the long job's four chunks fill the batch"

    first = rig.add("Hi.", "first")
    rig.worker.wake.set()
    before = len(rig.events)
    assert rig.step()
    assert [f["jobs"] for name, f in rig.events[before:] if name == wire.GENERATING] == [[first.id]]
    assert len(rig.rows()) == 5

    # The headroom is a quarter of the batch size: one row, taken; the next job waits for a row.
    second = rig.add("Bye now.", "second")
    rig.worker.wake.set()
    rig.step()
    assert second.id not in {job for f in rig.calls() for job in f["jobs"]}
    rig.step_until(lambda: any(second.id in f["jobs"] for f in rig.calls()))
    assert rig.call_of(first) not in rig.open_calls(), "the second job took the row the first one left"
    assert rig.call_of(long) in rig.open_calls(), "and did not wait for a long chunk"
    rig.drain()
    assert rig.max_rows() == 5
    assert rig.finished == [first.id, second.id, long.id]
    assert_every_call_settled(rig.events)


def test_without_memory_headroom_a_new_job_waits_for_a_row(make_rig: MakeRig, loop_engine: LoopEngine) -> None:
    rig = make_rig(loop_engine)  # TTS_MAX_BATCH=4: the limit is the batch size
    long = rig.add(" ".join(SENTENCES), "long", chunking=BY_SENTENCE)
    rig.steps(2)
    short = rig.add("Hi.", "short")
    rig.worker.wake.set()
    rig.step_until(lambda: any(short.id in f["jobs"] for f in rig.calls()))
    assert any(chunk.done for chunk in rig.store.chunks(long.id)), "it joined only once a long chunk had ended"
    rig.drain()
    assert rig.max_rows() == 4
    assert rig.finished == [short.id, long.id]


# -- the ledger ----------------------------------------------------------------------------------------


def test_each_call_is_kept_once_all_its_rows_are_kept(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(loop_engine)
    rows = spy_rows(rig, monkeypatch)
    rig.add("Hi.", "hi")
    rig.add("She said she would be here by noon.", "noon")
    rig.add(" ".join(SENTENCES[:2]), "river", chunking=BY_SENTENCE)
    rig.add("The first part is here. And then the second part.", "parts", chunking={"max_chars": 30})
    rig.drain()
    assert rig.store.counts() == {MODEL: {"done": 4}}
    assert_every_call_settled(rig.events)

    # Where each row was kept and each call reported kept, as positions in the events and as steps.
    row_at: dict[tuple[str, int], int] = {}
    kept_at: dict[int, int] = {}
    step_of: list[int] = []
    for i, (name, fields) in enumerate(rig.events):
        step_of.append(sum(1 for n, _ in rig.events[:i] if n == "step"))
        if name == "row":
            assert fields["kept"]
            row_at[(fields["job"], fields["index"])] = i
        elif name == wire.KEPT:
            kept_at[fields["call"]] = i
    generating = {f["call"]: f["jobs"] for f in rig.calls()}
    assert set(rows) == set(generating) == set(kept_at)
    for call, call_rows in rows.items():
        assert generating[call] == sorted({job for job, _ in call_rows})
        assert all(row in row_at for row in call_rows), "every row of every call was kept"
        last_row = max(row_at[row] for row in call_rows)
        assert kept_at[call] > last_row, "a call is kept after its last row"
        assert step_of[kept_at[call]] == step_of[last_row], "and at once (in the step its last row ended)"
    spread = [call for call, call_rows in rows.items() if len({step_of[row_at[row]] for row in call_rows}) > 1]
    assert spread, "some call's rows ended at different steps, and the call stayed open until the last"


# -- cancelling --------------------------------------------------------------------------------------


def test_a_cancelled_job_leaves_the_batch_at_the_next_admission_tick(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ticks only when woken, so the test says when the next one is.
    monkeypatch.setattr(worker_module, "STREAM_ADMIT_S", 3600.0)
    rig = make_rig(loop_engine)
    doomed = rig.add(" ".join(SENTENCES[:2]), "doomed", chunking=BY_SENTENCE)
    # Other sampling settings: its row comes in a call of its own, and shares the batch all the same.
    other = rig.add(SENTENCES[2], "other", generation={"temperature": 0.8})
    rig.steps(3)
    assert {job for job, _ in rig.rows()} == {doomed.id, other.id}
    assert sorted(f["jobs"] for f in rig.calls()) == sorted([[doomed.id], [other.id]])

    rig.store.cancel(doomed.id)
    rig.step()
    assert len(rig.rows()) == 3, "between ticks the queue is not asked"
    rig.worker.wake.set()
    before = len(rig.events)
    rig.step()
    assert rig.rows() == [(other.id, 0)], "dropped at the tick"
    assert (wire.KEPT, {"call": rig.call_of(doomed)}) in rig.events[before:], "its call is settled"
    assert doomed.id not in rig.worker.held_jobs()

    rig.drain()
    assert rig.job(doomed).state == JobState.CANCELLED
    status = rig.outbox.read_status("doomed")
    assert status is not None and status["state"] == "cancelled" and status["audio"] is None
    assert not list(rig.outbox.root.glob("doomed.*.wav")) and not (rig.outbox.root / "doomed.wav").exists()
    assert not rig.chunks.has(doomed.id, 0) and not rig.chunks.has(doomed.id, 1)
    assert_delivered(rig, other)
    assert_every_call_settled(rig.events)


def test_an_alone_row_whose_job_is_cancelled_does_not_block_the_batch(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails (out of memory) is retried row by row, each alone; if the job of the row
    running alone is cancelled, its row is dropped and the others must still be spoken."""
    real_step = batch_module.RunningBatch.step
    failed: list[bool] = []

    def fails_once(self: batch_module.RunningBatch) -> list[batch_module.Ended]:
        if not failed:
            failed.append(True)
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(batch_module.RunningBatch, "step", fails_once)
    rig = make_rig(loop_engine)
    jobs = [rig.add(SENTENCES[0], "first"), rig.add(SENTENCES[1], "second"), rig.add(SENTENCES[3], "third")]
    rig.steps(1)
    assert failed and not rig.rows() and loop_engine.loop_failed is None
    assert [f["jobs"] for f in rig.calls()] == [sorted(job.id for job in jobs)], "the three failed together"
    rig.steps(2)
    assert len(rig.rows()) == 1, "after the failed batch each chunk runs alone"
    ((alone_job, _),) = rig.rows()

    cancelled = next(job for job in jobs if job.id == alone_job)
    rig.store.cancel(cancelled.id)
    rig.worker.wake.set()
    rig.drain()
    assert rig.job(cancelled).state == JobState.CANCELLED
    for job in jobs:
        if job is not cancelled:
            assert_delivered(rig, job)
    assert rig.max_rows() == 1, "the others were still spoken alone, one after the other"
    assert_every_call_settled(rig.events)


# -- falling back to the official path -----------------------------------------------------------------


def test_a_loop_that_fails_mid_run_falls_back_to_calls_without_charging_jobs(
    make_rig: MakeRig, tiny_models: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = LoopEngine.load(MODEL, "custom_voice", tiny_models / MODEL, FULL, "paced")  # its loop will go off
    try:
        rig = make_rig(engine)
        real_step = batch_module.RunningBatch.step
        steps: list[int] = []

        def unsupported_after_eight(self: batch_module.RunningBatch) -> list[batch_module.Ended]:
            steps.append(len(self))
            if len(steps) > 8:
                rig.events.append(("loop failed", {}))
                raise NotImplementedError("aten::_something is not implemented for the device")
            return real_step(self)

        monkeypatch.setattr(batch_module.RunningBatch, "step", unsupported_after_eight)
        plans = {
            "hi": ("Hi.", {}),
            "parts": ("The first part is here. And then the second part.", {"chunking": {"max_chars": 30}}),
            "noon": ("She said she would be here by noon.", {}),
        }
        jobs = {name: rig.add(text, name, **fields) for name, (text, fields) in plans.items()}
        with caplog.at_level(logging.WARNING):
            assert rig.worker.work_once()
        assert engine.loop_failed is not None and "not implemented" in engine.loop_failed
        assert "using the official qwen-tts path" in caplog.text
        assert len(steps) == 9, "after the failure the loop is not tried again"
        assert rig.worker._streaming is None

        failure = rig.events.index(("loop failed", {}))
        assert rig.finished[0] == jobs["hi"].id
        kept_before = [f["call"] for name, f in rig.events[:failure] if name == wire.KEPT]
        assert kept_before, "the short job was kept from the loop before it failed"
        after = [f["jobs"] for name, f in rig.events[failure:] if name == wire.GENERATING]
        assert any(len(jobs_of_call) > 1 for jobs_of_call in after), "then spoken in batched calls"
        for name in plans:
            texts, _, _ = planned(rig, jobs[name])
            current = rig.job(jobs[name])
            assert current.state == JobState.DONE and current.attempts == 1 and current.error_code is None
            status = rig.outbox.read_status(name)
            assert status is not None and status["attempts"] == 1 and status["error"] is None
            assert status["progress"]["chunks_done"] == len(texts)
            assert (rig.outbox.root / status["audio"]["file"]).is_file()
        assert_every_call_settled(rig.events)
    finally:
        engine.close()


def test_a_loop_that_fails_admitting_rows_gives_back_the_rows_running(
    make_rig: MakeRig, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop may also fail while new rows join (their prefill, or the loop turned off by another
    caller of the engine): the rows already running are spoken again by the official path."""
    engine = LoopEngine.load(MODEL, "custom_voice", tiny_models / MODEL, FULL, "paced")  # its loop will go off
    try:
        real_admit = batch_module.RunningBatch.admit
        admissions: list[int] = []

        def second_fails(self: batch_module.RunningBatch, *args: Any, **kwargs: Any) -> list[batch_module.Ended]:
            admissions.append(len(self))
            if len(admissions) == 2:
                raise NotImplementedError("aten::_other is not implemented for the device")
            return real_admit(self, *args, **kwargs)

        monkeypatch.setattr(batch_module.RunningBatch, "admit", second_fails)
        rig = make_rig(engine)
        jobs = [rig.add("Hi.", "hi"), rig.add(SENTENCES[0], "river"), rig.add(SENTENCES[1], "boats")]
        rig.steps(1)
        assert [f["jobs"] for f in rig.calls()] == [[jobs[0].id]] and len(rig.rows()) == 1
        rig.drain()
        assert admissions == [0, 1], "the second admission came with a row running, and failed"
        assert engine.loop_failed is not None
        for job in jobs:
            current = rig.job(job)
            assert current.state == JobState.DONE and current.attempts == 1 and current.error_code is None
        assert_every_call_settled(rig.events)
    finally:
        engine.close()


# -- seeded jobs -------------------------------------------------------------------------------------


def test_a_seeded_job_shares_the_batch_and_sounds_the_same_in_any_company(
    make_rig: MakeRig, loop_engine: LoopEngine
) -> None:
    text = "The first part is here. And then the second part."
    seeded: dict[str, Any] = {"seed": 1234, "chunking": {"max_chars": 30}}

    alone = make_rig(loop_engine)
    job = alone.add(text, "seeded", **seeded)
    assert alone.worker.work_once()
    first_take = assert_delivered(alone, job)

    crowded = make_rig(loop_engine)
    crowded.add(" ".join(SENTENCES[:2]), "river", chunking=BY_SENTENCE)
    crowded.add("She said she would be here by noon.", "noon")
    crowded.steps(4)
    again = crowded.add(text, "seeded", **seeded)
    other_seed = crowded.add(text, "other-seed", **{**seeded, "seed": 1235})
    crowded.worker.wake.set()
    crowded.step()
    calls = {f["call"]: f["jobs"] for f in crowded.calls()}
    (seeded_call,) = (call for call, jobs in calls.items() if again.id in jobs)
    assert calls[seeded_call] == [again.id], "a seeded job's chunks share an admission with no other job"
    open_now = crowded.open_calls()
    assert seeded_call in open_now and len(open_now) > 1, "it joined rows of other jobs still running"
    assert len({job for job, _ in crowded.rows()}) >= 2
    crowded.drain()
    second_take = assert_delivered(crowded, again)
    assert second_take == first_take, "the same seeded job gives the same audio in any batch"
    different = assert_delivered(crowded, other_seed)
    # Not only another length (a tiny model's rows end at a length paced by their seed): other sounds.
    head = RATE // 2
    ours, theirs = (sf.read(io.BytesIO(data), dtype="float32")[0][:head] for data in (first_take, different))
    assert not np.allclose(ours, theirs, atol=1e-3), "another seed samples other audio"
    assert crowded.store.counts() == {MODEL: {"done": 4}}


# -- the official path ---------------------------------------------------------------------------------


def test_the_qwen_tts_engine_still_speaks_in_calls(
    make_rig: MakeRig, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = QwenEngine.load(MODEL, "custom_voice", tiny_models / MODEL, FULL, "paced")
    try:
        calls: list[list[str]] = []
        generate = engine.generate

        def counting(
            requests: Sequence[SynthesisRequest],
            generation: Mapping[str, Any],
            seed: int | None,
            max_frames: int | None = None,
        ) -> Takes:
            calls.append([request.text for request in requests])
            return generate(requests, generation, seed, max_frames)

        monkeypatch.setattr(engine, "generate", counting)
        rig = make_rig(engine, engine="qwen-tts")
        texts = ["Hi.", "She said she would be here by noon.", "Short one."]
        jobs = [rig.add(text, f"job{i}") for i, text in enumerate(texts)]
        seeded_text = "The first part is here. And then the second part."
        seeded = rig.add(seeded_text, "seeded", seed=7, chunking={"max_chars": 30})
        assert rig.worker.work_once()
        assert rig.worker._streaming is None, "no running batch on the official path"
        assert any(len(call) > 1 for call in calls), "unseeded jobs share generate calls"
        for part in chunk_texts(seeded_text, 30):
            assert [part] in calls, "a seeded chunk is spoken alone on the official path"
        for job, text in zip(jobs, texts, strict=True):
            current = rig.job(job)
            assert current.state == JobState.DONE and current.attempts == 1
            status = rig.outbox.read_status(job.name)
            assert status is not None and (rig.outbox.root / status["audio"]["file"]).is_file()
            assert status["progress"]["chunks_done"] == len(chunk_texts(text))
        assert rig.done(seeded)
        assert len(rig.calls()) == len(calls)
        assert_every_call_settled(rig.events)
    finally:
        engine.close()


# --- found in review -------------------------------------------------------------------------------


def test_a_reference_gone_at_admission_fails_its_job_not_its_batch_mates(
    make_rig: Any, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.MODEL", "tiny-base")
    engine = LoopEngine.load("tiny-base", "base", tiny_models / "tiny-base", FULL, "paced")
    try:
        rig = make_rig(engine)
        voices = rig.worker.context.voices_dir
        voices.mkdir(parents=True, exist_ok=True)
        sf.write(voices / "ref.wav", np.random.default_rng(5).standard_normal(32_000).astype(np.float32) * 0.1, 16_000)
        bad = rig.add("Hello there, this voice file is gone.", "bad", model="tiny-base", ref_audio="gone.wav")
        mate = rig.add("Hello there, this voice file exists.", "mate", model="tiny-base", ref_audio="ref.wav")
        rig.drain()
        assert rig.job(bad).state == JobState.FAILED
        assert rig.job(mate).state == JobState.DONE
        assert not rig.open_calls() and not rig.worker.held_jobs()
    finally:
        engine.close()


def test_status_says_when_the_loop_fell_back(make_rig: Any, tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LoopEngine.load("tiny", "custom_voice", tiny_models / "tiny", FULL, "paced")
    try:
        rig = make_rig(engine)
        real_step = batch_module.RunningBatch.step
        steps: list[int] = []

        def failing(self: Any) -> Any:
            steps.append(1)
            if len(steps) > 3:
                raise NotImplementedError("aten::x is not implemented for the device")
            return real_step(self)

        monkeypatch.setattr(batch_module.RunningBatch, "step", failing)
        rig.add(" ".join(SENTENCES[:2]), "a", chunking={"max_chars": 50})
        rig.drain()
        labels = [fields["plan"].get("engine") for name, fields in rig.events if name == wire.READY]
        assert labels[0] == "ttsd" and labels[-1].startswith("qwen-tts")
    finally:
        engine.close()


def test_running_out_of_memory_while_rows_join_leaves_the_running_rows_whole(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LoopEngine.load("tiny", "custom_voice", tiny_models / "tiny", FULL, "paced")
    try:
        greedy = {"do_sample": False, "subtalker_dosample": False}
        stream = engine.stream()
        stream.admit(["a"], [SynthesisRequest(SENTENCES[0] * 3, speaker="ryan")], greedy, [80])
        for _ in range(3):
            stream.step()
        real = batch_module._left_pad
        pads: list[int] = []

        def out_of_memory_on_the_third(tensor: Any, count: int) -> Any:
            pads.append(1)
            if len(pads) == 3:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
            return real(tensor, count)

        monkeypatch.setattr(batch_module, "_left_pad", out_of_memory_on_the_third)
        with pytest.raises(EngineError) as raised:
            stream.admit(["b"], [SynthesisRequest("Hi.", speaker="ryan")], greedy, [40])
        assert raised.value.code == "out_of_memory"
        monkeypatch.setattr(batch_module, "_left_pad", real)
        done: dict[Any, Any] = {}
        while len(stream):
            done.update((s.tag, s) for s in stream.step())
        assert engine.loop_failed is None and set(done) == {"a"}
        alone = engine.generate([SynthesisRequest(SENTENCES[0] * 3, speaker="ryan")], greedy, None, 80)
        assert bool((alone.rows[0] == done["a"].takes.rows[0]).all())
    finally:
        engine.close()
