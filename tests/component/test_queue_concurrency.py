"""The queue under real concurrency: several processes on one database, on both backends.

Each test starts its processes with the "spawn" context (a fresh interpreter each: no connection,
lock or engine inherited from pytest's process) and lines them up on a barrier, so they hit the
database at the same moment rather than one after another as they finish importing. Every wait is
bounded: the barrier, each process's own work and the joins all have deadlines, and a process still
alive past its deadline is killed and named in the failure.

- 8 workers claim (batches of 1 to 8) and finish 2,000 jobs: each is done exactly once, by one worker;
- 4 processes open one fresh PostgreSQL database at once: the schema's steps are applied once each;
- 4 processes (hosts sharing an inbox) take the same 50 inbox files: each file once, its job once.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlmodel import select

from tests.support.fakes import FAKE_MODEL, make_spec, scratch_dir
from tests.support.postgres import Cluster
from ttsd.intake.folders import ACCEPTED_DIR
from ttsd.jobqueue.migrations import POSTGRES_MIGRATIONS
from ttsd.jobqueue.records import AudioInfo, InboxTake, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import InboxFile

JOBS = 2_000
WORKERS = 8
MAX_BATCH = 8
OPENERS = 4
MIGRATION_ROUNDS = 3
INBOX_FILES = 50
TAKERS = 4

START_TIMEOUT_S = 120.0
"""For every process to reach the barrier: each imports SQLAlchemy and ttsd afresh (about 1.7 s of
CPU apiece, and the machines running this may have two cores for eight of them)."""
WORK_TIMEOUT_S = 120.0
"""For the processes' work once released: what they do takes seconds."""
EXIT_GRACE_S = 30.0
"""Past the work deadline, for a process to write its results and exit."""

RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.01)

Worker = Callable[..., None]


def audio_for(job_id: str) -> AudioInfo:
    """The audio a worker "delivers" for a job: named after it, so a finish recorded on the wrong
    job would show."""
    return AudioInfo(
        file=f"{job_id}.wav", format="wav", sample_rate=24_000, duration_s=1.0, bytes=100, sha256=job_id.ljust(64, "0")
    )


def inbox_takes() -> list[InboxTake]:
    """The same 50 parsed inbox files in every process (the same keys, the same job in each)."""
    takes = []
    for number in range(INBOX_FILES):
        name = f"file-{number:03d}.txt"
        spec = make_spec(f"Inbox file number {number}.", name=f"file-{number:03d}")
        takes.append(InboxTake(f"key-{number:03d}", name, ACCEPTED_DIR, ((spec, name),), ()))
    return takes


# --- what the processes run (module level: "spawn" imports this module to find them) ----------------


def claim_until_empty(barrier: threading.Barrier, target: str, worker: int, out: str) -> None:
    """One worker: claim batches of 1 to 8 under its own token and finish each job, until a claim
    finds nothing; writes [job id, finished] pairs, in order, to `out`."""
    store = Store(target)
    token = f"worker-{worker}"
    rng = random.Random(worker)  # the batch sizes are the same on every run
    done: list[tuple[str, bool]] = []
    try:
        barrier.wait(timeout=START_TIMEOUT_S)
        deadline = time.monotonic() + WORK_TIMEOUT_S
        # All jobs were queued before any worker started: an empty claim means the queue is drained
        # (a row skipped because another worker held it is that worker's, and it takes it).
        while time.monotonic() < deadline:
            _token, jobs = store.claim(FAKE_MODEL, max_batch=rng.randint(1, MAX_BATCH), token=token)
            if not jobs:
                break
            for job in jobs:
                done.append((job.id, store.finish_done(job.id, token, audio_for(job.id), RUN)))
    finally:
        store.close()
        Path(out).write_text(json.dumps(done), encoding="utf-8")


def open_fresh(barrier: threading.Barrier, urls: Sequence[str]) -> None:
    """One opener: for each fresh database in turn, open the queue at the same moment as the others
    (which applies the schema), then close it."""
    for url in urls:
        barrier.wait(timeout=START_TIMEOUT_S)
        Store(url).close()


