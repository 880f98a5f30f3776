"""The `ttsd` command: a thin click layer over the core. Every command takes `--json`.

Exit codes: 0 ok, 1 failed (a job failed, the daemon could not start), 2 usage, 3 not found.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ttsd import __version__
from ttsd.cli_launchd import launchd_group
from ttsd.config import LoadedSettings, Settings, load_settings
from ttsd.errors import ConfigError, JobNotFound, JobRejected, TtsdError
from ttsd.metrics import model_metrics
from ttsd.models import Job, JobState
from ttsd.names import sanitize_name
from ttsd.status import iso, status_document
from ttsd.store import CacheStats, Store

if TYPE_CHECKING:
    from ttsd.cache import AudioCache

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
WAIT_POLL_S = 0.1


@dataclass
class Context:
    """What every command gets: the settings, the store (opened on first use) and how to print."""

    loaded: LoadedSettings
    as_json: bool = False
    _store: Store | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The effective settings."""
        return self.loaded.settings

    @property
    def store(self) -> Store:
        """The queue database (created if this is the first use)."""
        if self._store is None:
            self._store = Store(self.settings.db_path)
        return self._store

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """Print `data` as JSON with --json, else the human form."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        else:
            human()


pass_context = click.make_pass_decorator(Context)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error on stderr and exit with `code`."""
    click.echo(f"ttsd: {message}", err=True)
    sys.exit(code)


@contextmanager
def handled_errors() -> Iterator[None]:
    """Turn ttsd's typed errors into messages and exit codes."""
    try:
        yield
    except JobNotFound as exc:
        fail(exc.message, EXIT_NOT_FOUND)
    except (ConfigError, JobRejected) as exc:
        fail(exc.message, EXIT_USAGE)
    except TtsdError as exc:
        fail(exc.message)


def _set_json(click_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        click_ctx.find_object(Context).as_json = True  # type: ignore[union-attr]


json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_set_json, help="Print machine-readable JSON."
)


class _Group(click.Group):
    """Every command's typed errors become a message and an exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        with handled_errors():
            return super().invoke(ctx)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ttsd")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="A ttsd.toml to read.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Queue, cache and models.")
@click.option("--inbox", type=click.Path(path_type=Path, file_okay=False), help="Folder watched for jobs.")
@click.option("--outbox", type=click.Path(path_type=Path, file_okay=False), help="Folder audio is written to.")
@click.pass_context
def main(
    click_ctx: click.Context,
    config: Path | None,
    state_dir: Path | None,
    inbox: Path | None,
    outbox: Path | None,
) -> None:
    """ttsd: drop job files in an inbox, get speech in an outbox."""
    loaded = load_settings(overrides={"state_dir": state_dir, "inbox": inbox, "outbox": outbox}, config_file=config)
    click_ctx.obj = Context(loaded=loaded)
    click_ctx.call_on_close(lambda: click_ctx.obj._store and click_ctx.obj._store.close())


# -- run ----------------------------------------------------------------------------------------


@main.command()
@pass_context
def run(ctx: Context) -> None:
    """Run the daemon in the foreground (what the LaunchAgent starts)."""
    from ttsd.daemon import run_daemon
    from ttsd.logs import log_file_path, setup_logging

    setup_logging(ctx.settings, log_file_path(ctx.settings))
    sys.exit(run_daemon(ctx.settings))


@main.command()
@click.option("-n", "--lines", type=click.IntRange(min=0), default=40, show_default=True, help="Lines of history.")
@click.option("-f", "--follow", "keep_following", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@json_option
@pass_context
def logs(ctx: Context, lines: int, keep_following: bool) -> None:
    """The daemon's log: human lines on a terminal, the JSON lines themselves with --json or in a pipe."""
    from ttsd.logs import follow, human_line, log_file_path

    path = log_file_path(ctx.settings)
    if not path.exists() and not keep_following:
        fail(f"no log yet at {path} (the daemon writes it once it runs)", EXIT_NOT_FOUND)
    readable = sys.stdout.isatty() and not ctx.as_json
    with contextlib.suppress(KeyboardInterrupt):
        for line in follow(path, lines, (lambda: False) if keep_following else (lambda: True)):
            click.echo(human_line(line) if readable else line)


# -- status -------------------------------------------------------------------------------------


