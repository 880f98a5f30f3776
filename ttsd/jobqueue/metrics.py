"""Per-model figures over a recent window, for `ttsd status`: how long jobs wait, how fast speech is
made (real-time factor), how often the cache answers, how often jobs needed another try."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def model_metrics(jobs: Iterable[Job]) -> dict[str, dict[str, Any]]:
    """Model -> counts, median queue wait and synthesis time, RTF, cache hit rate and retries."""
    by_model: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_model[job.model].append(job)
    return {model: _summary(rows) for model, rows in sorted(by_model.items())}


def _summary(jobs: list[Job]) -> dict[str, Any]:
    done = [job for job in jobs if job.state == JobState.DONE]
    waits = [(job.started_at - job.created_at).total_seconds() for job in jobs if job.started_at]
    synthesized = [job for job in done if not job.cache_hit and job.synth_s is not None and job.duration_s]
    audio_s = sum(job.duration_s or 0.0 for job in synthesized)
    synth_s = sum(job.synth_s or 0.0 for job in synthesized)
    return {
        "done": len(done),
        "failed": len(jobs) - len(done),
        "queue_wait_s_p50": _median(waits),
        "synth_s_p50": _median([job.synth_s or 0.0 for job in synthesized]),
        "rtf": round(synth_s / audio_s, 3) if audio_s else None,
        "audio_s": round(sum(job.duration_s or 0.0 for job in done), 1),
        "cache_hit_rate": round(sum(job.cache_hit for job in done) / len(done), 3) if done else None,
        "retries": sum(max(0, job.attempts - job.attempt_base - 1) for job in jobs),
    }
