"""`ttsd run`, `ttsd worker` and `ttsd logs`: a daemon in the foreground, and what it logged."""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from ttsd.cli.app import EXIT_NOT_FOUND, Context, fail, json_option, main, pass_context
from ttsd.fsutil import make_folder, probe_folder

if TYPE_CHECKING:
    from ttsd.daemon import Role


def _serve(ctx: Context, role: Role) -> NoReturn:
    """Make and probe the folders `role` uses, log, record the effective settings, and run the daemon."""
    from ttsd.daemon import run_daemon
    from ttsd.ops.effective import record_effective_settings
    from ttsd.ops.logs import log_file_path, setup_logging

    settings = ctx.settings
    folders: list[tuple[Path, str, int]] = [(settings.state_dir, "state directory", 0o700)]
    if role == "run":  # a worker takes no job files: the inbox is for the hosts that run intake
        folders.append((settings.inbox, "inbox", 0o755))
    folders.append((settings.outbox, "outbox", 0o755))
    # Each folder is made, then tried the way the daemon will use it (listed, a file created and
    # removed), before anything else: the state directory holds the log, and a folder that cannot be
    # used (on macOS, one its privacy protection keeps from this python) is one line naming it now,
    # not a traceback, nor jobs that are never taken.
    for path, what, mode in folders:
        make_folder(path, what, mode=mode)
        probe_folder(path, what)
    setup_logging(settings, log_file_path(settings))
    sys.exit(run_daemon(settings, on_start=partial(record_effective_settings, ctx.loaded), role=role))


@main.command()
@click.option("--http", "http_address", metavar="HOST:PORT", help="Also serve the HTTP API here (TTS_HTTP).")
@pass_context
def run(ctx: Context, http_address: str | None) -> None:
    """Run the daemon in the foreground (what the LaunchAgent starts)."""
    from ttsd.config import with_override

    if http_address is not None:
        ctx.loaded = with_override(ctx.loaded, "http", http_address)
    _serve(ctx, "run")


@main.command()
@pass_context
def worker(ctx: Context) -> None:
    """Run only workers (synthesis) for a shared queue (a host such as a GPU box, with
    TTS_DATABASE_URL set): no intake, no inbox, no HTTP."""
    if not ctx.settings.shared_queue:
        # Nothing but this host's own daemons could put jobs into its private SQLite queue, and a
        # worker-only host runs none that take jobs: it would wait forever, serving nobody.
        fail(
            "ttsd worker needs a shared queue: set TTS_DATABASE_URL to the PostgreSQL database the other "
            "hosts use (`ttsd run` serves this machine on its own)"
        )
    _serve(ctx, "worker")


@main.command()
@click.option("-n", "--lines", type=click.IntRange(min=0), default=40, show_default=True, help="Lines of history.")
@click.option("-f", "--follow", "keep_following", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@json_option
@pass_context
def logs(ctx: Context, lines: int, keep_following: bool) -> None:
    """The daemon's log: human lines on a terminal, the JSON lines themselves with --json or in a pipe."""
    from ttsd.ops.logs import follow, human_line, log_file_path

    path = log_file_path(ctx.settings)
    if not path.exists() and not keep_following:
        fail(f"no log yet at {path} (the daemon writes it once it runs)", EXIT_NOT_FOUND)
    readable = sys.stdout.isatty() and not ctx.as_json
    with contextlib.suppress(KeyboardInterrupt):
        for line in follow(path, lines, (lambda: False) if keep_following else (lambda: True)):
            click.echo(human_line(line) if readable else line)