def _daemon_view(ctx: Context) -> dict[str, Any]:
    from ttsd.daemon import daemon_running

    record = ctx.store.latest_daemon()
    running = daemon_running(ctx.settings)
    view: dict[str, Any] = {"running": running}
    if record is not None:
        view.update(
            pid=record.pid if running else None,
            started_at=iso(record.started_at),
            heartbeat_at=iso(record.heartbeat_at),
            stopped_at=iso(record.stopped_at),
            inbox=record.inbox,
            outbox=record.outbox,
            version=record.version,
            loaded_models=json.loads(record.loaded_models) if running else [],
        )
    return view


def _job_row(job: Job) -> dict[str, Any]:
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


@main.command()
@json_option
@pass_context
def status(ctx: Context) -> None:
    """Is the daemon up, on which device, and what is in the queue."""
    daemon = _daemon_view(ctx)
    counts = ctx.store.counts()
    running = [_job_row(job) for job in ctx.store.jobs(state=JobState.RUNNING.value, limit=None)]
    cache_view = _cache_view(ctx.store.cache_stats(), ctx.settings)
    failures = [_job_row(job) for job in ctx.store.jobs(state=JobState.FAILED.value, limit=3)]
    last_hour = model_metrics(ctx.store.finished_since(datetime.now(UTC) - timedelta(hours=1)))
    data = {
        "daemon": daemon,
        "queue": counts,
        "running": running,
        "recent_failures": failures,
        "last_hour": last_hour,
        "cache": cache_view,
        "state_dir": str(ctx.settings.state_dir),
    }

    def human() -> None:
        if daemon["running"]:
            click.echo(f"daemon   running, pid {daemon['pid']}, since {daemon['started_at']}")
        elif daemon.get("started_at"):
            click.echo(f"daemon   not running (last started {daemon['started_at']}, stopped {daemon['stopped_at']})")
        else:
            click.echo("daemon   never started on this state directory")
        for model in daemon.get("loaded_models") or []:
            click.echo(
                f"model    {model['model']} loaded on {model['device']}/{model['dtype']} "
                f"({model['attention']}), load {model['load_s']}s, idle {model['idle_s']}s"
            )
        if daemon.get("inbox"):
            click.echo(f"folders  {daemon['inbox']} -> {daemon['outbox']}")
        click.echo(f"state    {ctx.settings.state_dir}")
        states = [s.value for s in JobState if s is not JobState.REJECTED]
        click.echo("")
        click.echo(f"{'model':<24}" + "".join(f"{s:>10}" for s in states))
        for model, per_state in sorted(counts.items()):
            click.echo(f"{model:<24}" + "".join(f"{per_state.get(s, 0):>10}" for s in states))
        if not counts:
            click.echo("(no jobs yet)")
        for row in running:
            click.echo(f"running  {row['id']}  {row['name']}  ({row['model']}, attempt {row['attempts'] + 1})")
        for model, figures in last_hour.items():
            rtf = "n/a" if figures["rtf"] is None else f"{figures['rtf']:.2f}"
            click.echo(
                f"last 1h  {model}: {figures['done']} done, {figures['failed']} failed, {figures['audio_s']}s of "
                f"audio, RTF {rtf}, wait p50 {figures['queue_wait_s_p50']}s, {figures['retries']} retries"
            )
        rate = cache_view["hit_rate"]
        click.echo(f"cache    {cache_view['entries']} takes, hit rate {'n/a' if rate is None else f'{rate:.0%}'}")
        for row in failures:
            click.echo(click.style(f"failed   {row['id']}  {row['name']}: {row['error']}", fg="red"))

    ctx.emit(data, human)


# -- jobs / show --------------------------------------------------------------------------------


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


