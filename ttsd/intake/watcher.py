"""Filesystem events as hints: the watchdog handler only queues paths; intake does the work.

Events are incomplete by nature (FSEvents coalesces, inotify overflows, nothing fires while the
daemon is down), so intake also scans the folder; an event just makes a new file be seen sooner.
"""

from __future__ import annotations

import logging
import os
import queue
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer


@dataclass(frozen=True)
class Hint:
    """A path that may be worth a look; `arrived_by_rename` files are complete when they appear, and
    `closed_by_writer` says a writer just closed the file (inotify's IN_CLOSE_WRITE; none on macOS)."""

    path: Path
    arrived_by_rename: bool = False
    closed_by_writer: bool = False


class _QueueingHandler(FileSystemEventHandler):
    def __init__(self, folder: Path, hints: queue.Queue[Hint | None]) -> None:
        self._folder = folder
        # FSEvents reports real paths: an inbox reached through a symlink (/tmp is /private/tmp on
        # macOS) would otherwise see every event dropped as "elsewhere".
        self._parents = {folder, folder.resolve()}
        self._hints = hints

    def _push(self, raw: str | bytes, renamed: bool, closed: bool = False) -> None:
        # fsdecode, not decode(): a name that is not UTF-8 must not raise inside watchdog's thread.
        path = Path(os.fsdecode(raw))
        if path.parent in self._parents:
            # Named the way intake knows the folder, whatever spelling the event used.
            self._hints.put(Hint(self._folder / path.name, renamed, closed))

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self._push(event.dest_path, renamed=True)
        elif isinstance(event, FileClosedEvent):
            self._push(event.src_path, renamed=False, closed=True)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | DirCreatedEvent):
            self._push(event.src_path, renamed=False)


# watchdog's inotify backend holds every rename-away event for 0.5 s to pair it with its arrival, and
# its reader sleeps out that delay even once the pair is matched: a file renamed into the inbox (the
# recommended way to drop a job) would reach intake half a second late (gorakhargosh/watchdog#649).
# Both halves of a rename inside one folder arrive together, so a short window still pairs them; a
# file moved in from elsewhere is unpaired either way and is taken once it is stable.
MOVE_PAIRING_S = 0.02


def _shorten_rename_pairing() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # not Linux, or a watchdog without this class: nothing to shorten
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_S


class InboxWatcher:
    """A watchdog observer on one folder (not recursive) feeding a queue of hints."""

    def __init__(self, folder: Path, hints: queue.Queue[Hint | None]) -> None:
        _shorten_rename_pairing()
        self._observer = Observer()
        self._observer.schedule(_QueueingHandler(folder, hints), str(folder), recursive=False)

    def start(self) -> None:
        """Begin watching (in watchdog's own thread)."""
        self._observer.start()

    def stop(self) -> None:
        """Stop watching and wait for the observer thread."""
        # Stopping interrupts inotify's reader mid-read, which watchdog logs as an error.
        logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
        self._observer.stop()
        self._observer.join(timeout=5)
