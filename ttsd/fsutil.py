"""The one way ttsd writes, reads and locks files that must survive a crash or a hostile folder.

Writing: the data goes to a hidden temp file in the target's own folder (created with
O_EXCL|O_NOFOLLOW, so a planted symlink is never written through), is flushed and fsynced, then
renamed over the target (a rename replaces a symlink at the target rather than following it), and
the folder is fsynced so the rename itself survives a power cut. A crash leaves the old file or the
new one, never half of one; at most a temp file stays behind, which `sweep_temp_files` removes.
Every temp file, in every folder, is named `.ttsd-<random>.tmp`.

Reading: `read_regular_file` never follows a symlink and never blocks on a FIFO planted where a
file was expected.

Locking: `hold_lock` and `is_locked` use flock(2), which the kernel releases on any exit, kill -9
included.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from ttsd.errors import FolderUnusable
from ttsd.privacy import folder_problem

TEMP_PREFIX = ".ttsd-"
TEMP_SUFFIX = ".tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class NotRegularFile(OSError):
    """A path that was expected to be a regular file is a symlink, folder, FIFO, socket or device."""


def make_folder(path: Path, what: str, mode: int = 0o755) -> None:
    """Create `path` (and its parents) if needed, or raise FolderUnusable saying in one line why not
    (on macOS, a folder its privacy protection guards names the permission to grant)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable", str(path))
    except OSError as exc:
        raise FolderUnusable(folder_problem(what, path, exc)) from exc


def probe_folder(path: Path, what: str, write: bool = True) -> None:
    """Do to the folder `path` what the daemon will do: list it and, with `write`, create and remove
    a hidden temp file; raise FolderUnusable saying in one line what failed.

    A mode check is not enough: macOS's privacy protection refuses a folder whose mode allows
    everything, and only an actual access shows it (EPERM)."""
    try:
        with os.scandir(path) as entries:
            next(entries, None)
        if write:
            probe = path / temp_name()
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
            probe.unlink()
    except OSError as exc:
        raise FolderUnusable(folder_problem(what, path, exc)) from exc


def folds_case(folder: Path) -> bool:
    """Whether `folder`'s file system treats names that differ only in case as one file."""
    probe = folder / f"{TEMP_PREFIX}case-{uuid.uuid4().hex}{TEMP_SUFFIX}"
    probe.touch()
    try:
        return (folder / probe.name.upper()).exists()
    finally:
        probe.unlink(missing_ok=True)


def temp_name() -> str:
    """A fresh temp file name (hidden, and ignored by intake and by any `*.tmp` filter)."""
    return f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"


def fsync_dir(folder: Path) -> None:
    """Make a rename, creation or removal inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_file(
    folder: Path,
    data: bytes,
    mode: int = 0o644,
    durable: bool = True,
    midway: Callable[[], None] | None = None,
) -> Path:
    """Write `data` to a new hidden temp file in `folder` and return its path; nothing is visible
    under a real name until `install_file`.

    The mode is set explicitly, whatever the umask. `midway` runs after half of the data is written
    (the crash tests kill the process there). A failure removes the temp file.
    """
    temp = folder / temp_name()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            half = len(data) // 2
            handle.write(data[:half])
            if midway is not None:
                midway()
            handle.write(data[half:])
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def install_file(temp: Path, target: Path, durable: bool = True) -> None:
    """Rename a staged temp file over `target` (atomically), then make the rename durable."""
    temp.replace(target)
    if durable:
        fsync_dir(target.parent)


def atomic_write(target: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `target` with `data` atomically: readers see the old file or the new one, never part.

    With `durable` False the data is not fsynced (for files rebuilt from elsewhere after a crash):
    still atomic for readers, but a power cut may lose the newest version.
    """
    temp = stage_file(target.parent, data, mode, durable)
    try:
        install_file(temp, target, durable)
    finally:
        temp.unlink(missing_ok=True)


def link_new(data: bytes, folder: Path, names: Iterator[str] | list[str], mode: int = 0o644) -> Path:
    """Publish `data` under the first of `names` that does not exist yet in `folder`, complete and
    durable from the moment it appears (staged, then hard-linked: an existing file is never
    replaced). Raises FileExistsError when every name is taken."""
    temp = stage_file(folder, data, mode)
    try:
        for name in names:
            target = folder / name
            try:
                os.link(temp, target)
            except FileExistsError:
                continue
            fsync_dir(folder)
            return target
        raise FileExistsError(f"every candidate name is taken in {folder}")
    finally:
        temp.unlink(missing_ok=True)


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` afresh and write `data`: whatever was there (a stale file, a planted symlink) is
    unlinked first, and the new file is never opened through a link."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """At most `max_bytes` of `path`, which must be a regular file reached without a symlink.

    Raises FileNotFoundError when it is gone, NotRegularFile when something else sits there, and
    OSError for anything else (permissions, I/O)."""
    with open_regular_file(path) as handle:
        return handle.read(max_bytes)


def open_regular_file(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file reached without a symlink (errors as
    `read_regular_file`)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:
            raise NotRegularFile(exc.errno, "a symbolic link, not a file", str(path)) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def sweep_temp_files(folder: Path, recursive: bool = False, older_than_s: float = 0.0) -> list[Path]:
    """Remove the temp files a crash left in `folder` (and below it, with `recursive`), only those
    last changed over `older_than_s` ago when that is given."""
    pattern = f"{TEMP_PREFIX}*{TEMP_SUFFIX}"
    removed = []
    cutoff = time.time() - older_than_s
    for path in folder.rglob(pattern) if recursive else folder.glob(pattern):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and (older_than_s <= 0 or info.st_mtime < cutoff):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class LockHeld(OSError):
    """Another process holds the lock; `holder` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.holder = holder


@contextlib.contextmanager
def hold_lock(path: Path, holder: str, shared: bool = False) -> Iterator[IO[str]]:
    """Hold an exclusive lock on `path` while the block runs, writing `holder` (who we are) into it;
    with `shared`, a lock other shared holders may hold too (they all write the same `holder`).

    Raises LockHeld, with what the current holder wrote, if another process has it."""
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        current = handle.read().strip()
        handle.close()
        raise LockHeld(path, current) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(holder)
        handle.flush()
        yield handle
    finally:
        handle.close()


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock on `path` right now."""
    if not path.exists():
        return False
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False
