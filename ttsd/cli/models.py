"""`ttsd voices` and `ttsd doctor`: what each model speaks, and whether this machine can serve."""

from __future__ import annotations

import sys

import click

from ttsd.cli.main import EXIT_FAILED, Context, json_option, main, pass_context
from ttsd.errors import JobNotFound
from ttsd.ops.lock import daemon_running


@main.command()
@click.option("--model", help="Only this registry model.")
@click.option("--refresh", is_flag=True, help="Re-read the checkpoints instead of the remembered answer.")
@json_option
@pass_context
def voices(ctx: Context, model: str | None, refresh: bool) -> None:
    """Speakers, languages and kind of each model."""
    from ttsd.catalog import build_registry
    from ttsd.synth.voices import list_voices

    registry = build_registry(ctx.settings.models)
    if model is not None and model not in registry:
        raise JobNotFound(f"no model named {model!r} (known: {', '.join(sorted(registry))})")
    cache_file = ctx.settings.state_dir / "voices.json"
    listing = [
        v for v in list_voices(registry, ctx.settings.models_dir, cache_file, refresh) if model in (None, v.model)
    ]

    def human() -> None:
        for entry in listing:
            click.echo(f"{entry.model}  ({entry.kind}; from {entry.source})")
            if entry.speakers:
                click.echo(f"  speakers:  {', '.join(entry.speakers)}")
            click.echo(f"  languages: {', '.join(entry.languages)}")

    ctx.emit([v.as_dict() for v in listing], human)


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
