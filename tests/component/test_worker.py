"""Workers with a fake engine over a real queue and outbox, and the engine pool with a fake clock."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import ttsd.jobqueue.records as records_module
import ttsd.synth.failures as failures_module
import ttsd.synth.keeping as keeping_module
import ttsd.synth.worker as worker_module
from tests.support.daemon_harness import wait_for
from tests.support.fakes import (
    FAKE_MODEL,
    FAKE_RATE,
    OTHER_MODEL,
    REGISTRY,
    FakeClock,
    FakeEngine,
    FakeLoader,
    fake_samples,
    fake_wave,
    make_spec,
    scratch_dir,
)
from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher, publish
from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import Job, utcnow
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import Engine, SynthesisRequest, Takes
from ttsd.synth.engine.pool import EnginePool
from ttsd.synth.keeping import Keeper, retry_delay
from ttsd.synth.worker import Worker

# Every field the README names for a status file, with the fields of its nested objects.
STATUS_FIELDS = {
    "schema",
    "job_id",
    "name",
    "client_id",
    "state",
    "error",
    "model",
    "speaker",
    "language",
    "device",
    "dtype",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "audio",
    "timing",
    "cache_hit",
    "seed",
}
NESTED_FIELDS = {
    "error": {"code", "message"},
    "progress": {"chunks_done", "chunks_total", "audio_s", "eta_s"},
    "audio": {"file", "format", "sample_rate", "duration_s", "bytes", "sha256"},
    "timing": {"queue_s", "synth_s", "rtf"},
}


@dataclass
class Rig:
    """A worker of FAKE_MODEL over a real store and outbox in a temp folder."""

    settings: Settings
    store: Store
    outbox: Outbox
    engine: FakeEngine
    worker: Worker

    def add(self, text: str, **fields: Any) -> Job:
        result = self.store.enqueue(make_spec(text, **fields))
        assert result.created
        return result.job

    def status(self, job: Job) -> dict[str, Any]:
        document = self.outbox.read_status(job.name)
        assert document is not None, f"no status file for {job.name}"
        return document

    def job(self, job: Job) -> Job:
        return self.store.get(job.id)

    def drain(self, limit: int = 20) -> int:
        """work_once until the queue has nothing ready; returns how many batches ran."""
        for batches in range(limit):
            if not self.worker.work_once():
                return batches
        raise AssertionError("the queue never drained")


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[MakeRig]:
    stores: list[Store] = []
    folders = contextlib.ExitStack()
    root = folders.enter_context(scratch_dir(tmp_path))

    def make(engine: FakeEngine | None = None, **settings: Any) -> Rig:
        options: dict[str, Any] = {"max_batch": 4, "max_attempts": 3, "lease_s": 60.0, **settings}
        config = Settings(inbox=root / "inbox", outbox=root / "outbox", state_dir=root / "state", **options)
        store = Store(config.db_path)
        stores.append(store)
        outbox = Outbox(config.outbox)
        engine = engine or FakeEngine()
        chosen = engine

        def load(_entry: ModelEntry) -> Engine:
            return chosen

        pool = EnginePool(REGISTRY, load, idle_s=600)
        context = WorkContext(
            settings=config,
            store=store,
            outbox=outbox,
            publisher=StatusPublisher(store, outbox),
            engines=pool,
            voices_dir=config.inbox / "voices",
            chunks=ChunkFiles(config.state_dir / "chunks"),
        )
        return Rig(config, store, outbox, engine, Worker(FAKE_MODEL, context, threading.Event()))

    with folders:
        yield make
        for store in stores:
            store.close()


def assert_delivered(rig: Rig, job: Job, text: str) -> dict[str, Any]:
    """The job is done, its audio is a real file holding the engine's output, its status says so."""
    assert rig.job(job).state == JobState.DONE
    status = rig.status(job)
    assert status["state"] == "done"
    assert status["error"] is None
    audio = status["audio"]
    path = rig.outbox.root / audio["file"]
    assert path.name == f"{job.name}.wav"
    data = path.read_bytes()
    assert audio["bytes"] == len(data)
    assert audio["sha256"] == hashlib.sha256(data).hexdigest()
    samples, rate = sf.read(path, dtype="float32")
    assert rate == audio["sample_rate"] == FAKE_RATE
    np.testing.assert_allclose(samples, fake_wave(text), atol=1e-4)
    assert audio["duration_s"] == round(fake_samples(text) / FAKE_RATE, 3)
    return status


# -- batches and delivery ------------------------------------------------------------------------


