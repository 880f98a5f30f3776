"""`ttsd run` and `ttsd logs`: the daemon in the foreground, and what it logged."""

from __future__ import annotations

import contextlib
import sys
from functools import partial

import click

from ttsd.cli.app import EXIT_NOT_FOUND, Context, fail, json_option, main, pass_context
from ttsd.fsutil import make_folder, probe_folder


@main.command()
@click.option("--http", "http_address", metavar="HOST:PORT", help="Also serve the HTTP API here (TTS_HTTP).")
@pass_context
def run(ctx: Context, http_address: str | None) -> None:
    """Run the daemon in the foreground (what the LaunchAgent starts)."""
    from ttsd.config import with_override
    from ttsd.daemon import run_daemon
    from ttsd.ops.effective import record_effective_settings
    from ttsd.ops.logs import log_file_path, setup_logging

    if http_address is not None:
        ctx.loaded = with_override(ctx.loaded, "http", http_address)
    settings = ctx.settings
    # Each folder is made, then tried the way the daemon will use it (listed, a file created and
    # removed), before anything else: the state directory holds the log, and a folder that cannot be
    # used (on macOS, one its privacy protection keeps from this python) is one line naming it now,
    # not a traceback, nor jobs that are never taken.
    for path, what, mode in (
        (settings.state_dir, "state directory", 0o700),
        (settings.inbox, "inbox", 0o755),
        (settings.outbox, "outbox", 0o755),
    ):
        make_folder(path, what, mode=mode)
        probe_folder(path, what)
    setup_logging(settings, log_file_path(settings))
    sys.exit(run_daemon(settings, on_start=partial(record_effective_settings, ctx.loaded)))


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
