"""The composition root: lock, recover, sweep, start intake and the worker supervisor, serve, shut
down. The daemon process never imports torch: synthesis runs in worker processes (one per model,
`ttsd.synth.runner`), so intake and status stay responsive while a model loads or a worker dies.

Two roles: `run` (intake, workers and the HTTP front door) and `worker` (workers only: a host that
synthesizes for a queue other hosts fill). On a shared queue (PostgreSQL) several daemons serve one
database: each recovers and releases only the leases it minted (`ttsd.ops.identity`), and is woken
by the database when work arrives (`ttsd.jobqueue.work_signal`)."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Literal

from ttsd import __version__
from ttsd.catalog import build_registry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher, publish, rebuild_status_files
from ttsd.errors import DaemonAlreadyRunning, TtsdError
from ttsd.fsutil import make_folder
from ttsd.http.front_door import HttpFrontDoor
from ttsd.intake.intake import Intake, IntakeSettings
from ttsd.intake.watcher import Hint, InboxWatcher
from ttsd.joblog import job_extra
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.tables import Job
from ttsd.jobqueue.work_signal import WorkListener
from ttsd.ops.drain import DrainTracker
from ttsd.ops.hooks import HookRunner
from ttsd.ops.identity import HOST_ID_FILE, host_id
from ttsd.ops.lock import daemon_lock, inbox_lock
from ttsd.ops.queue_rebuild import open_queue
from ttsd.synth.chunk_files import ChunkFiles, sweep_finished_chunks
from ttsd.synth.supervisor import Supervisor, SupervisorHooks

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0
SHARED_TEMP_AGE_S = 3600.0
"""On a shared outbox, temp files younger than this may be another host's writes in progress."""
FORGET_EVERY_S = 3600.0
"""How often the record of inbox files taken long ago is trimmed."""
Role = Literal["run", "worker"]
FREE_RESTARTS = 25
"""Restarts of the whole daemon a running job lives through uncounted (kills and power cuts are not
its fault, nor the death of another host that held it); past that they count, so a job cannot loop
forever."""


@dataclass(frozen=True)
class _Parts:
    """The collaborators of one daemon run, built together by `Daemon._assemble`."""

    store: Queue
    outbox: Outbox
    hooks: HookRunner
    drain: DrainTracker
    intake: Intake | None
    watcher: InboxWatcher | None
    workers: Supervisor
    publisher: StatusPublisher
    daemon_id: str
    front_door: HttpFrontDoor | None
    listener: WorkListener | None


