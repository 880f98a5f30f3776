"""The daemon locks: one daemon per state directory, and one per inbox. Each is a flock (released by
the kernel on any exit, kill -9 included) on a file that says who holds it: `<state>/daemon.lock`
holds the pid, `<inbox>/.ttsd.lock` (hidden, so intake leaves it alone) the pid and state directory.

Two daemons with separate queues on one inbox would both take every file: jobs spoken twice, audio
overwritten. Daemons that share one queue database (PostgreSQL) share an inbox on purpose, and the
database decides who takes each file: they hold the inbox lock shared, so a daemon with a queue of
its own (SQLite) cannot start on their inbox, nor they on its (as far as the file system passes
locks between machines: a local disk does; SMB and NFS may not)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ttsd.config import Settings
from ttsd.errors import DaemonAlreadyRunning
from ttsd.fsutil import LockHeld, hold_lock, is_locked, make_folder


@contextlib.contextmanager
def daemon_lock(settings: Settings) -> Iterator[None]:
    """Hold the state directory's lock for the daemon's lifetime, or raise DaemonAlreadyRunning."""
    make_folder(settings.state_dir, "state directory", mode=0o700)
    settings.state_dir.chmod(0o700)
    try:
        with hold_lock(settings.lock_path, str(os.getpid())):
            yield
    except LockHeld as held:
        raise DaemonAlreadyRunning(
            f"another ttsd daemon (pid {held.holder or 'unknown'}) is already serving {settings.state_dir}; "
            "stop it first, or give this one its own TTS_STATE_DIR"
        ) from None


def daemon_running(settings: Settings) -> bool:
    """Whether some process holds the state directory's lock right now."""
    return is_locked(settings.lock_path)


def running_daemon_pid(settings: Settings) -> int | None:
    """The pid of the daemon holding the state directory's lock right now (None: no daemon, or the
    lock file does not say)."""
    if not daemon_running(settings):
        return None
    try:
        return int(settings.lock_path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


INBOX_LOCK_NAME = ".ttsd.lock"


def _inbox_holder(settings: Settings) -> str:
    return f"pid {os.getpid()}, state {settings.state_dir}"


SHARED_HOLDER = "daemons sharing a queue database (TTS_DATABASE_URL)"


@contextlib.contextmanager
def inbox_lock(settings: Settings) -> Iterator[None]:
    """Hold the inbox's lock for the daemon's lifetime (shared, on a shared queue), or raise
    DaemonAlreadyRunning naming the daemon (pid and state directory) that serves it."""
    make_folder(settings.inbox, "inbox")
    shared = settings.shared_queue
    holder = SHARED_HOLDER if shared else _inbox_holder(settings)
    try:
        with hold_lock(settings.inbox / INBOX_LOCK_NAME, holder, shared=shared):
            yield
    except LockHeld as held:
        raise DaemonAlreadyRunning(
            f"another ttsd daemon ({held.holder or 'holder unknown'}) is already serving the inbox "
            f"{settings.inbox} with a queue of its own; two daemons with separate queues would speak "
            "every job twice and overwrite each other's audio: stop that one, point both at one "
            "TTS_DATABASE_URL, or give this one its own TTS_INBOX"
        ) from None


def other_inbox_daemon(inbox: Path, state_dir: Path) -> str | None:
    """Who serves `inbox`, when it is the daemon of another state directory (None: nobody, or ours)."""
    path = inbox / INBOX_LOCK_NAME
    if not is_locked(path):
        return None
    try:
        holder = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "another process"
    return None if holder.endswith(f"state {state_dir}") else (holder or "another process")
