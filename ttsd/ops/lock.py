"""The daemon lock: one daemon per state directory. The lock is a flock on `<state>/daemon.lock`,
released by the kernel on any exit (kill -9 included), holding the pid of the daemon that has it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
