"""`ttsd voices`: the speakers, languages and kind of each model."""

from __future__ import annotations

import click

from ttsd.cli.app import Context, json_option, main, pass_context
from ttsd.errors import JobNotFound


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
    cache_file = ctx.settings.voices_cache
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
