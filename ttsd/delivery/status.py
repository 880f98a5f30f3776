"""Status documents (`outbox/<name>.status.json`, schema 1), derived from the queue so they can
always be rebuilt from it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ttsd.delivery.script_status import script_fields
from ttsd.fsutil import read_regular_file
from ttsd.jobqueue.states import TERMINAL_STATES, JobState
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import SCHEMA_VERSION, JobSpec

STATUS_SUFFIX = ".status.json"
MAX_STATUS_BYTES = 1024**2  # a status document is a few KiB; anything bigger is not one of ours


def read_status_document(path: Path) -> dict[str, Any] | None:
    """The status document at `path`, or None if absent or not one of ours. Only a regular file
    counts: a symlink planted at the name is not read through, and a FIFO there must not block
    (status files are read while the daemon rebuilds them at start)."""
    try:
        document = json.loads(read_regular_file(path, MAX_STATUS_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def is_terminal(document: Mapping[str, Any]) -> bool:
    """Whether a status document describes a job that has finished (done, failed, cancelled, rejected)."""
    state = document.get("state")
    return state in TERMINAL_STATES


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, or None."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def progress(job: Job) -> dict[str, Any]:
    """Chunks done, audio made so far, and an ETA from the time the finished chunks took."""
    eta = None
    remaining = job.chunks_total - job.chunks_done
    if job.state == JobState.RUNNING and job.chunks_done and job.synth_s:
        eta = round(job.synth_s / job.chunks_done * remaining, 1)
    return {
        "chunks_done": job.chunks_done,
        "chunks_total": job.chunks_total,
        "audio_s": round(job.duration_s if job.state == JobState.DONE and job.duration_s else job.audio_s_done, 3),
        "eta_s": eta,
    }


def status_document(job: Job, chunks_of: Callable[[str], Sequence[ChunkRow]] | None = None) -> dict[str, Any]:
    """The status file of a job, in whatever state it is (`chunks_of` reads a job's chunk rows: a
    running book's status counts them per chapter)."""
    if job.state == JobState.REJECTED:
        return rejection_document(job)
    spec = JobSpec.model_validate_json(job.spec_json)
    error = None
    if job.error_code is not None and job.state != JobState.DONE:
        error = {"code": job.error_code, "message": job.error_message}
    audio = None
    if job.state == JobState.DONE and job.audio_file is not None:
        audio = {
            "file": job.audio_file,
            "format": job.audio_format,
            "sample_rate": job.sample_rate,
            "duration_s": job.duration_s,
            "bytes": job.audio_bytes,
            "sha256": job.audio_sha256,
        }
    rtf = None
    if job.synth_s is not None and job.duration_s:
        rtf = round(job.synth_s / job.duration_s, 3)
    return {
        "schema": SCHEMA_VERSION,
        "job_id": job.id,
        "name": job.name,
        "client_id": job.client_id,
        "state": job.state,
        "error": error,
        "model": job.model,
        "speaker": spec.speaker,
        "language": spec.language,
        "device": job.device,
        "dtype": job.dtype,
        "attempts": job.attempts,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": progress(job),
        "audio": audio,
        "timing": {"queue_s": _seconds(job.created_at, job.started_at), "synth_s": job.synth_s, "rtf": rtf},
        "cache_hit": job.cache_hit,
        "seed": job.seed,
        **script_fields(
            job, spec, chunks_of(job.id) if chunks_of and spec.chapters and not job.state.terminal else None
        ),
    }


def rejection_document(job: Job) -> dict[str, Any]:
    """The status file of a job file (or line) that could not become a job: which field and why."""
    return {
        "schema": SCHEMA_VERSION,
        "job_id": job.id,
        "name": job.name,
        "client_id": None,
        "state": JobState.REJECTED.value,
        "error": {"code": job.error_code, "message": job.error_message, "field": job.error_field},
        "source_file": job.source_file,
        "model": None,
        "speaker": None,
        "language": None,
        "device": None,
        "dtype": None,
        "attempts": 0,
        "created_at": iso(job.created_at),
        "started_at": None,
        "finished_at": iso(job.finished_at),
        "progress": {"chunks_done": 0, "chunks_total": 0},
        "audio": None,
        "timing": {"queue_s": None, "synth_s": None, "rtf": None},
        "cache_hit": False,
        "seed": None,
    }