@main.command()
@click.option("--state", type=click.Choice([s.value for s in JobState if s is not JobState.REJECTED]))
@click.option("--model", help="Only jobs of this model.")
@click.option("--since", help="Only jobs created since: 30m, 2h, 1d, or an ISO date/time.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_context
def jobs(ctx: Context, state: str | None, model: str | None, since: str | None, limit: int) -> None:
    """List jobs, newest first."""
    after = parse_since(since) if since else None
    rows = [_job_row(job) for job in ctx.store.jobs(state=state, model=model, since=after, limit=limit)]

    def human() -> None:
        if not rows:
            click.echo("no jobs")
        for row in rows:
            extra = f"{row['duration_s']}s" if row["duration_s"] else (row["error"] or "")
            click.echo(f"{row['id']}  {styled_state(row['state'])} {row['model']:<20} {row['name']:<30} {extra}")

    ctx.emit(rows, human)


@main.command()
@click.argument("refs", nargs=-1, required=True, metavar="JOB...")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@json_option
@pass_context
def wait(ctx: Context, refs: tuple[str, ...], timeout: float | None) -> None:
    """Block until every JOB is finished; exit 0 only if all are done."""
    ids = [ctx.store.get(ref).id for ref in refs]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = [ctx.store.get(job_id) for job_id in ids]
        if all(JobState(job.state).terminal for job in found):
            break
        if deadline is not None and time.monotonic() > deadline:
            pending = ", ".join(f"{job.name} ({job.state})" for job in found if not JobState(job.state).terminal)
            fail(f"gave up after {timeout:g}s; still unfinished: {pending}")
        time.sleep(WAIT_POLL_S)
    rows = [_job_row(job) for job in found]

    def human() -> None:
        for row in rows:
            click.echo(f"{row['id']}  {styled_state(row['state'])} {row['name']}")

    ctx.emit(rows, human)
    if any(job.state != JobState.DONE for job in found):
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("job")
@json_option
@pass_context
def show(ctx: Context, job: str) -> None:
    """Everything about one job (by id, id prefix or output name)."""
    found = ctx.store.get(job)
    document = status_document(found)
    spec = json.loads(found.spec_json)
    document["text"] = spec["text"]
    document["format"] = spec["format"]
    document["source_file"] = found.source_file

    def human() -> None:
        for key in (
            "job_id",
            "name",
            "state",
            "model",
            "speaker",
            "language",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "cache_hit",
            "seed",
            "source_file",
        ):
            click.echo(f"{key:<12} {document[key]}")
        if document["error"]:
            click.echo(f"{'error':<12} {document['error']['code']}: {document['error']['message']}")
        audio = document["audio"]
        if audio:
            click.echo(
                f"{'audio':<12} {audio['file']} ({audio['duration_s']}s, {audio['sample_rate']} Hz, "
                f"{audio['bytes']} bytes)"
            )
            click.echo(f"{'timing':<12} {document['timing']}")
        click.echo(f"{'progress':<12} {progress_line(document['name'], document).split(': ', 1)[1]}")
        text = document["text"]
        click.echo(f"{'text':<12} {text[:200]}{'…' if len(text) > 200 else ''}")

    ctx.emit(document, human)


# -- submit -------------------------------------------------------------------------------------


def default_output_name(text: str) -> str:
    """A readable, collision-resistant name: the first words plus a short hash of the text."""
    words = re.findall(r"\w+", text.lower())[:5]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]
    return sanitize_name("-".join([*words, digest]) if words else f"job-{digest}")[:60]


def write_job_file(inbox: Path, name: str, job: dict[str, Any]) -> Path:
    """Drop `job` into the inbox atomically (temp + link: never replaces a file already waiting)."""
    inbox.mkdir(parents=True, exist_ok=True)
    temp = inbox / f".{name}.{uuid.uuid4().hex}.tmp"
    temp.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    with temp.open("rb") as handle:
        os.fsync(handle.fileno())
    try:
        for attempt in range(1, 1000):
            target = inbox / (f"{name}.json" if attempt == 1 else f"{name}-{attempt}.json")
            try:
                os.link(temp, target)
            except FileExistsError:
                continue
            return target
        raise TtsdError(f"too many files named {name}*.json are waiting in {inbox}")
    finally:
        temp.unlink(missing_ok=True)


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


def wait_for_status(outbox: Path, name: str, timeout: float | None, show_progress: bool) -> dict[str, Any]:
    """Poll the status file of `name` until its state is terminal (or the timeout passes), showing
    progress on stderr: a live bar on a terminal, one line per change elsewhere."""
    from ttsd.outbox import Outbox

    reader = Outbox(outbox)
    deadline = None if timeout is None else time.monotonic() + timeout
    live = sys.stderr.isatty()
    last_line = None
    while True:
        document = reader.read_status(name)
        state = document.get("state") if document else None
        if show_progress and document is not None:
            line = progress_line(name, document)
            if line != last_line:
                click.echo(f"\r{line}\033[K" if live else line, err=True, nl=not live)
                last_line = line
        if document is not None and state is not None and JobState(state).terminal:
            if show_progress and live:
                click.echo("", err=True)
            return document
        if deadline is not None and time.monotonic() > deadline:
            fail(f"gave up waiting for {name} after {timeout:g}s (last state: {state or 'none'})")
        time.sleep(WAIT_POLL_S)