def test_a_batch_of_compatible_jobs_is_one_call(make_rig: MakeRig) -> None:
    rig = make_rig()
    texts = ["first line", "the second line", "third"]
    jobs = [rig.add(text) for text in texts]
    assert rig.worker.work_once()
    assert rig.engine.calls == [3]
    for job, text in zip(jobs, texts, strict=True):
        status = assert_delivered(rig, job, text)
        assert status["attempts"] == 1
        assert (status["device"], status["dtype"]) == ("cpu", "float32")
        audio_s = status["audio"]["duration_s"]
        assert status["progress"] == {"chunks_done": 1, "chunks_total": 1, "audio_s": audio_s, "eta_s": None}
        assert status["timing"]["synth_s"] is not None
    assert not rig.worker.work_once()
    assert rig.store.counts() == {FAKE_MODEL: {"done": 3}}


def test_batches_respect_max_batch_and_sampling(make_rig: MakeRig) -> None:
    rig = make_rig(max_batch=2)
    for n in range(5):
        rig.add(f"plain {n}")
    rig.add("warm", generation={"temperature": 0.7})
    rig.add("seeded", seed=42)
    rig.add("other model", model=OTHER_MODEL)  # not this worker's model
    assert rig.drain() == 2  # a worker holds 2 x max_batch jobs (at least 4) at a time
    assert rig.engine.texts == [["plain 0", "plain 1"], ["plain 2", "plain 3"], ["warm"], ["seeded"], ["plain 4"]]
    assert rig.store.counts() == {FAKE_MODEL: {"done": 7}, OTHER_MODEL: {"queued": 1}}


def test_the_running_status_is_written_before_synthesis(make_rig: MakeRig) -> None:
    rig = make_rig()
    job = rig.add("watch me")
    seen: list[str] = []

    def look(_requests: Sequence[SynthesisRequest]) -> None:
        seen.append(rig.status(job)["state"])

    rig.engine.on_synthesize = look
    assert rig.worker.work_once()
    assert seen == ["running"]
    assert rig.status(job)["state"] == "done"


def test_the_worker_heartbeats_while_the_engine_works(make_rig: MakeRig) -> None:
    rig = make_rig(lease_s=0.8)  # a beat every 0.2 s
    job = rig.add("a long one")

    def slow(_requests: Sequence[SynthesisRequest]) -> None:
        first = rig.job(job).heartbeat_at
        assert first is not None

        def renewed() -> bool:
            now = rig.job(job).heartbeat_at
            return now is not None and now > first

        wait_for(renewed, 5, "a heartbeat during synthesis")

    rig.engine.on_synthesize = slow
    assert rig.worker.work_once()
    assert rig.job(job).state == JobState.DONE


def test_resampling_to_the_jobs_rate(make_rig: MakeRig) -> None:
    rig = make_rig()
    text = "a job that wants sixteen kilohertz"
    job = rig.add(text, sample_rate=16_000)
    assert rig.worker.work_once()
    status = rig.status(job)
    path = rig.outbox.root / status["audio"]["file"]
    info = sf.info(str(path))
    assert info.samplerate == 16_000 == status["audio"]["sample_rate"]
    expected_s = fake_samples(text) / FAKE_RATE
    assert abs(info.frames / 16_000 - expected_s) < 0.002
    assert status["audio"]["duration_s"] == round(info.frames / 16_000, 3)
    assert rig.job(job).sample_rate == 16_000


def test_other_formats_are_real_files(make_rig: MakeRig) -> None:
    rig = make_rig()
    job = rig.add("lossless please", format="flac")
    assert rig.worker.work_once()
    status = rig.status(job)
    path = rig.outbox.root / status["audio"]["file"]
    assert path.name == f"{job.name}.flac"
    samples, rate = sf.read(path, dtype="float32")
    assert rate == FAKE_RATE
    assert len(samples) == fake_samples("lossless please")


def test_status_file_has_every_documented_field(make_rig: MakeRig) -> None:
    rig = make_rig(engine=FakeEngine(poison={"POISON": PermanentEngineError}))
    done = rig.add("fine", id="client-1", seed=9)
    failed = rig.add("POISON")
    rig.drain()
    done_status = rig.status(done)
    assert set(done_status) == STATUS_FIELDS
    for field, keys in NESTED_FIELDS.items():
        if field != "error":
            assert set(done_status[field]) == keys, field
    assert (done_status["client_id"], done_status["seed"], done_status["schema"]) == ("client-1", 9, 1)
    assert done_status["language"] == "Auto"
    assert done_status["cache_hit"] is False
    for moment in ("created_at", "started_at", "finished_at"):
        assert done_status[moment].endswith("Z")
    assert done_status["timing"]["queue_s"] >= 0
    failed_status = rig.status(failed)
    assert set(failed_status) == STATUS_FIELDS
    assert set(failed_status["error"]) == NESTED_FIELDS["error"]
    assert failed_status["audio"] is None


