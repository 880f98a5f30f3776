"""Who still holds a file open for writing, so intake never takes a file its writer is not done with.

On Linux the answer comes from /proc/<pid>/fd and fdinfo, what `fuser` and `lsof` read. The others
were weighed and set aside:

- inotify's IN_CLOSE_WRITE (watchdog's FileClosedEvent) says that *a* writer closed the file, not
  that none is left, and events get lost (queue overflow, files written while the daemon was down);
  IN_OPEN does not say whether an open was for writing, so events alone cannot count writers. The
  close event is kept as the signal to look again, at once.
- A read lease (fcntl F_SETLEASE F_RDLCK fails with EAGAIN while anyone has the file open for
  writing) works only on files the daemon owns (or with CAP_LEASE) and not on every file system, and
  a writer opening the file in the instant the lease is held breaks it with SIGIO to the daemon,
  whose default action ends the process.

/proc needs no subprocess and opens no job file; one pass over every process's descriptors answers
for all waiting files together, and only a descriptor whose target has a waiting file's name costs
more than a readlink. It sees the processes the daemon may inspect: its own user's (all, as root).
A writer it cannot see (another user's process, a writer on another machine over a network share)
is left to intake's stability rule, and so is every writer where there is no /proc (macOS).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

FileId = tuple[int, int]  # (st_dev, st_ino): the file itself, whatever path it was opened by
WriterCheck = Callable[[Mapping[FileId, str]], dict[FileId, int]]

PROC = Path("/proc")


def can_see_writers(proc: Path = PROC) -> bool:
    """Whether this system shows each process's open files and their modes (Linux with /proc)."""
    return (proc / "self" / "fdinfo").is_dir()


def open_for_writing(files: Mapping[FileId, str], proc: Path = PROC) -> dict[FileId, int]:
    """Which of `files` (identity -> file name) some process holds open for writing, each with the
    pid of one such process. Processes that end or close descriptors meanwhile are skipped."""
    names = set(files.values())
    found: dict[FileId, int] = {}
    if not names:
        return found
    try:
        with os.scandir(proc) as entries:
            processes = list(entries)
    except OSError:
        return found
    for process in processes:
        if not process.name.isdigit():
            continue
        try:
            with os.scandir(f"{process.path}/fd") as descriptors:
                for descriptor in descriptors:
                    identity = _writing_to(descriptor, names, files)
                    if identity is not None and identity not in found:
                        found[identity] = int(process.name)
        except OSError:  # the process ended, or it is another user's
            continue
    return found


def _writing_to(descriptor: os.DirEntry[str], names: set[str], files: Mapping[FileId, str]) -> FileId | None:
    """The waiting file this descriptor has open for writing, if any."""
    link = Path(descriptor.path)
    try:
        target = link.readlink()
    except OSError:
        return None
    # The name only filters: the file is matched by identity, which holds whatever path the writer
    # used (a bind mount, the inbox reached through a symlink).
    if target.name not in names:
        return None
    try:
        info = descriptor.stat()
        identity = (info.st_dev, info.st_ino)
        if identity not in files:
            return None
        fdinfo = link.parent.parent / "fdinfo" / descriptor.name
        return identity if _opened_for_writing(fdinfo.read_text(encoding="ascii", errors="replace")) else None
    except (OSError, ValueError):
        return None


def _opened_for_writing(fdinfo: str) -> bool:
    """Whether an fdinfo text says its descriptor was opened write-only or read-write."""
    for line in fdinfo.splitlines():
        key, _, value = line.partition(":")
        if key == "flags":
            return int(value.strip(), 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def process_name(pid: int, proc: Path = PROC) -> str:
    """A process's command name, for a log line ("?" once it is gone)."""
    try:
        return (proc / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "?"


WRITERS: WriterCheck | None = open_for_writing if can_see_writers() else None
"""The check intake uses on this system; None where writers cannot be seen (macOS)."""