@main.command()
@click.argument("text")
@click.option("--model", help="Registry name (default: TTS_DEFAULT_MODEL).")
@click.option("--speaker", help="CustomVoice speaker, e.g. Ryan.")
@click.option("--language", help="Language, e.g. English (default Auto).")
@click.option("--instruct", help="Style instruction, or the voice description for VoiceDesign.")
@click.option("--ref-audio", help="Voice clone reference: a file name in the inbox's voices/ folder.")
@click.option("--ref-text", help="Transcript of the reference recording.")
@click.option("--format", "audio_format", type=click.Choice(["wav", "flac", "ogg", "mp3"]))
@click.option("--sample-rate", type=int)
@click.option("--output", help="Output name (default: first words of the text plus a short hash).")
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
    from ttsd.daemon import job_defaults
    from ttsd.jobs import parse_object

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
    name = job.get("output") or default_output_name(text)
    inbox, outbox = _live_folders(ctx)
    parse_object(job, name, job_defaults(ctx.settings))
    path = write_job_file(inbox, name, job)
    name = job.get("output") or sanitize_name(path.stem)
    submitted = {"file": str(path), "name": name, "status_file": str(outbox / f"{name}.status.json")}
    if not wait:
        ctx.emit(submitted, lambda: click.echo(f"queued {path.name} -> {submitted['status_file']}"))
        return
    document = wait_for_status(outbox, name, timeout, show_progress=not ctx.as_json)
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


def _live_folders(ctx: Context) -> tuple[Path, Path]:
    """The running daemon's inbox and outbox, unless folders were set explicitly here."""
    explicit = {"inbox", "outbox"} & set(ctx.loaded.sources)
    record = ctx.store.latest_daemon()
    from ttsd.daemon import daemon_running

    if record is not None and not explicit and daemon_running(ctx.settings):
        return Path(record.inbox), Path(record.outbox)
    return ctx.settings.inbox, ctx.settings.outbox


# -- steering -----------------------------------------------------------------------------------


@main.command()
@click.argument("job", required=False)
@click.option("--all-failed", is_flag=True, help="Retry every failed job.")
@json_option
@pass_context
def retry(ctx: Context, job: str | None, all_failed: bool) -> None:
    """Queue a failed, cancelled or done job again."""
    if bool(job) == all_failed:
        fail("give a JOB or --all-failed", EXIT_USAGE)
    ids = ctx.store.failed_job_ids() if all_failed else [job or ""]
    retried = [ctx.store.retry(ref) for ref in ids]
    _republish(ctx, retried)
    ctx.emit([_job_row(j) for j in retried], lambda: click.echo(f"queued again: {len(retried)} job(s)"))


@main.command()
@click.argument("job")
@json_option
@pass_context
def cancel(ctx: Context, job: str) -> None:
    """Cancel a queued job, or discard a running job's result."""
    cancelled = ctx.store.cancel(job)
    _republish(ctx, [cancelled])
    ctx.emit(_job_row(cancelled), lambda: click.echo(f"cancelled {cancelled.id} ({cancelled.name})"))


def _republish(ctx: Context, changed: list[Job]) -> None:
    from ttsd.outbox import Outbox
    from ttsd.publish import publish

    _inbox, outbox = _live_folders(ctx)
    writer = Outbox(outbox)
    for job in changed:
        publish(ctx.store, writer, job.id)


# -- models -------------------------------------------------------------------------------------


@main.command()
@click.option("--model", help="Only this registry model.")
@click.option("--refresh", is_flag=True, help="Re-read the checkpoints instead of the remembered answer.")
@json_option
@pass_context
def voices(ctx: Context, model: str | None, refresh: bool) -> None:
    """Speakers, languages and kind of each model."""
    from ttsd.engine.registry import build_registry
    from ttsd.voices import list_voices

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
    from ttsd.daemon import daemon_running
    from ttsd.doctor import diagnose

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


# -- cache --------------------------------------------------------------------------------------


@main.group()
def cache() -> None:
    """The persistent audio cache."""


def _audio_cache(ctx: Context) -> AudioCache:
    from ttsd.cache import AudioCache

    settings = ctx.settings
    return AudioCache(settings.cache_dir, ctx.store, settings.cache_size, settings.cache_max_bytes)


def _cache_view(stats: CacheStats, settings: Settings) -> dict[str, Any]:
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


@cache.command("stats")
@json_option
@pass_context
def cache_stats(ctx: Context) -> None:
    """Entries, size, hits, misses and hit rate."""
    view = _cache_view(_audio_cache(ctx).stats(), ctx.settings)

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


main.add_command(launchd_group)
