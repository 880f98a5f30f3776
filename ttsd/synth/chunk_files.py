"""Finished chunks of unfinished jobs: each chunk's waveform is kept in the state directory until
its job is delivered, so a job interrupted halfway resumes from its first unfinished chunk.

Beside them, for a job someone listens to, the audio of a chunk still being generated ("live"):
a convenience for streaming it as it grows, rewritten as it grows and never needed to resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ttsd.jobqueue.protocols import ChunkSweep
from ttsd.synth.waveform_files import load_waveform, save_waveform


class ChunkFiles:
    """Finished chunk waveforms of unfinished jobs: `<root>/<job_id>/<index>.npy`; the live audio
    of a chunk being generated: `<root>/<job_id>/<index>.live.npy`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, job_id: str, index: int) -> Path:
        return self.root / job_id / f"{index}.npy"

    def save(self, job_id: str, index: int, audio: np.ndarray) -> None:
        """Keep a finished chunk (durably: a crash right after must not lose it)."""
        save_waveform(self._path(job_id, index), audio)

    def save_live(self, job_id: str, index: int, audio: np.ndarray) -> None:
        """Replace a running chunk's live audio (its raw audio so far, at the codec's rate): atomic,
        so a reader sees a whole file, but not fsynced, as a crash needs none of it."""
        save_waveform(self.root / job_id / f"{index}.live.npy", audio, durable=False)

    def load_live(self, job_id: str, index: int) -> np.ndarray | None:
        """A running chunk's live audio so far, or None if there is none (or it is damaged)."""
        return load_waveform(self.root / job_id / f"{index}.live.npy")

    def has(self, job_id: str, index: int) -> bool:
        """Whether a finished chunk's file is there (its content is checked when it is loaded)."""
        return self._path(job_id, index).is_file()

    def load(self, job_id: str, index: int) -> np.ndarray | None:
        """A finished chunk's waveform, or None if its file is missing or damaged."""
        return load_waveform(self._path(job_id, index))

    def discard(self, job_id: str) -> None:
        """Forget every chunk of a job, live audio included."""
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def job_ids(self) -> list[str]:
        """Jobs that have chunk files here (finished or live: each job has one folder for both)."""
        return [path.name for path in self.root.iterdir() if path.is_dir()]


def sweep_finished_chunks(store: ChunkSweep, files: ChunkFiles) -> None:
    """At start: chunks of jobs that finished (or vanished) are no longer needed."""
    states = store.jobs_with_chunks()
    for job_id, state in states.items():
        if state.terminal:
            store.drop_finished_chunks(job_id)
    for job_id in files.job_ids():
        if job_id not in states or states[job_id].terminal:
            files.discard(job_id)
