"""Opening the queue at start, and rebuilding it from disk when it was lost.

The queue database can be deleted, emptied or damaged while the daemon is stopped (a backup tool, a
full disk, a person). Everything needed to carry on is still on disk: every accepted job file waits
in `inbox/accepted/`, and every job's outcome is in its status file (and audio) in the outbox. So a
damaged file is moved aside, and an empty queue next to that evidence is rebuilt: each name's newest
accepted job is restored under its old id, as done (when its audio is there, intact), failed or
cancelled as its status file says, or queued to run again; the cache index is rebuilt from the takes
on disk. Finished work is never redone.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.script_status import outputs_of
from ttsd.delivery.status import STATUS_SUFFIX
from ttsd.fsutil import read_regular_file
from ttsd.intake.folders import ACCEPTED_DIR, original_name
from ttsd.intake.jobfile import job_defaults, parse_job_file
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.records import AudioInfo, Finished, RunInfo
from ttsd.jobqueue.sqlite_file import quarantine_damaged
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobspec import JobSpec
from ttsd.synth.audio_cache import AudioCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rebuilt:
    """What rebuilding a lost queue found on disk."""

    queued: int
    finished: int
    takes: int


def open_queue(settings: Settings, outbox: Outbox) -> Queue:
    """The queue, with a damaged SQLite file moved aside and a lost queue rebuilt from disk."""
    if not settings.shared_queue:
        damaged = quarantine_damaged(settings.db_path)
        if damaged is not None:
            moved, verdict = damaged
            log.error("the queue database was damaged (%s): moved aside to %s; rebuilding it from disk", verdict, moved)
    store = Store(settings.queue_target)
    if store.jobs(limit=1) or not _evidence(settings.inbox / ACCEPTED_DIR, outbox.root):
        return store
    rebuilt = rebuild(store, settings, outbox)
    log.warning(
        "the queue was empty although job files and status files were on disk: rebuilt %d finished and %d "
        "queued job(s), %d cached take(s)",
        rebuilt.finished,
        rebuilt.queued,
        rebuilt.takes,
    )
    return store


def _evidence(accepted: Path, outbox: Path) -> bool:
    """Whether jobs were taken before: accepted job files, or status files, on disk."""
    for folder, suffix in ((accepted, ""), (outbox, STATUS_SUFFIX)):
        try:
            with os.scandir(folder) as entries:
                if any(entry.name.endswith(suffix) and not entry.name.startswith(".") for entry in entries):
                    return True
        except OSError:
            continue
    return False


def rebuild(store: Queue, settings: Settings, outbox: Outbox) -> Rebuilt:
    """Restore each output name's newest accepted job from disk (see the module's docstring)."""
    defaults = job_defaults(settings)
    seen: set[str] = set()
    queued = finished = 0
    for path in _newest_first(settings.inbox / ACCEPTED_DIR):
        try:
            data = read_regular_file(path, defaults.max_file_bytes + 1)
        except OSError:
            log.warning("cannot read %s while rebuilding the queue; skipped", path)
            continue
        for entry in parse_job_file(original_name(path.name), data, defaults):
            if entry.spec is None or entry.spec.name in seen:
                continue
            seen.add(entry.spec.name)
            outcome = _restore(store, outbox, entry.spec, path.name)
            finished += outcome is not None
            queued += outcome is None
    takes = AudioCache(settings.cache_dir, store, settings.cache_size, settings.cache_max_bytes).reindex()
    return Rebuilt(queued=queued, finished=finished, takes=takes)


def _newest_first(folder: Path) -> list[Path]:
    try:
        files = [path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")]
    except OSError:
        return []
    return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name), reverse=True)


def _restore(store: Queue, outbox: Outbox, spec: JobSpec, source_file: str) -> Finished | None:
    document = outbox.read_status(spec.name) or {}
    job_id = document.get("job_id") if isinstance(document.get("job_id"), str) else None
    outcome = _finished(document, outbox)
    store.restore(spec, source_file, job_id, outcome)
    return outcome


def _finished(document: dict[str, Any], outbox: Outbox) -> Finished | None:
    """The outcome a status file records, when it is final and (for done) its audio is intact."""
    state = document.get("state")
    when = _moment(document.get("finished_at"))
    if state in (JobState.FAILED, JobState.CANCELLED):
        error = document.get("error") or {}
        return Finished(JobState(state), when, error_code=error.get("code"), error_message=error.get("message"))
    if state != JobState.DONE:
        return None
    audio = _intact_audio(document.get("audio") or {}, outbox.root)
    if audio is None:
        return None  # the audio is gone or changed: speak it again
    run = RunInfo(
        device=document.get("device"),
        dtype=document.get("dtype"),
        seed=document.get("seed"),
        cache_hit=bool(document.get("cache_hit")),
        synth_s=float((document.get("timing") or {}).get("synth_s") or 0.0),
    )
    return Finished(JobState.DONE, when, audio=replace(audio, outputs=outputs_of(document)), run=run)


def _intact_audio(audio: dict[str, Any], outbox: Path) -> AudioInfo | None:
    try:
        info = AudioInfo(
            file=str(audio["file"]),
            format=str(audio["format"]),
            sample_rate=int(audio["sample_rate"]),
            duration_s=float(audio["duration_s"]),
            bytes=int(audio["bytes"]),
            sha256=str(audio["sha256"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if Path(info.file).name != info.file or info.file.startswith("."):
        return None  # not a file ttsd delivered into this outbox
    try:
        data = (outbox / info.file).read_bytes()
    except OSError:
        return None
    return info if hashlib.sha256(data).hexdigest() == info.sha256 else None


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
