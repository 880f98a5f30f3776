"""Install, remove and inspect the LaunchAgent that keeps the daemon running (macOS).

The plist itself is rendered by ttsd.ops.plist.

Every `launchctl` call goes through an injectable `CommandRunner`, so the tests see exactly what an
install would run without a Mac. The library functions that change the system refuse to run off macOS; the
CLI's `--dry-run` shows the plan anywhere.
"""

from __future__ import annotations

import math
import os
import plistlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.parsers.expat import ExpatError

from ttsd.config import Settings
from ttsd.database_url import has_password
from ttsd.errors import LaunchdError, LaunchdUnsupported
from ttsd.ops.plist import EXIT_TIMEOUT_MARGIN_S, LABEL, SECRETS, exit_timeout, log_dir, render_plist, write_plist
from ttsd.privacy import protected_folder_note, protected_place

LAUNCHCTL = "/bin/launchctl"
COMMAND_TIMEOUT_S = 30.0
POLL_S = 0.5
# After a bootout, launchd keeps the label for a few seconds and `bootstrap` fails with EIO (5) in the
# meantime (a known launchd race); the install retries that long instead of failing.
BOOTSTRAP_EIO = 5
BOOTSTRAP_RETRY_S = 15.0
STATUS_FIELDS = re.compile(r"^\s*(state|pid|last exit code) = (.+?)\s*$", re.MULTILINE)


class CommandRunner(Protocol):
    """Runs one command and returns (returncode, stdout, stderr)."""

    def __call__(self, argv: list[str]) -> tuple[int, str, str]: ...


def run_command(argv: list[str]) -> tuple[int, str, str]:
    """The default `CommandRunner`: the command itself (no shell), bounded in time."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LaunchdError(f"`{' '.join(argv)}` did not finish within {COMMAND_TIMEOUT_S:g}s") from exc
    except OSError as exc:
        raise LaunchdError(f"cannot run {argv[0]}: {exc}") from exc
    return done.returncode, done.stdout, done.stderr


@dataclass(frozen=True)
class Agent:
    """Where one user's LaunchAgent lives and how launchctl names it."""

    home: Path
    uid: int
    label: str = LABEL

    @property
    def plist_path(self) -> Path:
        """`~/Library/LaunchAgents/<label>.plist`: the folder launchd reads at login."""
        return self.home / "Library" / "LaunchAgents" / f"{self.label}.plist"

    @property
    def log_dir(self) -> Path:
        """The agent's log folder."""
        return log_dir(self.home)

    @property
    def domain(self) -> str:
        """The per-user GUI domain: agents there may use the GPU."""
        return f"gui/{self.uid}"

    @property
    def service(self) -> str:
        """The service target launchctl takes for this agent."""
        return f"{self.domain}/{self.label}"

    def print_argv(self) -> list[str]:
        """`launchctl print`: succeeds only while the agent is loaded."""
        return [LAUNCHCTL, "print", self.service]

    def bootout_argv(self) -> list[str]:
        """`launchctl bootout`: stop the agent (SIGTERM, then SIGKILL after ExitTimeOut) and unload it."""
        return [LAUNCHCTL, "bootout", self.service]

    def enable_argv(self) -> list[str]:
        """`launchctl enable`: clear a `launchctl disable` left over, which would make bootstrap fail."""
        return [LAUNCHCTL, "enable", self.service]

    def bootstrap_argv(self) -> list[str]:
        """`launchctl bootstrap`: load the plist; RunAtLoad starts the daemon."""
        return [LAUNCHCTL, "bootstrap", self.domain, str(self.plist_path)]


@dataclass(frozen=True)
class InstallPlan:
    """Everything an install writes and runs, computed without touching the system."""

    agent: Agent
    plist: bytes
    exit_timeout_s: int
    folders: tuple[Path, ...]
    notes: tuple[str, ...] = ()

    @property
    def commands(self) -> list[list[str]]:
        """What `install` runs, in order (the bootout only when the agent is already loaded)."""
        return [self.agent.bootout_argv(), self.agent.enable_argv(), self.agent.bootstrap_argv()]

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data: paths, the plist text and the commands."""
        return {
            "label": self.agent.label,
            "service": self.agent.service,
            "plist_path": str(self.agent.plist_path),
            "plist": self.plist.decode("utf-8"),
            "log_dir": str(self.agent.log_dir),
            "folders": [str(folder) for folder in self.folders],
            "commands": self.commands,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class UninstallPlan:
    """What an uninstall stops and removes."""

    agent: Agent
    exit_timeout_s: int

    @property
    def commands(self) -> list[list[str]]:
        """What `uninstall` runs (only when the agent is loaded)."""
        return [self.agent.bootout_argv()]

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return {
            "label": self.agent.label,
            "service": self.agent.service,
            "plist_path": str(self.agent.plist_path),
            "commands": self.commands,
        }


@dataclass(frozen=True)
class AgentStatus:
    """Whether the plist is installed and the agent loaded, with launchd's own account of it."""

    agent: Agent
    installed: bool
    loaded: bool
    detail: str
    fields: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data; `fields` holds launchd's state, pid and last exit code when loaded."""
        return {
            "label": self.agent.label,
            "service": self.agent.service,
            "plist_path": str(self.agent.plist_path),
            "installed": self.installed,
            "loaded": self.loaded,
            "fields": self.fields,
            "detail": self.detail,
        }


