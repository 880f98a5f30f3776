"""One row per daemon start: who served the queue, when, on which device plan, and whether it
stopped cleanly. `ttsd status` reads the newest."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col, select

from ttsd.jobqueue.database import Database
from ttsd.jobqueue.tables import DaemonRecord, utcnow


class DaemonRecords(Database):
    """The daemons' own rows."""

    def register_daemon(self, inbox: Path, outbox: Path, version: str) -> DaemonRecord:
        """Record this daemon's start."""
        record = DaemonRecord(
            id=uuid.uuid4().hex[:12],
            pid=os.getpid(),
            hostname=os.uname().nodename,
            inbox=str(inbox),
            outbox=str(outbox),
            version=version,
        )
        with self._write() as session:
            session.add(record)
        return record

    def daemon_heartbeat(self, daemon_id: str, device_plan: str, loaded_models: str) -> None:
        """Show that the daemon is alive, with what it has loaded."""
        with self._write() as session:
            session.execute(
                update(DaemonRecord)
                .where(col(DaemonRecord.id) == daemon_id)
                .values(heartbeat_at=utcnow(), device_plan=device_plan, loaded_models=loaded_models)
            )

    def daemon_stopped(self, daemon_id: str) -> None:
        """Record a clean stop."""
        with self._write() as session:
            session.execute(update(DaemonRecord).where(col(DaemonRecord.id) == daemon_id).values(stopped_at=utcnow()))

    def latest_daemon(self) -> DaemonRecord | None:
        """The most recently started daemon, running or not."""
        with self._read() as session:
            return session.exec(select(DaemonRecord).order_by(col(DaemonRecord.started_at).desc()).limit(1)).first()
