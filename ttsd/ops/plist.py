"""The LaunchAgent's plist. Single source of truth: `launchd/com.ttsd.daemon.plist.template` in the
checkout holds every fixed key, with comments saying why each is set. This module only fills its
`${NAME}` placeholders (XML-escaped) from the effective settings, parses the result with `plistlib`
(so a broken template or value fails here, not in launchd), adds the pass-through environment (the
installer's other settings variables, `HF_HOME`, `HF_HUB_OFFLINE`; never `HF_TOKEN`, since the plist
is world readable) and writes it back out with `plistlib`. ttsd is installed editable from its
checkout (scripts/install.sh), and the agent runs that checkout's venv, so the template is at hand.
"""

from __future__ import annotations

import math
import os
import plistlib
from collections.abc import Mapping
from pathlib import Path
from string import Template
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

from ttsd.config import CONFIG_FILE_NAME, ENV_PREFIX, Settings
from ttsd.database_url import without_password
from ttsd.errors import LaunchdError
from ttsd.fsutil import atomic_write

LABEL = "com.ttsd.daemon"
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "launchd" / f"{LABEL}.plist.template"
# Readable by launchd, writable by the user alone: launchd refuses a group or world writable plist.
PLIST_MODE = 0o644
EXIT_TIMEOUT_MARGIN_S = 10
# The installer's variables the daemon reads: its settings (not every TTS_* name: TTS_FAULT, the crash
# tests' fault injection, must never reach a LaunchAgent) and the Hugging Face cache and offline mode.
PASS_THROUGH = frozenset([ENV_PREFIX + name.upper() for name in Settings.model_fields] + ["HF_HOME", "HF_HUB_OFFLINE"])
# Never in PASS_THROUGH, since the plist is world readable; an install that sees one set says where it
# belongs instead.
SECRETS = ("HF_TOKEN",)
DATABASE_URL = ENV_PREFIX + "DATABASE_URL"
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


def log_dir(home: Path) -> Path:
    """`~/Library/Logs/ttsd`: where Console.app looks for a user's logs."""
    return home / "Library" / "Logs" / "ttsd"


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
    another folder. Secrets never pass: a database URL passes without its password (the daemon finds
    it in `~/.pgpass`, as every libpq program does).
    """
    passed = {name: value for name, value in environ.items() if name in PASS_THROUGH and value}
    if DATABASE_URL in passed:
        passed[DATABASE_URL] = without_password(passed[DATABASE_URL])
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


def write_plist(path: Path, data: bytes) -> None:
    """Write the plist atomically, mode 0644 whatever the umask, replacing any earlier one."""
    atomic_write(path, data, mode=PLIST_MODE)