# -- failures ------------------------------------------------------------------------------------


def test_a_poisoned_job_fails_alone(make_rig: MakeRig) -> None:
    rig = make_rig(engine=FakeEngine(poison={"POISON": PermanentEngineError}))
    good1 = rig.add("good one")
    bad = rig.add("this is POISON", name="bad")
    good2 = rig.add("good two")
    assert rig.worker.work_once()
    assert rig.engine.calls == [3, 1, 1, 1]  # the batch, then each job alone
    assert_delivered(rig, good1, "good one")
    assert_delivered(rig, good2, "good two")
    failed = rig.job(bad)
    assert (failed.state, failed.attempts, failed.error_code) == (JobState.FAILED, 1, "fake_poison")
    status = rig.status(bad)
    assert status["state"] == "failed"
    assert status["error"]["code"] == "fake_poison"
    assert "POISON" in status["error"]["message"]
    assert status["audio"] is None
    assert not (rig.outbox.root / "bad.wav").exists()
    assert not rig.worker.work_once()  # a permanent failure is not retried


def test_a_transient_error_requeues_with_backoff(make_rig: MakeRig) -> None:
    rig = make_rig(engine=FakeEngine(poison={"FLAKY": TransientEngineError}))
    job = rig.add("FLAKY device")
    before = utcnow()
    assert rig.worker.work_once()
    queued = rig.job(job)
    assert (queued.state, queued.attempts, queued.error_code) == (JobState.QUEUED, 1, "fake_flaky")
    assert queued.not_before is not None
    delay = timedelta(seconds=retry_delay(1))
    assert before + delay <= queued.not_before <= utcnow() + delay
    status = rig.status(job)
    assert (status["state"], status["attempts"], status["error"]["code"]) == ("queued", 1, "fake_flaky")
    assert not rig.worker.work_once()  # not before the backoff has passed
    assert rig.engine.calls == [1]


def test_transient_errors_fail_after_max_attempts(make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeping_module, "retry_delay", lambda attempt: 0.0)
    rig = make_rig(engine=FakeEngine(poison={"FLAKY": TransientEngineError}), max_attempts=3)
    job = rig.add("FLAKY device")
    bystander = rig.add("bystander", priority=-1)
    assert rig.drain() == 3
    failed = rig.job(job)
    assert (failed.state, failed.attempts, failed.error_code) == (JobState.FAILED, 3, "fake_flaky")
    assert rig.status(job)["state"] == "failed"
    assert rig.engine.calls == [2, 1, 1, 1, 1]  # the batch, both alone, then two lone retries
    assert_delivered(rig, bystander, "bystander")


def test_backoff_grows_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay(30) == keeping_module.MAX_BACKOFF_S


def test_a_job_cancelled_during_synthesis_is_not_done(make_rig: MakeRig) -> None:
    rig = make_rig()
    keep = rig.add("keep me")
    victim = rig.add("cancel me", name="victim")

    def cancel_victim(requests: Sequence[SynthesisRequest]) -> None:
        if any(request.text == "cancel me" for request in requests):
            rig.store.cancel("victim")

    rig.engine.on_synthesize = cancel_victim
    assert rig.worker.work_once()
    cancelled = rig.job(victim)
    assert (cancelled.state, cancelled.audio_file, cancelled.attempts) == (JobState.CANCELLED, None, 0)
    assert rig.status(victim)["state"] == "cancelled"
    assert not (rig.outbox.root / "victim.wav").exists()
    assert_delivered(rig, keep, "keep me")


