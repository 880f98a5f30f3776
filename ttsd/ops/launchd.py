"""Install, remove and inspect the LaunchAgent that keeps the daemon running (macOS).

Single source of truth: `launchd/com.ttsd.daemon.plist.template` in the checkout holds every fixed
key of the plist, with comments saying why each is set. This module only fills its `${NAME}`
placeholders (XML-escaped) from the effective settings, parses the result with `plistlib` (so a
broken template or value fails here, not in launchd), adds the pass-through environment (the
installer's other settings variables, `HF_HOME`, `HF_HUB_OFFLINE`; never `HF_TOKEN`, since the plist
is world readable) and writes it back out with `plistlib`. ttsd is installed editable from its checkout
(scripts/install.sh), and the agent runs that checkout's venv, so the template is always at hand.

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
from string import Template
from typing import Any, Protocol
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

from ttsd.config import CONFIG_FILE_NAME, ENV_PREFIX, Settings
from ttsd.errors import TtsdError
from ttsd.fsutil import atomic_write

LABEL = "com.ttsd.daemon"
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "launchd" / f"{LABEL}.plist.template"
LAUNCHCTL = "/bin/launchctl"
# Readable by launchd, writable by the user alone: launchd refuses a group or world writable plist.
PLIST_MODE = 0o644
EXIT_TIMEOUT_MARGIN_S = 10
COMMAND_TIMEOUT_S = 30.0
POLL_S = 0.5
# After a bootout, launchd keeps the label for a few seconds and `bootstrap` fails with EIO (5) in the
# meantime (a known launchd race); the install retries that long instead of failing.
BOOTSTRAP_EIO = 5
BOOTSTRAP_RETRY_S = 15.0
# The installer's variables the daemon reads: its settings (not every TTS_* name: TTS_FAULT, the crash
# tests' fault injection, must never reach a LaunchAgent) and the Hugging Face cache and offline mode.
PASS_THROUGH = frozenset([ENV_PREFIX + name.upper() for name in Settings.model_fields] + ["HF_HOME", "HF_HUB_OFFLINE"])
# Never in PASS_THROUGH, since the plist is world readable; an install that sees one set says where it
# belongs instead.
SECRETS = ("HF_TOKEN",)
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
STATUS_FIELDS = re.compile(r"^\s*(state|pid|last exit code) = (.+?)\s*$", re.MULTILINE)


class LaunchdError(TtsdError):
    """A launchctl step failed, or the plist could not be built or written."""

    code = "launchd"


class LaunchdUnsupported(LaunchdError):
    """The system-changing steps were asked for on a system without launchd."""

    code = "launchd_unsupported"

    def __init__(self) -> None:
        super().__init__(
            f"launchd is macOS-only (this is {sys.platform}): nothing was changed. Use --dry-run to see "
            "the plist and commands an install would use. On Linux, run `ttsd run` under a supervisor, "
            "such as a systemd user unit (Restart=always, KillSignal=SIGTERM)."
        )


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


def log_dir(home: Path) -> Path:
    """`~/Library/Logs/ttsd`: where Console.app looks for a user's logs."""
    return home / "Library" / "Logs" / "ttsd"


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


def exit_timeout(settings: Settings) -> int:
    """ExitTimeOut: the daemon's shutdown grace plus a margin, in whole seconds as launchd wants."""
    return math.ceil(settings.shutdown_grace_s) + EXIT_TIMEOUT_MARGIN_S


def _pinned_config(settings: Settings, config_file: Path | None) -> Path | None:
    """The config file to pin with TTS_CONFIG: only one the daemon would not find on its own."""
    if config_file is None:
        return None
    config_file = config_file.expanduser().absolute()
    return None if config_file == settings.state_dir / CONFIG_FILE_NAME else config_file


