"""Raw float32 waveforms on disk (.npy): written atomically and durably, read back defensively.
Used for cached takes and for the finished chunks of unfinished jobs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np


def save_waveform(path: Path, audio: np.ndarray) -> None:
    """Write `audio` to `path` via a fsynced temp file and a rename: a crash leaves the old file or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temp.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(audio, dtype=np.float32), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def load_waveform(path: Path) -> np.ndarray | None:
    """A mono float32 waveform with only finite samples, or None if the file is missing or damaged."""
    try:
        audio = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if audio.dtype != np.float32 or audio.ndim != 1 or not np.isfinite(audio).all():
        return None
    return np.asarray(audio)
