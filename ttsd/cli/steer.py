"""`ttsd retry` and `ttsd cancel`: steer the queue, also while the daemon runs."""

from __future__ import annotations

import click

from ttsd.cli.app import EXIT_USAGE, Context, fail, json_option, main, pass_context
from ttsd.cli.views import job_row
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import publish
from ttsd.jobqueue.tables import Job


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
    ctx.emit([job_row(j) for j in retried], lambda: click.echo(f"queued again: {len(retried)} job(s)"))


@main.command()
@click.argument("job")
@json_option
@pass_context
def cancel(ctx: Context, job: str) -> None:
    """Cancel a queued job, or discard a running job's result."""
    cancelled = ctx.store.cancel(job)
    _republish(ctx, [cancelled])
    ctx.emit(job_row(cancelled), lambda: click.echo(f"cancelled {cancelled.id} ({cancelled.name})"))


def _republish(ctx: Context, changed: list[Job]) -> None:
    folders = ctx.daemon_folders()
    ctx.note_idle_daemon(folders)
    writer = Outbox(folders.outbox)
    for job in changed:
        try:
            publish(ctx.store, writer, job.id)
        except OSError as exc:  # the queue has the change; the status file follows when it can
            click.echo(f"ttsd: the status file of {job.name} is not updated yet: {exc.strerror or exc}", err=True)
