"""`ttsd doctor`: what this machine and these settings will do, and what blocks work."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ttsd.catalog import build_registry
from ttsd.config import LoadedSettings, Settings
from ttsd.database_url import masked
from ttsd.errors import FolderUnusable, TtsdError
from ttsd.fsutil import probe_folder
from ttsd.intake.access import recorded_inbox_problem
from ttsd.jobqueue.database import failure_reason
from ttsd.jobqueue.postgres import server_version
from ttsd.jobqueue.sqlite_file import inspect_database
from ttsd.jobqueue.store import Store
from ttsd.ops.effective import DaemonSettings, compare, settings_view
from ttsd.ops.lock import other_inbox_daemon
from ttsd.synth.engine.device import Hardware, plan_device, probe_hardware
from ttsd.synth.engine.weights import hf_offline, locate_checkpoint

MIN_FREE_BYTES = 2 * 1024**3
PACKAGES = (
    "torch",
    "qwen-tts",
    "transformers",
    "accelerate",
    "torchaudio",
    "soundfile",
    "watchdog",
    "sqlmodel",
)


@dataclass(frozen=True)
class Check:
    """One finding; a failed `blocking` check means jobs cannot be served."""

    name: str
    ok: bool
    detail: str
    blocking: bool = True


@dataclass
class Report:
    """Everything doctor found."""

    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        """Whether something stops the daemon from doing its work."""
        return any(not check.ok and check.blocking for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"ok": not self.blocked, "checks": [asdict(c) for c in self.checks], **self.facts}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _folder_check(name: str, what: str, path: Path) -> Check:
    # Each folder is listed, as the daemon will list it (read-only: doctor changes nothing): on macOS
    # a folder kept by the privacy protection fails only then, whatever its mode says.
    if not path.exists():
        # What `ttsd run` will do: create it below its nearest existing ancestor, which must be a
        # folder it may write in (a file there, or a read-only mount, stops it).
        ancestor = next((p for p in path.parents if p.exists()), None)
        if ancestor is None or not ancestor.is_dir():
            return Check(name, False, f"{path} cannot be created: {ancestor} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK) or _read_only(ancestor):
            return Check(name, False, f"{path} cannot be created: {ancestor} is not writable")
        try:
            probe_folder(ancestor, "folder", write=False)
        except FolderUnusable as exc:
            return Check(name, False, f"{path} cannot be created: {exc.message}")
        return Check(name, True, f"{path} (does not exist yet; can be created)")
    if not path.is_dir():
        return Check(name, False, f"{path} is not a folder")
    try:
        probe_folder(path, what, write=False)
    except FolderUnusable as exc:
        return Check(name, False, exc.message)
    writable = os.access(path, os.W_OK | os.X_OK) and not _read_only(path)
    mode = oct(path.stat().st_mode & 0o777)
    return Check(name, writable, f"{path} (mode {mode}, {'writable' if writable else 'NOT writable'})")


def _queue_check(db_path: Path) -> tuple[Check, dict[str, Any]]:
    facts: dict[str, Any] = {"location": str(db_path), "shared": False, "readable": False, "server_version": None}
    if not db_path.exists():
        return Check("queue database", True, f"{db_path} (created on first use)"), facts
    verdict = inspect_database(db_path)
    if verdict == "ok":
        facts["readable"] = True
        return Check("queue database", True, f"{db_path} (integrity ok)"), facts
    return Check("queue database", False, f"{db_path} is damaged: {verdict}"), facts


DIAGNOSIS_RECONNECT_S = 10.0
"""How long doctor waits for a shared queue that stops answering after its first connection."""


def _shared_queue_check(url: str) -> tuple[Check, dict[str, Any]]:
    """Whether the PostgreSQL queue answers, and which server it is."""
    location = masked(url)
    facts: dict[str, Any] = {"location": location, "shared": True, "readable": False, "server_version": None}
    try:
        # One plain connection first: it fails within the connect timeout, where opening the queue
        # retries an unreachable server (right for a daemon riding out a restart, not for a diagnosis).
        facts["server_version"] = server_version(url)
    except Exception as exc:  # noqa: BLE001 - whatever stops the connection is the finding itself
        return Check("queue database", False, f"{location} unreachable: {failure_reason(exc)[:300]}"), facts
    try:
        store = Store(url, reconnect_for_s=DIAGNOSIS_RECONNECT_S)
        try:
            verdict = store.integrity_check()
        finally:
            store.close()
    except TtsdError as exc:  # e.g. a schema written by a newer ttsd
        return Check("queue database", False, f"{location}: {exc.message}"), facts
    if verdict != "ok":
        return Check("queue database", False, f"{location}: {verdict}"), facts
    facts["readable"] = True
    return Check("queue database", True, f"{location} (PostgreSQL {facts['server_version']}, reachable)"), facts


def _shared_cache_check(settings: Settings) -> Check:
    """Hosts sharing a queue share the cache's index: its files must be one folder they all see."""
    folder = settings.cache_dir
    if folder.resolve().is_relative_to(settings.state_dir.resolve()):
        # Another host's take is then missing here: this host drops it from the shared index and
        # makes it again, so every host's hits turn into misses.
        detail = (
            f"{folder} is inside this host's state directory, but the hosts share one cache index: "
            "set TTS_CACHE_FOLDER to a folder every host shares"
        )
        return Check("shared cache", False, detail, blocking=False)
    return Check("shared cache", True, f"{folder} (every host of this queue must use this folder)")


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _engine_import_check() -> Check:
    try:
        from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly

        import_qwen_tts_quietly()
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding itself
        return Check("qwen-tts import", False, f"{type(exc).__name__}: {str(exc)[:300]}")
    return Check("qwen-tts import", True, "ok")