def plan_install(
    settings: Settings,
    python: Path,
    home: Path,
    uid: int,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> InstallPlan:
    """The plist and commands an install would use, with notes on what may stop the agent; changes
    nothing."""
    environ = os.environ if environ is None else environ
    agent = Agent(home=home, uid=uid)
    notes = protected_folder_notes(settings, python, home)
    if any(environ.get(name) for name in SECRETS):
        notes.append(
            "HF_TOKEN is set here but not copied into the plist (world readable); run `hf auth login` "
            "once so the daemon finds the token under HF_HOME"
        )
    if settings.database_url and has_password(settings.database_url):
        notes.append(
            "the database password is not copied into the plist (world readable): put it in ~/.pgpass "
            "(mode 0600, a line `host:port:database:user:password`), where the daemon's driver finds it"
        )
    return InstallPlan(
        agent=agent,
        plist=render_plist(settings, python, home, environ, config_file),
        exit_timeout_s=exit_timeout(settings),
        folders=(agent.plist_path.parent, agent.log_dir, settings.state_dir),
        notes=tuple(notes),
    )


def protected_folder_notes(settings: Settings, python: Path, home: Path) -> list[str]:
    """A warning for each of the daemon's folders that lies where macOS's privacy protection keeps a
    LaunchAgent out (judged where symlinks lead: that is the folder macOS guards)."""
    folders = (("inbox", settings.inbox), ("outbox", settings.outbox), ("state directory", settings.state_dir))
    notes = []
    for what, folder in folders:
        place = protected_place(folder.resolve(), home.resolve())
        if place is not None:
            notes.append(protected_folder_note(what, folder, place, python))
    return notes


def plan_uninstall(settings: Settings, home: Path, uid: int) -> UninstallPlan:
    """What an uninstall would stop and remove; changes nothing."""
    return UninstallPlan(agent=Agent(home=home, uid=uid), exit_timeout_s=exit_timeout(settings))


def require_macos() -> None:
    """Refuse, with the way forward, where there is no launchd."""
    if sys.platform != "darwin":
        raise LaunchdUnsupported()


def is_loaded(agent: Agent, runner: CommandRunner) -> bool:
    """Whether launchd knows the agent now."""
    returncode, _out, _err = runner(agent.print_argv())
    return returncode == 0


def _stop_timeout(agent: Agent, fallback_s: int) -> int:
    """How long a bootout may take: the loaded agent's own ExitTimeOut (from the plist installed now,
    which may predate changed settings) plus a margin."""
    try:
        installed = plistlib.loads(agent.plist_path.read_bytes()).get("ExitTimeOut")
    except (OSError, ValueError, ExpatError):
        installed = None
    timeout = max(installed, fallback_s) if isinstance(installed, int) else fallback_s
    return timeout + EXIT_TIMEOUT_MARGIN_S


def _stop(agent: Agent, runner: CommandRunner, timeout_s: int, sleep: Callable[[float], None]) -> bool:
    """Boot the agent out if it is loaded and wait until launchd lets go of it. True if it was loaded."""
    if not is_loaded(agent, runner):
        return False
    # The outcome is judged by polling `print` below: bootout also fails when the agent went away
    # on its own in between, which is fine.
    runner(agent.bootout_argv())
    for _ in range(math.ceil(timeout_s / POLL_S)):
        if not is_loaded(agent, runner):
            return True
        sleep(POLL_S)
    raise LaunchdError(f"{agent.service} is still loaded {timeout_s}s after `launchctl bootout`")


def install(
    plan: InstallPlan, runner: CommandRunner = run_command, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Write the plist and (re)load the agent. A loaded agent is booted out first (its daemon gets its
    whole ExitTimeOut to finish), so installing again applies changed settings."""
    require_macos()
    timeout_s = _stop_timeout(plan.agent, plan.exit_timeout_s)
    for folder in plan.folders:
        # Private: the logs may quote job text, and the daemon creates its state folder this way too.
        # Folders that exist already keep their mode.
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_plist(plan.agent.plist_path, plan.plist)
    _stop(plan.agent, runner, timeout_s, sleep)
    returncode, _out, err = runner(plan.agent.enable_argv())
    if returncode != 0:
        raise LaunchdError(f"`launchctl enable {plan.agent.service}` failed: {err.strip()}")
    for _ in range(math.ceil(BOOTSTRAP_RETRY_S / POLL_S)):
        returncode, _out, err = runner(plan.agent.bootstrap_argv())
        if returncode != BOOTSTRAP_EIO:
            break
        sleep(POLL_S)
    if returncode != 0:
        raise LaunchdError(
            f"`launchctl bootstrap {plan.agent.domain} {plan.agent.plist_path}` failed ({returncode}): "
            f"{err.strip()}; launchd says why in `log show --last 5m --predicate 'process == \"launchd\"'`"
        )


def uninstall(
    plan: UninstallPlan, runner: CommandRunner = run_command, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Stop and unload the agent, then remove its plist. True if there was anything to remove."""
    require_macos()
    timeout_s = _stop_timeout(plan.agent, plan.exit_timeout_s)
    was_loaded = _stop(plan.agent, runner, timeout_s, sleep)
    was_installed = plan.agent.plist_path.exists()
    plan.agent.plist_path.unlink(missing_ok=True)
    return was_loaded or was_installed


def status(agent: Agent, runner: CommandRunner = run_command) -> AgentStatus:
    """Whether the plist is installed and the agent loaded, with `launchctl print`'s account."""
    installed = agent.plist_path.is_file()
    if sys.platform != "darwin":
        return AgentStatus(agent, installed, loaded=False, detail=LaunchdUnsupported().message)
    returncode, out, _err = runner(agent.print_argv())
    if returncode != 0:
        return AgentStatus(agent, installed, loaded=False, detail="not loaded")
    fields = {key.replace(" ", "_"): value for key, value in STATUS_FIELDS.findall(out)}
    return AgentStatus(agent, installed, loaded=True, detail=out, fields=fields)