def take_in_own_order(barrier: threading.Barrier, target: str, taker: int, out: str) -> None:
    """One host scanning the shared inbox: the 50 files in its own order, in groups of 1 to 8 (as
    its scans find them); writes [key, taken, [[job id, created], ...]] per file to `out`."""
    store = Store(target)
    rng = random.Random(1000 + taker)
    takes = inbox_takes()
    rng.shuffle(takes)
    seen: list[tuple[str, bool, list[tuple[str, bool]]]] = []
    try:
        barrier.wait(timeout=START_TIMEOUT_S)
        start = 0
        while start < len(takes):
            group = takes[start : start + rng.randint(1, MAX_BATCH)]
            start += len(group)
            for take, result in zip(group, store.take_files(group, taken_by=f"host-{taker}"), strict=True):
                jobs = [(enqueued.job.id, enqueued.created) for enqueued in result.results]
                seen.append((take.key, result.taken, jobs))
    finally:
        store.close()
        Path(out).write_text(json.dumps(seen), encoding="utf-8")


# --- running them ------------------------------------------------------------------------------------


def guarded(worker: Worker, barrier: threading.Barrier, *args: Any) -> None:
    """Run `worker(barrier, *args)` in a process; if it fails, break the barrier, so nobody waits
    for it there until the timeout (the test fails at once, naming it)."""
    try:
        worker(barrier, *args)
    except BaseException:
        barrier.abort()
        raise


def run_together(worker: Worker, per_process: Sequence[tuple[Any, ...]], rounds: int = 1) -> float:
    """Run `worker(barrier, *args)` in one spawned process per `per_process` entry, released together
    `rounds` times (each process waits on the barrier that many times); returns the seconds from the
    first release until the last process exited. Fails, naming them, if any process fails or
    outlives its deadline."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(per_process) + 1)
    processes: list[SpawnProcess] = [
        context.Process(target=guarded, args=(worker, barrier, *args), name=f"{worker.__name__}-{n}")
        for n, args in enumerate(per_process)
    ]
    launched = time.monotonic()
    for process in processes:
        process.start()
    try:
        release(barrier, processes)
        started = time.monotonic()
        print(f"{len(processes)} processes ready in {started - launched:.1f} s")
        for _round in range(rounds - 1):
            release(barrier, processes)
        deadline = time.monotonic() + WORK_TIMEOUT_S + EXIT_GRACE_S
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - started
    finally:
        stuck = [process for process in processes if process.is_alive()]
        for process in stuck:
            process.kill()
            process.join(timeout=10)
    assert not stuck, f"still running past the deadline: {[process.name for process in stuck]}"
    failed = {process.name: process.exitcode for process in processes if process.exitcode != 0}
    assert not failed, f"processes failed (their tracebacks are in the captured stderr): {failed}"
    return elapsed


def release(barrier: threading.Barrier, processes: Sequence[SpawnProcess]) -> None:
    """Wait, with the processes, until all of them are at the barrier (which lets them all go)."""
    try:
        barrier.wait(timeout=START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        for process in processes:
            process.join(timeout=EXIT_GRACE_S)  # the one that broke it is on its way out
        failed = [f"{process.name} (exit code {process.exitcode})" for process in processes if process.exitcode]
        pytest.fail(f"the processes did not all reach the start (within {START_TIMEOUT_S} s, or one failed): {failed}")


def read_json(path: Path) -> Any:
    """What a process wrote."""
    return json.loads(path.read_text(encoding="utf-8"))


# --- the tests ---------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh queue is, as every process opens it: a SQLite file's path or a PostgreSQL URL."""
    if request.param == "postgresql":
        yield str(request.getfixturevalue("pg_url"))
        return
    with scratch_dir(tmp_path) as folder:
        yield str(folder / "state" / "ttsd.sqlite3")


