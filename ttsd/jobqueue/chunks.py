"""The chunk rows of long jobs: a job's text in pieces, each marked done as its audio is kept, so an
interrupted job resumes after its last finished piece instead of starting over."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import Session, col, select

from ttsd.jobqueue.database import Database, transient
from ttsd.jobqueue.queries import leased
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import ChunkRow, Job


def delete_chunks(session: Session, job_id: str) -> None:
    """Remove a job's chunk rows inside the caller's transaction."""
    session.execute(delete(ChunkRow).where(col(ChunkRow.job_id) == job_id))


def _chunks(session: Session, job_id: str) -> list[ChunkRow]:
    return list(session.exec(select(ChunkRow).where(ChunkRow.job_id == job_id).order_by(col(ChunkRow.index))))


class ChunkRecords(Database):
    """The chunks of jobs that are being, or were being, synthesized."""

    @transient
    def chunks(self, job_id: str) -> list[ChunkRow]:
        """A job's chunks in order (empty before its first claim)."""
        with self._read() as session:
            return _chunks(session, job_id)

    @transient
    def plan_chunks(self, job_id: str, token: str, pieces: list[tuple[str, int, int]]) -> list[ChunkRow] | None:
        """The job's chunks: the ones recorded earlier (a resumed job), else `pieces` (text, pause
        after in ms, script segment) recorded now. None if `token` no longer holds the job."""
        with self._write() as session:
            job = leased(session, job_id, token)
            if job is None:
                return None
            rows = _chunks(session, job_id)
            if rows:
                return rows
            rows = [
                ChunkRow(job_id=job_id, index=index, text=text, pause_after_ms=pause, segment=segment)
                for index, (text, pause, segment) in enumerate(pieces)
            ]
            session.add_all(rows)
            job.chunks_total = len(rows)
            job.chunks_done = 0
            job.audio_s_done = 0.0
            job.synth_s = 0.0
            session.add(job)
            return rows

    @transient
    def chunk_done(
        self, job_id: str, token: str, index: int, duration_s: float, synth_s: float, cache_hit: bool
    ) -> bool:
        """Record a finished chunk and the job's progress, only while `token` holds the job."""
        with self._write() as session:
            job = leased(session, job_id, token)
            chunk = session.get(ChunkRow, (job_id, index), with_for_update=True)
            if job is None or chunk is None:
                return False
            if not chunk.done:
                chunk.done = True
                chunk.cache_hit = cache_hit
                chunk.duration_s = duration_s
                job.chunks_done += 1
                job.audio_s_done = round(job.audio_s_done + duration_s, 3)
                job.synth_s = round((job.synth_s or 0.0) + synth_s, 3)
                session.add_all([chunk, job])
            return True

    @transient
    def drop_chunks(self, job_id: str) -> None:
        """Forget a finished job's chunks (their audio is in the delivered file now)."""
        with self._write() as session:
            delete_chunks(session, job_id)

    @transient
    def drop_finished_chunks(self, job_id: str) -> bool:
        """Forget a job's chunks if it is finished (done, failed, cancelled); whether it was. The
        job's row is locked meanwhile: a retry by another host cannot slip in between."""
        with self._write() as session:
            job = session.get(Job, job_id, with_for_update=True)
            finished = job is None or job.state.terminal
            if finished:
                delete_chunks(session, job_id)
            return finished

    @transient
    def jobs_with_chunks(self) -> dict[str, JobState]:
        """Job id -> state, for every job that still has chunk rows."""
        with self._read() as session:
            rows = session.exec(select(Job.id, Job.state).where(col(Job.id).in_(select(ChunkRow.job_id).distinct())))
            return {job_id: JobState(state) for job_id, state in rows.all()}
