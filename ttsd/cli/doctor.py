"""`ttsd doctor`: whether this machine can serve, and why not."""

from __future__ import annotations

import json
import sys

import click

from ttsd.cli.app import EXIT_FAILED, Context, json_option, main, pass_context
from ttsd.cli.views import host_lines, hosts_view, this_hosts_daemon, worker_line
from ttsd.ops.lock import daemon_running


@main.command()
@json_option
@pass_context
def doctor(ctx: Context) -> None:
    """Check versions, device plan, models, folders and disk; exit 1 if something blocks work. The
    settings shown are the running daemon's (marking those this command would set otherwise)."""
    from ttsd.ops.doctor import diagnose
    from ttsd.ops.effective import running_daemon_settings

    running = daemon_running(ctx.settings)
    report = diagnose(ctx.loaded, running, daemon_settings=running_daemon_settings(ctx.settings) if running else None)
    settings = ctx.settings
    # The queue is opened only where it was before (SQLite: a running daemon's, so doctor never
    # creates nor migrates a file) or where the queue check just reached it (a shared queue: an
    # unreachable one would be retried for minutes).
    readable = report.facts["queue"]["readable"] if settings.shared_queue else running
    records = ctx.store.daemons() if readable else []
    record = this_hosts_daemon(ctx.store, settings, records) if readable and running else None
    # The workers the daemon runs now: their device plans and the batch size each one chose.
    report.facts["workers"] = json.loads(record.loaded_models) if record is not None else []
    # Every host serving the queue, as `ttsd status` lists them (see there for the silence limit).
    report.facts["hosts"] = hosts_view(records, ctx.store.clock(), settings.lease_s) if readable else []

    def human() -> None:
        versions = report.facts["versions"]
        click.echo("versions  " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in versions.items()))
        for check in report.checks:
            mark = "ok  " if check.ok else ("FAIL" if check.blocking else "warn")
            click.echo(f"{mark}  {check.name}: {check.detail}")
        click.echo("models")
        for row in report.facts["models"]:
            where = f"{row['path']} ({row['bytes'] / 1024**2:.0f} MiB)" if row["present"] else "not on this machine"
            click.echo(f"  {row['model']:<24} {row['kind']:<13} {where}")
        for worker in report.facts["workers"]:
            click.echo(worker_line(worker))
        if settings.shared_queue and readable:
            for line in host_lines(report.facts["hosts"]):
                click.echo(line)
        of = report.facts["settings_of"]
        if of["who"] == "daemon":
            click.echo(f"settings of the running daemon (pid {of['pid']}; * this command would use another value)")
        else:
            click.echo(f"settings of this command ({of['why']})")
        for name, item in report.facts["settings"].items():
            line = f" {'*' if item.get('differs') else ' '}{name:<28} {item['value']}  [{item['source']}]"
            if item.get("differs"):
                here = item.get("here")
                line += f"  (here: {here['value']} [{here['source']}])" if here else "  (here: no such setting)"
            click.echo(line)

    ctx.emit(report.as_dict(), human)
    if report.blocked:
        sys.exit(EXIT_FAILED)
