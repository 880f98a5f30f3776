"""One row per daemon start: who served the queue, when, on which device plan, and whether it
stopped cleanly. `ttsd status` reads the newest."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col, select

from ttsd.jobqueue.database import Database, transient
from ttsd.jobqueue.tables import DaemonRecord


class DaemonRecords(Database):
    """The daemons' own rows."""

    @transient
    def register_daemon(
        self, inbox: Path, outbox: Path, version: str, role: str = "run", host_id: str = ""
    ) -> DaemonRecord:
        """Record this daemon's start (`role`: `run`, or `worker` for a host that only synthesizes;
        `host_id`: its state directory's id)."""
        with self._write() as session:
            now = self._now(session)
            record = DaemonRecord(
                id=uuid.uuid4().hex[:12],
                pid=os.getpid(),
                hostname=os.uname().nodename,
                started_at=now,
                heartbeat_at=now,
                inbox=str(inbox),
                outbox=str(outbox),
                version=version,
                role=role,
                host_id=host_id,
            )
            if host_id:
                # The caller holds its state directory's lock: an earlier daemon of that directory
                # still marked running died without saying so.
                session.execute(
                    update(DaemonRecord)
                    .where(col(DaemonRecord.host_id) == host_id, col(DaemonRecord.stopped_at).is_(None))
                    .values(stopped_at=now)
                )
            session.add(record)
        return record

    @transient
    def daemon_heartbeat(self, daemon_id: str, device_plan: str, loaded_models: str) -> None:
        """Show that the daemon is alive, with what it has loaded."""
        with self._write() as session:
            session.execute(
                update(DaemonRecord)
                .where(col(DaemonRecord.id) == daemon_id)
                .values(heartbeat_at=self._now(session), device_plan=device_plan, loaded_models=loaded_models)
            )

    @transient
    def daemon_stopped(self, daemon_id: str) -> None:
        """Record a clean stop."""
        with self._write() as session:
            stopped = update(DaemonRecord).where(col(DaemonRecord.id) == daemon_id)
            session.execute(stopped.values(stopped_at=self._now(session)))

    @transient
    def daemons(self, limit: int = 50) -> list[DaemonRecord]:
        """Recent daemons, running or not, on every host: those still running first, each group
        newest heartbeat first."""
        with self._read() as session:
            query = select(DaemonRecord).order_by(
                col(DaemonRecord.stopped_at).is_not(None), col(DaemonRecord.heartbeat_at).desc()
            )
            return list(session.exec(query.limit(limit)))

    @transient
    def latest_daemon(self, host_id: str | None = None) -> DaemonRecord | None:
        """The most recently started daemon (of the state directory `host_id`, when given), running or not."""
        query = select(DaemonRecord).order_by(col(DaemonRecord.started_at).desc())
        if host_id is not None:
            query = query.where(col(DaemonRecord.host_id) == host_id)
        with self._read() as session:
            return session.exec(query.limit(1)).first()
