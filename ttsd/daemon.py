"""The composition root: lock, recover, sweep, start intake and workers, serve, shut down."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from types import FrameType
from typing import IO

from ttsd import __version__
from ttsd.cache import AudioCache
from ttsd.config import Settings
from ttsd.engine.pool import EngineLoader, EnginePool, qwen_loader
from ttsd.engine.qwen_import import import_qwen_tts_quietly
from ttsd.engine.registry import build_registry
from ttsd.engine.weights import revision_resolver
from ttsd.errors import DaemonAlreadyRunning
from ttsd.hooks import DrainTracker, HookRunner
from ttsd.intake import VOICES_DIR, Intake
from ttsd.jobs import JobDefaults
from ttsd.longform import ChunkFiles
from ttsd.models import Job, JobState, utcnow
from ttsd.outbox import Outbox
from ttsd.publish import publish, rebuild_status_files
from ttsd.store import Store
from ttsd.watcher import Hint, InboxWatcher
from ttsd.worker import WorkContext, Worker

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0


@contextlib.contextmanager
def state_lock(settings: Settings) -> Iterator[IO[str]]:
    """Hold the state directory's lock for the daemon's lifetime (released by the kernel on any exit,
    kill -9 included), or raise DaemonAlreadyRunning."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.state_dir.chmod(0o700)
    handle = settings.lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DaemonAlreadyRunning(
            f"another ttsd daemon (pid {holder}) is already serving {settings.state_dir}; "
            "stop it first, or give this one its own TTS_STATE_DIR"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield handle
    finally:
        handle.close()


def daemon_running(settings: Settings) -> bool:
    """Whether some process holds the state directory's lock right now."""
    if not settings.lock_path.exists():
        return False
    with settings.lock_path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def job_defaults(settings: Settings) -> JobDefaults:
    """What the job parser needs from the settings."""
    return JobDefaults(
        default_model=settings.default_model,
        default_sample_rate=settings.default_sample_rate,
        max_text_length=settings.max_text_length,
        max_job_chars=settings.max_job_chars,
        max_file_bytes=settings.max_job_file_bytes,
        registry=build_registry(settings.models),
    )


def sweep_chunks(store: Store, files: ChunkFiles) -> None:
    """At start: chunks of jobs that finished (or vanished) are no longer needed."""
    states = store.jobs_with_chunks()
    for job_id, state in states.items():
        if JobState(state).terminal:
            store.drop_chunks(job_id)
    for job_id in files.job_ids():
        if job_id not in states or JobState(states[job_id]).terminal:
            files.discard(job_id)


class Daemon:
    """One running ttsd: owns the store, the engines, the intake thread and the workers."""

    def __init__(self, settings: Settings, loader: EngineLoader | None = None) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.registry = build_registry(settings.models)
        self._warm_up_engine = loader is None
        self._loader = loader or qwen_loader(settings)
        self._workers: dict[str, list[Worker]] = {}
        self.abandoned_work = False
        self._workers_lock = threading.Lock()

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        """Signal handler and API: only sets a flag; the main loop does the rest."""
        self.stop_event.set()

    def run(self) -> int:
        """Serve until asked to stop; returns the exit status."""
        with state_lock(self.settings):
            return self._serve()

    def _serve(self) -> int:
        settings = self.settings
        for folder in (settings.inbox, settings.outbox):
            # Explicit mode: under a permissive umask the outbox must still not be world-writable.
            folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        store = Store(settings.db_path)
        outbox = Outbox(settings.outbox)
        record = store.register_daemon(settings.inbox, settings.outbox, __version__)
        self._recover(store, outbox)
        chunk_files = ChunkFiles(settings.state_dir / "chunks")
        sweep_chunks(store, chunk_files)

        self._hooks = HookRunner(settings)
        self._hooks.start()
        self._drain = DrainTracker(pending=store.pending_total, settle_s=settings.scan_interval_s)
        engines = EnginePool(self.registry, self._loader, settings.model_idle_s, settings.max_loaded_models)
        cache = (
            AudioCache(settings.cache_dir, store, settings.cache_size, settings.cache_max_bytes)
            if settings.enable_cache
            else None
        )
        self._context = WorkContext(
            settings=settings,
            store=store,
            outbox=outbox,
            engines=engines,
            voices_dir=settings.inbox / VOICES_DIR,
            chunks=chunk_files,
            registry=self.registry,
            cache=cache,
            revision=revision_resolver(self.registry, settings.models_dir),
            on_job_finished=lambda: intake.nudge(),
            on_job_over=self._job_over,
        )
        hints: queue.Queue[Hint | None] = queue.Queue()
        intake = Intake(
            settings.inbox,
            store,
            outbox,
            job_defaults(settings),
            hints,
            self.stop_event,
            settings.max_queue_size,
            settings.stable_s,
            settings.scan_interval_s,
            on_enqueued=self.ensure_workers,
        )
        if self._warm_up_engine:
            # The first import of qwen-tts takes seconds: pay it now rather than on the first job.
            threading.Thread(target=import_qwen_tts_quietly, name="warm-up", daemon=True).start()
        watcher = InboxWatcher(settings.inbox, hints)
        watcher.start()
        intake.start()
        for model in store.models_with_queued_jobs():
            self.ensure_workers(model)
        self._preload(engines)
        log.info(
            "ttsd %s serving %s -> %s (state %s)",
            __version__,
            settings.inbox,
            settings.outbox,
            settings.state_dir,
        )
        try:
            while not self.stop_event.wait(HOUSEKEEPING_S):
                self._housekeeping(store, outbox, engines, record.id)
        finally:
            self._shutdown(store, engines, watcher, intake, record.id)
        return 0

    def _recover(self, store: Store, outbox: Outbox) -> None:
        interrupted = store.recover_interrupted(self.settings.max_attempts)
        for job in interrupted:
            log.warning(
                "job %s (%s) was interrupted; now %s after %d attempt(s)",
                job.id,
                job.name,
                job.state,
                job.attempts,
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

    def ensure_workers(self, model: str) -> None:
        """Start the workers of `model` on its first job; wake them for each new one."""
        with self._workers_lock:
            workers = self._workers.get(model)
            if workers is None:
                workers = [
                    Worker(model, index, self._context, self.stop_event)
                    for index in range(self.settings.max_concurrency_per_model)
                ]
                self._workers[model] = workers
                for worker in workers:
                    worker.start()
        for worker in workers:
            worker.wake.set()

    def _all_workers(self) -> list[Worker]:
        with self._workers_lock:
            return [worker for workers in self._workers.values() for worker in workers]

    def _job_over(self, job: Job) -> None:
        """A job reached its final state: run the completion hook, and the drain hook once the queue
        is empty."""
        self._hooks.job_finished(job, self._context.outbox)
        summary = self._drain.job_finished(job)
        if summary is not None:
            self._hooks.queue_drained(summary)

    def _housekeeping(self, store: Store, outbox: Outbox, engines: EnginePool, daemon_id: str) -> None:
        try:
            summary = self._drain.poll()
            if summary is not None:
                self._hooks.queue_drained(summary)
            stale_before = utcnow() - timedelta(seconds=self.settings.lease_s)
            for job in store.recover_interrupted(self.settings.max_attempts, stale_before=stale_before):
                log.warning(
                    "job %s stalled (no heartbeat for %.0fs): now %s",
                    job.id,
                    self.settings.lease_s,
                    job.state,
                )
                publish(store, outbox, job.id)
                self.ensure_workers(job.model)
            for model in store.models_with_queued_jobs():
                self.ensure_workers(model)
            engines.unload_idle()
            plan = engines.loaded()
            device = json.dumps(plan[0] if plan else {})
            store.daemon_heartbeat(daemon_id, device, json.dumps(plan))
        except Exception:
            log.exception("housekeeping failed")

    def _shutdown(
        self, store: Store, engines: EnginePool, watcher: InboxWatcher, intake: Intake, daemon_id: str
    ) -> None:
        log.info("stopping: no new claims; waiting up to %.0fs for running work", self.settings.shutdown_grace_s)
        self.stop_event.set()
        watcher.stop()
        intake.join(timeout=5)
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        for worker in self._all_workers():
            worker.wake.set()
        for worker in self._all_workers():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self.abandoned_work = any(worker.is_alive() for worker in self._all_workers())
        for job_id in store.release_all_running():
            log.warning("job %s did not finish within the grace period: back to the queue", job_id)
            publish(store, self._context.outbox, job_id)
        if not self.abandoned_work:
            # A model still inside a generate call is not unloaded: the process exit frees it.
            engines.close()
        self._hooks.stop(timeout=5)
        store.daemon_stopped(daemon_id)
        store.close()
        log.info("stopped")


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM (launchd, kill) and SIGINT (Ctrl-C) ask for a graceful stop."""
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)


def run_daemon(settings: Settings, loader: EngineLoader | None = None) -> int:
    """Run a daemon in the foreground until SIGTERM/SIGINT; the `ttsd run` entry point."""
    daemon = Daemon(settings, loader)
    install_signal_handlers(daemon)
    status = daemon.run()
    if daemon.abandoned_work:
        # A worker is still inside torch after the grace period. Its jobs are already back in the
        # queue; letting the interpreter finalize under a running native thread aborts the
        # process (SIGABRT) instead of exiting cleanly, so leave at once.
        logging.shutdown()
        os._exit(status)
    return status
