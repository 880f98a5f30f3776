"""A worker process: one model, loaded once, serving that model's queue until it is idle for
`TTS_MODEL_IDLE_S`, asked to stop, or orphaned (the way Ollama runs a runner process per model).

Unloading a model is this process's exit, so its memory surely goes back to the system (an
in-process unload does not reliably return it, on MPS least of all). A crash here (a signal, an
abort, out of memory) takes down this model's worker only; the supervisor sees how it ended.

Started by `ttsd.synth.supervisor` as `python -m ttsd.synth.runner MODEL TOKEN [--loader M:F]`: the
settings arrive as the first line of stdin, events leave on a private copy of stdout (`wire`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Final

from ttsd.catalog import build_registry
from ttsd.config import Settings, torch_threads
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.jobqueue.store import Store
from ttsd.synth import wire
from ttsd.synth.audio_cache import AudioCache
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.pool import EngineLoader, EnginePool, LoadOptions, qwen_loader
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.weights import revision_resolver
from ttsd.synth.worker import Worker

log = logging.getLogger(__name__)

EXIT_ORPHANED: Final = 3
"""The supervisor is gone: nobody reads this status, but it is not 0 (which means a clean stop)."""

LoaderFactory = Callable[[Settings], EngineLoader]


def load_options(settings: Settings) -> LoadOptions:
    """What the model loader needs from the settings."""
    return LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        models_dir=settings.models_dir,
        torch_threads=torch_threads(settings),
        hf_mirror=settings.hf_mirror,
        tiny_eos=settings.tiny_eos,
        loop=settings.engine == "ttsd",
    )


def qwen_engines(settings: Settings) -> EngineLoader:
    """The production loader. Importing qwen-tts (and torch) takes seconds: it starts at once, in the
    background, so it overlaps whatever the worker does before its first call."""
    threading.Thread(target=import_qwen_tts_quietly, name="warm-up", daemon=True).start()
    return qwen_loader(load_options(settings))


class Channel:
    """The events line to the supervisor; writes from several threads stay whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def send(self, event: str, fields: dict[str, Any] | None = None) -> None:
        """One event; a supervisor that is gone is noticed by the stdin listener, not here. `ready`
        carries the start-up cost: seconds from this process's start to its model loaded and its
        batch size chosen (importing torch and qwen-tts is most of it on a small model)."""
        if event == wire.READY:
            fields = {**(fields or {}), "startup_s": round(time.monotonic() - self._started, 2)}
        line = wire.encode(event, fields)
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                return


def build_worker(settings: Settings, model: str, token: str, loader: EngineLoader, channel: Channel) -> Worker:
    """The worker of `model` with its own connection to the queue and its own files' helpers."""
    store = Store(settings.queue_target)
    outbox = Outbox(settings.outbox)
    registry = build_registry(settings.models)
    context = WorkContext(
        settings=settings,
        store=store,
        outbox=outbox,
        publisher=StatusPublisher(store, outbox),
        # One model per process; it is unloaded by the process's exit, never by the pool.
        engines=EnginePool(registry, loader, idle_s=float("inf"), max_loaded=1),
        voices_dir=settings.voices_dir,
        chunks=ChunkFiles(settings.state_dir / "chunks"),
        registry=registry,
        cache=(
            AudioCache(settings.cache_dir, store, settings.cache_size, settings.cache_max_bytes)
            if settings.enable_cache
            else None
        ),
        revision=revision_resolver(registry, settings.models_dir),
        on_batch_done=lambda: channel.send(wire.CALL),
        on_job_finished=lambda job: channel.send(wire.FINISHED, {"job": job.id}),
    )
    return Worker(model, context, threading.Event(), token=token, overlap=True, report=channel.send)


def listen(commands: IO[str], worker: Worker) -> None:
    """Follow the supervisor's commands; at the end of stdin the supervisor is gone, and so is this
    process, at once: the jobs it held are re-queued, uncounted, when the daemon starts again."""
    for line in commands:
        message = wire.decode(line)
        event = message["event"] if message else None
        if event == wire.LISTEN and message:
            # Not a wake: a listened job is already held, and a wake costs the queue a claim.
            worker.listen(str(message.get("job")))
            continue
        if event == wire.STOP:
            _stop(worker)
        worker.wake.set()
    os._exit(EXIT_ORPHANED)


def _stop(worker: Worker) -> None:
    worker.stop_event.set()
    worker.wake.set()


def _private_events(stdout_fd: int = 1) -> IO[str]:
    """The events stream: a copy of stdout only this module writes; fd 1 then points at stderr, so a
    library that prints cannot corrupt the supervisor's line protocol."""
    events = os.fdopen(os.dup(stdout_fd), "w", encoding="utf-8", buffering=1)
    os.dup2(2, stdout_fd)
    sys.stdout = sys.stderr
    return events


def _setup_logging(settings: Settings, channel: Channel, source: str) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(wire.PipeLogHandler(channel.stream, source))
    root.setLevel(logging.getLevelNamesMapping()[settings.log_level])


def _loader_factory(ref: str | None) -> LoaderFactory:
    if ref is None:
        return qwen_engines
    module, _, attribute = ref.partition(":")
    factory: LoaderFactory = getattr(importlib.import_module(module), attribute)
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one model until idle, stopped or orphaned; 0 for an idle exit or a clean stop."""
    parser = argparse.ArgumentParser(prog="ttsd-worker", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("token")
    parser.add_argument("--loader", help="module:function returning the engine loader (default: qwen-tts)")
    parser.add_argument("--preload", action="store_true", help="load the model before any job asks for it")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the supervisor decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = Channel(_private_events())
    settings = Settings.model_validate_json(sys.stdin.readline())
    _setup_logging(settings, channel, f"worker-{args.model}")
    worker = build_worker(settings, args.model, args.token, _loader_factory(args.loader)(settings), channel)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: _stop(worker))
    threading.Thread(target=listen, args=(sys.stdin, worker), name="commands", daemon=True).start()
    log.info("worker %s started (pid %d)", args.model, os.getpid())
    if args.preload:
        worker.preload()
    outcome = worker.run(idle_exit_s=settings.model_idle_s)
    log.info("worker %s exits: %s", args.model, "idle" if outcome == "idle" else "stopped")
    # Status files it could not write (a full disk) are the daemon's to write from now on.
    worker.context.publisher.settle()
    channel.send(wire.EXIT, {"outcome": outcome, "owed": worker.context.publisher.owed()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
