"""`ttsd voices`: the speakers, languages and kind of each model; and the saved voice library
(`ttsd voices add|list|show|remove`), whose voices jobs name with `"voice": "NAME"`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ttsd.catalog import DEFAULT_VOICE_BASE_MODEL, DEFAULT_VOICE_DESIGN_MODEL
from ttsd.cli.app import Context, json_option, main, pass_context
from ttsd.errors import JobNotFound

if TYPE_CHECKING:
    from ttsd.voicelib import SavedVoice


@main.group(invoke_without_command=True)
@click.option("--model", help="Only this registry model.")
@click.option("--refresh", is_flag=True, help="Re-read the checkpoints instead of the remembered answer.")
@json_option
@pass_context
def voices(ctx: Context, model: str | None, refresh: bool) -> None:
    """Speakers, languages and kind of each model; the subcommands manage saved voices."""
    if click.get_current_context().invoked_subcommand is not None:
        if model is not None or refresh:
            raise click.UsageError("--model and --refresh belong to the bare `ttsd voices` (the models' speakers)")
        return
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


def _check_name(name: str) -> str:
    from ttsd.voicelib import voice_name_problem

    problem = voice_name_problem(name)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="NAME")
    return name


@voices.command("add")
@click.argument("name")
@click.option(
    "--from",
    "recording",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A recording of the voice (any format soundfile reads; at most 60 s, 5-15 s is best).",
)
@click.option("--design", "description", help="Design the voice from a description instead (a VoiceDesign model).")
@click.option("--text", help="With --from: the recording's transcript (a closer clone). With --design: the sample.")
@click.option("--language", default="Auto", show_default=True, help="With --design: the sample's language.")
@click.option("--model", default=DEFAULT_VOICE_BASE_MODEL, show_default=True, help="The Base model the voice is for.")
@click.option(
    "--design-model",
    default=DEFAULT_VOICE_DESIGN_MODEL,
    show_default=True,
    help="With --design: the VoiceDesign model.",
)
@click.option("--force", is_flag=True, help="Replace a saved voice of the same name.")
@json_option
@pass_context
def add(
    ctx: Context,
    name: str,
    recording: Path | None,
    description: str | None,
    text: str | None,
    language: str,
    model: str,
    design_model: str,
    force: bool,
) -> None:
    """Save voice NAME: a Base model's clone prompt, computed once, from a recording or a description."""
    from ttsd.synth.voice_making import DEFAULT_SAMPLE_TEXT, make_from_design, make_from_recording

    _check_name(name)
    if (recording is None) == (description is None):
        raise click.UsageError("give exactly one of --from RECORDING and --design DESCRIPTION")
    if recording is not None:
        if language != "Auto":
            raise click.UsageError("--language goes with --design (a recording's language needs no saying)")
        voice = make_from_recording(ctx.settings, name, model, recording, text, force=force)
    else:
        assert description is not None
        sample = text or DEFAULT_SAMPLE_TEXT
        voice = make_from_design(ctx.settings, name, model, design_model, description, sample, language, force=force)
    mode = "in-context, with its transcript" if not voice.x_vector_only else "speaker embedding only"
    ctx.emit(
        voice.as_dict(),
        lambda: click.echo(
            f"saved voice {voice.name} for {voice.model} ({voice.duration_s:g} s reference, {mode}); "
            f'jobs use it with "voice": "{voice.name}"'
        ),
    )


@voices.command("list")
@json_option
@pass_context
def list_saved(ctx: Context) -> None:
    """The saved voices."""
    from ttsd.voicelib import VoiceLibrary

    library = VoiceLibrary(ctx.settings.saved_voices_dir)
    saved = library.list()
    damaged = sorted(set(library.names()) - {v.name for v in saved})

    def human() -> None:
        if not saved:
            click.echo("no saved voices (add one: ttsd voices add NAME --from recording.wav --text TRANSCRIPT)")
        for voice in saved:
            about = voice.description if voice.source == "design" else voice.ref_text or "(no transcript)"
            click.echo(f"{voice.name}  {voice.model}  {voice.source}  {voice.duration_s:g} s  {_short(about or '')}")
        if damaged:
            click.echo(f"damaged (see `ttsd voices show NAME`): {', '.join(damaged)}")

    ctx.emit([v.as_dict() for v in saved], human)


@voices.command("show")
@click.argument("name")
@json_option
@pass_context
def show(ctx: Context, name: str) -> None:
    """One saved voice in full."""
    from ttsd.voicelib import VoiceLibrary

    library = VoiceLibrary(ctx.settings.saved_voices_dir)
    voice = library.get(name)
    folder = library.prompt_path(name).parent
    ctx.emit({**voice.as_dict(), "folder": str(folder)}, lambda: _show(voice, folder))


def _show(voice: SavedVoice, folder: Path) -> None:
    for key, value in voice.as_dict().items():
        if value is not None:
            click.echo(f"{key + ':':18}{value}")
    click.echo(f"{'folder:':18}{folder}")


@voices.command("remove")
@click.argument("name")
@json_option
@pass_context
def remove(ctx: Context, name: str) -> None:
    """Delete a saved voice (jobs naming it are refused from then on)."""
    from ttsd.voicelib import VoiceLibrary

    removed = VoiceLibrary(ctx.settings.saved_voices_dir).remove(name)
    ctx.emit(
        {"removed": name, "voice": None if removed is None else removed.as_dict()},
        lambda: click.echo(f"removed voice {name}"),
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