class Daemon:
    """One running ttsd: owns the store, the engines, the intake thread and the workers."""

    def __init__(
        self,
        settings: Settings,
        loader: str | None = None,
        on_start: Callable[[], None] = lambda: None,
        role: Role = "run",
    ) -> None:
        self.settings = settings
        self.role = role
        # Set in run(), once the state directory is locked.
        self.host = ""
        self._next_poll = self._next_forget = 0.0
        self.on_start = on_start  # runs once the locks are held
        self.stop_event = threading.Event()
        self.hurry = threading.Event()
        self.registry = build_registry(settings.models)
        # module:function giving the workers' engine loader (None: qwen-tts); tests name a fake one.
        self._loader = loader

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        """Signal handler and API: the first call asks for a graceful stop; a second one stops at
        once (workers killed, their jobs given back uncounted, finished chunks kept)."""
        if self.stop_event.is_set():
            self.hurry.set()
        self.stop_event.set()

    def run(self) -> int:
        """Serve until asked to stop; returns the exit status."""
        with ExitStack() as locks:
            locks.enter_context(daemon_lock(self.settings))
            if self.role == "run":
                # One daemon per inbox, or (shared) any number of one shared queue's daemons.
                locks.enter_context(inbox_lock(self.settings))
            self.host = host_id(self.settings.state_dir)
            self.on_start()
            parts = self._assemble()
            self._start(parts)
            try:
                while not self.stop_event.wait(HOUSEKEEPING_S):
                    self._housekeeping(parts)
            finally:
                self._shutdown(parts)
        return 0

    def _assemble(self) -> _Parts:
        """Build every collaborator, in dependency order, and recover what a crash left behind."""
        settings = self.settings
        # Explicit mode: under a permissive umask the outbox must still not be world-writable.
        if self.role == "run":
            make_folder(settings.inbox, "inbox")
        make_folder(settings.outbox, "outbox")
        outbox = Outbox(settings.outbox)
        store = open_queue(settings, outbox)
        refuse_a_twin(store, self.host, settings)
        record = store.register_daemon(settings.inbox, settings.outbox, __version__, self.role, self.host)
        self._recover(store, outbox)
        chunk_files = ChunkFiles(settings.state_dir / "chunks")
        sweep_finished_chunks(store, chunk_files)
        hooks = HookRunner(settings)
        drain = DrainTracker(pending=store.pending_total, settle_s=settings.scan_interval_s)
        hints: queue.Queue[Hint | None] = queue.Queue()
        publisher = StatusPublisher(store, outbox)
        supervisor_hooks = SupervisorHooks(
            job_finished=partial(_job_finished, store, hooks, drain, outbox),
            # A finished call may have made room for files held back by backpressure: rescan.
            call_done=partial(hints.put, None),
            publish=partial(_publish_quietly, publisher),
            owe=publisher.owe,
        )
        workers = Supervisor(settings, store, supervisor_hooks, self._loader, owner=self.host)
        intake = watcher = front_door = listener = None
        if self.role == "run":
            intake = Intake(
                IntakeSettings.from_settings(settings, self.host),
                store,
                outbox,
                hints,
                self.stop_event,
                on_enqueued=workers.ensure,
                publisher=publisher,
            )
            watcher = InboxWatcher(settings.inbox, hints)
            if settings.http is not None:
                front_door = HttpFrontDoor.build(settings, store, publisher, workers, chunk_files, self.stop_event)
        if settings.shared_queue:
            listener = WorkListener(settings.database_url, partial(_wake, store, workers), self.stop_event)
        return _Parts(
            store=store,
            outbox=outbox,
            hooks=hooks,
            drain=drain,
            intake=intake,
            watcher=watcher,
            workers=workers,
            publisher=publisher,
            daemon_id=record.id,
            front_door=front_door,
            listener=listener,
        )

    def _start(self, parts: _Parts) -> None:
        settings = self.settings
        parts.hooks.start()
        for thread in (parts.watcher, parts.intake, parts.listener):
            if thread is not None:
                thread.start()
        for model in settings.preload_models:
            parts.workers.ensure(model, preload=True)
        for model in parts.store.models_with_queued_jobs():
            parts.workers.ensure(model)
        if parts.front_door is not None:
            parts.front_door.start()
        log.info(
            "ttsd %s (%s, host %s) serving %s -> %s (state %s, queue %s)",
            __version__,
            self.role,
            self.host,
            settings.inbox,
            settings.outbox,
            settings.state_dir,
            parts.store.location,
        )

    def _recover(self, store: Queue, outbox: Outbox) -> None:
        # The daemon stopped without giving these back (a kill, a crash, a power cut): its workers
        # went with it, and that is not the jobs' fault. On a shared queue, only its own leases:
        # other hosts' running jobs are alive.
        shared = self.settings.shared_queue
        interrupted = store.recover_interrupted(
            self.settings.max_attempts, free_restarts=FREE_RESTARTS, owner=self.host if shared else None
        )
        for job in interrupted:
            log.warning(
                "job %s (%s) was interrupted by the daemon's end; now %s after %d attempt(s)",
                job.id,
                job.name,
                job.state,
                job.attempts,
                extra=job_extra(job),
            )
        for job in interrupted if shared else ():
            publish(store, outbox, job.id)
        swept = outbox.sweep(older_than_s=SHARED_TEMP_AGE_S if shared else 0.0)
        # On a shared outbox other hosts are writing the status files of their running jobs; only
        # finished jobs' files (one a killed host may not have written) are this host's to mend.
        rebuilt = rebuild_status_files(store, outbox, finished_only=shared)
        if interrupted or swept or rebuilt:
            log.info(
                "recovery: %d interrupted job(s), %d temp file(s) swept, %d status file(s) rebuilt",
                len(interrupted),
                len(swept),
                rebuilt,
            )

    def _housekeeping(self, parts: _Parts) -> None:
        store, outbox = parts.store, parts.outbox
        try:
            parts.publisher.settle()
            summary = parts.drain.poll()
            if summary is not None:
                parts.hooks.queue_drained(summary)
            for job in self._recover_stalled(parts):
                log.warning(
                    "job %s stalled (no heartbeat for %.0fs): now %s",
                    job.id,
                    self.settings.lease_s,
                    job.state,
                    extra=job_extra(job),
                )
                publish(store, outbox, job.id)
                if job.state.terminal:
                    _job_finished(store, parts.hooks, parts.drain, outbox, job.id)
                parts.workers.ensure(job.model)
            parts.workers.poll()
            if time.monotonic() >= self._next_poll:
                self._next_poll = time.monotonic() + self.settings.queue_poll_s
                _wake(store, parts.workers, None)
            if time.monotonic() >= self._next_forget:
                self._next_forget = time.monotonic() + FORGET_EVERY_S
                store.forget_taken_files()
            loaded = parts.workers.loaded()
            device = json.dumps(loaded[0] if loaded else {})
            store.daemon_heartbeat(parts.daemon_id, device, json.dumps(loaded))
        except Exception:
            log.exception("housekeeping failed")

    def _recover_stalled(self, parts: _Parts) -> list[Job]:
        """Running jobs whose lease went stale, queued again (or failed, out of attempts)."""
        lease_s = self.settings.lease_s
        if parts.store.lost_connection_within(lease_s):
            # Every host's heartbeats failed while the database was away, and theirs may land a
            # moment after ours: until a lease has passed, a stale lease says nothing.
            return []
        # Live workers are watched through their pipes (a silent one is killed as hung); only a
        # lease no live worker holds can go stale here. On a shared queue, a stale lease of a host
        # that died is given back free; on one machine the host is this one, alive, and a stale
        # lease is its worker's fault.
        return parts.store.recover_interrupted(
            self.settings.max_attempts,
            stale_before=parts.store.clock() - timedelta(seconds=lease_s),
            free_restarts=FREE_RESTARTS if self.settings.shared_queue else 0,
            spare=parts.workers.live_tokens(),
        )

    def _shutdown(self, parts: _Parts) -> None:
        store = parts.store
        log.info("stopping: no new claims; waiting up to %.0fs for running work", self.settings.shutdown_grace_s)
        self.stop_event.set()
        if parts.front_door is not None:
            parts.front_door.stop()
        if parts.watcher is not None:
            parts.watcher.stop()
        if parts.intake is not None:
            parts.intake.join(timeout=5)
        parts.workers.stop(self.settings.shutdown_grace_s, self.hurry)
        if parts.listener is not None:
            parts.listener.join(timeout=5)
        owner = self.host if self.settings.shared_queue else None
        for job_id in store.release_all_running(owner):
            job = publish(store, parts.outbox, job_id)
            log.warning(
                "job %s did not finish within the grace period: back to the queue", job_id, extra=job_extra(job)
            )
        parts.hooks.stop(timeout=5)
        store.daemon_stopped(parts.daemon_id)
        store.close()
        log.info("stopped")


