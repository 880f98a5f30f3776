"""`ttsd jobs`, `ttsd show` and `ttsd wait`: the queue's jobs, one job in full, waiting for jobs."""

from __future__ import annotations

import json
import sys
import time

import click

from ttsd.cli.app import EXIT_FAILED, EXIT_INTERRUPTED, Context, fail, json_option, main, pass_context
from ttsd.cli.views import job_row, parse_since, progress_line, styled_state
from ttsd.delivery.status import status_document
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job

WAIT_POLL_S = 0.1


@main.command()
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--model", help="Only jobs of this model.")
@click.option("--since", help="Only jobs created since: 30m, 2h, 1d, or an ISO date/time.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_context
def jobs(ctx: Context, state: str | None, model: str | None, since: str | None, limit: int) -> None:
    """List jobs, newest first."""
    after = parse_since(since) if since else None
    rows = [job_row(job) for job in ctx.store.jobs(state=state, model=model, since=after, limit=limit)]

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
    try:
        found = _wait_until_finished(ctx, ids, deadline, timeout)
    except KeyboardInterrupt:
        fail("stopped waiting; the jobs go on (ttsd status shows them)", EXIT_INTERRUPTED)
    rows = [job_row(job) for job in found]

    def human() -> None:
        for row in rows:
            click.echo(f"{row['id']}  {styled_state(row['state'])} {row['name']}")

    ctx.emit(rows, human)
    if any(job.state != JobState.DONE for job in found):
        sys.exit(EXIT_FAILED)


def _wait_until_finished(ctx: Context, ids: list[str], deadline: float | None, timeout: float | None) -> list[Job]:
    while True:
        found = [ctx.store.get(job_id) for job_id in ids]
        if all(job.state.terminal for job in found):
            return found
        if deadline is not None and time.monotonic() > deadline:
            pending = ", ".join(f"{job.name} ({job.state})" for job in found if not job.state.terminal)
            fail(f"gave up after {timeout:g}s; still unfinished: {pending}")
        time.sleep(WAIT_POLL_S)


@main.command()
@click.argument("job")
@json_option
@pass_context
def show(ctx: Context, job: str) -> None:
    """Everything about one job (by id, id prefix or output name)."""
    found = ctx.store.get(job)
    document = status_document(found, ctx.store.chunks)
    spec = json.loads(found.spec_json)  # "{}" for a rejected file: it never became a job
    document["text"] = spec.get("text", "")
    document["format"] = spec.get("format")
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
