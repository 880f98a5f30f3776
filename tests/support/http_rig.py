"""The HTTP app in-process over a real queue, outbox and chunk files, with a fake-engine worker on a
thread: every route runs for real, and speaking takes milliseconds."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.support.fakes import DEFAULTS, FAKE_MODEL, REGISTRY, FakeEngine
from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.http.app import create_app
from ttsd.http.door import FrontDoor
from ttsd.http.watch import JobWatch
from ttsd.intake.requests import Submissions
from ttsd.jobqueue.store import Store
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import Engine
from ttsd.synth.engine.pool import EnginePool
from ttsd.synth.worker import Worker


@dataclass
class HttpRig:
    """One app, its client, and (once started) a worker speaking FAKE_MODEL's jobs."""

    root: Path
    settings: Settings
    store: Store
    outbox: Outbox
    client: TestClient
    door: FrontDoor
    worker: Worker

    def start_worker(self) -> None:
        """Speak queued jobs from now on (until the rig closes)."""
        thread = threading.Thread(target=self.worker.run, name="test-worker", daemon=True)
        thread.start()
        self._threads.append(thread)

    def files_outside_outbox(self) -> set[Path]:
        """Every file under the rig's root except the outbox's and the queue's own. Those two are not
        even walked: the worker adds and removes chunk folders there while this looks."""
        skip = {self.outbox.root, self.settings.state_dir}
        found: set[Path] = set()
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = [name for name in subfolders if Path(folder, name) not in skip]
            found.update(Path(folder, name) for name in files)
        return found

    _threads: list[threading.Thread]


@contextmanager
def http_rig(root: Path, engine: Engine | None = None, **settings: Any) -> Iterator[HttpRig]:
    """An HttpRig in `root`; the worker does not run until `start_worker`."""
    options: dict[str, Any] = {"max_batch": 4, "default_model": FAKE_MODEL, "enable_cache": False, **settings}
    config = Settings(inbox=root / "inbox", outbox=root / "outbox", state_dir=root / "state", **options)
    store = Store(config.db_path)
    outbox = Outbox(config.outbox)
    publisher = StatusPublisher(store, outbox)
    chunks = ChunkFiles(config.state_dir / "chunks")
    stop = threading.Event()
    chosen = engine or FakeEngine()

    def load(_entry: ModelEntry) -> Engine:
        return chosen

    context = WorkContext(
        settings=config,
        store=store,
        outbox=outbox,
        publisher=publisher,
        engines=EnginePool(REGISTRY, load, idle_s=600),
        voices_dir=config.voices_dir,
        chunks=chunks,
        registry=REGISTRY,
    )
    worker = Worker(FAKE_MODEL, context, stop)
    defaults = replace(DEFAULTS, max_text_length=config.max_text_length, max_job_chars=config.max_job_chars)
    submissions = Submissions(
        defaults, config.max_queue_size, store, publisher, on_enqueued=lambda _m: worker.wake.set()
    )
    door = FrontDoor(
        settings=config,
        store=store,
        outbox=outbox,
        submissions=submissions,
        watch=JobWatch(store, stop, tick_s=0.01),
        chunk_files=chunks,
        registry=REGISTRY,
        workers=lambda: [{"model": FAKE_MODEL, "pid": 1, "state": "idle", "device": "cpu", "dtype": "float32"}],
    )
    door.watch.start()
    threads: list[threading.Thread] = []
    try:
        with TestClient(create_app(door), base_url="http://127.0.0.1:8765", raise_server_exceptions=False) as client:
            rig = HttpRig(root, config, store, outbox, client, door, worker, threads)
            yield rig
    finally:
        stop.set()
        for thread in [door.watch, *threads]:
            thread.join(timeout=10)
        store.close()
