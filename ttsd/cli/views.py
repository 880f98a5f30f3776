"""How the CLI shows things: job rows, coloured states, progress bars, cache figures, and how it
reads a `--since` value. Shared by the subcommand modules."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ttsd.config import Settings
from ttsd.delivery.status import iso
from ttsd.jobqueue.records import CacheStats
from ttsd.jobqueue.tables import Job

STATE_COLOURS = {
    "done": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "yellow",
    "cancelled": "magenta",
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def styled_state(state: str) -> str:
    """The state, coloured (click drops the colour when stdout is not a terminal)."""
    return click.style(f"{state:<9}", fg=STATE_COLOURS.get(state))


def parse_since(value: str) -> datetime:
    """`30m`, `2h`, `1d` ago, or an ISO date/time (UTC when no zone is given)."""
    match = _DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use a duration like 30m, 2h, 1d or an ISO date like 2026-11-24T08:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def job_row(job: Job) -> dict[str, Any]:
    """One job as a row of `jobs`, `status`, `wait`, `retry` and `cancel`."""
    return {
        "id": job.id,
        "name": job.name,
        "model": job.model,
        "state": job.state,
        "attempts": job.attempts,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
        "duration_s": job.duration_s,
        "error": job.error_message,
    }


def progress_line(name: str, document: dict[str, Any]) -> str:
    """One line of progress: state, a bar of chunks, audio made so far, ETA."""
    progress = document.get("progress") or {}
    done, total = int(progress.get("chunks_done") or 0), int(progress.get("chunks_total") or 1)
    filled = round(20 * done / max(total, 1))
    eta = progress.get("eta_s")
    tail = f", ETA {eta:.0f}s" if isinstance(eta, int | float) else ""
    return (
        f"{name}: {document.get('state'):<9} [{'#' * filled}{'.' * (20 - filled)}] {done}/{total} chunks, "
        f"{progress.get('audio_s') or 0:.1f}s of audio{tail}"
    )


def cache_view(stats: CacheStats, settings: Settings) -> dict[str, Any]:
    """The cache's figures and limits, as `status` and `cache stats` show them."""
    return {
        "entries": stats.entries,
        "bytes": stats.bytes,
        "hits": stats.hits,
        "misses": stats.misses,
        "hit_rate": stats.hit_rate,
        "max_entries": settings.cache_size,
        "max_bytes": settings.cache_max_bytes,
        "enabled": settings.enable_cache,
    }


def worker_line(worker: dict[str, Any]) -> str:
    """One worker process as `status` shows it: model, pid, state, device, batch size, times."""
    line = f"worker   {worker.get('model')} pid {worker.get('pid')} {worker.get('state')}, up {worker.get('up_s')}s"
    if worker.get("device"):
        line += f", on {worker['device']}/{worker.get('dtype')}"
    if worker.get("engine"):
        line += f", engine {worker['engine']}"
    if worker.get("startup_s") is not None:
        line += f", ready in {worker['startup_s']}s (model load {worker.get('load_s')}s)"
    if worker.get("batch"):
        line += f", batch {worker['batch']} ({worker.get('batch_reason')})"
    return line
