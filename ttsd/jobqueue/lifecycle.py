"""A job's life in the queue: enqueued (once per distinct job), claimed in batches under a lease,
kept alive by heartbeats, finished by the lease holder only, recovered when its worker is gone,
released at shutdown, cancelled or retried by people. Each state change is one of
`ttsd.jobqueue.transitions`; this module finds the rows and holds the transactions."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from ttsd.errors import StoreError
from ttsd.jobqueue import transitions
from ttsd.jobqueue.chunks import delete_chunks
from ttsd.jobqueue.database import transient
from ttsd.jobqueue.leasing import (
    HOST_SILENT_S,
    claimed_at,
    host_of,
    hosts_alive_since,
    lease,
    locked,
    owned,
)
from ttsd.jobqueue.new_rows import ENQUEUE_LOCK, add_jobs, new_job
from ttsd.jobqueue.queries import LIVE_STATES, JobQueries, leased
from ttsd.jobqueue.records import AudioInfo, EnqueueResult, Finished, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job
from ttsd.jobspec import JobSpec


class JobLifecycle(JobQueries):
    """Every write that moves a job."""

    def enqueue(self, spec: JobSpec, source_file: str | None = None) -> EnqueueResult:
        """Record a job, unless the same resolved job is already queued, running or done."""
        return self.enqueue_many([(spec, source_file)])[0]

    @transient
    def enqueue_many(self, items: Sequence[tuple[JobSpec, str | None]]) -> list[EnqueueResult]:
        """`enqueue` for several jobs (spec, source file) in one transaction: a burst of files pays
        one commit instead of one each. The same job twice in `items` is one job."""
        with self._write() as session:
            self._serialize(session, ENQUEUE_LOCK)
            results = add_jobs(session, items, self._now(session))
            self._announce(session, {result.job.model for result in results if result.created})
        return results

    @transient
    def restore(
        self, spec: JobSpec, source_file: str | None, job_id: str | None, finished: Finished | None
    ) -> EnqueueResult:
        """Rebuild one job of a lost queue from disk, under the id its status file named (so scripts
        following it see the same job): queued to run again, or with the outcome it had (`finished`).
        A job already known by that id or content is left as it is (created False)."""
        key = spec.content_key()
        with self._write() as session:
            self._serialize(session, ENQUEUE_LOCK)
            existing = session.get(Job, job_id) if job_id else None
            existing = (
                existing
                or session.exec(select(Job).where(Job.content_key == key, col(Job.state).in_(LIVE_STATES))).first()
            )
            if existing is not None:
                return EnqueueResult(existing, created=False)
            job = new_job(key, spec, source_file, self._now(session), job_id)
            if finished is not None:
                transitions.restore(job, finished)
            session.add(job)
            self._announce(session, [job.model] if job.state == JobState.QUEUED else [])
            return EnqueueResult(job, created=True)

    def claim(
        self,
        model: str,
        max_batch: int,
        now: datetime | None = None,
        token: str | None = None,
        alone_ok: bool = True,
        min_priority: int | None = None,
    ) -> tuple[str, list[Job]]:
        """Lease up to `max_batch` queued jobs of `model`, highest priority then oldest first, to
        `token` (a worker's lease, renewed by one heartbeat; a new token when None).

        A job whose worker died holding it runs alone (`transitions.runs_alone`): if it is what
        crashes its worker, it must not take fresh neighbours down with it (and use up their
        attempts) every time. When such a job is next in line it is leased only when `alone_ok` (the
        worker holds nothing else), and then by itself; otherwise nothing is leased until the
        worker has drained. `min_priority` leases only jobs of at least that priority.
        Returns the lease token (needed for heartbeats and the guarded finish) and the jobs.

        Rows another transaction is claiming are skipped, not waited for (`SKIP LOCKED`): workers
        on several hosts claim side by side.
        """
        token = token or uuid.uuid4().hex
        moments: list[datetime] = []

        def take() -> list[Job]:
            with self._write() as session:
                moment = now or self._now(session)
                # Run again after a lost connection: an earlier try may have committed, with only its
                # answer lost. Its rows carry its moment; they are this call's, not orphans.
                earlier = claimed_at(session, token, moments) if moments else []
                if earlier:
                    return earlier
                moments.append(moment)
                return lease(session, model, max_batch, token, moment, alone_ok, min_priority)

        return token, self._retried(take)

    @transient
    def heartbeat(self, token: str) -> int:
        """Renew a lease; returns how many of its jobs are still running under it."""
        with self._write() as session:
            result = session.execute(
                update(Job)
                .where(col(Job.lease_token) == token, col(Job.state) == JobState.RUNNING)
                .values(heartbeat_at=self._now(session))
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def finish_done(
        self, job_id: str, token: str, audio: AudioInfo, run: RunInfo, install: Callable[[], None] | None = None
    ) -> bool:
        """Mark a job done, only if `token` still holds it. False: the result must be discarded.

        `install` (making the audio file visible) runs inside the same write transaction, after the
        lease check: no other finish can slip in between, so a worker that lost its lease never
        replaces the audio of the job's newer result. Run again after a lost connection, `install`
        runs once, and a commit that did land (only its answer was lost) is recognized: the job is
        done with this very audio.
        """
        tries = 0
        install_once = _once(install) if install is not None else None

        def finish() -> bool:
            nonlocal tries
            tries += 1
            with self._write() as session:
                job = leased(session, job_id, token)
                if job is None:
                    return tries > 1 and _delivered(session, job_id, audio)
                if install_once is not None:
                    install_once()
                transitions.succeed(job, audio, run, self._now(session))
                session.add(job)
                return True

        return self._retried(finish)

    @transient
    def finish_failed(
        self, job_id: str, token: str, code: str, message: str, max_attempts: int, retry_after_s: float | None
    ) -> JobState | None:
        """Record a failed try. With `retry_after_s` and attempts left, the job is queued again after
        that delay; otherwise it fails. Returns the new state, or None if the lease was lost."""
        with self._write() as session:
            job = leased(session, job_id, token)
            if job is None:
                return None
            now = self._now(session)
            retry_at = None if retry_after_s is None else now + timedelta(seconds=retry_after_s)
            state = transitions.fail(job, code, message, max_attempts, retry_at, now)
            session.add(job)
            return state

    @transient
    def postpone(self, job_id: str, token: str, code: str, message: str, retry_after_s: float) -> bool:
        """Put a leased job back in the queue without counting the try (the machine, not the job,
        stopped it); False if the lease was lost meanwhile."""
        with self._write() as session:
            job = leased(session, job_id, token)
            if job is None:
                return False
            transitions.postpone(job, code, message, self._now(session) + timedelta(seconds=retry_after_s))
            session.add(job)
            return True

    @transient
    def release_all_running(self, owner: str | None = None) -> list[str]:
        """At shutdown, with the daemon lock held: every running job (of `owner`'s leases, when
        given: other hosts' jobs are theirs) goes back to the queue, uncounted."""
        with self._write() as session:
            jobs = list(session.exec(locked(owned(select(Job).where(Job.state == JobState.RUNNING), owner))))
            for job in jobs:
                transitions.release(job)
                session.add(job)
            self._announce(session, {job.model for job in jobs})
            return [job.id for job in jobs]

    @transient
    def recover_interrupted(
        self,
        max_attempts: int,
        stale_before: datetime | None = None,
        free_restarts: int = 0,
        spare: Collection[str] = (),
        owner: str | None = None,
    ) -> list[Job]:
        """Running jobs whose worker is gone: queue them again, or fail those out of attempts.

        At start every running job was interrupted by the daemon's own end (`stale_before` None):
        that is not the job's fault, so its first `free_restarts` such interruptions are not
        counted as tries. While running, jobs whose heartbeat is older than `stale_before` belong to
        a worker that stopped answering: that try counts, unless the host whose lease it was (the
        token's prefix) has no recent daemon heartbeat either: a host that died (a kill, a power
        cut) is not the job's fault, and is treated like a restart. Leases in `spare`
        are left alone (their workers are alive and watched by other means). With `owner`, only the
        leases `owner` minted are looked at (on a queue shared by several hosts, a daemon starting
        again recovers its own).
        """
        query = owned(select(Job).where(Job.state == JobState.RUNNING), owner)
        if stale_before is not None:
            query = query.where(col(Job.heartbeat_at) < stale_before)
        if spare:
            query = query.where(col(Job.lease_token).not_in(list(spare)))
        with self._write() as session:
            jobs = list(session.exec(locked(query)))
            now = self._now(session)
            # A daemon beats once a second: one silent for seconds is gone (a killed host's last
            # beat is about as old as its jobs' last ones, which are over a lease old by now).
            alive: set[str] = set()
            if stale_before is not None:
                alive = hosts_alive_since(session, max(stale_before, now - timedelta(seconds=HOST_SILENT_S)))
            for job in jobs:
                if host_of(job.lease_token) not in alive and job.restarts < free_restarts:
                    transitions.resume(job)
                else:
                    transitions.interrupt(job, max_attempts, now)
                session.add(job)
            self._announce(session, {job.model for job in jobs if job.state == JobState.QUEUED})
            return jobs

    @transient
    def interrupt_lease(self, token: str, max_attempts: int, only: Collection[str] | None = None) -> list[Job]:
        """The worker holding `token` died (a signal, an abort, out of memory): each of its jobs (or
        those in `only`: the ones in the calls it died in) is charged the try, so it runs alone next
        (or fails, out of attempts)."""
        query = select(Job).where(Job.state == JobState.RUNNING, Job.lease_token == token)
        if only is not None:
            query = query.where(col(Job.id).in_(list(only)))
        with self._write() as session:
            jobs = list(session.exec(locked(query)))
            now = self._now(session)
            for job in jobs:
                transitions.interrupt(job, max_attempts, now)
                session.add(job)
            self._announce(session, {job.model for job in jobs if job.state == JobState.QUEUED})
            return jobs

    @transient
    def release_lease(self, token: str) -> list[str]:
        """The worker holding `token` stopped when asked (or was stopped past the grace period):
        its jobs go back to the queue, uncounted; their finished chunks are kept."""
        with self._write() as session:
            query = select(Job).where(Job.state == JobState.RUNNING, Job.lease_token == token)
            jobs = list(session.exec(locked(query)))
            for job in jobs:
                transitions.release(job)
                session.add(job)
            self._announce(session, {job.model for job in jobs})
            return [job.id for job in jobs]

    def cancel(self, ref: str) -> Job:
        """Cancel a queued or running job (a running job's result will be discarded)."""

        def cancel(_session: Session, job: Job, now: datetime) -> None:
            transitions.cancel(job, now)

        return self._move_by_hand(ref, lambda job: job.finished_at if job.state == JobState.CANCELLED else None, cancel)

    def retry(self, ref: str) -> Job:
        """Queue a failed, cancelled or done job again, with a fresh attempt budget."""

        def retry(session: Session, job: Job, now: datetime) -> None:
            transitions.retry(job, now)
            delete_chunks(session, job.id)
            self._announce(session, [job.model])

        return self._move_by_hand(ref, lambda job: job.named_at if job.state == JobState.QUEUED else None, retry)

    def _move_by_hand(
        self,
        ref: str,
        stamped: Callable[[Job], datetime | None],
        move: Callable[[Session, Job, datetime], None],
    ) -> Job:
        """Apply `move` to the job `ref` names, in a transaction run again after a lost connection.
        A try whose commit landed, with only its answer lost, is recognized by the moment it
        stamped on the job (`stamped` reads it back, None when the job is not in the move's target
        state): it is not moved twice, which would refuse (cancelled already) or repeat it."""
        job_id = self.get(ref).id
        moments: list[datetime] = []

        def attempt() -> Job:
            with self._write() as session:
                current = _still_there(session, job_id)
                if stamped(current) in moments:
                    return current
                moments.append(self._now(session))
                move(session, current, moments[-1])
                session.add(current)
                return current

        return self._retried(attempt)


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run_once() -> None:
        nonlocal done
        if not done:
            action()
            done = True

    return run_once


def _delivered(session: Session, job_id: str, audio: AudioInfo) -> bool:
    """Whether the job is already done with exactly this audio: an earlier try of this very finish
    committed, and only its answer was lost with the connection."""
    job = session.get(Job, job_id)
    if job is None or job.state != JobState.DONE:
        return False
    return job.audio_sha256 == audio.sha256 and job.audio_file == audio.file


def _still_there(session: Session, job_id: str) -> Job:
    # Jobs are never deleted today; a row gone between the lookup and this write is a damaged queue.
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise StoreError(f"job {job_id} is gone")
    return job
