"""`ttsd cache stats|clear`: the persistent audio cache."""

from __future__ import annotations

import click

from ttsd.cli.app import Context, json_option, main, pass_context
from ttsd.cli.views import cache_view
from ttsd.synth.audio_cache import AudioCache


@main.group()
def cache() -> None:
    """The persistent audio cache."""


def _audio_cache(ctx: Context) -> AudioCache:
    settings = ctx.settings
    return AudioCache(settings.cache_dir, ctx.store, settings.cache_size, settings.cache_max_bytes)


@cache.command("stats")
@json_option
@pass_context
def cache_stats(ctx: Context) -> None:
    """Entries, size, hits, misses and hit rate."""
    view = cache_view(_audio_cache(ctx).stats(), ctx.settings)

    def human() -> None:
        rate = "n/a" if view["hit_rate"] is None else f"{view['hit_rate']:.1%}"
        click.echo(f"entries  {view['entries']} (max {view['max_entries']})")
        click.echo(f"size     {view['bytes'] / 1024**2:.1f} MiB (max {view['max_bytes'] / 1024**2:.0f} MiB)")
        click.echo(f"lookups  {view['hits']} hits, {view['misses']} misses, hit rate {rate}")
        if not view["enabled"]:
            click.echo("(the cache is off: TTS_ENABLE_CACHE=false)")

    ctx.emit(view, human)


@cache.command("clear")
@json_option
@pass_context
def cache_clear(ctx: Context) -> None:
    """Delete every cached take (jobs and outputs are untouched)."""
    removed = _audio_cache(ctx).clear()
    ctx.emit({"removed": removed}, lambda: click.echo(f"removed {removed} cached take(s)"))
