"""Long-form audio: where finished chunks wait for their job, and how they become one file.

Each finished chunk's waveform is kept in the state directory until its job is delivered, so a job
interrupted halfway resumes from its first unfinished chunk. Joining trims each chunk's leading and
trailing silence to a bound, fades its edges so the cuts do not click, and puts the chunk's pause
after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttsd.waveforms import load_waveform, save_waveform

EDGE_FADE_S = 0.008
MAX_EDGE_SILENCE_S = 0.12
_FRAME_S = 0.01
_SILENCE_RATIO = 0.02  # a 10 ms frame quieter than 2% of the chunk's loudest frame counts as silence


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


def trim_edges(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing silence down to MAX_EDGE_SILENCE_S, judged on 10 ms frames."""
    frame = max(1, int(sample_rate * _FRAME_S))
    count = len(audio) // frame
    if count == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * _SILENCE_RATIO)
    if loud.size == 0:
        return audio
    keep = int(MAX_EDGE_SILENCE_S * sample_rate)
    start = max(0, loud[0] * frame - keep)
    end = min(len(audio), (loud[-1] + 1) * frame + keep)
    return audio[start:end]


def fade_edges(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Short linear fades in and out, so a cut never clicks."""
    length = min(len(audio) // 2, int(EDGE_FADE_S * sample_rate))
    if length == 0:
        return audio
    faded = audio.astype(np.float32, copy=True)
    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)
    faded[:length] *= ramp
    faded[-length:] *= ramp[::-1]
    return faded


def join_chunks(chunks: Sequence[np.ndarray], pauses_ms: Sequence[int], sample_rate: int) -> np.ndarray:
    """One waveform: every chunk trimmed and faded, followed by its pause. A single chunk is
    returned as it is, so a short job's audio is exactly what the model made."""
    if len(chunks) == 1:
        return np.asarray(chunks[0], dtype=np.float32)
    parts: list[np.ndarray] = []
    for audio, pause_ms in zip(chunks, pauses_ms, strict=True):
        parts.append(fade_edges(trim_edges(audio, sample_rate), sample_rate))
        if pause_ms > 0:
            parts.append(np.zeros(int(sample_rate * pause_ms / 1000), dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
