"""The files intake has seen in the inbox and not taken yet, and the rule that says they are complete.

A file is complete when:

- it arrived by rename (the way to drop a job: the name appears with all its content): at once;
- where writers can be seen (Linux, `ttsd.intake.writers`): no process holds it open for writing and
  it has stayed unchanged (size, mtime, ctime, inode) for `stable_s`. The window is a safety net for
  a writer that closes and opens the file again (`echo a > f; echo b >> f`). A writer's close-write
  event has the file looked at again at once; without one (events get lost) a file found held open
  is looked at again every `recheck_s`;
- where they cannot (macOS): unchanged for `stable_s`, and an empty file for EMPTY_FILE_WAIT_S at
  least, since an empty file is what a writer leaves between opening the file and its first write
  (`(sleep 1; echo text) > inbox/x.txt`).

A file whose writer is gone is no longer held by it, so no file waits for ever on a writer that
ended. Unchanged is judged by intake's own monotonic clock: file timestamps are only compared with
each other, never with the wall clock, so a file with a future mtime (copied with its times kept, or
after the clock stepped back) is not held until that time, and a file system with coarse timestamps
cannot make a file that is still growing look old.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttsd.intake.folders import FileSignature, display_name, file_signature
from ttsd.intake.writers import FileId, WriterCheck, process_name

log = logging.getLogger(__name__)

EMPTY_FILE_WAIT_S = 10.0
# A writer check scans every process's descriptors: the next one waits this many times as long as
# the last one took, so a busy inbox on a busy machine spends a bounded share of intake's time on it.
CHECK_SPACING = 4.0

Seen = tuple[Path, os.stat_result]  # a file and what it looked like when intake last looked


@dataclass
class _Candidate:
    """A file waiting to be complete: how it arrived, what it looked like since when, and when to
    ask again whether a writer holds it."""

    renamed: bool
    signature: FileSignature | None = None
    since: float = 0.0
    check_at: float = 0.0
    writer_logged: bool = False


class Arrivals:
    """The inbox files waiting to be complete."""

    def __init__(
        self, stable_s: float, recheck_s: float, clock: Callable[[], float], writers: WriterCheck | None
    ) -> None:
        self.stable_s = stable_s
        self.recheck_s = recheck_s
        self.clock = clock
        self.writers = writers
        self._waiting: dict[Path, _Candidate] = {}
        self._next_check = 0.0

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def note(self, path: Path, renamed: bool, closed: bool = False) -> None:
        """Remember a file; `renamed` when it arrived by rename, `closed` when a writer just closed it."""
        candidate = self._waiting.get(path)
        if candidate is None:
            self._waiting[path] = _Candidate(renamed=renamed)
            return
        candidate.renamed = candidate.renamed or renamed
        if closed:
            candidate.check_at = 0.0

    def complete(self) -> tuple[list[Seen], list[Path]]:
        """Take out the files that are complete now (with what they looked like), and the ones that
        vanished; the others keep waiting. Anything that is not a regular file is complete at once:
        it is never going to be written, and taking it rejects it."""
        now = self.clock()
        ready: list[Seen] = []
        gone: list[Path] = []
        settled: dict[FileId, Seen] = {}
        for path, candidate in list(self._waiting.items()):
            try:
                info = path.lstat()
            except OSError:
                del self._waiting[path]  # the next scan brings it back if it is still there
                gone.append(path)
                continue
            if stat.S_ISREG(info.st_mode) and not candidate.renamed:
                if not self._settled(candidate, info, now):
                    continue
                if self.writers is not None:
                    if candidate.check_at <= now:
                        settled[(info.st_dev, info.st_ino)] = (path, info)
                    continue
            del self._waiting[path]
            ready.append((path, info))
        if settled and now >= self._next_check:
            ready.extend(self._not_held(settled, now))
        return ready, gone

    def _settled(self, candidate: _Candidate, info: os.stat_result, now: float) -> bool:
        """Whether the file has looked the same for long enough (intake's own clock, not its mtime)."""
        window = self.stable_s
        if self.writers is None and info.st_size == 0:
            window = max(window, EMPTY_FILE_WAIT_S)
        signature = file_signature(info)
        if signature != candidate.signature:
            candidate.signature = signature
            candidate.since = now
            return window <= 0
        return now - candidate.since >= window

    def _not_held(self, settled: dict[FileId, Seen], now: float) -> list[Seen]:
        """The settled files no process holds open for writing, found in one pass for all of them."""
        assert self.writers is not None
        held = self.writers({identity: path.name for identity, (path, _info) in settled.items()})
        self._next_check = now + CHECK_SPACING * (self.clock() - now)
        ready: list[Seen] = []
        for identity, (path, info) in settled.items():
            candidate = self._waiting[path]
            pid = held.get(identity)
            if pid is None:
                del self._waiting[path]
                ready.append((path, info))
                continue
            candidate.check_at = now + self.recheck_s
            if not candidate.writer_logged:
                candidate.writer_logged = True
                log.info(
                    "%s is still open for writing (pid %d, %s): it is taken once closed",
                    display_name(path.name),
                    pid,
                    process_name(pid),
                )
        return ready
