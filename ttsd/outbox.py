"""The outbox: every file ttsd delivers, written atomically and only ever inside the outbox.

A reader never sees a partial file: each file is written to a hidden temp name in the same folder
(created with O_EXCL|O_NOFOLLOW, so a planted symlink is never written through), flushed, fsynced
and renamed over the target (a rename replaces a symlink at the target rather than following it);
then the folder itself is fsynced. A crash leaves at most a temp file, which `sweep` removes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ttsd.errors import TtsdError
from ttsd.faults import crash_point
from ttsd.models import AudioInfo
from ttsd.names import name_problem

TEMP_PREFIX = ".ttsd-"
TEMP_SUFFIX = ".tmp"
STATUS_SUFFIX = ".status.json"
MAX_STATUS_BYTES = 1024**2  # a status document is a few KiB; anything bigger is not one of ours
PEAK_TARGET = 0.891  # -1 dBFS: headroom for lossy encoders

_SUBTYPES = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
_CONTAINERS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}


@dataclass(frozen=True)
class StagedAudio:
    """An encoded audio file written under a hidden temp name, waiting to be installed."""

    temp: Path
    target: Path
    info: AudioInfo


class UnsafeOutputPath(TtsdError):
    """An output name that would leave the outbox (never expected past validation: a last guard)."""

    code = "unsafe_output"


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling (soxr), a no-op when the rates agree."""
    if from_rate == to_rate:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, from_rate, to_rate), dtype=np.float32)


def peak_normalize(audio: np.ndarray) -> np.ndarray:
    """Scale so the loudest sample sits at -1 dBFS; silence stays silence."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if peak == 0.0 else (audio * (PEAK_TARGET / peak)).astype(np.float32)


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """The bytes of an audio file of format `fmt` holding mono `audio`."""
    buffer = io.BytesIO()
    clipped = np.clip(audio, -1.0, 1.0)
    sf.write(buffer, clipped, sample_rate, format=_CONTAINERS[fmt], subtype=_SUBTYPES[fmt])
    return buffer.getvalue()


class Outbox:
    """Atomic writes of audio and status files into one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        # Not group/world writable whatever the umask: whoever may write here may replace outputs.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)

    def path_for(self, name: str, suffix: str) -> Path:
        """The path of `name + suffix` in the outbox, refused if it could land anywhere else."""
        problem = name_problem(name)
        if problem:
            raise UnsafeOutputPath(f"output name {name!r} {problem}")
        path = self.root / f"{name}{suffix}"
        if path.parent != self.root:
            raise UnsafeOutputPath(f"output name {name!r} leaves the outbox")
        return path

    def status_path(self, name: str) -> Path:
        """Where the status file of output `name` lives."""
        return self.path_for(name, STATUS_SUFFIX)

    def stage_audio(
        self, name: str, fmt: str, audio: np.ndarray, sample_rate: int, normalize: bool = False
    ) -> StagedAudio:
        """Encode `name.fmt` into a hidden, fsynced temp file; nothing is visible until `install`."""
        if normalize:
            audio = peak_normalize(audio)
        data = encode(audio, sample_rate, fmt)
        target = self.path_for(name, f".{fmt}")
        temp = self._stage(data, fault=("audio_write", name))
        info = AudioInfo(
            file=target.name,
            format=fmt,
            sample_rate=sample_rate,
            duration_s=round(len(audio) / sample_rate, 3),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        return StagedAudio(temp=temp, target=target, info=info)

    def install(self, staged: StagedAudio) -> None:
        """Make a staged file visible under its name, atomically and durably."""
        staged.temp.replace(staged.target)
        _fsync_dir(self.root)

    def discard(self, staged: StagedAudio) -> None:
        """Drop a staged file that was not installed (a no-op once it was)."""
        staged.temp.unlink(missing_ok=True)

    def write_audio(
        self, name: str, fmt: str, audio: np.ndarray, sample_rate: int, normalize: bool = False
    ) -> AudioInfo:
        """Encode and atomically deliver `name.fmt` at once; returns what was written."""
        staged = self.stage_audio(name, fmt, audio, sample_rate, normalize)
        try:
            self.install(staged)
        finally:
            self.discard(staged)
        return staged.info

    def write_status(self, name: str, document: dict[str, Any], durable: bool = False) -> None:
        """Atomically replace the status file of output `name`.

        Readers never see a partial file either way. Only `durable` writes are fsynced: a job's
        status is derived from the queue and rebuilt at start if a crash lost it, so paying two
        fsyncs per state change would only slow intake; a rejection has no queue row to rebuild
        from, so it is written durably."""
        data = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
        self._atomic_write(self.status_path(name), data, durable)

    def read_status(self, name: str) -> dict[str, Any] | None:
        """The current status document of `name`, or None if absent or unreadable.

        Only a regular file counts: a symlink planted at the name is not read through, and a FIFO
        there must not block the daemon's start (status files are read while rebuilding them)."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.status_path(name), flags)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                document = json.loads(handle.read(MAX_STATUS_BYTES).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return document if isinstance(document, dict) else None

    def sweep(self) -> list[Path]:
        """Remove temp files a crash left behind; returns what was removed."""
        removed = []
        for path in self.root.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _atomic_write(self, path: Path, data: bytes, durable: bool) -> None:
        temp = self._stage(data, durable=durable)
        try:
            temp.replace(path)
        finally:
            temp.unlink(missing_ok=True)
        if durable:
            _fsync_dir(self.root)

    def _stage(self, data: bytes, fault: tuple[str, str] | None = None, durable: bool = True) -> Path:
        temp = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temp, flags, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                half = len(data) // 2
                handle.write(data[:half])
                if fault is not None:
                    crash_point(*fault)
                handle.write(data[half:])
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
