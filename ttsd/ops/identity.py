"""This daemon's name among the hosts sharing a queue: a random id kept in its state directory, so
it survives restarts. Every lease its workers take starts with it, which lets a daemon starting again
after a crash give back its own interrupted jobs, and only its own, while other hosts keep theirs."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from ttsd.fsutil import atomic_write

HOST_ID_FILE = "host-id"
_VALID = re.compile(r"[0-9a-f]{12}")


def recorded_host_id(state_dir: Path) -> str | None:
    """The id recorded in `state_dir`, if a daemon ever ran there."""
    try:
        recorded = (state_dir / HOST_ID_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return recorded if _VALID.fullmatch(recorded) else None


def host_id(state_dir: Path) -> str:
    """The id recorded in `state_dir`, made (and recorded) on first use."""
    recorded = recorded_host_id(state_dir)
    if recorded is not None:
        return recorded
    made = secrets.token_hex(6)
    atomic_write(state_dir / HOST_ID_FILE, f"{made}\n".encode("ascii"), mode=0o600)
    return made