def test_a_lease_lost_just_before_delivery_never_replaces_the_audio(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease check and the rename happen in one transaction: even when a worker passes its
    early check and only then loses the job, the file under the job's name is left alone."""
    rig = make_rig()
    job = rig.add("contested", name="contested")
    (rig.outbox.root / "contested.wav").write_bytes(b"the newer result")
    real_stage = rig.outbox.stage_audio

    def stage_then_lose_the_lease(*args: Any, **kwargs: Any) -> Any:
        staged = real_stage(*args, **kwargs)
        rig.store.cancel("contested")
        return staged

    monkeypatch.setattr(rig.outbox, "stage_audio", stage_then_lose_the_lease)
    assert rig.worker.work_once()
    assert (rig.outbox.root / "contested.wav").read_bytes() == b"the newer result"
    assert rig.job(job).state == JobState.CANCELLED
    assert not list(rig.outbox.root.glob(".ttsd-*.tmp")), "the staged file was not cleaned up"


def test_an_unexpected_engine_exception_is_a_transient_failure(make_rig: MakeRig) -> None:
    def explode(_requests: Sequence[SynthesisRequest]) -> None:
        raise RuntimeError("the driver fell over")

    rig = make_rig(engine=FakeEngine(on_synthesize=explode))
    job = rig.add("anything")
    assert rig.worker.work_once()
    after = rig.job(job)
    assert (after.state, after.attempts, after.lease_token) == (JobState.QUEUED, 1, None)
    assert after.error_code == "engine_error"
    assert after.error_message is not None and "the driver fell over" in after.error_message


def test_a_wrong_number_of_waveforms_is_an_engine_error(make_rig: MakeRig) -> None:
    class Short(FakeEngine):
        def decode(self, takes: Takes) -> list[np.ndarray]:
            return super().decode(takes)[:1]

    rig = make_rig(engine=Short())
    first = rig.add("one")
    second = rig.add("two")
    assert rig.worker.work_once()
    # The batch is distrusted as a whole; each job then runs alone and is delivered.
    assert rig.engine.calls == [2, 1, 1]
    assert_delivered(rig, first, "one")
    assert_delivered(rig, second, "two")


def test_a_failed_delivery_fails_only_its_own_job(make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig()
    ok1 = rig.add("ok one")
    broken = rig.add("broken", name="broken")
    ok2 = rig.add("ok two")
    real_stage = rig.outbox.stage_audio

    def stage_audio(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "broken":
            raise OSError(errno.EIO, "Input/output error")
        return real_stage(name, *args, **kwargs)

    monkeypatch.setattr(rig.outbox, "stage_audio", stage_audio)
    assert rig.worker.work_once()
    assert_delivered(rig, ok1, "ok one")
    assert_delivered(rig, ok2, "ok two")
    after = rig.job(broken)
    assert (after.state, after.attempts, after.lease_token) == (JobState.QUEUED, 1, None)
    assert after.error_code == "delivery_failed"
    assert rig.status(broken)["error"]["code"] == "delivery_failed"


def test_a_missing_reference_voice_fails_permanently(make_rig: MakeRig) -> None:
    rig = make_rig()
    spec = make_spec("clone me", model=FAKE_MODEL)
    job = rig.store.enqueue(spec.model_copy(update={"ref_audio": "nobody.wav"})).job
    assert rig.worker.work_once()
    failed = rig.job(job)
    assert (failed.state, failed.error_code) == (JobState.FAILED, "missing_reference")
    assert rig.engine.calls == []


# -- the engine pool -----------------------------------------------------------------------------


def make_pool(loader: FakeLoader, clock: FakeClock, idle_s: float = 60.0, max_loaded: int = 2) -> EnginePool:
    return EnginePool(REGISTRY, loader, idle_s=idle_s, max_loaded=max_loaded, clock=clock)


def loaded_models(pool: EnginePool) -> set[str]:
    return {row["model"] for row in pool.loaded()}


def test_pool_loads_lazily_and_once(make_clock: FakeClock) -> None:
    loader = FakeLoader()
    pool = make_pool(loader, make_clock)
    assert loader.loads == [] and pool.loaded() == []
    with pool.use(FAKE_MODEL) as first:
        pass
    with pool.use(FAKE_MODEL) as second:
        pass
    assert first is second
    assert loader.loads == [FAKE_MODEL]
    with pytest.raises(PermanentEngineError) as raised, pool.use("no-such-model"):
        pass
    assert raised.value.code == "unknown_model"


def test_pool_loads_a_model_once_under_concurrent_use(make_clock: FakeClock) -> None:
    gate = threading.Event()
    loader = FakeLoader(gate=gate)
    pool = make_pool(loader, make_clock)
    got: list[Engine] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def user() -> None:
        try:
            start.wait(timeout=5)
            with pool.use(FAKE_MODEL) as engine:
                got.append(engine)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=user) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert loader.loading.wait(timeout=5)
    gate.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert errors == []
    assert loader.loads == [FAKE_MODEL]
    assert len(got) == 8 and all(engine is got[0] for engine in got)


def test_pool_unloads_idle_models_but_not_busy_ones(make_clock: FakeClock) -> None:
    loader = FakeLoader()
    pool = make_pool(loader, make_clock, idle_s=60)
    with pool.use(FAKE_MODEL):
        make_clock.advance(120)
        assert pool.unload_idle() == []  # busy for longer than idle_s: still in use
        [row] = pool.loaded()
        assert row["busy"] is True and row["idle_s"] == 0.0
    make_clock.advance(59)
    assert pool.unload_idle() == []
    make_clock.advance(1)
    assert pool.unload_idle() == [FAKE_MODEL]
    assert loader.engines[FAKE_MODEL].closed
    assert pool.loaded() == []
    with pool.use(FAKE_MODEL):
        pass
    assert loader.loads == [FAKE_MODEL, FAKE_MODEL]


def test_pool_evicts_the_least_recently_used_before_loading(make_clock: FakeClock) -> None:
    loader = FakeLoader()
    pool = make_pool(loader, make_clock, max_loaded=2)
    for model in (FAKE_MODEL, OTHER_MODEL, FAKE_MODEL):
        make_clock.advance(1)
        with pool.use(model):
            pass
    make_clock.advance(1)
    with pool.use("fake-c"):
        pass
    assert loaded_models(pool) == {FAKE_MODEL, "fake-c"}
    assert loader.engines[OTHER_MODEL].closed
    assert not loader.engines[FAKE_MODEL].closed
    assert loader.peak_in_memory <= 2  # never three models in memory at once


def test_pool_never_evicts_a_busy_model(make_clock: FakeClock) -> None:
    loader = FakeLoader()
    pool = make_pool(loader, make_clock, max_loaded=1)
    with pool.use(FAKE_MODEL):
        make_clock.advance(1)
        with pool.use(OTHER_MODEL):
            assert loaded_models(pool) == {FAKE_MODEL, OTHER_MODEL}
    make_clock.advance(1)
    with pool.use(OTHER_MODEL):
        assert loaded_models(pool) == {OTHER_MODEL}
    assert loader.engines[FAKE_MODEL].closed


def test_pool_loaded_rows_and_close(make_clock: FakeClock) -> None:
    loader = FakeLoader()
    pool = make_pool(loader, make_clock)
    with pool.use(FAKE_MODEL):
        pass
    make_clock.advance(12.34)
    [row] = pool.loaded()
    assert row == {
        "model": FAKE_MODEL,
        "kind": "custom_voice",
        "device": "cpu",
        "dtype": "float32",
        "attention": "sdpa",
        "load_s": 0.0,
        "idle_s": 12.3,
        "busy": False,
    }
    pool.close()
    assert pool.loaded() == []
    assert loader.engines[FAKE_MODEL].closed


def test_a_load_failure_leaves_the_slot_empty(make_clock: FakeClock) -> None:
    attempts: list[str] = []

    def failing(entry: ModelEntry) -> Engine:
        attempts.append(entry.name)
        if len(attempts) == 1:
            raise EngineError("weights missing")
        return FakeEngine(name=entry.name)

    pool = EnginePool(REGISTRY, failing, idle_s=60, clock=make_clock)
    with pytest.raises(EngineError), pool.use(FAKE_MODEL):
        pass
    assert pool.loaded() == []
    with pool.use(FAKE_MODEL) as engine:
        assert engine.name == FAKE_MODEL
    assert attempts == [FAKE_MODEL, FAKE_MODEL]


@pytest.fixture
def make_clock() -> FakeClock:
    return FakeClock()


# -- status files and name reuse -----------------------------------------------------------------


def test_a_reused_name_shows_the_newest_job(make_rig: MakeRig) -> None:
    rig = make_rig()
    old = rig.add("old take", name="scene", priority=1)
    new = rig.add("new take", name="scene")
    rig.drain()
    assert rig.status(new)["job_id"] == new.id
    assert_delivered(rig, new, "new take")
    assert rig.job(old).state == JobState.DONE  # the history stays in the queue


def test_a_name_that_looks_like_another_jobs_id_still_gets_its_status(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    ids = iter(["abcd00000001", "abcd00000002"])
    monkeypatch.setattr(records_module, "new_job_id", lambda: next(ids))
    rig.add("first", name="plain")
    lookalike = rig.add("second", name="abcd00000001")
    publish(rig.store, rig.outbox, lookalike.id)
    assert rig.status(lookalike)["job_id"] == lookalike.id


class ClippingEngine(FakeEngine):
    """Returns a badly clipped take for the first `bad_takes` calls, then a normal one."""

    def __init__(self, bad_takes: int) -> None:
        super().__init__()
        self.bad_takes = bad_takes

    def decode(self, takes: Takes) -> list[np.ndarray]:
        waves = super().decode(takes)
        if len(self.calls) <= self.bad_takes:
            return [np.clip(wave * 100, -1, 1) for wave in waves]
        return waves


@pytest.mark.parametrize(("bad_takes", "state"), [(2, JobState.DONE), (3, JobState.FAILED)])
def test_a_chunk_refused_by_a_quality_guard_is_rendered_again_then_fails(
    make_rig: MakeRig, bad_takes: int, state: JobState
) -> None:
    rig = make_rig(engine=ClippingEngine(bad_takes))
    job = rig.add("clipped at first")
    assert rig.worker.work_once()
    assert rig.engine.calls == [1] * min(bad_takes + 1, 3)
    after = rig.job(job)
    assert after.state == state
    if state == JobState.FAILED:
        assert after.error_code == "quality" and "clipped" in (after.error_message or "")
    else:
        assert_delivered(rig, job, "clipped at first")


@pytest.mark.parametrize("folds", [True, False])
def test_names_one_file_apart_only_in_case_are_one_name_where_the_outbox_folds_case(
    make_rig: MakeRig, folds: bool
) -> None:
    rig = make_rig()
    outbox = Outbox(rig.outbox.root, fold_names=folds)
    lower = rig.add("lower case", name="hello")
    upper = rig.add("upper case", name="Hello")
    publish(rig.store, outbox, upper.id)
    publish(rig.store, outbox, lower.id)  # on a case-insensitive disk this file is Hello's
    written = sorted(path.name for path in rig.outbox.root.glob("*.status.json"))
    assert written == (["Hello.status.json"] if folds else ["Hello.status.json", "hello.status.json"])
    assert rig.store.newest_named("HELLO", fold=True) == rig.store.get(upper.id)
    assert rig.store.newest_named("HELLO") is None


def test_the_outbox_finds_out_whether_its_file_system_folds_case(tmp_path: Path) -> None:
    assert Outbox(tmp_path / "out").folds_names is False  # Linux file systems keep case apart
    assert list((tmp_path / "out").iterdir()) == [], "the probe leaves nothing behind"


def test_no_space_left_postpones_the_job_uncounted_until_space_comes_back(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    job = rig.add("needs room", name="roomy")
    free = [1_000]
    monkeypatch.setattr(failures_module, "_free_bytes", lambda _folder: free[0])
    monkeypatch.setattr(failures_module, "SPACE_CHECK_S", 0.0)
    monkeypatch.setattr(worker_module, "SPACE_CHECK_S", 0.0)
    monkeypatch.setattr(keeping_module, "SPACE_CHECK_S", 0.0)
    real_stage = rig.outbox.stage_audio

    def stage_audio(name: str, *args: Any, **kwargs: Any) -> Any:
        if free[0] < 10_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_stage(name, *args, **kwargs)

    monkeypatch.setattr(rig.outbox, "stage_audio", stage_audio)
    assert rig.worker.work_once()
    waiting = rig.job(job)
    assert (waiting.state, waiting.attempts, waiting.error_code) == (JobState.QUEUED, 0, "no_space")
    assert rig.status(job)["error"]["code"] == "no_space", "the status says what it waits for"
    for _ in range(5):  # however often it meets a full disk, no attempt is used up
        assert rig.worker.work_once()
    assert rig.job(job).attempts == 0
    free[0] = 10**9
    rig.drain()
    assert_delivered(rig, job, "needs room")
    assert rig.job(job).attempts == 1


def test_a_chunk_that_cannot_be_kept_fails_its_job_where_it_happens(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    doomed = rig.add("cannot be kept", name="doomed")
    fine = rig.add("kept fine", name="fine")

    real_save = rig.worker.context.chunks.save

    def save(job_id: str, index: int, audio: np.ndarray) -> None:
        if job_id == doomed.id:
            raise OSError(errno.EIO, "Input/output error")
        real_save(job_id, index, audio)

    monkeypatch.setattr(rig.worker.context.chunks, "save", save)
    assert rig.worker.work_once()
    failed = rig.job(doomed)
    assert (failed.state, failed.attempts, failed.error_code) == (JobState.QUEUED, 1, "worker_error")
    assert "Input/output error" in (failed.error_message or "")
    assert failed.lease_token is None, "never left running for stall detection to charge"
    assert_delivered(rig, fine, "kept fine")


# -- scheduling while the worker runs ------------------------------------------------------------


class Running:
    """A worker's `run` loop in a thread, stopped (and joined) at the end of the block."""

    def __init__(self, rig: Rig, overlap: bool = True) -> None:
        self.rig = rig
        rig.worker.overlap = overlap
        self.thread = threading.Thread(target=rig.worker.run, name="worker-under-test")

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.rig.worker.stop_event.set()
        self.rig.worker.wake.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def wait_state(self, job: Job, state: JobState, timeout: float = 10) -> None:
        wait_for(lambda: self.rig.job(job).state == state, timeout, lambda: f"{job.name} to be {state}")


LONG_TEXT = " ".join(f"Sentence number {n} of a long reading goes on." for n in range(12))


def test_a_short_job_arriving_while_a_long_one_runs_is_delivered_at_the_next_call(make_rig: MakeRig) -> None:
    gate = threading.Semaphore(0)

    def one_call_per_release(_requests: Sequence[SynthesisRequest]) -> None:
        assert gate.acquire(timeout=10), "the test never let this call run"

    rig = make_rig(engine=FakeEngine(on_synthesize=one_call_per_release), max_batch=2)
    long_job = rig.add(LONG_TEXT, name="long", chunking={"max_chars": 60})
    with Running(rig) as running:
        gate.release()  # the first call of the long job
        wait_for(lambda: rig.job(long_job).chunks_done >= 1, 10, "the long job's first chunks")
        short = rig.add("Hello.", name="hello")
        rig.worker.wake.set()
        gate.release()  # the call in progress when it arrived (the long job's second)
        gate.release()  # the next call: the short job's
        running.wait_state(short, JobState.DONE)
        assert rig.job(long_job).state == JobState.RUNNING, "delivered without waiting for the long job"
        assert ["Hello."] in rig.engine.texts
        for _ in range(20):
            gate.release()
        running.wait_state(long_job, JobState.DONE)
    assert_delivered(rig, short, "Hello.")


def test_a_job_is_spoken_and_delivered_while_a_long_one_is_being_finished(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    finishing = threading.Event()
    released = threading.Event()
    real_finish = Keeper.finish

    def slow_for_the_book(keeper: Keeper, job: Job, *args: Any) -> None:
        if job.name == "book":
            finishing.set()
            # Joining and encoding hours of audio: held here until the short job is through.
            assert released.wait(timeout=10), "the short job waited for the book's finish"
        real_finish(keeper, job, *args)

    monkeypatch.setattr(Keeper, "finish", slow_for_the_book)
    rig = make_rig(max_batch=2)
    book = rig.add(LONG_TEXT * 4, name="book", chunking={"max_chars": 600})
    with Running(rig) as running:
        assert finishing.wait(timeout=10)
        short = rig.add("Hello.", name="hello")
        rig.worker.wake.set()
        running.wait_state(short, JobState.DONE)
        assert rig.job(book).state == JobState.RUNNING
        released.set()
        running.wait_state(book, JobState.DONE)
    assert_delivered(rig, short, "Hello.")
    assert rig.job(book).chunks_done == rig.job(book).chunks_total


def test_each_job_is_delivered_when_its_own_chunks_are_done(make_rig: MakeRig) -> None:
    rig = make_rig(max_batch=4)
    small = rig.add("One line only.", name="small")
    big = rig.add(LONG_TEXT, name="big", chunking={"max_chars": 60})
    finished_while_big_ran: list[str] = []

    def note(_requests: Sequence[SynthesisRequest]) -> None:
        if rig.job(small).state == JobState.DONE and rig.job(big).state == JobState.RUNNING:
            finished_while_big_ran.append("small")

    rig.engine.on_synthesize = note
    assert rig.worker.work_once()
    assert finished_while_big_ran, "the small job waited for its batch mate"
    assert rig.job(big).state == JobState.DONE


def test_a_job_cancelled_mid_way_loses_its_remaining_chunks_at_the_next_call(make_rig: MakeRig) -> None:
    rig = make_rig(max_batch=2)
    job = rig.add(LONG_TEXT, name="stopped", chunking={"max_chars": 60})

    def cancel_after_first(_requests: Sequence[SynthesisRequest]) -> None:
        if len(rig.engine.calls) == 1:
            rig.store.cancel("stopped")

    rig.engine.on_synthesize = cancel_after_first
    assert rig.worker.work_once()
    assert rig.engine.calls == [2], "no call after the cancel"
    assert rig.job(job).state == JobState.CANCELLED
    assert rig.status(job)["state"] == "cancelled"


def test_a_stop_finishes_the_call_in_progress_and_gives_the_rest_back_uncounted(make_rig: MakeRig) -> None:
    started, proceed = threading.Event(), threading.Event()

    def hold(_requests: Sequence[SynthesisRequest]) -> None:
        started.set()
        proceed.wait(timeout=10)

    rig = make_rig(engine=FakeEngine(on_synthesize=hold), max_batch=2)
    job = rig.add(LONG_TEXT, name="interrupted", chunking={"max_chars": 60})
    with Running(rig):
        assert started.wait(timeout=10)
        rig.worker.stop_event.set()
        proceed.set()
    assert rig.engine.calls == [2], "no new call once stopping"
    after = rig.job(job)
    assert (after.state, after.attempts, after.chunks_done) == (JobState.QUEUED, 0, 2)
    assert rig.status(job)["state"] == "queued"


def test_a_runaway_take_is_cut_and_rendered_again(make_rig: MakeRig) -> None:
    rig = make_rig(engine=FakeEngine(runaway="forever"))
    job = rig.add("this one goes on forever", name="runaway")
    fine = rig.add("this one stops", name="fine")
    assert rig.worker.work_once()
    failed = rig.job(job)
    assert (failed.state, failed.error_code) == (JobState.FAILED, "quality")
    assert "frame budget" in (failed.error_message or "")
    assert_delivered(rig, fine, "this one stops")
    assert all(budget is not None and budget < FakeEngine.max_frames for budget in rig.engine.budgets)


def test_the_batch_size_is_measured_once_when_auto(make_rig: MakeRig) -> None:
    rig = make_rig(max_batch="auto")
    for n in range(3):
        rig.add(f"auto {n}")
    assert rig.drain() >= 1
    choice = rig.worker.batch
    assert choice is not None and choice.rates, "the probe measured rates"
    assert 1 <= choice.size <= 32 and rig.worker.scheduler.max_rows == choice.size
    calls = len(rig.engine.calls)
    rig.add("after the probe")
    assert rig.drain() == 1
    assert rig.worker.batch is choice and len(rig.engine.calls) == calls + 1, "no second probe"
    assert rig.store.counts() == {FAKE_MODEL: {"done": 4}}


def test_a_take_that_cannot_be_kept_for_any_reason_fails_its_job_and_strands_nothing(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    doomed = rig.add("the cache breaks on me", name="doomed")
    fine = rig.add("fine", name="fine")
    real_remember = rig.worker.renderer.remember

    def remember(unit: Any, wav: np.ndarray) -> None:
        if unit.job.id == doomed.id:
            raise sqlite3.OperationalError("database is locked")  # not an OSError
        real_remember(unit, wav)

    monkeypatch.setattr(rig.worker.renderer, "remember", remember)
    assert rig.worker.work_once()
    after = rig.job(doomed)
    assert (after.state, after.attempts, after.lease_token) == (JobState.QUEUED, 1, None)
    assert rig.worker.held_jobs() == []
    assert_delivered(rig, fine, "fine")


def test_a_job_that_cannot_be_taken_fails_alone(make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig()
    broken = rig.add("cannot be taken", name="broken")
    fine = rig.add("taken fine", name="fine")
    real_admit = rig.worker.scheduler.admit

    def admit(job_id: str, *args: Any) -> None:
        if job_id == broken.id:
            raise RuntimeError("something unexpected")
        real_admit(job_id, *args)

    monkeypatch.setattr(rig.worker.scheduler, "admit", admit)
    assert rig.worker.work_once()
    after = rig.job(broken)
    assert (after.state, after.lease_token) == (JobState.QUEUED, None)
    assert after.error_message is not None and "something unexpected" in after.error_message
    assert_delivered(rig, fine, "taken fine")


def test_a_more_urgent_job_gets_in_even_when_the_worker_is_full(make_rig: MakeRig) -> None:
    rig = make_rig(max_batch=1)  # holds at most 4 jobs
    for n in range(4):
        rig.add(LONG_TEXT + f" Book {n}.", name=f"book{n}", chunking={"max_chars": 60})
    assert rig.worker.step(None)
    assert len(rig.worker.held_jobs()) == 4
    urgent = rig.add("Hello.", name="urgent", priority=10)
    assert rig.worker.step(None)
    assert rig.engine.texts[-1] == ["Hello."], "spoken at the next call, not after a book"
    assert rig.job(urgent).state == JobState.DONE
    rig.worker.stop_event.set()
