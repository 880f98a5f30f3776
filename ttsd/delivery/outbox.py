"""The outbox: every file ttsd delivers, written atomically (ttsd.fsutil) and only ever inside the
outbox, under a name checked again here as a last guard. A crash leaves at most a temp file, which
`sweep` removes at start."""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ttsd.audio import change_speed, peak_normalize
from ttsd.delivery.status import STATUS_SUFFIX, read_status_document
from ttsd.encoding import AudioFormat, ChapterMark, encode
from ttsd.errors import TtsdError
from ttsd.faults import crash_point
from ttsd.fsutil import atomic_write, folds_case, install_file, stage_file, sweep_temp_files
from ttsd.jobqueue.records import AudioInfo
from ttsd.names import name_problem


@dataclass(frozen=True)
class StagedFile:
    """A file written under a hidden temp name, waiting to be installed."""

    temp: Path
    target: Path


@dataclass(frozen=True)
class StagedAudio(StagedFile):
    """An encoded audio file, staged, and what it holds."""

    info: AudioInfo


class UnsafeOutputPath(TtsdError):
    """An output name that would leave the outbox (never expected past validation: a last guard)."""

    code = "unsafe_output"


class Outbox:
    """Atomic writes of audio and status files into one folder."""

    def __init__(self, root: Path, fold_names: bool | None = None) -> None:
        self.root = root.absolute()
        # Not group/world writable whatever the umask: whoever may write here may replace outputs.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        # On a case-insensitive file system (macOS's default) "Hello" and "hello" are one file, so
        # they must be one name to the queue; None: find out by looking.
        self.folds_names = folds_case(self.root) if fold_names is None else fold_names

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
        self,
        name: str,
        fmt: AudioFormat,
        audio: np.ndarray,
        sample_rate: int,
        normalize: bool = False,
        speed: float = 1.0,
        chapters: Sequence[ChapterMark] = (),
        part: str = "",
    ) -> StagedAudio:
        """Encode `name[part].fmt` into a hidden, fsynced temp file; nothing is visible until
        `install`. `part` names one piece of a job's output (a book's chapter file)."""
        audio = finished_audio(audio, sample_rate, normalize, speed)
        data = encode(audio, sample_rate, fmt, chapters)
        target = self.path_for(name, f"{part}.{fmt}")
        temp = stage_file(self.root, data, midway=partial(crash_point, "audio_write", name))
        info = AudioInfo(
            file=target.name,
            format=fmt,
            sample_rate=sample_rate,
            duration_s=round(len(audio) / sample_rate, 3),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        return StagedAudio(temp=temp, target=target, info=info)

    def stage_bytes(self, name: str, suffix: str, data: bytes) -> StagedFile:
        """Stage `name + suffix` (a subtitle file) like an audio file."""
        target = self.path_for(name, suffix)
        return StagedFile(temp=stage_file(self.root, data), target=target)

    def install(self, staged: StagedFile) -> None:
        """Make a staged file visible under its name, atomically and durably."""
        install_file(staged.temp, staged.target)

    def discard(self, staged: StagedFile) -> None:
        """Drop a staged file that was not installed (a no-op once it was)."""
        staged.temp.unlink(missing_ok=True)

    def write_status(self, name: str, document: dict[str, Any], durable: bool = False) -> None:
        """Atomically replace the status file of output `name`.

        Readers never see a partial file either way. Only `durable` writes are fsynced: a job's
        status is derived from the queue and rebuilt at start if a crash lost it, so paying two
        fsyncs per state change would only slow intake; a rejection has no queue row to rebuild
        from, so it is written durably."""
        data = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
        atomic_write(self.status_path(name), data, durable=durable)

    def read_status(self, name: str) -> dict[str, Any] | None:
        """The current status document of `name`, or None if absent or not one of ours."""
        return read_status_document(self.status_path(name))

    def stale_extras(self, name: str, delivered: Collection[str]) -> list[Path]:
        """The subtitle and chapter files an earlier job of output `name` delivered that a new one
        does not (`delivered`: the file names it does): left in place they would describe another
        take. A `<name>.chNN.<ext>` with a status file of its own is another job's output, not ours."""
        pattern = re.compile(rf"{re.escape(name)}(\.(srt|vtt)|\.ch\d+\.[a-z0-9]+)")
        stale = []
        for path in self.root.glob(f"{glob.escape(name)}.*"):
            if path.name in delivered or not pattern.fullmatch(path.name) or not path.is_file():
                continue
            if ".ch" in path.name[len(name) :] and (self.root / (path.name.rsplit(".", 1)[0] + STATUS_SUFFIX)).exists():
                continue
            stale.append(path)
        return stale

    def sweep(self, older_than_s: float = 0.0) -> list[Path]:
        """Remove temp files a crash left behind (those older than `older_than_s`: on an outbox other
        hosts write to, a young one may be their write in progress); returns what was removed."""
        return sweep_temp_files(self.root, older_than_s=older_than_s)


def finished_audio(audio: np.ndarray, sample_rate: int, normalize: bool, speed: float) -> np.ndarray:
    """A job's joined waveform as it is delivered: peak-normalised if asked, at its speed."""
    if normalize:
        audio = peak_normalize(audio)
    return change_speed(audio, sample_rate, speed)
