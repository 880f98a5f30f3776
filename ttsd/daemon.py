"""The composition root: lock, recover, sweep, start intake and workers, serve, shut down."""

from __future__ import annotations

import json
import logging
import os
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
from ttsd.fsutil import make_folder
from ttsd.intake.folders import VOICES_DIR
from ttsd.intake.intake import Intake, IntakeSettings
from ttsd.intake.watcher import Hint, InboxWatcher
from ttsd.joblog import job_extra
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.tables import Job, utcnow
from ttsd.ops.drain import DrainTracker
from ttsd.ops.hooks import HookRunner
from ttsd.ops.lock import daemon_lock, inbox_lock
from ttsd.ops.queue_rebuild import open_queue
from ttsd.synth.audio_cache import AudioCache
from ttsd.synth.chunk_files import ChunkFiles, sweep_finished_chunks
from ttsd.synth.engine.pool import EngineLoader, EnginePool, LoadOptions, qwen_loader
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.weights import revision_resolver
from ttsd.synth.worker import WorkContext
from ttsd.synth.workers import WorkerSet

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0


@dataclass(frozen=True)
class _Parts:
    """The collaborators of one daemon run, built together by `Daemon._assemble`."""

    store: Queue
    outbox: Outbox
    engines: EnginePool
    hooks: HookRunner
    drain: DrainTracker
    intake: Intake
    watcher: InboxWatcher
    workers: WorkerSet
    publisher: StatusPublisher
    daemon_id: str


def load_options(settings: Settings) -> LoadOptions:
    """What the model loader needs from the settings."""
    return LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        models_dir=settings.models_dir,
        torch_threads=settings.torch_threads,
        hf_mirror=settings.hf_mirror,
    )


