"""`ttsd doctor`: whether this machine can serve, and why not."""

from __future__ import annotations

import sys

import click

from ttsd.cli.app import EXIT_FAILED, Context, json_option, main, pass_context
from ttsd.ops.lock import daemon_running


@main.command()
@json_option
@pass_context
def doctor(ctx: Context) -> None:
    """Check versions, device plan, models, folders and disk; exit 1 if something blocks work."""
    from ttsd.ops.doctor import diagnose

    report = diagnose(ctx.loaded, daemon_running(ctx.settings))

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
        click.echo("settings")
        for name, item in report.facts["settings"].items():
            click.echo(f"  {name:<28} {item['value']}  [{item['source']}]")

    ctx.emit(report.as_dict(), human)
    if report.blocked:
        sys.exit(EXIT_FAILED)
