"""Fast stand-ins for the model: a deterministic FakeEngine, a loader for EnginePool, and job specs.

Nothing here imports torch or qwen-tts: the store and worker tests run in well under a second each.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttsd.catalog import ModelEntry, ModelKind
from ttsd.delivery.outbox import Outbox
from ttsd.encoding import AudioFormat
from ttsd.errors import EngineError
from ttsd.intake.intake import Intake, Outcome
from ttsd.intake.jobfile import JobDefaults, parse_object
from ttsd.jobqueue.records import AudioInfo
from ttsd.jobspec import JobSpec
from ttsd.synth.engine.base import DevicePlan, Engine, SynthesisRequest, Takes, Voices

FAKE_MODEL = "fake"
OTHER_MODEL = "fake-b"
FAKE_RATE = 24_000
SAMPLES_PER_CHAR = 1680  # 70 ms of audio per character at 24 kHz: a natural reading pace

REGISTRY: dict[str, ModelEntry] = {
    name: ModelEntry(name=name, kind="custom_voice", repo_id=f"test/{name}")
    for name in (FAKE_MODEL, OTHER_MODEL, "fake-c")
}

DEFAULTS = JobDefaults(
    default_model=FAKE_MODEL,
    default_sample_rate=FAKE_RATE,
    max_text_length=600,
    max_job_chars=200_000,
    max_file_bytes=4 * 1024**2,
    registry=REGISTRY,
)


def make_spec(text: str, name: str | None = None, **fields: Any) -> JobSpec:
    """A resolved job as a job file with these fields would give (name defaults to the text)."""
    return parse_object({"text": text, **fields}, name or text.replace(" ", "-"), DEFAULTS)


def fake_samples(text: str) -> int:
    """How many samples the fake engine returns for `text`."""
    return SAMPLES_PER_CHAR * max(1, len(text))


def fake_wave(text: str) -> np.ndarray:
    """Deterministic float32 noise, its length derived from the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, fake_samples(text)).astype(np.float32)


class FakeEngine:
    """The Engine protocol, instantly. `poison` maps a text marker to the error a batch holding
    that marker raises; `on_synthesize` runs inside each generate call (before the poison check);
    `runaway` marks texts whose rows never stop (they come back capped at the frame budget)."""

    max_frames = 2048
    stops_by_itself = True

    def __init__(
        self,
        name: str = FAKE_MODEL,
        kind: ModelKind = "custom_voice",
        poison: Mapping[str, type[EngineError]] | None = None,
        on_synthesize: Callable[[Sequence[SynthesisRequest]], None] | None = None,
        runaway: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.plan = DevicePlan("cpu", "float32", "sdpa")
        self.sample_rate = FAKE_RATE
        self.poison = dict(poison or {})
        self.on_synthesize = on_synthesize
        self.runaway = runaway
        self.calls: list[int] = []
        self.texts: list[list[str]] = []
        self.budgets: list[int | None] = []
        self.closed = False

    def generate(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> Takes:
        self.calls.append(len(requests))
        self.texts.append([request.text for request in requests])
        self.budgets.append(max_frames)
        if self.on_synthesize is not None:
            self.on_synthesize(requests)
        for marker, error in self.poison.items():
            if any(marker in request.text for request in requests):
                raise error(f"the fake engine refuses {marker!r}", code=f"fake_{marker.lower()}")
        runaway = self.runaway
        capped = tuple(runaway is not None and runaway in request.text for request in requests)
        frames = tuple(max(1, len(request.text) // 2) for request in requests)
        return Takes(rows=tuple(request.text for request in requests), frames=frames, capped=capped)

    def decode(self, takes: Takes) -> list[np.ndarray]:
        return [fake_wave(str(text)) for text in takes.rows]

    def synthesize(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> list[np.ndarray]:
        return self.decode(self.generate(requests, generation, seed, max_frames))

    def bytes_per_row_frame(self) -> int | None:
        return None

    def voices(self) -> Voices:
        return Voices(speakers=("vivian",), languages=("auto", "english"))

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """An EnginePool loader that records each load; `gate`, when given, holds every load until set."""

    def __init__(self, gate: threading.Event | None = None, **engine_options: Any) -> None:
        self.gate = gate
        self.engine_options = engine_options
        self.loads: list[str] = []
        self.engines: dict[str, FakeEngine] = {}
        self.peak_in_memory = 0  # the most engines alive (loaded, not closed) during any load
        self.loading = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, entry: ModelEntry) -> Engine:
        with self._lock:
            self.loads.append(entry.name)
            alive = sum(not engine.closed for engine in self.engines.values()) + 1
            self.peak_in_memory = max(self.peak_in_memory, alive)
        self.loading.set()
        if self.gate is not None and not self.gate.wait(timeout=10):
            raise TimeoutError("the test never opened the load gate")
        engine = FakeEngine(name=entry.name, kind=entry.kind, **self.engine_options)
        with self._lock:
            self.engines[entry.name] = engine
        return engine


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def scratch_dir(fallback: Path) -> Iterator[Path]:
    """A private folder in RAM (/dev/shm) where there is one, else `fallback`.

    The queue commits with synchronous=FULL, so on a busy disk every commit waits for an fsync;
    in RAM the same real SQLite files, WAL and locks are exercised without that wait.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield fallback
        return
    folder = Path(tempfile.mkdtemp(prefix="ttsd-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_audio(outbox: Outbox, name: str, fmt: AudioFormat, audio: np.ndarray, sample_rate: int) -> AudioInfo:
    """Deliver `name.fmt` at once, the way a worker does (staged, then installed)."""
    staged = outbox.stage_audio(name, fmt, audio, sample_rate)
    try:
        outbox.install(staged)
    finally:
        outbox.discard(staged)
    return staged.info


def take_now(intake: Intake, path: Path) -> Outcome:
    """Have intake take one inbox entry at once, whatever its stability (as a settled file would be)."""
    return intake._take_group([path])[0]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under another process umask (what ttsd must withstand: 0 makes every file it
    creates without an explicit mode world-writable)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def deny_access(monkeypatch: pytest.MonkeyPatch, folder: Path, platform: str = "darwin") -> None:
    """Make listing `folder` and opening any file in it fail with EPERM, the way macOS's privacy
    protection refuses a process that was not allowed there, on `platform` (so the messages say what
    to grant). Simulated: the tests run as root, whom no folder mode refuses, and not on macOS."""
    real_scandir, real_open = os.scandir, os.open

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EPERM, os.strerror(errno.EPERM), os.fsdecode(path))

    def scandir(path: Any = ".") -> Any:
        if not isinstance(path, int) and Path(os.fsdecode(path)) == folder:
            raise denied(path)
        return real_scandir(path)

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if dir_fd is None and Path(os.fsdecode(path)).parent == folder:
            raise denied(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(sys, "platform", platform)