class Daemon:
    """One running ttsd: owns the store, the engines, the intake thread and the workers."""

    def __init__(
        self, settings: Settings, loader: EngineLoader | None = None, on_start: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
        self.on_start = on_start  # runs once the locks are held
        self.stop_event = threading.Event()
        self.registry = build_registry(settings.models)
        self._warm_up_engine = loader is None
        self._loader = loader or qwen_loader(load_options(settings))
        self.abandoned_work = False

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        """Signal handler and API: only sets a flag; the main loop does the rest."""
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
        engines = EnginePool(self.registry, self._loader, settings.model_idle_s, settings.max_loaded_models)
        cache = (
            AudioCache(settings.cache_dir, store, settings.cache_size, settings.cache_max_bytes)
            if settings.enable_cache
            else None
        )
        hints: queue.Queue[Hint | None] = queue.Queue()
        publisher = StatusPublisher(store, outbox)
        context = WorkContext(
            settings=settings,
            store=store,
            outbox=outbox,
            publisher=publisher,
            engines=engines,
            voices_dir=settings.inbox / VOICES_DIR,
            chunks=chunk_files,
            registry=self.registry,
            cache=cache,
            revision=revision_resolver(self.registry, settings.models_dir),
            # A finished batch may have made room for files held back by backpressure: rescan.
            on_batch_done=partial(hints.put, None),
            on_job_finished=partial(_job_finished, hooks, drain, outbox),
        )
        workers = WorkerSet(context, settings.max_concurrency_per_model, self.stop_event)
        intake_settings = IntakeSettings.from_settings(settings)
        intake = Intake(
            intake_settings, store, outbox, hints, self.stop_event, on_enqueued=workers.ensure, publisher=publisher
        )
        return _Parts(
            store=store,
            outbox=outbox,
            engines=engines,
            hooks=hooks,
            drain=drain,
            intake=intake,
            watcher=InboxWatcher(settings.inbox, hints),
            workers=workers,
            publisher=publisher,
            daemon_id=record.id,
        )

    def _start(self, parts: _Parts) -> None:
        settings = self.settings
        parts.hooks.start()
        if self._warm_up_engine:
            # The first import of qwen-tts takes seconds: pay it now rather than on the first job.
            threading.Thread(target=import_qwen_tts_quietly, name="warm-up", daemon=True).start()
        parts.watcher.start()
        parts.intake.start()
        for model in parts.store.models_with_queued_jobs():
            parts.workers.ensure(model)
        self._preload(parts.engines)
        log.info(
            "ttsd %s serving %s -> %s (state %s)", __version__, settings.inbox, settings.outbox, settings.state_dir
        )

    def _recover(self, store: Queue, outbox: Outbox) -> None:
        interrupted = store.recover_interrupted(self.settings.max_attempts)
        for job in interrupted:
            log.warning(
                "job %s (%s) was interrupted; now %s after %d attempt(s)",
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

    def _preload(self, engines: EnginePool) -> None:
        for model in self.settings.preload_models:
            try:
                with engines.use(model):
                    pass
            except Exception:
                log.exception("could not preload model %s", model)

    def _housekeeping(self, parts: _Parts) -> None:
        store, outbox, engines = parts.store, parts.outbox, parts.engines
        try:
            parts.publisher.settle()
            summary = parts.drain.poll()
            if summary is not None:
                parts.hooks.queue_drained(summary)
            stale_before = utcnow() - timedelta(seconds=self.settings.lease_s)
            for job in store.recover_interrupted(self.settings.max_attempts, stale_before=stale_before):
                log.warning(
                    "job %s stalled (no heartbeat for %.0fs): now %s",
                    job.id,
                    self.settings.lease_s,
                    job.state,
                    extra=job_extra(job),
                )
                publish(store, outbox, job.id)
                parts.workers.ensure(job.model)
            for model in store.models_with_queued_jobs():
                parts.workers.ensure(model)
            engines.unload_idle()
            plan = engines.loaded()
            device = json.dumps(plan[0] if plan else {})
            store.daemon_heartbeat(parts.daemon_id, device, json.dumps(plan))
        except Exception:
            log.exception("housekeeping failed")

    def _shutdown(self, parts: _Parts) -> None:
        store = parts.store
        log.info("stopping: no new claims; waiting up to %.0fs for running work", self.settings.shutdown_grace_s)
        self.stop_event.set()
        parts.watcher.stop()
        parts.intake.join(timeout=5)
        self.abandoned_work = not parts.workers.stop(self.settings.shutdown_grace_s)
        for job_id in store.release_all_running():
            job = publish(store, parts.outbox, job_id)
            log.warning(
                "job %s did not finish within the grace period: back to the queue", job_id, extra=job_extra(job)
            )
        if not self.abandoned_work:
            # A model still inside a generate call is not unloaded: the process exit frees it.
            parts.engines.close()
        parts.hooks.stop(timeout=5)
        store.daemon_stopped(parts.daemon_id)
        store.close()
        log.info("stopped")


def _job_finished(hooks: HookRunner, drain: DrainTracker, outbox: Outbox, job: Job) -> None:
    """A job reached its final state: run the completion hook, and the drain hook once the queue is
    empty."""
    hooks.job_finished(job, outbox)
    summary = drain.job_finished(job)
    if summary is not None:
        hooks.queue_drained(summary)


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM (launchd, kill) and SIGINT (Ctrl-C) ask for a graceful stop."""
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)


def run_daemon(
    settings: Settings, loader: EngineLoader | None = None, on_start: Callable[[], None] = lambda: None
) -> int:
    """Run a daemon in the foreground until SIGTERM/SIGINT; the `ttsd run` entry point. `on_start`
    runs once the daemon holds its locks."""
    daemon = Daemon(settings, loader, on_start)
    install_signal_handlers(daemon)
    status = daemon.run()
    if daemon.abandoned_work:
        # A worker is still inside torch after the grace period. Its jobs are already back in the
        # queue; letting the interpreter finalize under a running native thread aborts the
        # process (SIGABRT) instead of exiting cleanly, so leave at once.
        logging.shutdown()
        os._exit(status)
    return status
