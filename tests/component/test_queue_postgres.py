"""The PostgreSQL queue (`Store` on a `postgresql://` URL): the whole queue contract, on a real
server the tests start, plus what only a shared database has: the database's clock, schema
migrations by several hosts at once, and claims that skip rows another host is claiming."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session

from tests.component.queue_contract import AUDIO, RUN, QueueContract, enqueue
from tests.support.fakes import FAKE_MODEL, OTHER_MODEL, make_spec
from tests.support.postgres import Cluster
from tests.support.stores import store_opener
from ttsd.errors import StoreError
from ttsd.jobqueue.records import EnqueueResult
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.work_signal import WorkListener


class TestPostgresQueue(QueueContract):
    """Every contract test on a fresh PostgreSQL database."""

    @pytest.fixture
    def open_queue(self, pg_url: str) -> Iterator[Callable[[], Store]]:
        yield from store_opener(pg_url)


def test_a_server_restart_between_calls_goes_unnoticed(pg_cluster: Cluster, pg_url: str) -> None:
    store = Store(pg_url)
    try:
        job = enqueue(store, "before the restart")
        pg_cluster.restart("fast")
        assert not store.lost_connection_within(60)
        token, [claimed] = store.claim(FAKE_MODEL, max_batch=1)
        assert claimed.id == job.id
        assert store.finish_done(job.id, token, AUDIO, RUN)
        assert store.lost_connection_within(60)  # the daemon then gives other hosts' heartbeats time
    finally:
        store.close()


def test_a_call_while_the_server_is_down_waits_for_it_and_succeeds(pg_cluster: Cluster, pg_url: str) -> None:
    store = Store(pg_url)
    outcome: list[object] = []
    try:
        enqueue(store, "warm the pool")
        pg_cluster.stop("immediate")
        caller = threading.Thread(target=lambda: outcome.append(store.enqueue(make_spec("while it was down"))))
        try:
            caller.start()
            caller.join(timeout=1.0)
            assert caller.is_alive(), "the call should wait for the server, not fail"
        finally:
            pg_cluster.start()
        caller.join(timeout=60)
        assert not caller.is_alive()
        [result] = outcome
        assert isinstance(result, EnqueueResult) and result.created
        assert store.get(result.job.id).state == JobState.QUEUED
    finally:
        store.close()


def test_a_call_fails_clearly_when_the_server_stays_away(pg_cluster: Cluster, pg_url: str) -> None:
    store = Store(pg_url, reconnect_for_s=0.5)
    try:
        pg_cluster.stop("fast")
        with pytest.raises(StoreError, match="is unreachable"):
            store.pending_total()
    finally:
        pg_cluster.start()
        store.close()


def test_workers_are_told_when_work_arrives_and_after_every_reconnection(pg_cluster: Cluster, pg_url: str) -> None:
    store = Store(pg_url)
    heard: queue.Queue[str | None] = queue.Queue()
    stop = threading.Event()
    listener = WorkListener(pg_url, heard.put, stop)
    listener.start()
    try:
        assert heard.get(timeout=30) is None  # connected: anything may have changed
        enqueue(store, "news", model=OTHER_MODEL)
        assert heard.get(timeout=30) == OTHER_MODEL
        token, [_job] = store.claim(OTHER_MODEL, max_batch=1)
        store.release_lease(token)  # given back: someone else may take it now
        assert heard.get(timeout=30) == OTHER_MODEL
        pg_cluster.restart("fast")
        assert heard.get(timeout=30) is None  # listening again
        enqueue(store, "after the restart")
        assert heard.get(timeout=30) == FAKE_MODEL
    finally:
        stop.set()
        listener.join(timeout=10)
        store.close()
    assert not listener.is_alive()


def test_leases_are_measured_by_the_database_clock(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        job = enqueue(store, "timed")
        before = store.clock()
        token, _ = store.claim(FAKE_MODEL, max_batch=1)
        store.heartbeat(token)
        beat = store.get(job.id).heartbeat_at
        assert beat is not None and before <= beat <= store.clock()
    finally:
        store.close()


def test_a_database_that_does_not_exist_is_said_at_once(pg_cluster: Cluster) -> None:
    with pytest.raises(StoreError, match='database "no_such_queue" does not exist'):
        Store(pg_cluster.url("no_such_queue"))  # a daemon's whole reconnect budget, were it waited for


def test_an_unreachable_server_is_said_after_the_wait(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"the queue database .* is unreachable: .*No such file"):
        Store(f"postgresql://ttsd@/ttsd?host={tmp_path}&port=5432", reconnect_for_s=0.3)


class LostAnswer(Exception):
    """The commit landed; its answer never reached us (the connection broke just then)."""


@contextlib.contextmanager
def answers_lost(store: Store, count: int = 1) -> Iterator[list[int]]:
    """The next `count` commits land, but each raises as a broken connection would after it."""
    lost = [0]

    def lose(_session: Session) -> None:
        if lost[0] < count:
            lost[0] += 1
            raise LostAnswer

    transient = store.backend.is_transient
    store.backend.is_transient = lambda error: isinstance(error, LostAnswer) or transient(error)  # type: ignore[method-assign]
    event.listen(Session, "after_commit", lose)
    try:
        yield lost
    finally:
        event.remove(Session, "after_commit", lose)
        store.backend.is_transient = transient  # type: ignore[method-assign]


def test_a_claim_whose_answer_was_lost_returns_the_jobs_it_took(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        jobs = [enqueue(store, f"job {number}") for number in range(3)]
        with answers_lost(store) as lost:
            token, claimed = store.claim(FAKE_MODEL, max_batch=2, token="host.worker-1")
        assert lost == [1]
        assert [job.id for job in claimed] == [job.id for job in jobs[:2]]
        assert store.leased_ids(token) == {job.id for job in jobs[:2]}
        assert store.get(jobs[2].id).state == JobState.QUEUED
    finally:
        store.close()


def test_a_finish_cancel_or_retry_whose_answer_was_lost_still_says_it_happened(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        job = enqueue(store, "finished once")
        token, _ = store.claim(FAKE_MODEL, max_batch=1)
        installed: list[str] = []
        with answers_lost(store):
            assert store.finish_done(job.id, token, AUDIO, RUN, install=lambda: installed.append("audio"))
        assert installed == ["audio"] and store.get(job.id).state == JobState.DONE
        with answers_lost(store):
            assert store.retry(job.id).state == JobState.QUEUED
        other = enqueue(store, "cancelled once")
        with answers_lost(store):
            assert store.cancel(other.id).state == JobState.CANCELLED
        assert not store.finish_done(job.id, token, AUDIO, RUN)  # a later call is not the lost one
    finally:
        store.close()
