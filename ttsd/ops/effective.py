"""The running daemon's effective settings, for `ttsd doctor`.

The CLI's settings come from its own environment; a daemon's may differ (a LaunchAgent's come from
its plist, not the shell's). `ttsd run` records the daemon's settings, each value with its source, in
the state directory once the daemon holds its lock; doctor shows them while that daemon runs (the
record names the daemon's pid, which must be the lock holder's, so a stale record is never shown),
marking each value this command would set otherwise.

Nothing secret is recorded: settings hold no secret (HF_TOKEN is huggingface_hub's, never a
setting), a setting named like one would be left out all the same, and a database URL is recorded
with its password hidden. The file is private (0600).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ttsd.config import LoadedSettings, Settings
from ttsd.database_url import masked
from ttsd.fsutil import atomic_write
from ttsd.ops.lock import running_daemon_pid

log = logging.getLogger(__name__)

RECORD_NAME = "effective-settings.json"
_SECRET_NAME = re.compile(r"token|secret|passw|credential|api_?key", re.IGNORECASE)

# setting name -> {"value": text, "source": "default" | "env" | "flag" | "file <path>"}
SettingsView = dict[str, dict[str, str]]


def is_secret(name: str) -> bool:
    """Whether a setting's name says it holds a secret: such a setting is never recorded or shown."""
    return bool(_SECRET_NAME.search(name))


def settings_view(loaded: LoadedSettings) -> SettingsView:
    """Each setting's value as text and where it came from, secrets left out."""
    settings = loaded.settings
    return {
        name: {"value": _shown(name, getattr(settings, name)), "source": loaded.sources.get(name, "default")}
        for name in type(settings).model_fields
        if not is_secret(name)
    }


def _shown(name: str, value: object) -> str:
    if name == "database_url" and value:
        return masked(str(value))
    return str(value)


def record_effective_settings(loaded: LoadedSettings) -> None:
    """Record this daemon's settings in its state directory (once it holds the state lock). A
    failure is logged, never fatal: doctor then shows the CLI's settings and says why."""
    document = {
        "pid": os.getpid(),
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "executable": sys.executable,
        "config_file": str(loaded.config_file) if loaded.config_file else None,
        "settings": settings_view(loaded),
    }
    path = loaded.settings.state_dir / RECORD_NAME
    try:
        atomic_write(path, json.dumps(document, indent=1).encode("utf-8"), mode=0o600)
    except OSError as exc:
        log.warning("could not record the effective settings in %s: %s", path, exc.strerror or exc)


@dataclass(frozen=True)
class DaemonSettings:
    """What the running daemon recorded: its pid, interpreter, config file and settings."""

    pid: int
    executable: str
    config_file: str | None
    settings: SettingsView


def running_daemon_settings(settings: Settings) -> DaemonSettings | None:
    """The settings the daemon serving `settings.state_dir` recorded; None when no daemon runs, or
    its record is missing, unreadable or another (earlier) process's."""
    pid = running_daemon_pid(settings)
    if pid is None:
        return None
    try:
        document = json.loads((settings.state_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("pid") != pid or not isinstance(document.get("settings"), dict):
        return None
    view = {
        str(name): {"value": str(item.get("value")), "source": str(item.get("source"))}
        for name, item in document["settings"].items()
        if isinstance(item, dict) and not is_secret(str(name))
    }
    config_file = document.get("config_file")
    executable = str(document.get("executable") or "")
    return DaemonSettings(pid, executable, str(config_file) if config_file else None, view)


def compare(daemon: SettingsView, here: SettingsView) -> dict[str, dict[str, Any]]:
    """The daemon's settings, each with `differs`: whether this command would use another value
    (then `here` holds this command's value and source, or None when it has no such setting)."""
    compared: dict[str, dict[str, Any]] = {}
    for name, item in daemon.items():
        mine = here.get(name)
        differs = mine is None or mine["value"] != item["value"]
        compared[name] = {**item, "differs": differs, **({"here": mine} if differs else {})}
    return compared
