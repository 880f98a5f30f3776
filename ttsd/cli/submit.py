"""`ttsd submit`: write a job file into the daemon's inbox, and optionally wait for its outcome."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ttsd.cli.app import EXIT_FAILED, EXIT_INTERRUPTED, Context, fail, json_option, main, pass_context
from ttsd.cli.views import progress_line
from ttsd.client import status_path, submit_job, wait_for_submitted
from ttsd.encoding import FORMATS
from ttsd.intake.jobfile import job_defaults, parse_object
from ttsd.jobqueue.states import JobState
from ttsd.names import default_output_name, sanitize_name


@main.command()
@click.argument("text")
@click.option("--model", help="Registry name (default: TTS_DEFAULT_MODEL).")
@click.option("--speaker", help="CustomVoice speaker, e.g. Ryan.")
@click.option("--language", help="Language, e.g. English (default Auto).")
@click.option("--instruct", help="Style instruction, or the voice description for VoiceDesign.")
@click.option("--ref-audio", help="Voice clone reference: a file name in the inbox's voices/ folder.")
@click.option("--ref-text", help="Transcript of the reference recording.")
@click.option("--voice", help="A saved voice (ttsd voices add); also picks its model unless --model says.")
@click.option(
    "--subtitles", type=click.Choice(["srt", "vtt"]), help="Also write a subtitle file, one cue per sentence."
)
@click.option("--format", "audio_format", type=click.Choice(FORMATS))
@click.option("--sample-rate", type=int)
@click.option("--output", help="Output name (default: the first words of the text plus a short hash of the job).")
@click.option("--priority", type=int)
@click.option("--seed", type=int)
@click.option("--id", "client_id", help="Your own request id, echoed in the status file.")
@click.option("--no-cache", is_flag=True, help="Force a fresh take.")
@click.option("--normalize", is_flag=True, help="Peak-normalise the audio.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish; exit 0 only if it is done.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@json_option
@pass_context
def submit(ctx: Context, /, text: str, wait: bool, timeout: float | None, **fields: Any) -> None:
    """Queue TEXT (or '-' for standard input) by writing a job file into the inbox."""
    if text == "-":
        text = sys.stdin.read()
    job: dict[str, Any] = {"text": text}
    renames = {"audio_format": "format", "client_id": "id"}
    for key, value in fields.items():
        if key in ("no_cache", "normalize"):
            continue
        if value is not None:
            job[renames.get(key, key)] = value
    if fields["no_cache"]:
        job["cache"] = False
    if fields["normalize"]:
        job["normalize"] = True
    name = job.get("output") or default_output_name(job)
    folders = ctx.daemon_folders()
    inbox, outbox = folders.inbox, folders.outbox
    parse_object(job, name, job_defaults(ctx.settings))
    path = submit_job(inbox, name, job)
    name = job.get("output") or sanitize_name(path.stem)
    submitted = {
        "file": str(path),
        "name": name,
        "status_file": str(status_path(outbox, name)),
        "daemon_running": folders.running,
    }
    ctx.note_idle_daemon(folders)
    if not wait:
        ctx.emit(submitted, lambda: click.echo(f"queued {path.name} -> {submitted['status_file']}"))
        return
    progress = None if ctx.as_json else _ProgressLine(name)
    try:
        document = wait_for_submitted(path, outbox, name, timeout, on_change=progress)
    except TimeoutError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"stopped waiting; the job goes on (ttsd show {name} / ttsd wait {name})", EXIT_INTERRUPTED)
    finally:
        if progress is not None:
            progress.close()
    ctx.emit(document, lambda: _print_outcome(document, outbox))
    if document["state"] != JobState.DONE:
        sys.exit(EXIT_FAILED)


def _print_outcome(document: dict[str, Any], outbox: Path) -> None:
    if document["state"] == JobState.DONE:
        audio = document["audio"]
        click.echo(f"done: {outbox / audio['file']} ({audio['duration_s']}s)")
    else:
        error = document.get("error") or {}
        click.echo(f"{document['state']}: {error.get('message', '')}")


class _ProgressLine:
    """Progress on stderr while `--wait` waits: a live bar on a terminal, a line per change elsewhere."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.live = sys.stderr.isatty()
        self.last: str | None = None

    def __call__(self, document: dict[str, Any]) -> None:
        line = progress_line(self.name, document)
        if line != self.last:
            click.echo(f"\r{line}\033[K" if self.live else line, err=True, nl=not self.live)
            self.last = line

    def close(self) -> None:
        """End the live line, if one was drawn."""
        if self.live and self.last is not None:
            click.echo("", err=True)
