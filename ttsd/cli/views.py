"""How the CLI shows things: job rows, coloured states, progress bars, cache figures, the hosts
serving the queue, and how it reads a `--since` value. Shared by the subcommand modules."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ttsd.config import Settings
from ttsd.delivery.status import iso
from ttsd.jobqueue.protocols import PeopleQueue
from ttsd.jobqueue.records import CacheStats
from ttsd.jobqueue.tables import DaemonRecord, Job
from ttsd.ops.identity import recorded_host_id

STATE_COLOURS = {
    "done": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "yellow",
    "cancelled": "magenta",
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HOSTS_GONE_SHOWN = 10
"""Stopped or silent daemons listed after the live ones: enough to see a host that just went away."""


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


def this_hosts_daemon(store: PeopleQueue, settings: Settings, records: Sequence[DaemonRecord]) -> DaemonRecord | None:
    """The newest daemon of this machine (`records`: `store.daemons()`): on a shared queue the
    newest of all may be another host's."""
    if not settings.shared_queue:
        return store.latest_daemon()
    mine = recorded_host_id(settings.state_dir)
    return max((r for r in records if r.host_id == mine), key=lambda r: r.started_at, default=None)


def hosts_view(records: Sequence[DaemonRecord], now: datetime, silent_after_s: float) -> list[dict[str, Any]]:
    """The daemons serving the queue, live ones first, then at most `HOSTS_GONE_SHOWN` stopped or
    silent ones. `now` must be the queue's clock (`store.clock()`): heartbeats are written by it, and
    this host's clock may be minutes off another's. A daemon is alive when it has not stopped and its
    last heartbeat is younger than `silent_after_s`."""
    rows = []
    for record in records:
        age = max(0.0, (now - record.heartbeat_at).total_seconds())
        alive = record.stopped_at is None and age < silent_after_s
        rows.append(
            {
                "id": record.id,
                "host": record.hostname,
                "role": record.role,
                "pid": record.pid,
                "alive": alive,
                "started_at": iso(record.started_at),
                "heartbeat_at": iso(record.heartbeat_at),
                "heartbeat_age_s": round(age, 1),
                "stopped_at": iso(record.stopped_at),
                "version": record.version,
                "inbox": record.inbox,
                "outbox": record.outbox,
                # What a gone daemon last had loaded is no longer there.
                "loaded_models": json.loads(record.loaded_models) if alive else [],
            }
        )
    # sorted() is stable: within each group the queue's order (newest heartbeat first) stays.
    rows.sort(key=lambda row: not row["alive"])
    alive_count = sum(1 for row in rows if row["alive"])
    return rows[: alive_count + HOSTS_GONE_SHOWN]


def host_lines(hosts: Sequence[dict[str, Any]]) -> list[str]:
    """The hosts block of `status` and `doctor`: one line per daemon, then one per worker it runs."""
    alive = sum(1 for host in hosts if host["alive"])
    lines = [f"hosts    {alive} alive" + (f", {len(hosts) - alive} gone" if len(hosts) > alive else "")]
    for host in hosts:
        head = f"{host['host']} ({host['role']}) pid {host['pid']}"
        if host["alive"]:
            lines.append(
                f"  alive   {head}, since {host['started_at']}, heartbeat {host['heartbeat_age_s']}s ago, "
                f"ttsd {host['version'] or '?'}"
            )
        elif host["stopped_at"]:
            lines.append(f"  stopped {head}, at {host['stopped_at']}")
        else:  # killed, or cut off from the queue: its leases go to the others once they expire
            lines.append(f"  silent  {head}, last heartbeat {host['heartbeat_age_s']:.0f}s ago")
        for worker in host["loaded_models"]:
            where = f" on {worker['device']}/{worker.get('dtype')}" if worker.get("device") else ""
            lines.append(f"          {worker.get('model')}{where}, {worker.get('state')}")
    return lines
