"""What every part of a worker shares: settings, queue, outbox, engines, files and callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.jobqueue.protocols import WorkerQueue
from ttsd.jobqueue.tables import Job
from ttsd.synth.audio_cache import AudioCache
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.engine.pool import EnginePool


@dataclass(frozen=True)
class WorkContext:
    """Everything a worker needs."""

    settings: Settings
    store: WorkerQueue
    outbox: Outbox
    publisher: StatusPublisher
    engines: EnginePool
    voices_dir: Path
    chunks: ChunkFiles
    registry: Mapping[str, ModelEntry] = field(default_factory=dict)
    cache: AudioCache | None = None
    revision: Callable[[str], str | None] = lambda model: None
    on_batch_done: Callable[[], None] = lambda: None
    on_job_finished: Callable[[Job], None] = lambda job: None