def _job_finished(store: Queue, hooks: HookRunner, drain: DrainTracker, outbox: Outbox, job_id: str) -> None:
    """A worker finished a job: run the completion hook, and the drain hook once the queue is empty."""
    job = store.get(job_id)
    hooks.job_finished(job, outbox)
    summary = drain.job_finished(job)
    if summary is not None:
        hooks.queue_drained(summary)


TWIN_SILENT_S = 15.0
"""A daemon row of this host id that beat this recently, on another machine, is a live twin."""


def refuse_a_twin(store: Queue, host: str, settings: Settings) -> None:
    """Refuse to start when another machine serves the queue under this state directory's host id
    (the state directory was copied, or restored from a backup, onto a second machine): each would
    recover and release the other's running jobs as its own."""
    now = store.clock()
    for record in store.daemons():
        if record.host_id != host or record.hostname == os.uname().nodename or record.stopped_at is not None:
            continue
        silent_s = (now - record.heartbeat_at).total_seconds()
        if silent_s < TWIN_SILENT_S:
            store.close()
            raise DaemonAlreadyRunning(
                f"host id {host} ({settings.state_dir / HOST_ID_FILE}) is in use by a daemon on {record.hostname} "
                f"(pid {record.pid}, heard {silent_s:.0f}s ago): this state directory was copied from there. "
                f"Remove its {HOST_ID_FILE} file here, so this host gets an id of its own"
            )


def _wake(store: Queue, workers: Supervisor, model: str | None) -> None:
    """Work arrived for `model` (None: for any model, as far as anyone knows): wake its workers."""
    try:
        models = [model] if model is not None else store.models_with_queued_jobs()
    except TtsdError:
        log.exception("could not read which models have work")
        return
    for name in models:
        workers.ensure(name)


def _publish_quietly(publisher: StatusPublisher, job_id: str) -> None:
    """Write a status file the supervisor changed (a failed write is owed, not lost)."""
    try:
        publisher.publish(job_id)
    except TtsdError:
        log.exception("could not write the status of job %s", job_id, extra={"job_id": job_id})


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM (launchd, kill) and SIGINT (Ctrl-C) ask for a graceful stop."""
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)


def run_daemon(
    settings: Settings, loader: str | None = None, on_start: Callable[[], None] = lambda: None, role: Role = "run"
) -> int:
    """Run a daemon in the foreground until SIGTERM/SIGINT; the `ttsd run` (and, with `role`
    "worker", `ttsd worker`) entry point. `on_start` runs once the daemon holds its locks."""
    daemon = Daemon(settings, loader, on_start, role)
    install_signal_handlers(daemon)
    return daemon.run()
