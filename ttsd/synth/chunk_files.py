"""Finished chunks of unfinished jobs: each chunk's waveform is kept in the state directory until
its job is delivered, so a job interrupted halfway resumes from its first unfinished chunk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ttsd.jobqueue.protocols import ChunkSweep
from ttsd.synth.waveform_files import load_waveform, save_waveform


class ChunkFiles:
    """Finished chunk waveforms of unfinished jobs: `<root>/<job_id>/<index>.npy`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, job_id: str, index: int) -> Path:
        return self.root / job_id / f"{index}.npy"

    def save(self, job_id: str, index: int, audio: np.ndarray) -> None:
        """Keep a finished chunk (durably: a crash right after must not lose it)."""
        save_waveform(self._path(job_id, index), audio)

    def has(self, job_id: str, index: int) -> bool:
        """Whether a finished chunk's file is there (its content is checked when it is loaded)."""
        return self._path(job_id, index).is_file()

    def load(self, job_id: str, index: int) -> np.ndarray | None:
        """A finished chunk's waveform, or None if its file is missing or damaged."""
        return load_waveform(self._path(job_id, index))

    def discard(self, job_id: str) -> None:
        """Forget every chunk of a job."""
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def job_ids(self) -> list[str]:
        """Jobs that have chunk files here."""
        return [path.name for path in self.root.iterdir() if path.is_dir()]


def sweep_finished_chunks(store: ChunkSweep, files: ChunkFiles) -> None:
    """At start: chunks of jobs that finished (or vanished) are no longer needed."""
    states = store.jobs_with_chunks()
    for job_id, state in states.items():
        if state.terminal:
            store.drop_chunks(job_id)
    for job_id in files.job_ids():
        if job_id not in states or states[job_id].terminal:
            files.discard(job_id)
