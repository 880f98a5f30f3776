"""The queue's contract: what every backend must do, whatever it stores jobs in.

`QueueContract` holds the behaviour tests (dedup, batch claims, leases, guarded finishes, recovery,
retry and cancel, queries, chunks, the cache index, daemon rows). A backend's test module subclasses
it and provides one fixture (huey's `StorageTests` pattern), `open_queue`: it opens another handle
on one fresh, empty queue each time it is called (as another process would), and closes whatever
is still open when the test ends (`tests.support.stores.store_opener` does both). The `store`
fixture, one handle from it, is the contract's own.

Everything here goes through the `Queue` protocol; nothing may depend on how a backend is built.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import ttsd.jobqueue.records as records_module
from tests.support.fakes import FAKE_MODEL, OTHER_MODEL, make_spec
from ttsd.errors import JobNotFound, StoreError
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.records import AudioInfo, CacheStats, InboxTake, Rejection, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job, utcnow

AUDIO = AudioInfo(file="x.wav", format="wav", sample_rate=24_000, duration_s=1.0, bytes=100, sha256="0" * 64)
RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.1)

OpenQueue = Callable[[], Queue]
"""Opens another handle on the queue under test."""


def enqueue(store: Queue, text: str, **fields: Any) -> Job:
    result = store.enqueue(make_spec(text, **fields))
    assert result.created
    return result.job


def claim_one(store: Queue, model: str = FAKE_MODEL) -> tuple[str, Job]:
    token, jobs = store.claim(model, max_batch=1)
    assert len(jobs) == 1
    return token, jobs[0]


def _claim_later(store: Queue) -> tuple[str, Job]:
    token, jobs = store.claim(FAKE_MODEL, max_batch=1, now=utcnow() + timedelta(minutes=5))
    assert len(jobs) == 1
    return token, jobs[0]


class QueueContract:
    """Subclass with an `open_queue` fixture to hold a backend to the queue's behaviour."""

    @pytest.fixture
    def store(self, open_queue: OpenQueue) -> Queue:
        """One handle on the queue under test."""
        return open_queue()

    # -- enqueue and dedup ---------------------------------------------------------------------------

    def test_enqueue_creates_a_queued_job(self, store: Queue) -> None:
        spec = make_spec("hello there", name="greeting", id="client-7", priority=3)
        result = store.enqueue(spec, source_file="greeting.json")
        assert result.created
        job = store.get(result.job.id)
        assert job.state == JobState.QUEUED
        assert (job.name, job.model, job.client_id, job.priority) == ("greeting", FAKE_MODEL, "client-7", 3)
        assert job.source_file == "greeting.json"
        assert job.content_key == spec.content_key()
        assert job.batch_key == spec.batch_key()
        assert job.attempts == 0
        assert job.lease_token is None

    @pytest.mark.parametrize("state", ["queued", "running", "done"])
    def test_same_spec_is_a_duplicate_while_live(self, store: Queue, state: str) -> None:
        first = enqueue(store, "same text")
        if state != "queued":
            token, _ = claim_one(store)
            if state == "done":
                assert store.finish_done(first.id, token, AUDIO, RUN)
        again = store.enqueue(make_spec("same text"))
        assert not again.created
        assert again.job.id == first.id
        assert len(store.jobs(limit=None)) == 1

    @pytest.mark.parametrize("ending", ["failed", "cancelled"])
    def test_same_spec_after_failure_or_cancel_is_a_new_job(self, store: Queue, ending: str) -> None:
        first = enqueue(store, "same text")
        if ending == "failed":
            token, _ = claim_one(store)
            assert store.finish_failed(first.id, token, "boom", "it broke", 3, None) == JobState.FAILED
        else:
            store.cancel(first.id)
        again = store.enqueue(make_spec("same text"))
        assert again.created
        assert again.job.id != first.id
        assert store.enqueue(make_spec("same text")).job.id == again.job.id

    def test_a_different_field_is_a_different_job(self, store: Queue) -> None:
        first = enqueue(store, "same text")
        assert store.enqueue(make_spec("same text", sample_rate=16_000)).job.id != first.id
        assert store.enqueue(make_spec("same text", name="other")).job.id != first.id

    # -- claims --------------------------------------------------------------------------------------

    def test_claim_takes_highest_priority_then_oldest_up_to_max_batch(self, store: Queue) -> None:
        low = enqueue(store, "low", priority=-1)
        old = enqueue(store, "old")
        high = enqueue(store, "high", priority=5)
        new = enqueue(store, "new")
        newest = enqueue(store, "newest")
        token, jobs = store.claim(FAKE_MODEL, max_batch=3)
        assert [job.id for job in jobs] == [high.id, old.id, new.id]
        for job in jobs:
            current = store.get(job.id)
            assert current.state == JobState.RUNNING
            assert current.lease_token == token
            assert current.heartbeat_at is not None and current.started_at is not None
        _, rest = store.claim(FAKE_MODEL, max_batch=3)
        assert [job.id for job in rest] == [newest.id, low.id]
        assert store.claim(FAKE_MODEL, max_batch=3)[1] == []

    def test_claim_mixes_sampling_settings_but_never_models(self, store: Queue) -> None:
        # The worker's scheduler decides which jobs share a generate call; a lease may hold several.
        a1 = enqueue(store, "a1")
        warm = enqueue(store, "warm", generation={"temperature": 0.5})
        seeded = enqueue(store, "seeded", seed=1)
        other = enqueue(store, "other model", model=OTHER_MODEL)
        _, jobs = store.claim(FAKE_MODEL, max_batch=10)
        assert [job.id for job in jobs] == [a1.id, warm.id, seeded.id]
        assert store.get(other.id).state == JobState.QUEUED
        assert [job.id for job in store.claim(OTHER_MODEL, max_batch=10)[1]] == [other.id]

    def test_a_worker_s_claims_share_its_lease_and_one_heartbeat(self, store: Queue) -> None:
        first, second = enqueue(store, "first"), enqueue(store, "second")
        token, jobs = store.claim(FAKE_MODEL, max_batch=1, token="worker-1")
        assert token == "worker-1" and [job.id for job in jobs] == [first.id]
        assert store.claim(FAKE_MODEL, max_batch=1, token="worker-1")[1][0].id == second.id
        assert store.leased_ids("worker-1") == {first.id, second.id}
        assert store.heartbeat("worker-1") == 2
        store.cancel(first.id)
        assert store.leased_ids("worker-1") == {second.id}

    def test_a_suspect_job_is_leased_only_to_a_worker_that_holds_nothing(self, store: Queue) -> None:
        suspect = enqueue(store, "suspect")
        token, _ = store.claim(FAKE_MODEL, max_batch=1)
        store.interrupt_lease(token, max_attempts=3)  # its worker died holding it
        fresh = enqueue(store, "fresh")
        assert store.claim(FAKE_MODEL, max_batch=4, alone_ok=False)[1] == []  # it waits for an idle worker
        _, jobs = store.claim(FAKE_MODEL, max_batch=4, alone_ok=True)
        assert [job.id for job in jobs] == [suspect.id]  # and then runs alone
        assert store.get(fresh.id).state == JobState.QUEUED

    def test_a_clean_failure_does_not_make_a_job_run_alone(self, store: Queue) -> None:
        flaky = enqueue(store, "flaky")
        token, _ = store.claim(FAKE_MODEL, max_batch=1)
        store.finish_failed(flaky.id, token, "engine_error", "a hiccup", max_attempts=3, retry_after_s=0.0)
        fresh = enqueue(store, "fresh")
        _, jobs = store.claim(FAKE_MODEL, max_batch=4, alone_ok=False)
        assert [job.id for job in jobs] == [flaky.id, fresh.id]

    def test_only_the_jobs_of_the_call_a_worker_died_in_are_charged(self, store: Queue) -> None:
        in_call, bystander = enqueue(store, "in the call"), enqueue(store, "bystander")
        token, _ = store.claim(FAKE_MODEL, max_batch=2, token="dying")
        assert [job.id for job in store.interrupt_lease(token, 3, only={in_call.id})] == [in_call.id]
        assert store.release_lease(token) == [bystander.id]
        assert store.get(in_call.id).attempts == 1 and store.get(bystander.id).attempts == 0

    def test_stale_recovery_spares_the_leases_of_live_workers(self, store: Queue) -> None:
        watched, orphan = enqueue(store, "watched"), enqueue(store, "orphan")
        store.claim(FAKE_MODEL, max_batch=1, token="live", now=utcnow() - timedelta(hours=1))
        store.claim(FAKE_MODEL, max_batch=1, token="gone", now=utcnow() - timedelta(hours=1))
        later = utcnow() + timedelta(minutes=1)
        recovered = store.recover_interrupted(3, stale_before=later, spare=["live"])
        assert [job.id for job in recovered] == [orphan.id]
        assert store.get(watched.id).state == JobState.RUNNING

    def test_a_dead_worker_charges_its_jobs_a_stopped_one_does_not(self, store: Queue) -> None:
        crashed, stopped, bystander = enqueue(store, "crashed"), enqueue(store, "stopped"), enqueue(store, "bystander")
        dead, _ = store.claim(FAKE_MODEL, max_batch=1, token="dead")
        clean, _ = store.claim(FAKE_MODEL, max_batch=1, token="clean")
        store.claim(FAKE_MODEL, max_batch=1, token="alive")
        assert [job.id for job in store.interrupt_lease(dead, max_attempts=3)] == [crashed.id]
        assert store.release_lease(clean) == [stopped.id]
        after_crash, after_stop = store.get(crashed.id), store.get(stopped.id)
        assert (after_crash.state, after_crash.attempts) == (JobState.QUEUED, 1)
        assert (after_stop.state, after_stop.attempts) == (JobState.QUEUED, 0)
        assert store.get(bystander.id).state == JobState.RUNNING
        assert store.interrupt_lease("nobody", max_attempts=3) == [] and store.release_lease("nobody") == []

    def test_a_daemon_restart_requeues_running_jobs_uncharged_up_to_a_cap(self, store: Queue) -> None:
        job = enqueue(store, "survivor")
        for restart in range(3):
            store.claim(FAKE_MODEL, max_batch=1)
            [recovered] = store.recover_interrupted(max_attempts=10, free_restarts=2)
            current = store.get(job.id)
            assert recovered.id == job.id and current.state == JobState.QUEUED
            # The first two restarts are free; the third counts as a try.
            assert (current.restarts, current.attempts) == ((1, 0), (2, 0), (2, 1))[restart]

    def test_claim_skips_jobs_whose_not_before_is_in_the_future(self, store: Queue) -> None:
        job = enqueue(store, "later")
        token, _ = claim_one(store)
        assert store.finish_failed(job.id, token, "flaky", "try again", 3, retry_after_s=60) == JobState.QUEUED
        assert store.claim(FAKE_MODEL, max_batch=4)[1] == []
        assert store.models_with_queued_jobs() == [FAKE_MODEL]
        _, jobs = store.claim(FAKE_MODEL, max_batch=4, now=utcnow() + timedelta(seconds=61))
        assert [j.id for j in jobs] == [job.id]
        assert store.get(job.id).not_before is None

    def test_concurrent_claims_hand_out_every_job_exactly_once(self, open_queue: OpenQueue) -> None:
        setup = open_queue()
        ids = set()
        for number in range(200):
            model = FAKE_MODEL if number % 2 else OTHER_MODEL
            ids.add(setup.enqueue(make_spec(f"job {number}", model=model, priority=number % 3)).job.id)
        setup.close()

        claimed: list[tuple[str, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(4)

        def claimer(index: int) -> None:
            own = open_queue()  # its own connections, as another worker would have
            try:
                start.wait(timeout=10)
                models = [FAKE_MODEL, OTHER_MODEL] if index % 2 else [OTHER_MODEL, FAKE_MODEL]
                while True:
                    got = 0
                    for model in models:
                        token, jobs = own.claim(model, max_batch=3)
                        got += len(jobs)
                        with lock:
                            claimed.extend((job.id, token) for job in jobs)
                    if not got:
                        return
            except BaseException as error:
                errors.append(error)
            finally:
                own.close()

        threads = [threading.Thread(target=claimer, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        assert errors == []
        counts = Counter(job_id for job_id, _ in claimed)
        assert set(counts) == ids
        assert max(counts.values()) == 1
        check = open_queue()
        try:
            for job_id, token in claimed:
                assert check.holds_lease(job_id, token)
            assert check.counts() == {FAKE_MODEL: {"running": 100}, OTHER_MODEL: {"running": 100}}
            assert check.integrity_check() == "ok"
        finally:
            check.close()

    # -- leases and guarded finishes -----------------------------------------------------------------

    def test_finish_done_with_the_lease_records_the_result(self, store: Queue) -> None:
        job = enqueue(store, "fine")
        token, _ = claim_one(store)
        run = RunInfo(device="cpu", dtype="float32", seed=7, cache_hit=False, synth_s=0.25)
        assert store.finish_done(job.id, token, AUDIO, run)
        done = store.get(job.id)
        assert done.state == JobState.DONE
        assert done.attempts == 1
        assert done.lease_token is None
        assert done.finished_at is not None
        assert (done.audio_file, done.audio_sha256, done.duration_s) == ("x.wav", "0" * 64, 1.0)
        assert (done.device, done.dtype, done.seed, done.synth_s) == ("cpu", "float32", 7, 0.25)
        assert done.chunks_done == done.chunks_total
        assert not store.finish_done(job.id, token, AUDIO, RUN)  # once only
        assert store.get(job.id).attempts == 1

    def test_finish_done_refuses_a_wrong_token(self, store: Queue) -> None:
        job = enqueue(store, "fine")
        claim_one(store)
        assert not store.finish_done(job.id, "not-the-token", AUDIO, RUN)
        assert store.get(job.id).state == JobState.RUNNING

    def test_finish_done_refuses_a_cancelled_job(self, store: Queue) -> None:
        job = enqueue(store, "cancel me")
        token, _ = claim_one(store)
        store.cancel(job.id)
        assert not store.holds_lease(job.id, token)
        assert not store.finish_done(job.id, token, AUDIO, RUN)
        after = store.get(job.id)
        assert after.state == JobState.CANCELLED
        assert after.audio_file is None
        assert after.attempts == 0

    def test_a_stale_lease_loses_to_the_new_holder(self, store: Queue) -> None:
        job = enqueue(store, "reclaimed")
        stale, _ = claim_one(store)
        assert store.release_all_running() == [job.id]
        fresh, _ = claim_one(store)
        assert not store.holds_lease(job.id, stale)
        assert store.holds_lease(job.id, fresh)
        assert not store.finish_done(job.id, stale, AUDIO, RUN)
        assert store.finish_failed(job.id, stale, "x", "y", 3, None) is None
        assert store.heartbeat(stale) == 0
        current = store.get(job.id)
        assert (current.state, current.lease_token, current.attempts) == (JobState.RUNNING, fresh, 0)
        assert store.finish_done(job.id, fresh, AUDIO, RUN)

    def test_finish_failed_with_retry_requeues_until_max_attempts(self, store: Queue) -> None:
        job = enqueue(store, "flaky")
        for attempt in (1, 2):
            before = utcnow()
            token, _ = claim_one(store) if attempt == 1 else _claim_later(store)
            state = store.finish_failed(job.id, token, "flaky", f"try {attempt}", 3, retry_after_s=30)
            assert state == JobState.QUEUED
            queued = store.get(job.id)
            assert queued.attempts == attempt
            assert queued.lease_token is None
            assert (queued.error_code, queued.error_message) == ("flaky", f"try {attempt}")
            assert queued.not_before is not None
            assert before + timedelta(seconds=29) < queued.not_before < utcnow() + timedelta(seconds=31)
        token, _ = _claim_later(store)
        assert store.finish_failed(job.id, token, "flaky", "try 3", 3, retry_after_s=30) == JobState.FAILED
        failed = store.get(job.id)
        assert (failed.state, failed.attempts, failed.error_code) == (JobState.FAILED, 3, "flaky")
        assert failed.finished_at is not None
        assert store.failed_job_ids() == [job.id]

    def test_finish_failed_without_retry_fails_at_once(self, store: Queue) -> None:
        job = enqueue(store, "hopeless")
        token, _ = claim_one(store)
        assert store.finish_failed(job.id, token, "bad_speaker", "no such voice", 3, None) == JobState.FAILED
        failed = store.get(job.id)
        assert (failed.attempts, failed.error_code, failed.error_message) == (1, "bad_speaker", "no such voice")

    def test_heartbeat_renews_the_lease(self, store: Queue) -> None:
        job = enqueue(store, "slow")
        long_ago = utcnow() - timedelta(minutes=10)
        token, _ = store.claim(FAKE_MODEL, max_batch=1, now=long_ago)
        assert store.get(job.id).heartbeat_at == long_ago
        assert store.heartbeat(token) == 1
        renewed = store.get(job.id).heartbeat_at
        assert renewed is not None and renewed > long_ago + timedelta(minutes=9)
        assert store.recover_interrupted(3, stale_before=utcnow() - timedelta(minutes=1)) == []
        assert store.holds_lease(job.id, token)
        assert store.heartbeat("someone-else") == 0

    def test_release_all_running_requeues_without_counting(self, store: Queue) -> None:
        running = [enqueue(store, f"run {n}") for n in range(3)]
        waiting = enqueue(store, "waiting", priority=-5)
        _, jobs = store.claim(FAKE_MODEL, max_batch=3)
        assert {job.id for job in jobs} == {job.id for job in running}
        assert sorted(store.release_all_running()) == sorted(job.id for job in running)
        for job in [*running, waiting]:
            current = store.get(job.id)
            assert (current.state, current.attempts, current.lease_token) == (JobState.QUEUED, 0, None)
        assert store.release_all_running() == []

    # -- recovery ------------------------------------------------------------------------------------

    def test_recover_at_start_counts_the_try_and_fails_at_max_attempts(self, store: Queue) -> None:
        job = enqueue(store, "crashes the daemon")
        bystander = enqueue(store, "queued bystander", priority=-1)
        for attempt in (1, 2):
            claim_one(store)
            recovered = store.recover_interrupted(max_attempts=3)
            assert [j.id for j in recovered] == [job.id]
            current = store.get(job.id)
            assert (current.state, current.attempts, current.lease_token) == (JobState.QUEUED, attempt, None)
        claim_one(store)
        [last] = store.recover_interrupted(max_attempts=3)
        assert last.state == JobState.FAILED
        failed = store.get(job.id)
        assert (failed.state, failed.attempts, failed.error_code) == (JobState.FAILED, 3, "interrupted")
        assert failed.error_message and "3" in failed.error_message
        assert failed.finished_at is not None
        assert store.get(bystander.id).state == JobState.QUEUED
        assert store.get(bystander.id).attempts == 0

    def test_recover_with_stale_before_takes_only_stale_leases(self, store: Queue) -> None:
        stale = enqueue(store, "stalled")
        alive = enqueue(store, "alive")
        store.claim(FAKE_MODEL, max_batch=1, now=utcnow() - timedelta(minutes=5))
        alive_token, _ = claim_one(store)
        recovered = store.recover_interrupted(3, stale_before=utcnow() - timedelta(seconds=60))
        assert [job.id for job in recovered] == [stale.id]
        assert store.get(stale.id).state == JobState.QUEUED
        assert store.get(stale.id).attempts == 1
        assert store.holds_lease(alive.id, alive_token)
        assert store.get(alive.id).attempts == 0

    # -- people: retry and cancel --------------------------------------------------------------------

    def test_retry_gives_a_fresh_attempt_budget_and_clears_errors(self, store: Queue) -> None:
        job = enqueue(store, "flaky")
        for _ in range(2):
            token, _ = _claim_later(store)
            store.finish_failed(job.id, token, "flaky", "again", 2, retry_after_s=1)
        failed = store.get(job.id)
        assert (failed.state, failed.attempts) == (JobState.FAILED, 2)
        retried = store.retry(job.id)
        assert (retried.state, retried.attempts, retried.attempt_base) == (JobState.QUEUED, 2, 2)
        current = store.get(job.id)
        assert (current.error_code, current.error_message, current.not_before) == (None, None, None)
        assert (current.finished_at, current.started_at) == (None, None)
        # The budget starts over: one failed try is re-queued again, the second fails.
        token, _ = _claim_later(store)
        assert store.finish_failed(job.id, token, "flaky", "again", 2, retry_after_s=1) == JobState.QUEUED
        token, _ = _claim_later(store)
        assert store.finish_failed(job.id, token, "flaky", "again", 2, retry_after_s=1) == JobState.FAILED
        assert store.get(job.id).attempts == 4

    def test_retry_refuses_pending_jobs_and_requeues_done_ones(self, store: Queue) -> None:
        job = enqueue(store, "fine")
        with pytest.raises(StoreError):
            store.retry(job.id)
        token, _ = claim_one(store)
        with pytest.raises(StoreError):
            store.retry(job.id)
        assert store.finish_done(job.id, token, AUDIO, RUN)
        again = store.retry(job.id)
        assert (again.state, again.attempt_base) == (JobState.QUEUED, 1)

    def test_cancel_queued_and_running_but_not_finished_jobs(self, store: Queue) -> None:
        queued = enqueue(store, "queued")
        cancelled = store.cancel(queued.id)
        assert cancelled.state == JobState.CANCELLED
        assert cancelled.finished_at is not None
        assert store.get(queued.id).error_code == "cancelled"
        running = enqueue(store, "running")
        token, _ = claim_one(store)
        assert store.cancel(running.name).state == JobState.CANCELLED
        assert store.heartbeat(token) == 0
        done = enqueue(store, "done")
        token, _ = claim_one(store)
        assert store.finish_done(done.id, token, AUDIO, RUN)
        for ref in (done.id, queued.id):
            with pytest.raises(StoreError):
                store.cancel(ref)
        assert store.get(done.id).state == JobState.DONE
        with pytest.raises(JobNotFound):
            store.cancel("no-such-job")

    def test_attempts_never_decrease_and_leases_stay_consistent(self, store: Queue) -> None:
        """A seeded random walk over every operation, checking the invariants after each step."""
        rng = random.Random(1234)
        texts = [f"walk {n}" for n in range(5)]
        ids = [enqueue(store, text).id for text in texts]
        tokens: dict[str, str] = {}
        seen_attempts = dict.fromkeys(ids, 0)
        seen_states: set[str] = set()
        later = utcnow() + timedelta(hours=1)
        for _ in range(150):
            job_id = rng.choice(ids)
            action = rng.choice(["claim", "done", "fail", "retry_fail", "recover", "release", "cancel", "retry"])
            if action == "claim":
                token, jobs = store.claim(FAKE_MODEL, max_batch=rng.randint(1, 3), now=later)
                tokens.update((job.id, token) for job in jobs)
            elif action == "done":
                store.finish_done(job_id, tokens.get(job_id, "none"), AUDIO, RUN)
            elif action in ("fail", "retry_fail"):
                delay = 1.0 if action == "retry_fail" else None
                store.finish_failed(job_id, tokens.get(job_id, "none"), "x", "y", 3, delay)
            elif action == "recover":
                store.recover_interrupted(3)
            elif action == "release":
                store.release_all_running()
            else:
                with contextlib.suppress(StoreError):
                    getattr(store, action)(job_id)
            for job in store.jobs(limit=None):
                assert job.attempts >= seen_attempts[job.id], (action, job)
                seen_attempts[job.id] = job.attempts
                seen_states.add(job.state)
                assert job.attempt_base <= job.attempts
                assert (job.state == JobState.RUNNING) == (job.lease_token is not None)
                if job.state == JobState.DONE:
                    assert job.audio_file is not None and job.error_code is None
        assert seen_states == {state.value for state in JobState if state != JobState.REJECTED}
        assert max(seen_attempts.values()) >= 3
        assert store.integrity_check() == "ok"

    # -- chunks of long jobs -------------------------------------------------------------------

    def test_chunks_are_planned_once_and_resume_where_they_stopped(self, store: Queue) -> None:
        job = enqueue(store, "a long text")
        token, _ = claim_one(store)
        assert store.chunks(job.id) == []
        planned = store.plan_chunks(job.id, token, [("One.", 300, 0), ("Two.", 0, 1)])
        assert planned is not None
        assert [(c.index, c.text, c.pause_after_ms, c.segment, c.done) for c in planned] == [
            (0, "One.", 300, 0, False),
            (1, "Two.", 0, 1, False),
        ]
        assert (store.get(job.id).chunks_total, store.get(job.id).chunks_done) == (2, 0)
        assert store.chunk_done(job.id, token, 0, 1.5, 0.25, cache_hit=False)
        assert store.chunk_done(job.id, token, 0, 1.5, 0.25, cache_hit=False)  # recorded twice, counted once
        progress = store.get(job.id)
        assert (progress.chunks_done, progress.audio_s_done, progress.synth_s) == (1, 1.5, 0.25)
        assert store.jobs_with_chunks() == {job.id: "running"}
        store.recover_interrupted(3)
        fresh, _ = claim_one(store)
        resumed = store.plan_chunks(job.id, fresh, [("Something else entirely.", 0, 0)])
        assert resumed is not None
        assert [(c.text, c.done, c.duration_s) for c in resumed] == [("One.", True, 1.5), ("Two.", False, None)]
        assert store.plan_chunks(job.id, token, []) is None  # the interrupted holder's lease is gone
        assert not store.chunk_done(job.id, token, 1, 1.0, 0.1, cache_hit=False)
        assert not store.chunk_done(job.id, fresh, 7, 1.0, 0.1, cache_hit=False)  # no such chunk
        assert store.chunk_done(job.id, fresh, 1, 0.5, 0.1, cache_hit=True)
        assert not store.drop_finished_chunks(job.id)  # still running: its chunks are kept
        assert len(store.chunks(job.id)) == 2
        assert store.finish_done(job.id, fresh, AUDIO, RUN)
        assert store.get(job.id).chunks_done == 2
        assert store.jobs_with_chunks() == {job.id: "done"}
        assert store.drop_finished_chunks(job.id)
        assert (store.chunks(job.id), store.jobs_with_chunks()) == ([], {})

    def test_retry_starts_a_chunked_job_over(self, store: Queue) -> None:
        job = enqueue(store, "a long text")
        token, _ = claim_one(store)
        store.plan_chunks(job.id, token, [("One.", 0, 0), ("Two.", 0, 0)])
        store.chunk_done(job.id, token, 0, 1.0, 0.1, cache_hit=False)
        assert store.finish_failed(job.id, token, "bad_speaker", "no such voice", 3, None) == JobState.FAILED
        store.retry(job.id)
        assert store.chunks(job.id) == []
        retried = store.get(job.id)
        assert (retried.chunks_done, retried.audio_s_done) == (0, 0.0)

    # -- the audio cache's index ----------------------------------------------------------------

    def test_cache_index_counts_lookups_and_evicts_least_recently_used(self, store: Queue) -> None:
        assert store.cache_stats() == CacheStats(entries=0, bytes=0, hits=0, misses=0)
        assert not store.cache_lookup("a")
        for key, size in (("a", 100), ("b", 200), ("c", 300)):
            store.cache_record(key, size)
        assert store.cache_lookup("a")  # now the most recently used
        stats = store.cache_stats()
        assert (stats.entries, stats.bytes, stats.hits, stats.misses, stats.hit_rate) == (3, 600, 1, 1, 0.5)
        assert store.cache_evict(max_entries=2, max_bytes=10_000) == ["b"]
        assert store.cache_evict(max_entries=10, max_bytes=350) == ["c"]
        store.cache_forget("a", count_miss=True)  # its file was unusable: the hit becomes a miss
        assert store.cache_stats() == CacheStats(entries=0, bytes=0, hits=0, misses=2)
        store.cache_record("d", 50)
        store.cache_record("d", 70)  # the same key again replaces the entry
        assert store.cache_stats().bytes == 70
        assert store.cache_clear() == ["d"]
        assert store.cache_stats() == CacheStats(entries=0, bytes=0, hits=0, misses=0)

    # -- queries -------------------------------------------------------------------------------------

    def test_get_by_id_name_and_unique_prefix(self, store: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
        ids = iter(["abcd0001", "abcd0002", "beef0003"])
        monkeypatch.setattr(records_module, "new_job_id", lambda: next(ids))
        first = enqueue(store, "first take", name="scene")
        second = enqueue(store, "second take", name="scene")
        other = enqueue(store, "other", name="beef")
        assert store.get("abcd0001").id == first.id
        assert store.get("scene").id == second.id  # the newest with that name
        assert store.get("beef").id == other.id  # a name beats a prefix
        assert store.get("beef0").id == other.id
        assert store.get("abcd0002").id == second.id
        for ref in ("abcd", "abc", "zzzz", "", "beef000_", "abcd%", "%"):
            with pytest.raises(JobNotFound):
                store.get(ref)

    def test_jobs_are_listed_newest_first_with_filters(self, store: Queue) -> None:
        first = enqueue(store, "one")
        second = enqueue(store, "two", model=OTHER_MODEL)
        third = enqueue(store, "three")
        assert [job.id for job in store.jobs()] == [third.id, second.id, first.id]
        assert [job.id for job in store.jobs(model=FAKE_MODEL)] == [third.id, first.id]
        assert [job.id for job in store.jobs(limit=1)] == [third.id]
        claim_one(store, OTHER_MODEL)
        assert [job.id for job in store.jobs(state="running")] == [second.id]
        assert [job.id for job in store.jobs(since=third.created_at)] == [third.id]
        assert store.pending_count(FAKE_MODEL) == 2
        assert store.pending_count(OTHER_MODEL) == 1

    def test_latest_per_name(self, store: Queue) -> None:
        enqueue(store, "old take", name="scene")
        newer = enqueue(store, "new take", name="scene")
        solo = enqueue(store, "solo")
        latest = {job.name: job.id for job in store.latest_per_name()}
        assert latest == {"scene": newer.id, "solo": solo.id}
        found = store.newest_named("scene")
        assert found is not None and found.id == newer.id
        assert store.newest_named(newer.id) is None  # by name only, never by id

    def test_counts_per_model_and_state(self, store: Queue) -> None:
        for n in range(3):
            enqueue(store, f"a{n}")
        enqueue(store, "b", model=OTHER_MODEL)
        token, job = claim_one(store)
        store.finish_done(job.id, token, AUDIO, RUN)
        claim_one(store)
        assert store.counts() == {FAKE_MODEL: {"done": 1, "running": 1, "queued": 1}, OTHER_MODEL: {"queued": 1}}

    def test_daemon_rows(self, store: Queue, tmp_path: Path) -> None:
        assert store.latest_daemon() is None
        first = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0")
        second = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.1")
        latest = store.latest_daemon()
        assert latest is not None and latest.id == second.id
        assert (latest.version, latest.inbox, latest.stopped_at) == ("1.1", str(tmp_path / "in"), None)
        store.daemon_heartbeat(second.id, '{"device": "cpu"}', '[{"model": "fake"}]')
        store.daemon_stopped(second.id)
        latest = store.latest_daemon()
        assert latest is not None
        assert (latest.device_plan, latest.loaded_models) == ('{"device": "cpu"}', '[{"model": "fake"}]')
        assert latest.heartbeat_at >= second.heartbeat_at
        assert latest.stopped_at is not None and latest.stopped_at >= latest.started_at
        assert first.id != second.id

    def test_reopening_keeps_the_queue(self, open_queue: OpenQueue) -> None:
        first = open_queue()
        job = first.enqueue(make_spec("persist me")).job
        first.close()
        second = open_queue()
        assert second.get(job.id).state == JobState.QUEUED
        assert not second.enqueue(make_spec("persist me")).created

    # -- several hosts on one queue --------------------------------------------------------------------

    def test_an_inbox_file_is_taken_once_and_its_jobs_recorded_with_it(self, open_queue: OpenQueue) -> None:
        first, second = open_queue(), open_queue()
        refusal = Rejection("bad", "bad.json", "invalid_json", "not JSON", None)
        takes = [
            InboxTake("k-good", "good.txt", "accepted", ((make_spec("taken once"), "good.txt"),), ()),
            InboxTake("k-bad", "bad.json", "rejected", (), (refusal,)),
        ]
        good, bad = first.take_files(takes, "host-a")
        assert (good.taken, good.folder, bad.taken, bad.folder) == (True, "accepted", True, "rejected")
        assert [result.created for result in good.results] == [True]
        assert [row.state for row in bad.rejected] == [JobState.REJECTED]
        again = second.take_files(takes, "host-b")
        assert [(t.taken, t.folder, t.taken_by) for t in again] == [
            (False, "accepted", "host-a"),
            (False, "rejected", "host-a"),
        ]
        assert all(take.results == () and take.rejected == () for take in again)
        assert all(0 <= take.taken_s_ago < 60 for take in again)
        assert len(first.jobs(limit=None)) == 2
        # The same content in another file (another key) is the same job again, as ever.
        [copy] = second.take_files([InboxTake("k-copy", "copy.txt", "accepted", takes[0].jobs, ())], "host-b")
        assert copy.taken and [result.created for result in copy.results] == [False]

    def test_taken_files_are_forgotten_after_a_while(self, store: Queue) -> None:
        store.take_files([InboxTake("k-old", "old.txt", "accepted", ((make_spec("old"), "old.txt"),), ())], "a")
        assert store.forget_taken_files(older_than_s=3600) == 0
        assert store.forget_taken_files(before=store.clock() + timedelta(days=8)) == 1
        [again] = store.take_files([InboxTake("k-old", "old.txt", "accepted", (), ())], "a")
        assert again.taken

    def test_a_daemon_recovers_and_releases_only_the_leases_it_minted(self, store: Queue) -> None:
        mine = enqueue(store, "mine")
        theirs = enqueue(store, "theirs")
        store.claim(FAKE_MODEL, max_batch=1, token="aaaa.tiny-1")
        store.claim(FAKE_MODEL, max_batch=1, token="bbbb.tiny-1")
        [recovered] = store.recover_interrupted(max_attempts=3, free_restarts=5, owner="aaaa")
        assert recovered.id == mine.id and store.get(mine.id).state == JobState.QUEUED
        assert store.get(theirs.id).state == JobState.RUNNING
        store.claim(FAKE_MODEL, max_batch=1, token="aaaa.tiny-2")
        assert store.release_all_running(owner="aaaa") == [mine.id]
        assert store.get(theirs.id).state == JobState.RUNNING
        # A `_` or `%` in an owner is not a wildcard.
        assert store.release_all_running(owner="bb_b") == []

    def test_a_stale_lease_is_charged_only_while_its_host_lives(self, store: Queue, tmp_path: Path) -> None:
        living = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", host_id="aaaa")
        on_living, on_dead = enqueue(store, "on a living host"), enqueue(store, "on a dead host")
        store.claim(FAKE_MODEL, max_batch=1, token="aaaa.tiny-1")
        store.claim(FAKE_MODEL, max_batch=1, token="dddd.tiny-1")
        store.daemon_heartbeat(living.id, "{}", "[]")
        [record] = store.daemons()
        recovered = store.recover_interrupted(3, stale_before=record.heartbeat_at, free_restarts=5)
        assert {job.id for job in recovered} == {on_living.id, on_dead.id}
        charged, spared = store.get(on_living.id), store.get(on_dead.id)
        assert (charged.attempts, charged.restarts, charged.error_code) == (1, 0, "interrupted")
        assert (spared.attempts, spared.restarts, spared.error_code) == (0, 1, None)
        assert spared.state == charged.state == JobState.QUEUED

    def test_a_daemon_starting_marks_its_dead_predecessor_stopped(self, store: Queue, tmp_path: Path) -> None:
        killed = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", host_id="aaaa")
        other_host = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", host_id="bbbb")
        again = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", host_id="aaaa")
        stopped = {record.id: record.stopped_at is not None for record in store.daemons()}
        assert stopped == {killed.id: True, other_host.id: False, again.id: False}

    def test_the_database_clock_is_utc_now(self, store: Queue) -> None:
        moment = store.clock()
        assert moment.utcoffset() == timedelta(0)
        assert abs(moment - utcnow()) < timedelta(seconds=5)

    def test_daemons_lists_every_host_running_ones_first(self, store: Queue, tmp_path: Path) -> None:
        stopped = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", role="run")
        worker = store.register_daemon(tmp_path / "in", tmp_path / "out", "1.0", role="worker")
        store.daemon_stopped(stopped.id)
        listed = store.daemons()
        assert [(record.id, record.role) for record in listed] == [(worker.id, "worker"), (stopped.id, "run")]