def diagnose(
    loaded: LoadedSettings,
    daemon_running: bool,
    probe: Callable[[], Hardware] = probe_hardware,
    engine_import: Callable[[], Check] = _engine_import_check,
    daemon_settings: DaemonSettings | None = None,
) -> Report:
    """Run every check; nothing here changes the machine. The settings shown are the running
    daemon's (`daemon_settings`, what it recorded) when there is one, else this command's."""
    settings = loaded.settings
    report = Report()
    report.facts["versions"] = {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}}
    report.facts["platform"] = f"{platform.system()} {platform.release()} ({platform.machine()})"
    _settings_facts(report, loaded, daemon_running, daemon_settings)
    report.facts["config_file"] = str(loaded.config_file) if loaded.config_file else None
    report.facts["daemon_running"] = daemon_running

    report.checks.append(engine_import())
    try:
        plan = plan_device(settings.device, settings.dtype, probe)
        report.facts["device_plan"] = plan.as_dict()
        report.checks.append(Check("device plan", True, f"{plan.device}/{plan.dtype} ({plan.attention})"))
    except TtsdError as exc:
        report.checks.append(Check("device plan", False, exc.message))

    registry = build_registry(settings.models)
    models = []
    for entry in registry.values():
        checkpoint = locate_checkpoint(entry, settings.models_dir)
        size = _tree_bytes(checkpoint) if checkpoint is not None else None
        models.append({"model": entry.name, "kind": entry.kind, "source": entry.source,
                       "present": checkpoint is not None, "path": str(checkpoint) if checkpoint else None,
                       "bytes": size})  # fmt: skip
    report.facts["models"] = models
    default = next((m for m in models if m["model"] == settings.default_model), None)
    if default is None:
        report.checks.append(Check("default model", False, f"{settings.default_model!r} is not a registry name"))
    elif default["present"] or registry[settings.default_model].tiny:
        report.checks.append(Check("default model", True, f"{settings.default_model} ready"))
    else:
        offline = hf_offline()
        detail = f"{settings.default_model} is not on this machine; " + (
            "HF_HUB_OFFLINE is set, so its jobs will fail until it is fetched"
            if offline
            else "it will be downloaded on its first job"
        )
        report.checks.append(Check("default model", not offline, detail, blocking=offline))

    for name, what, path in (
        ("inbox folder", "inbox", settings.inbox),
        ("outbox folder", "outbox", settings.outbox),
        ("state folder", "state directory", settings.state_dir),
    ):
        report.checks.append(_folder_check(name, what, path))
    problem = recorded_inbox_problem(settings.state_dir) if daemon_running else None
    if problem is not None:
        # This command's own access says nothing about the daemon's: a LaunchAgent's python holds
        # its own macOS permissions.
        detail = f"the running daemon cannot list its inbox (since {problem.get('since')}): {problem['message']}"
        report.checks.append(Check("daemon's inbox", False, detail))
    existing = next((p for p in (settings.state_dir, *settings.state_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    report.facts["free_disk_bytes"] = free
    report.checks.append(
        Check(
            "free disk",
            free >= MIN_FREE_BYTES,
            f"{free / 1024**3:.1f} GiB free at {existing}",
            blocking=False,
        )
    )
    check, report.facts["queue"] = (
        _shared_queue_check(settings.database_url) if settings.shared_queue else _queue_check(settings.db_path)
    )
    report.checks.append(check)
    if settings.shared_queue and settings.enable_cache:
        report.checks.append(_shared_cache_check(settings))
    other = other_inbox_daemon(settings.inbox, settings.state_dir)
    if other is not None:
        detail = f"{settings.inbox} is served by another daemon ({other}); a second one here would do every job twice"
        report.checks.append(Check("inbox owner", False, detail))
    daemon_detail = "running" if daemon_running else "not running (start it with `ttsd run`)"
    report.checks.append(Check("daemon", daemon_running, daemon_detail, blocking=False))
    report.facts["executable"] = sys.executable
    return report


def _settings_facts(
    report: Report, loaded: LoadedSettings, daemon_running: bool, daemon_settings: DaemonSettings | None
) -> None:
    here = settings_view(loaded)
    if daemon_settings is None:
        why = "the running daemon recorded none" if daemon_running else "no daemon is running"
        report.facts["settings_of"] = {"who": "cli", "why": why}
        report.facts["settings"] = here
        return
    report.facts["settings_of"] = {
        "who": "daemon",
        "pid": daemon_settings.pid,
        "executable": daemon_settings.executable,
        "config_file": daemon_settings.config_file,
    }
    report.facts["settings"] = compare(daemon_settings.settings, here)


def _tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