def passed_environment(
    settings: Settings, environ: Mapping[str, str], config_file: Path | None = None
) -> dict[str, str]:
    """The installer's variables the agent should see besides the pinned ones, by name.

    The `TTS_*` settings variables shaped the effective settings, so they pass through, with the
    Hugging Face cache location and offline mode. A config file the daemon would not find on its own
    (`--config`, `TTS_CONFIG`, perhaps relative) is pinned by absolute path, since the agent runs in
    another folder. Secrets never pass.
    """
    passed = {name: value for name, value in environ.items() if name in PASS_THROUGH and value}
    pinned = _pinned_config(settings, config_file)
    if pinned is not None:
        passed["TTS_CONFIG"] = str(pinned)
    return passed


def _template_text() -> str:
    try:
        return TEMPLATE_PATH.read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchdError(
            f"cannot read the plist template {TEMPLATE_PATH} ({exc.strerror}): ttsd launchd needs the "
            "checkout it was installed from (scripts/install.sh installs it editable)"
        ) from exc


def render_plist(
    settings: Settings,
    python: Path,
    home: Path,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> bytes:
    """The LaunchAgent plist for `settings`, running `python -m ttsd run`.

    `python` must be the venv's interpreter by absolute path, not resolved: a venv's python is a link
    to the base interpreter, and following it would lose the venv's packages. `environ` (default
    `os.environ`) supplies the pass-through variables; `config_file` is the one the settings came from.
    """
    if not python.is_absolute():
        raise LaunchdError(f"the daemon's python must be an absolute path, got {python}")
    environ = os.environ if environ is None else environ
    logs = log_dir(home)
    values = {
        "LABEL": LABEL,
        "PYTHON": str(python),
        "EXIT_TIMEOUT": str(exit_timeout(settings)),
        "WORKING_DIRECTORY": str(settings.state_dir),
        "STDOUT_PATH": str(logs / "ttsd.out.log"),
        "STDERR_PATH": str(logs / "ttsd.err.log"),
        "INBOX": str(settings.inbox),
        "OUTBOX": str(settings.outbox),
        "STATE_DIR": str(settings.state_dir),
        "DEFAULT_MODEL": settings.default_model,
        "PATH": os.pathsep.join([str(python.parent), *SYSTEM_PATH]),
    }
    try:
        text = Template(_template_text()).substitute({key: escape(value) for key, value in values.items()})
        document = plistlib.loads(text.encode("utf-8"))
    except (KeyError, ValueError, ExpatError) as exc:
        raise LaunchdError(f"the plist template {TEMPLATE_PATH} is broken: {exc!r}") from exc
    pinned = document["EnvironmentVariables"]
    # A pinned value wins over a pass-through variable of the same name: it is the effective one.
    for name, value in passed_environment(settings, environ, config_file).items():
        pinned.setdefault(name, value)
    return plistlib.dumps(document, sort_keys=False)


def plan_install(
    settings: Settings,
    python: Path,
    home: Path,
    uid: int,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> InstallPlan:
    """The plist and commands an install would use; changes nothing."""
    environ = os.environ if environ is None else environ
    agent = Agent(home=home, uid=uid)
    notes = []
    if any(environ.get(name) for name in SECRETS):
        notes.append(
            "HF_TOKEN is set here but not copied into the plist (world readable); run `hf auth login` "
            "once so the daemon finds the token under HF_HOME"
        )
    return InstallPlan(
        agent=agent,
        plist=render_plist(settings, python, home, environ, config_file),
        exit_timeout_s=exit_timeout(settings),
        folders=(agent.plist_path.parent, agent.log_dir, settings.state_dir),
        notes=tuple(notes),
    )


def plan_uninstall(settings: Settings, home: Path, uid: int) -> UninstallPlan:
    """What an uninstall would stop and remove; changes nothing."""
    return UninstallPlan(agent=Agent(home=home, uid=uid), exit_timeout_s=exit_timeout(settings))


def require_macos() -> None:
    """Refuse, with the way forward, where there is no launchd."""
    if sys.platform != "darwin":
        raise LaunchdUnsupported()


def write_plist(path: Path, data: bytes) -> None:
    """Write the plist atomically, mode 0644 whatever the umask, replacing any earlier one."""
    atomic_write(path, data, mode=PLIST_MODE)


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
