"""macOS privacy protection, and the one-line message for a folder ttsd cannot use.

macOS keeps ~/Desktop, ~/Documents, ~/Downloads, iCloud Drive (~/Library/Mobile Documents) and
removable and network volumes (/Volumes) from a process until the user allows it (Full Disk Access,
or Files and Folders, in System Settings > Privacy & Security). An app is asked for it; a LaunchAgent's
python cannot ask, so its every access there fails with EPERM ("Operation not permitted"), whatever
the folder's mode says. This behaviour is reasoned from the platform's documentation: real macOS was
not available where this module was written and tested, so the tests simulate EPERM.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

# Below the home folder; names compare without case, as on macOS's default (case-insensitive) volumes.
_HOME_PLACES = (
    (("desktop",), "Desktop"),
    (("documents",), "Documents"),
    (("downloads",), "Downloads"),
    (("library", "mobile documents"), "iCloud Drive"),
)
_VOLUMES = ("/", "volumes")
VOLUME_PLACE = "a removable or network volume (/Volumes)"


def protected_place(path: Path, home: Path) -> str | None:
    """The protected place `path` lies in ("Desktop", "Documents", "Downloads", "iCloud Drive" or a
    volume under /Volumes), or None. Pure: both paths are judged as given (absolute; resolve them
    first to judge where a symlink leads)."""
    parts = tuple(part.casefold() for part in path.parts)
    home_parts = tuple(part.casefold() for part in home.parts)
    if parts[: len(home_parts)] == home_parts:
        below = parts[len(home_parts) :]
        for names, place in _HOME_PLACES:
            if below[: len(names)] == names:
                return place
    # /Volumes itself is not a volume; the boot volume's entry there is a symlink to /, which a
    # resolved path no longer shows.
    if len(parts) > len(_VOLUMES) and parts[: len(_VOLUMES)] == _VOLUMES:
        return VOLUME_PLACE
    return None


def grant(python: Path) -> str:
    """What to do about a protected folder: allow this python, or choose another folder."""
    real = python.resolve()
    named = f"{python}" if real == python else f"{python}, that is {real}"
    return (
        f"give ttsd's python ({named}) Full Disk Access, or Files and Folders access, in System Settings > "
        "Privacy & Security, or choose a folder outside Desktop, Documents, Downloads, iCloud Drive and /Volumes"
    )


def folder_problem(what: str, path: Path, exc: OSError) -> str:
    """One line saying why the `what` folder at `path` cannot be used; on macOS an EPERM names the
    privacy permission to grant (this process's python)."""
    reason = exc.strerror or str(exc)
    hint = ""
    if exc.errno == errno.EPERM and sys.platform == "darwin":
        hint = f" (macOS privacy protection: {grant(Path(sys.executable).absolute())})"
    return f"cannot use the {what} {path}: {reason}{hint}"


def protected_folder_note(what: str, path: Path, place: str, python: Path) -> str:
    """The warning for a LaunchAgent whose `what` folder lies in a protected place."""
    return (
        f"the {what} {path} is in {place}, which macOS keeps from a LaunchAgent until allowed (every access "
        f"fails with 'Operation not permitted'): {grant(python)}"
    )
