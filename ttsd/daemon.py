"""The composition root: lock, recover, sweep, start intake and the worker supervisor, serve, shut
down. The daemon process never imports torch: synthesis runs in worker processes (one per model,
`ttsd.synth.runner`), so intake and status stay responsive while a model loads or a worker dies."""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import FrameType

from ttsd import __version__
from ttsd.catalog import build_registry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher, publish, rebuild_status_files
from ttsd.errors import TtsdError
from ttsd.fsutil import make_folder
from ttsd.http.front_door import HttpFrontDoor
from ttsd.intake.intake import Intake, IntakeSettings
from ttsd.intake.watcher import Hint, InboxWatcher
from ttsd.joblog import job_extra
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.tables import utcnow
from ttsd.ops.drain import DrainTracker
from ttsd.ops.hooks import HookRunner
from ttsd.ops.lock import daemon_lock, inbox_lock
from ttsd.ops.queue_rebuild import open_queue
from ttsd.synth.chunk_files import ChunkFiles, sweep_finished_chunks
from ttsd.synth.supervisor import Supervisor, SupervisorHooks

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0
FREE_RESTARTS = 25
"""Restarts of the whole daemon a running job lives through uncounted (kills and power cuts are not
its fault); past that they count, so a job cannot loop forever."""


@dataclass(frozen=True)
class _Parts:
    """The collaborators of one daemon run, built together by `Daemon._assemble`."""

    store: Queue
    outbox: Outbox
    hooks: HookRunner
    drain: DrainTracker
    intake: Intake
    watcher: InboxWatcher
    workers: Supervisor
    publisher: StatusPublisher
    daemon_id: str
    front_door: HttpFrontDoor | None


class Daemon:
    """One running ttsd: owns the store, the engines, the intake thread and the workers."""

    def __init__(
        self, settings: Settings, loader: str | None = None, on_start: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
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
        with daemon_lock(self.settings), inbox_lock(self.settings):
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
        make_folder(settings.inbox, "inbox")
        make_folder(settings.outbox, "outbox")
        outbox = Outbox(settings.outbox)
        store = open_queue(settings, outbox)
        record = store.register_daemon(settings.inbox, settings.outbox, __version__)
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
        workers = Supervisor(settings, store, supervisor_hooks, self._loader)
        intake_settings = IntakeSettings.from_settings(settings)
        intake = Intake(
            intake_settings, store, outbox, hints, self.stop_event, on_enqueued=workers.ensure, publisher=publisher
        )
        front_door = None
        if settings.http is not None:
            front_door = HttpFrontDoor.build(settings, store, publisher, workers, chunk_files, self.stop_event)
        return _Parts(
            store=store,
            outbox=outbox,
            hooks=hooks,
            drain=drain,
            intake=intake,
            watcher=InboxWatcher(settings.inbox, hints),
            workers=workers,
            publisher=publisher,
            daemon_id=record.id,
            front_door=front_door,
        )

    def _start(self, parts: _Parts) -> None:
        settings = self.settings
        parts.hooks.start()
        parts.watcher.start()
        parts.intake.start()
        for model in settings.preload_models:
            parts.workers.ensure(model, preload=True)
        for model in parts.store.models_with_queued_jobs():
            parts.workers.ensure(model)
        if parts.front_door is not None:
            parts.front_door.start()
        log.info(
            "ttsd %s serving %s -> %s (state %s)", __version__, settings.inbox, settings.outbox, settings.state_dir
        )

    def _recover(self, store: Queue, outbox: Outbox) -> None:
        # The daemon stopped without giving these back (a kill, a crash, a power cut): its workers
        # went with it, and that is not the jobs' fault.
        interrupted = store.recover_interrupted(self.settings.max_attempts, free_restarts=FREE_RESTARTS)
        for job in interrupted:
            log.warning(
                "job %s (%s) was interrupted by the daemon's end; now %s after %d attempt(s)",
                job.id,
                job.name,
                job.state,
                job.attempts,
                extra=job_extra(job),
            )
        swept = outbox.sweep()
        rebuilt = rebuild_status_files(store, outbox)
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
            stale_before = utcnow() - timedelta(seconds=self.settings.lease_s)
            # Live workers are watched through their pipes (a silent one is killed as hung); only a
            # lease no live worker holds can go stale here.
            spare = parts.workers.live_tokens()
            stalled = store.recover_interrupted(self.settings.max_attempts, stale_before=stale_before, spare=spare)
            for job in stalled:
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
            for model in store.models_with_queued_jobs():
                parts.workers.ensure(model)
            loaded = parts.workers.loaded()
            device = json.dumps(loaded[0] if loaded else {})
            store.daemon_heartbeat(parts.daemon_id, device, json.dumps(loaded))
        except Exception:
            log.exception("housekeeping failed")

    def _shutdown(self, parts: _Parts) -> None:
        store = parts.store
        log.info("stopping: no new claims; waiting up to %.0fs for running work", self.settings.shutdown_grace_s)
        self.stop_event.set()
        if parts.front_door is not None:
            parts.front_door.stop()
        parts.watcher.stop()
        parts.intake.join(timeout=5)
        parts.workers.stop(self.settings.shutdown_grace_s, self.hurry)
        for job_id in store.release_all_running():
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


def run_daemon(settings: Settings, loader: str | None = None, on_start: Callable[[], None] = lambda: None) -> int:
    """Run a daemon in the foreground until SIGTERM/SIGINT; the `ttsd run` entry point. `on_start`
    runs once the daemon holds its locks."""
    daemon = Daemon(settings, loader, on_start)
    install_signal_handlers(daemon)
    return daemon.run()
