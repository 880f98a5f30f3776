"""`ttsd launchd install|uninstall|status`: the LaunchAgent from the command line (core in
ttsd.ops.launchd). The commands take the settings the `ttsd` group loaded, so `--config`,
`--state-dir`, `--inbox` and `--outbox` shape the plist."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from ttsd.cli.app import Context, json_option, main, pass_context
from ttsd.ops import launchd

dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")


def _echo_commands(commands: list[list[str]], heading: str) -> None:
    click.echo(heading)
    for argv in commands:
        click.echo(f"  {shlex.join(argv)}")


@main.group("launchd")
def launchd_group() -> None:
    """Keep the daemon running as a LaunchAgent: started at login, restarted when it exits (macOS)."""


@launchd_group.command("install")
@dry_run_option
@json_option
@pass_context
def install_command(ctx: Context, dry_run: bool) -> None:
    """Write the agent's plist and load it; run again after changing settings to apply them."""
    loaded = ctx.loaded
    settings = loaded.settings
    # The interpreter running this command is the venv's: the agent runs the daemon with the same one.
    python = Path(sys.executable).absolute()
    plan = launchd.plan_install(settings, python, Path.home(), os.getuid(), config_file=loaded.config_file)
    if not dry_run:
        # Said before anything changes (on stderr, so --json stays one document): a folder the agent
        # may not use is better chosen again now than found when no job is ever taken.
        for note in plan.notes:
            click.echo(f"note     {note}", err=True)
        launchd.install(plan)
    data = {"dry_run": dry_run, "python": str(python), **plan.as_dict()}

    def human() -> None:
        if dry_run:
            click.echo(f"would write {plan.agent.plist_path}:")
            click.echo(plan.plist.decode("utf-8"))
            _echo_commands(plan.commands, "would run (the bootout only if the agent is loaded):")
        else:
            click.echo(f"installed {plan.agent.plist_path}, loaded {plan.agent.service}")
        click.echo(f"folders  {settings.inbox} -> {settings.outbox}")
        click.echo(f"logs     {plan.agent.log_dir}")
        if dry_run:
            for note in plan.notes:
                click.echo(f"note     {note}")

    ctx.emit(data, human)


@launchd_group.command("uninstall")
@dry_run_option
@json_option
@pass_context
def uninstall_command(ctx: Context, dry_run: bool) -> None:
    """Stop and unload the agent and remove its plist (the queue, cache and logs stay)."""
    plan = launchd.plan_uninstall(ctx.settings, Path.home(), os.getuid())
    removed = None if dry_run else launchd.uninstall(plan)
    data = {"dry_run": dry_run, "removed": removed, **plan.as_dict()}

    def human() -> None:
        if dry_run:
            _echo_commands(plan.commands, "would run (only if the agent is loaded):")
            click.echo(f"would remove {plan.agent.plist_path}")
        elif removed:
            click.echo(f"unloaded {plan.agent.service}, removed {plan.agent.plist_path}")
        else:
            click.echo(f"nothing to remove: {plan.agent.service} was not installed")

    ctx.emit(data, human)


@launchd_group.command("status")
@json_option
@pass_context
def status_command(ctx: Context) -> None:
    """Is the agent's plist installed, is it loaded, and what launchd says about it."""
    agent = launchd.Agent(home=Path.home(), uid=os.getuid())
    found = launchd.status(agent)

    def human() -> None:
        click.echo(f"plist    {agent.plist_path} ({'installed' if found.installed else 'not installed'})")
        if found.loaded:
            facts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in found.fields.items())
            click.echo(f"agent    {agent.service} loaded{': ' + facts if facts else ''}")
        else:
            click.echo(f"agent    {found.detail}")
        click.echo(f"logs     {agent.log_dir}")

    ctx.emit(found.as_dict(), human)
