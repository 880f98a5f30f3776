"""`ttsd status`: is the daemon up, what has it loaded, which hosts serve the queue, and what is in it."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from ttsd.cli.app import Context, json_option, main, pass_context
from ttsd.cli.views import (
    cache_view,
    host_lines,
    hosts_view,
    job_row,
    this_hosts_daemon,
    worker_line,
)
from ttsd.delivery.status import iso
from ttsd.intake.access import recorded_inbox_problem
from ttsd.intake.folders import ACCEPTED_DIR, INTAKE_FOLDERS, is_ignored, original_name
from ttsd.jobqueue.metrics import model_metrics
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import DaemonRecord
from ttsd.ops.lock import daemon_running, other_inbox_daemon


def _daemon_view(ctx: Context, record: DaemonRecord | None) -> dict[str, Any]:
    running = daemon_running(ctx.settings)
    view: dict[str, Any] = {"running": running}
    if record is not None:
        view.update(
            pid=record.pid if running else None,
            host=record.hostname,
            started_at=iso(record.started_at),
            heartbeat_at=iso(record.heartbeat_at),
            stopped_at=iso(record.stopped_at),
            inbox=record.inbox,
            outbox=record.outbox,
            version=record.version,
            loaded_models=json.loads(record.loaded_models) if running else [],
        )
    return view


def waiting_files(inbox: Path) -> int:
    """Job files in the inbox not yet taken (held back by a full queue, or still being written)."""
    try:
        with os.scandir(inbox) as entries:
            return sum(
                1
                for entry in entries
                if entry.name not in INTAKE_FOLDERS
                and not is_ignored(entry.name)
                and entry.is_file(follow_symlinks=False)
            )
    except OSError:
        return 0


def stray_accepted_files(accepted: Path, taken: set[str]) -> list[str]:
    """Files in inbox/accepted/ that intake never took (someone put them there): they are never
    jobs, and would otherwise sit there without a word."""
    try:
        with os.scandir(accepted) as entries:
            names = [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(name for name in names if not is_ignored(name) and original_name(name) not in taken)


@main.command()
@json_option
@pass_context
def status(ctx: Context) -> None:
    """Is the daemon up, on which device, which hosts serve the queue, and what is in it."""
    records = ctx.store.daemons()
    now = ctx.store.clock()
    daemon = _daemon_view(ctx, this_hosts_daemon(ctx.store, ctx.settings, records))
    # Silent for longer than a lease: the queue then gives that daemon's running jobs to the others,
    # so "alive" never outlives the queue's own view; a shorter limit would also call a daemon
    # gone while it retries a lost database connection (its heartbeat, every second, waits then).
    hosts = hosts_view(records, now, silent_after_s=ctx.settings.lease_s)
    counts = ctx.store.counts()
    running = [job_row(job) for job in ctx.store.jobs(state=JobState.RUNNING.value, limit=None)]
    cache = cache_view(ctx.store.cache_stats(), ctx.settings)
    failures = [job_row(job) for job in ctx.store.jobs(state=JobState.FAILED.value, limit=3)]
    last_hour = model_metrics(ctx.store.finished_since(now - timedelta(hours=1)))
    folders = ctx.daemon_folders()
    waiting = waiting_files(folders.inbox)
    strays = stray_accepted_files(folders.inbox / ACCEPTED_DIR, ctx.store.source_files())
    other = other_inbox_daemon(folders.inbox, ctx.settings.state_dir)
    # What the daemon itself met: this command's own access to the inbox may differ (on macOS a
    # LaunchAgent's python holds its own privacy permissions).
    problem = recorded_inbox_problem(ctx.settings.state_dir) if daemon["running"] else None
    data = {
        "daemon": daemon,
        "queue_location": ctx.store.location,
        "shared_queue": ctx.settings.shared_queue,
        "hosts": hosts,
        "queue": counts,
        "inbox_problem": problem,
        "inbox_waiting": waiting,
        "accepted_strays": strays,
        "inbox_served_by_another_daemon": other,
        "running": running,
        "recent_failures": failures,
        "last_hour": last_hour,
        "cache": cache,
        "state_dir": str(ctx.settings.state_dir),
    }

    def human() -> None:
        if daemon["running"]:
            if daemon.get("started_at"):
                click.echo(f"daemon   running on {daemon['host']}, pid {daemon['pid']}, since {daemon['started_at']}")
            else:  # it holds the lock but has not recorded itself yet: it is starting
                click.echo("daemon   starting")
        elif daemon.get("started_at"):
            click.echo(f"daemon   not running (last started {daemon['started_at']}, stopped {daemon['stopped_at']})")
        else:
            click.echo("daemon   never started on this state directory")
        for worker in daemon.get("loaded_models") or []:
            click.echo(worker_line(worker))
        if daemon.get("inbox"):
            click.echo(f"folders  {daemon['inbox']} -> {daemon['outbox']}")
        click.echo(f"state    {ctx.settings.state_dir}")
        if ctx.settings.shared_queue:
            click.echo(f"queue    {data['queue_location']} (shared)")
            for line in host_lines(hosts):
                click.echo(line)
        else:  # the daemon lines above are all the hosts there are
            click.echo(f"queue    {data['queue_location']} (this machine only)")
        states = [s.value for s in JobState if s is not JobState.REJECTED]
        click.echo("")
        click.echo(f"{'model':<24}" + "".join(f"{s:>10}" for s in states))
        for model, per_state in sorted(counts.items()):
            if model:  # rejected files name no model; they get their own line
                click.echo(f"{model:<24}" + "".join(f"{per_state.get(s, 0):>10}" for s in states))
        if not counts:
            click.echo("(no jobs yet)")
        rejected = sum(per_state.get(JobState.REJECTED.value, 0) for per_state in counts.values())
        if rejected:
            click.echo(f"rejected {rejected} job file(s) or line(s) (ttsd jobs --state rejected)")
        if other:
            click.echo(click.style(f"inbox    served by another daemon ({other})", fg="red"))
        if problem:
            line = f"inbox    the daemon cannot list it (since {problem.get('since')}): {problem['message']}"
            click.echo(click.style(line, fg="red"))
        if strays:
            shown = ", ".join(strays[:3]) + (", ..." if len(strays) > 3 else "")
            click.echo(
                click.style(f"accepted {len(strays)} file(s) put in inbox/accepted/ by hand are never taken", fg="red")
                + f" ({shown}): drop job files into the inbox itself"
            )
        if waiting:
            click.echo(
                f"inbox    {waiting} file(s) waiting to be taken (a model's queue is full, or still being written)"
            )
        for row in running:
            click.echo(f"running  {row['id']}  {row['name']}  ({row['model']}, attempt {row['attempts'] + 1})")
        for model, figures in last_hour.items():
            rtf = "n/a" if figures["rtf"] is None else f"{figures['rtf']:.2f}"
            click.echo(
                f"last 1h  {model}: {figures['done']} done, {figures['failed']} failed, {figures['audio_s']}s of "
                f"audio, RTF {rtf}, wait p50 {figures['queue_wait_s_p50']}s, {figures['retries']} retries"
            )
        rate = cache["hit_rate"]
        click.echo(f"cache    {cache['entries']} takes, hit rate {'n/a' if rate is None else f'{rate:.0%}'}")
        for row in failures:
            click.echo(click.style(f"failed   {row['id']}  {row['name']}: {row['error']}", fg="red"))

    ctx.emit(data, human)