def test_eight_workers_claim_two_thousand_jobs_each_done_exactly_once(target: str, tmp_path: Path) -> None:
    store = Store(target)
    try:
        specs = [(make_spec(f"Concurrent job number {number}."), None) for number in range(JOBS)]
        queued = {result.job.id for result in store.enqueue_many(specs)}
        assert len(queued) == JOBS

        outs = [tmp_path / f"worker-{worker}.json" for worker in range(WORKERS)]
        elapsed = run_together(claim_until_empty, [(target, worker, str(out)) for worker, out in enumerate(outs)])
        finishes: list[list[tuple[str, bool]]] = [[(job_id, ok) for job_id, ok in read_json(out)] for out in outs]
        print(f"{WORKERS} workers, {JOBS} jobs on {target.split(':')[0]}: {elapsed:.2f} s, per worker:", end=" ")
        print([len(jobs) for jobs in finishes])

        claimed = [{job_id for job_id, _ok in jobs} for jobs in finishes]
        assert sum(map(len, claimed)) == sum(map(len, finishes)), "a worker was given one job twice"
        assert sum(map(len, claimed)) == len(set().union(*claimed)), "two workers were given the same job"
        assert set().union(*claimed) == queued, "not every job was claimed"
        succeeded = Counter(job_id for jobs in finishes for job_id, ok in jobs if ok)
        assert set(succeeded) == queued and set(succeeded.values()) == {1}, "a finish failed, or counted twice"
        # Otherwise the run proved nothing about concurrency: one worker drained the queue alone.
        assert sum(1 for jobs in claimed if jobs) >= 2

        assert store.counts() == {FAKE_MODEL: {JobState.DONE: JOBS}}
        for job in store.jobs(limit=None):
            assert (job.audio_file, job.attempts, job.lease_token) == (audio_for(job.id).file, 1, None)
    finally:
        store.close()


def test_processes_opening_a_fresh_postgres_database_at_once_apply_each_step_once(pg_cluster: Cluster) -> None:
    # Several fresh databases, opened one after another by all the processes at once: more chances
    # for them to interleave than one.
    urls = [pg_cluster.create_database() for _ in range(MIGRATION_ROUNDS)]
    run_together(open_fresh, [(urls,)] * OPENERS, rounds=MIGRATION_ROUNDS)

    expected = [(migration.version, 1) for migration in POSTGRES_MIGRATIONS]
    for url in urls:
        with psycopg.connect(url) as connection:
            rows = connection.execute("SELECT version, count(*) FROM ttsd_schema GROUP BY version ORDER BY version")
            assert [(int(version), int(count)) for version, count in rows] == expected
        store = Store(url)
        try:
            assert store.enqueue(make_spec("The schema works.")).created
        finally:
            store.close()


def test_hosts_taking_the_same_inbox_files_take_each_once(target: str, tmp_path: Path) -> None:
    store = Store(target)  # the schema is in place before the takers race on the files
    try:
        outs = [tmp_path / f"taker-{taker}.json" for taker in range(TAKERS)]
        run_together(take_in_own_order, [(target, taker, str(out)) for taker, out in enumerate(outs)])
        seen: list[list[tuple[str, bool, list[tuple[str, bool]]]]] = [
            [(key, taken, [(job_id, created) for job_id, created in jobs]) for key, taken, jobs in read_json(out)]
            for out in outs
        ]

        keys = sorted(take.key for take in inbox_takes())
        takers_of: dict[str, list[int]] = {key: [] for key in keys}
        job_ids: set[str] = set()
        for number, taker in enumerate(seen):
            assert sorted(key for key, _taken, _jobs in taker) == keys, f"taker {number} skipped or repeated a file"
            for key, taken, jobs in taker:
                if taken:
                    takers_of[key].append(number)
                    assert len(jobs) == 1 and jobs[0][1], f"{key} was taken without creating its job: {jobs}"
                    job_ids.add(jobs[0][0])
                else:
                    assert jobs == [], f"{key} was found taken, yet jobs came back: {jobs}"
        assert {key: len(takers) for key, takers in takers_of.items()} == dict.fromkeys(keys, 1)
        assert len(job_ids) == INBOX_FILES

        assert {job.id for job in store.jobs(limit=None)} == job_ids
        with store._read() as session:
            rows = {row.key: (row.taken_by, row.folder) for row in session.exec(select(InboxFile))}
        assert rows == {key: (f"host-{takers[0]}", ACCEPTED_DIR) for key, takers in takers_of.items()}
    finally:
        store.close()
