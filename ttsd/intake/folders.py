"""The inbox as intake sees it: its own folders (accepted/, rejected/, voices/), the names it
leaves alone, and how file names and file versions are told apart."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from ttsd.config import VOICES_DIR

ACCEPTED_DIR = "accepted"
REJECTED_DIR = "rejected"
INTAKE_FOLDERS = frozenset({ACCEPTED_DIR, REJECTED_DIR, VOICES_DIR})
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".download", ".swp", ".swx", "~")
# vim's write test file, and the folder decorations Finder and Explorer drop into any folder.
_IGNORED_NAMES = frozenset({"4913", "Icon\r", "Thumbs.db", "desktop.ini"})
REASON_SUFFIX = ".reason.txt"
_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
_STAMP = re.compile(r"\.\d{8}T\d{12}$")


def is_ignored(name: str) -> bool:
    """Names that are never jobs: hidden files, partial downloads, editor and temp files."""
    return name.startswith((".", "~$", "#")) or name.endswith(_IGNORED_SUFFIXES) or name in _IGNORED_NAMES


def display_name(name: str) -> str:
    """A file name as text that can be stored and written anywhere: a Linux name that is not valid
    UTF-8 comes from os.scandir with lone surrogates, which SQLite and UTF-8 writers refuse."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


FileSignature = tuple[int, int, int, int]


def file_signature(info: os.stat_result) -> FileSignature:
    """What a file looked like: a change of any of these means it was written again (ctime too: a
    file system with coarse mtimes can keep the mtime of a file that is still growing)."""
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def original_name(moved_name: str) -> str:
    """The name a job file had in the inbox, before `unique_destination` stamped it to avoid a clash."""
    stem, dot, suffix = moved_name.rpartition(".")
    match = _STAMP.search(stem) if dot else None
    return f"{stem[: match.start()]}.{suffix}" if match else moved_name


def unique_destination(folder: Path, name: str) -> Path:
    """Where `name` can be moved into `folder` without replacing anything: the name itself, else the
    name with a timestamp before its suffix."""
    target = folder / name
    if not os.path.lexists(target):
        return target
    stamp = datetime.now(UTC).strftime(_STAMP_FORMAT)
    stem, dot, suffix = name.rpartition(".")
    return folder / (f"{stem}.{stamp}.{suffix}" if dot and stem else f"{name}.{stamp}")


def file_key(name: str, info: os.stat_result, data: bytes) -> str:
    """An inbox file's identity as hosts sharing the inbox see it: its name, size, times and
    content. A file dropped again later (even with the same content) has another change time."""
    seen = f"{name}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ctime_ns}\0".encode("utf-8", "surrogateescape")
    return hashlib.sha256(seen + hashlib.sha256(data).digest()).hexdigest()
