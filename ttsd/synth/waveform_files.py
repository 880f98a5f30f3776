"""Raw float32 waveforms on disk (.npy): written atomically and durably, read back defensively.
Used for cached takes, for the finished chunks of unfinished jobs, and (not durably) for live audio."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ttsd.fsutil import atomic_write


def save_waveform(path: Path, audio: np.ndarray, durable: bool = True) -> None:
    """Write `audio` to `path` atomically and (unless not `durable`: no fsync) durably: a crash
    leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(audio, dtype=np.float32), allow_pickle=False)
    atomic_write(path, buffer.getvalue(), mode=0o600, durable=durable)


def load_waveform(path: Path) -> np.ndarray | None:
    """A mono float32 waveform with only finite samples, or None if the file is missing or damaged."""
    try:
        audio = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if audio.dtype != np.float32 or audio.ndim != 1 or not np.isfinite(audio).all():
        return None
    return np.asarray(audio)
