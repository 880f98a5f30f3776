"""The durable queue as a state machine: hypothesis drives the REAL Store (file-backed SQLite) through
enqueue / claim / heartbeat / complete / fail / cancel / retry / crash / recover / release, compares it
with a plain model after every step, and checks the promises that make "never lose a job" true:

- every job has exactly one valid state, and the state the model expects;
- a running job has exactly one lease (its token in the row), and only running jobs have one;
- attempts never decrease;
- a done job's audio file exists and matches its sha256;
- counts() add up to the number of jobs;
- a stale token (a worker presumed dead, a cancelled or recovered job) can never finish a job.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.fakes import FAKE_MODEL, OTHER_MODEL, make_spec, scratch_dir, write_audio
from ttsd.delivery.outbox import Outbox
from ttsd.errors import StoreError
from ttsd.jobqueue.records import AudioInfo, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import utcnow

MODELS = (FAKE_MODEL, OTHER_MODEL)
TEXTS = ("alpha", "beta", "gamma", "delta", "epsilon")
MAX_ATTEMPTS = 3
QUEUED, RUNNING, DONE, FAILED, CANCELLED = (
    JobState.QUEUED.value,
    JobState.RUNNING.value,
    JobState.DONE.value,
    JobState.FAILED.value,
    JobState.CANCELLED.value,
)
QUEUE_STATES = frozenset({QUEUED, RUNNING, DONE, FAILED, CANCELLED})
LIVE = (QUEUED, RUNNING, DONE)  # a spec matching one of these is a duplicate
RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.01)
SAMPLES = np.linspace(-0.25, 0.25, 64, dtype=np.float32)
# text, model, priority, temperature, seeded: few values, so duplicates and shared batch keys are common
SPECS = st.tuples(
    st.sampled_from(TEXTS),
    st.sampled_from(MODELS),
    st.sampled_from((0, 0, 5)),
    st.sampled_from((None, None, 0.5)),
    st.booleans(),
)


@dataclass
class Expected:
    """What the model says one job is."""

    id: str
    order: int  # creation order: the queue's created_at order
    model: str
    key: str
    batch_key: str
    priority: int
    state: str = QUEUED
    attempts: int = 0
    attempt_base: int = 0
    deferred: bool = False  # queued again after a transient failure, not before an hour from now
    interrupted: bool = False  # its last try ended with its worker's death: it runs alone
    token: str | None = None
    audio_file: str | None = None

    @property
    def fresh(self) -> bool:
        return self.attempts == self.attempt_base or not self.interrupted


class QueueMachine(RuleBasedStateMachine):
    """A real Store next to a model of it; workers are the in-memory leases this machine holds."""

    def __init__(self) -> None:
        super().__init__()
        self._resources = ExitStack()
        base = self._resources.enter_context(scratch_dir(Path(tempfile.gettempdir())))
        self.root = Path(tempfile.mkdtemp(prefix="ttsd-machine-", dir=base))
        self._resources.callback(shutil.rmtree, self.root, True)
        self.store = Store(self.root / "state" / "ttsd.sqlite3")
        self._resources.callback(self.store.close)
        self.outbox = Outbox(self.root / "outbox")
        self.expected: dict[str, Expected] = {}
        self.leases: dict[str, set[str]] = {}  # live workers: token -> jobs it still holds
        self.orphans: set[tuple[str, str]] = set()  # (token, job) of crashed workers, still running
        self.stale: set[tuple[str, str]] = set()  # (token, job) pairs that must never finish anything
        self.high_water: dict[str, int] = {}
        self.claims: dict[str, int] = {}  # token -> claim number
        self.takes = 0

    def teardown(self) -> None:
        self._resources.close()

    # -- helpers ---------------------------------------------------------------------------------

    # Ids and tokens are random: choices are drawn from lists in creation order, so the same
    # choices replay the same run (hypothesis needs that to shrink).

    def _pair_order(self, pair: tuple[str, str]) -> tuple[int, int]:
        return self.claims[pair[0]], self.expected[pair[1]].order

    def _pairs(self, pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted(pairs, key=self._pair_order)

    def _live_pairs(self) -> list[tuple[str, str]]:
        return self._pairs({(token, job_id) for token, ids in self.leases.items() for job_id in ids})

    def _job_ids(self) -> list[str]:
        return sorted(self.expected, key=lambda job_id: self.expected[job_id].order)

    def _forget_leases_of(self, job_ids: set[str]) -> None:
        """These jobs' current leases (live or orphaned) are void from now on."""
        for token, ids in list(self.leases.items()):
            for job_id in ids & job_ids:
                self.stale.add((token, job_id))
            ids -= job_ids
            if not ids:
                del self.leases[token]
        for pair in list(self.orphans):
            if pair[1] in job_ids:
                self.orphans.discard(pair)
                self.stale.add(pair)

    def _release(self, token: str, job_id: str) -> None:
        self.leases[token].discard(job_id)
        if not self.leases[token]:
            del self.leases[token]

    def _write_take(self, job_id: str) -> AudioInfo:
        """A real audio file in the outbox, as a worker writes it before recording `done`."""
        self.takes += 1
        return write_audio(self.outbox, f"{job_id}-take-{self.takes}", "wav", SAMPLES * (self.takes % 7), 8_000)

    # -- rules -------------------------------------------------------------------------------------

    @initialize(specs=st.lists(SPECS, min_size=1, max_size=6))
    def start_with_some_jobs(self, specs: list[tuple[str, str, int, float | None, bool]]) -> None:
        for spec in specs:
            self.enqueue(*spec)

    @rule(spec=SPECS)
    def enqueue_one(self, spec: tuple[str, str, int, float | None, bool]) -> None:
        self.enqueue(*spec)

    def enqueue(self, text: str, model: str, priority: int, temperature: float | None, seeded: bool) -> None:
        fields: dict[str, Any] = {"model": model, "priority": priority}
        if temperature is not None:
            fields["generation"] = {"temperature": temperature}
        if seeded:
            fields["seed"] = 7
        spec = make_spec(text, **fields)
        key = spec.content_key()
        live = [job for job in self.expected.values() if job.key == key and job.state in LIVE]
        result = self.store.enqueue(spec, source_file=f"{text}.json")
        if live:
            newest = max(live, key=lambda job: job.order)
            assert not result.created and result.job.id == newest.id, "a duplicate must land in the live job"
            return
        assert result.created, "nothing live has this content: it is a new job"
        assert result.job.id not in self.expected
        self.expected[result.job.id] = Expected(
            id=result.job.id,
            order=len(self.expected),
            model=model,
            key=key,
            batch_key=spec.batch_key(),
            priority=priority,
        )

    @precondition(lambda self: any(job.state == QUEUED for job in self.expected.values()))
    @rule(model=st.sampled_from(MODELS), max_batch=st.integers(min_value=1, max_value=4))
    def claim(self, model: str, max_batch: int) -> None:
        ready = sorted(
            (job for job in self.expected.values() if job.model == model and job.state == QUEUED and not job.deferred),
            key=lambda job: (-job.priority, job.order),
        )
        token, claimed = self.store.claim(model, max_batch)
        if not ready:
            assert claimed == []
            return
        first = ready[0]
        want = [first]
        if first.fresh and max_batch > 1:
            want += [job for job in ready[1:] if job.fresh][: max_batch - 1]
        assert [job.id for job in claimed] == [job.id for job in want], "claim took the wrong jobs"
        assert token not in self.leases and all(pair[0] != token for pair in self.stale)
        for job in want:
            job.state, job.token = RUNNING, token
        self.leases[token] = {job.id for job in want}
        self.claims[token] = len(self.claims)

    @precondition(lambda self: bool(self.leases or self.stale or self.orphans))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        tokens = sorted(
            {*self.leases, *(t for t, _ in self.stale), *(t for t, _ in self.orphans)},
            key=lambda token: self.claims[token],
        )
        token = data.draw(st.sampled_from(tokens))
        running = sum(1 for job in self.expected.values() if job.state == RUNNING and job.token == token)
        assert self.store.heartbeat(token) == running

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        token, job_id = data.draw(st.sampled_from(self._live_pairs()))
        assert self.store.holds_lease(job_id, token)
        audio = self._write_take(job_id)
        assert self.store.finish_done(job_id, token, audio, RUN), "the lease holder must be able to finish"
        job = self.expected[job_id]
        job.state, job.token, job.audio_file = DONE, None, audio.file
        job.attempts += 1
        self._release(token, job_id)

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), transient=st.booleans(), delay=st.sampled_from((0.0, 3600.0)))
    def fail(self, data: st.DataObject, transient: bool, delay: float) -> None:
        token, job_id = data.draw(st.sampled_from(self._live_pairs()))
        job = self.expected[job_id]
        state = self.store.finish_failed(
            job_id, token, "boom", "the engine said no", MAX_ATTEMPTS, delay if transient else None
        )
        job.attempts += 1
        job.token = None
        job.interrupted = False
        if transient and job.attempts - job.attempt_base < MAX_ATTEMPTS:
            job.state, job.deferred = QUEUED, delay > 0
        else:
            job.state = FAILED
        assert state == JobState(job.state)
        self._release(token, job_id)

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data(), outcome=st.sampled_from(("done", "failed")))
    def stale_token_cannot_finish(self, data: st.DataObject, outcome: str) -> None:
        token, job_id = data.draw(st.sampled_from(self._pairs(self.stale)))
        before = self.store.get(job_id)
        assert not self.store.holds_lease(job_id, token)
        if outcome == "done":
            assert not self.store.finish_done(job_id, token, self._write_take(job_id), RUN)
        else:
            assert self.store.finish_failed(job_id, token, "late", "a zombie worker", MAX_ATTEMPTS, 0.0) is None
        after = self.store.get(job_id)
        assert after.model_dump() == before.model_dump(), "a stale token changed a job"

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._job_ids()))
        job = self.expected[job_id]
        if job.state not in (QUEUED, RUNNING):
            with pytest.raises(StoreError):
                self.store.cancel(job_id)
            return
        assert self.store.cancel(job_id).state == CANCELLED
        job.state, job.token, job.deferred = CANCELLED, None, False
        self._forget_leases_of({job_id})

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._job_ids()))
        job = self.expected[job_id]
        if job.state in (QUEUED, RUNNING):
            with pytest.raises(StoreError):
                self.store.retry(job_id)
            return
        assert self.store.retry(job_id).state == QUEUED
        job.state, job.attempt_base, job.deferred = QUEUED, job.attempts, False

    @precondition(lambda self: bool(self.leases))
    @rule()
    def crash(self) -> None:
        """Every worker dies: their leases are forgotten; the queue still says running."""
        for token, ids in self.leases.items():
            self.orphans.update((token, job_id) for job_id in ids)
        self.leases.clear()

    @precondition(lambda self: any(job.state == RUNNING for job in self.expected.values()))
    @rule(when=st.sampled_from(("start", "all_stale", "none_stale")))
    def recover(self, when: str) -> None:
        stale_before = {
            "start": None,
            "all_stale": utcnow() + timedelta(hours=1),
            "none_stale": utcnow() - timedelta(hours=1),
        }[when]
        recovered = self.store.recover_interrupted(MAX_ATTEMPTS, stale_before=stale_before)
        running = {job.id for job in self.expected.values() if job.state == RUNNING}
        assert {job.id for job in recovered} == (set() if when == "none_stale" else running)
        for job_id in {job.id for job in recovered}:
            job = self.expected[job_id]
            job.attempts += 1
            job.token = None
            job.interrupted = True
            job.state = FAILED if job.attempts - job.attempt_base >= MAX_ATTEMPTS else QUEUED
        self._forget_leases_of({job.id for job in recovered})

    @precondition(lambda self: any(job.state == RUNNING for job in self.expected.values()))
    @rule()
    def release_all_running(self) -> None:
        released = set(self.store.release_all_running())
        running = {job.id for job in self.expected.values() if job.state == RUNNING}
        assert released == running
        for job_id in released:
            self.expected[job_id].state = QUEUED
            self.expected[job_id].token = None
        self._forget_leases_of(released)

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def queue_matches_the_model(self) -> None:
        rows = {job.id: job for job in self.store.jobs(limit=None)}
        assert rows.keys() == self.expected.keys(), "a job appeared or was lost"
        for job_id, row in rows.items():
            want = self.expected[job_id]
            assert row.state in QUEUE_STATES, row.state
            assert row.state == want.state, (job_id, row.state, want.state)
            assert (row.state == RUNNING) == (row.lease_token is not None), "running <=> leased"
            assert row.lease_token == want.token
            assert row.attempts >= self.high_water.get(job_id, 0), "attempts went down"
            self.high_water[job_id] = row.attempts
            assert (row.attempts, row.attempt_base) == (want.attempts, want.attempt_base)
            if row.state == DONE:
                assert row.audio_file == want.audio_file and row.audio_file is not None
                data = (self.outbox.root / row.audio_file).read_bytes()
                assert hashlib.sha256(data).hexdigest() == row.audio_sha256, "done, but the audio differs"
                assert len(data) == row.audio_bytes

    @invariant()
    def one_live_lease_per_job(self) -> None:
        holders = Counter(job_id for ids in self.leases.values() for job_id in ids)
        holders.update(job_id for _token, job_id in self.orphans)
        assert all(count == 1 for count in holders.values()), holders
        for token, ids in self.leases.items():
            for job_id in ids:
                assert self.expected[job_id].state == RUNNING and self.expected[job_id].token == token
        running = {job.id for job in self.expected.values() if job.state == RUNNING}
        assert running == set(holders), "a running job nobody holds, or a lease on a job not running"

    @invariant()
    def counts_add_up(self) -> None:
        counts = self.store.counts()
        assert sum(number for states in counts.values() for number in states.values()) == len(self.expected)
        want: dict[str, Counter[str]] = {}
        for job in self.expected.values():
            want.setdefault(job.model, Counter())[job.state] += 1
        assert {model: dict(states) for model, states in want.items()} == counts


def test_the_queue_keeps_its_promises_under_any_sequence_of_operations() -> None:
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
