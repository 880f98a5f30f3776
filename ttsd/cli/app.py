"""The `ttsd` group and what every subcommand shares: the context (settings, the queue, how to
print), `--json`, and the one place where typed errors become messages and exit codes.

Exit codes: 0 ok, 1 failed (a job failed, the daemon could not start), 2 usage, 3 not found, 130
interrupted (Ctrl-C while waiting: the jobs go on).
Subcommand modules register themselves on `main`; this module never imports them (ttsd.cli's
`__init__` assembles the command).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from ttsd import __version__
from ttsd.client import DaemonFolders, daemon_folders
from ttsd.config import LoadedSettings, Settings, load_settings
from ttsd.errors import ConfigError, JobNotFound, JobRejected, TtsdError
from ttsd.jobqueue.protocols import PeopleQueue
from ttsd.jobqueue.store import Store
from ttsd.ops.identity import recorded_host_id

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
CLI_RECONNECT_S = 10.0
"""How long a command waits for an unreachable shared database before it says so (a daemon waits longer)."""


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
    def store(self) -> PeopleQueue:
        """The queue database (created if this is the first use)."""
        if self._store is None:
            self._store = Store(self.settings.queue_target, reconnect_for_s=CLI_RECONNECT_S)
        return self._store

    def daemon_folders(self) -> DaemonFolders:
        """The folders of the daemon that owns this state directory (see ttsd.client)."""
        # On a shared queue the newest daemon may be another host's: this state directory's own.
        mine = (recorded_host_id(self.settings.state_dir) or "") if self.settings.shared_queue else None
        return daemon_folders(self.loaded, self.store.latest_daemon(mine))

    def note_idle_daemon(self, folders: DaemonFolders) -> None:
        """Say on stderr, once, that no daemon serves these folders right now."""
        if folders.running:
            return
        state = self.settings.state_dir
        click.echo(
            f"ttsd: no daemon is running on {state}; the job will run when one starts (`ttsd run`). "
            f"Folders: {folders.inbox} -> {folders.outbox} (from {folders.source}).",
            err=True,
        )

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
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (also a flag of each command).")
@click.pass_context
def main(
    click_ctx: click.Context,
    config: Path | None,
    state_dir: Path | None,
    inbox: Path | None,
    outbox: Path | None,
    as_json: bool,
) -> None:
    """ttsd: drop job files in an inbox, get speech in an outbox."""
    loaded = load_settings(overrides={"state_dir": state_dir, "inbox": inbox, "outbox": outbox}, config_file=config)
    click_ctx.obj = Context(loaded=loaded, as_json=as_json)
    click_ctx.call_on_close(lambda: click_ctx.obj._store and click_ctx.obj._store.close())
