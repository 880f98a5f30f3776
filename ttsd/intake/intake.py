"""Intake: hints and scans -> complete regular files -> parse -> enqueue -> move the file out of the way.

A file is taken once it is complete (`ttsd.intake.arrivals` says when: at once after a rename,
otherwise once its writer is done with it and it has stayed unchanged for `stable_s`).

Only after its jobs are committed is a file moved to `accepted/` (or `rejected/`). The queue records,
in the same transaction, that the file (as it was seen: name, size, times, content) was taken and
where it goes: when several hosts scan one shared inbox, the database decides which one takes each
file. A file found taken is left to its taker for `taken_grace_s`, then moved by whoever sees it (a
crash between recording and moving leaves it in the inbox; its jobs are recorded already).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.delivery.status import status_document
from ttsd.errors import JobRejected, TtsdError
from ttsd.faults import crash_point
from ttsd.fsutil import NotRegularFile, read_regular_file, write_new_file
from ttsd.intake.access import RECORD_NAME, InboxAccess
from ttsd.intake.arrivals import Arrivals
from ttsd.intake.enqueued import announce
from ttsd.intake.folders import (
    ACCEPTED_DIR,
    INTAKE_FOLDERS,
    REASON_SUFFIX,
    REJECTED_DIR,
    FileSignature,
    display_name,
    file_key,
    file_signature,
    is_ignored,
    unique_destination,
)
from ttsd.intake.jobfile import JOB_SUFFIXES, JobDefaults, ParsedEntry, job_defaults, parse_job_file
from ttsd.intake.watcher import Hint
from ttsd.intake.writers import WRITERS, WriterCheck
from ttsd.joblog import job_extra
from ttsd.jobqueue.protocols import IntakeQueue
from ttsd.jobqueue.records import EnqueueResult, InboxTake, Rejection, TakeResult
from ttsd.jobqueue.tables import Job
from ttsd.names import sanitize_name

log = logging.getLogger(__name__)

INTAKE_GROUP = 64  # files recorded per queue transaction in a burst
SHARED_TAKEN_GRACE_S = 30.0
"""On a shared inbox: how long a file another host took may stay before this one moves it."""


@dataclass(frozen=True)
class IntakeSettings:
    """What intake needs from the settings."""

    inbox: Path
    job_defaults: JobDefaults
    max_queue_size: int
    stable_s: float
    scan_interval_s: float
    problem_record: Path | None = None  # where a failing inbox listing is recorded for the CLI
    taken_by: str = "local"
    """Who takes files (the daemon's host id), as the queue records it."""
    taken_grace_s: float = 0.0
    """How long a file found taken is left to its taker (none with one host: it is us, restarted)."""

    @classmethod
    def from_settings(cls, settings: Settings, host: str = "local") -> IntakeSettings:
        """Intake's share of the daemon's settings."""
        return cls(
            inbox=settings.inbox,
            job_defaults=job_defaults(settings),
            max_queue_size=settings.max_queue_size,
            stable_s=settings.stable_s,
            scan_interval_s=settings.scan_interval_s,
            problem_record=settings.state_dir / RECORD_NAME,
            taken_by=host,
            taken_grace_s=SHARED_TAKEN_GRACE_S if settings.shared_queue else 0.0,
        )


@dataclass(frozen=True)
class Outcome:
    """What taking one file did (all zero when it stays in the inbox for now)."""

    queued: int = 0
    duplicates: int = 0
    rejected: int = 0


def _take(path: Path, entries: list[ParsedEntry], key: str) -> InboxTake:
    source = display_name(path.name)
    specs = tuple((entry.spec, source) for entry in entries if entry.spec is not None)
    refused = (_rejection(entry, source) for entry in entries)
    rejections = tuple(rejection for rejection in refused if rejection is not None)
    return InboxTake(key, source, ACCEPTED_DIR if specs else REJECTED_DIR, specs, rejections)


def _rejection(entry: ParsedEntry, source_file: str) -> Rejection | None:
    if entry.rejection is None:
        return None
    return Rejection(entry.name, source_file, entry.rejection.code, entry.rejection.message, entry.rejection.field)


class Intake(threading.Thread):
    """The single thread that turns inbox files into jobs."""

    def __init__(
        self,
        settings: IntakeSettings,
        store: IntakeQueue,
        outbox: Outbox,
        hints: queue.Queue[Hint | None],
        stop_event: threading.Event,
        on_enqueued: Callable[[str], None] = lambda model: None,
        clock: Callable[[], float] = time.monotonic,
        writers: WriterCheck | None = WRITERS,
        publisher: StatusPublisher | None = None,
    ) -> None:
        super().__init__(name="intake", daemon=True)
        self.settings = settings
        self.inbox = settings.inbox
        self.store = store
        self.outbox = outbox
        self._publisher = publisher or StatusPublisher(store, outbox)
        self.hints = hints
        self.stop_event = stop_event
        self.on_enqueued = on_enqueued
        self.clock = clock
        # A file held open is looked at again at least once per scan interval, close event or not.
        self._arrivals = Arrivals(settings.stable_s, settings.scan_interval_s, clock, writers)
        # Files held back by backpressure: what they looked like when parsed, and their models.
        self._held: dict[Path, tuple[FileSignature, frozenset[str]]] = {}
        # Room left in each model's queue, counted once per take_ready pass rather than once per
        # file (a burst of thousands of files would otherwise ask the database thousands of times).
        self._room: dict[str, int] | None = None
        self.access = InboxAccess(self.inbox, settings.problem_record)
        self.access.clear()
        for folder in INTAKE_FOLDERS:
            # Not group/world writable whatever the umask (a planted voice or link has no business there).
            (self.inbox / folder).mkdir(parents=True, exist_ok=True, mode=0o755)

    def run(self) -> None:
        next_scan = 0.0
        while not self.stop_event.is_set():
            now = self.clock()
            if now >= next_scan:
                self.scan()
                next_scan = now + self.settings.scan_interval_s
            timeout = min(
                next_scan - now, self.settings.stable_s / 2 if self._arrivals else self.settings.scan_interval_s
            )
            self._collect_hints(max(timeout, 0.01))
            try:
                self.take_ready()
            except Exception:
                log.exception("intake: unexpected error")

    def _collect_hints(self, timeout: float) -> None:
        try:
            hint = self.hints.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if hint is None:
                self.scan()
            else:
                self.consider(hint.path, hint.arrived_by_rename, hint.closed_by_writer)
            try:
                hint = self.hints.get_nowait()
            except queue.Empty:
                return

    def scan(self) -> None:
        """Look at every entry of the inbox: the source of truth, whatever events said. A listing that
        fails is logged and recorded once per episode (ttsd.intake.access), not at every scan."""
        try:
            with os.scandir(self.inbox) as entries:
                for entry in entries:
                    if entry.name not in INTAKE_FOLDERS:
                        self.consider(Path(entry.path), arrived_by_rename=False)
        except OSError as exc:
            self.access.failed(exc)
        else:
            self.access.succeeded()

    def consider(self, path: Path, arrived_by_rename: bool, closed_by_writer: bool = False) -> None:
        """Remember a candidate file until it is complete (a writer closing it makes intake look again)."""
        if is_ignored(path.name) or path.parent != self.inbox:
            return
        self._arrivals.note(path, arrived_by_rename, closed_by_writer)

    def take_ready(self) -> None:
        """Take every pending file that is complete; keep the others for later.

        Ready files are recorded in groups (one queue transaction per group). One file that cannot
        be taken (it vanished, a disk error) never stops the others."""
        complete, gone = self._arrivals.complete()
        for path in gone:
            self._held.pop(path, None)
        ready: list[tuple[int, str, Path]] = []
        self._room = {}
        try:
            for path, info in complete:
                if not self._still_held_back(path, info):
                    ready.append((info.st_mtime_ns, path.name, path))
            # First come, first served: under backpressure the oldest waiting files go first.
            ready.sort()
            paths = [path for _mtime, _name, path in ready]
            for start in range(0, len(paths), INTAKE_GROUP):
                self._take_group(paths[start : start + INTAKE_GROUP])
        finally:
            self._room = None

    def _still_held_back(self, path: Path, info: os.stat_result) -> bool:
        """Whether a file held back earlier, unchanged since, still finds its models' queues full:
        then it is not read and parsed again (thousands of waiting files would cost a core)."""
        held = self._held.get(path)
        if held is None:
            return False
        signature, models = held
        if signature != file_signature(info):
            del self._held[path]
            return False
        return any(self._room_for(model) <= 0 for model in models)

    def _take_group(self, paths: list[Path]) -> list[Outcome]:
        """Parse each file, take them and record their jobs in one transaction, then publish and
        move each file this host took."""
        parsed: list[tuple[Path, list[ParsedEntry], str]] = []
        outcomes: dict[Path, Outcome] = {}
        for path in paths:
            try:
                read = self._parse(path)
            except (TtsdError, OSError):
                log.exception("intake of %s failed; it stays in the inbox", display_name(path.name))
                read = None
            if read is None:
                outcomes[path] = Outcome()
                continue
            entries, key = read
            if self._held_back(entries):
                self._remember_held_back(path, entries)
                outcomes[path] = Outcome()
                continue
            self._held.pop(path, None)
            for entry in entries:
                if entry.spec is not None and self._room is not None and entry.spec.model in self._room:
                    self._room[entry.spec.model] -= 1
            parsed.append((path, entries, key))
        try:
            takes = self.store.take_files([_take(*item) for item in parsed], self.settings.taken_by)
        except (TtsdError, OSError):
            log.exception("could not record %d job file(s); they stay in the inbox", len(parsed))
            return [outcomes.get(path, Outcome()) for path in paths]
        for (path, entries, _key), take in zip(parsed, takes, strict=True):
            outcomes[path] = self._settle(path, entries, take)
        return [outcomes[path] for path in paths]

    def _settle(self, path: Path, entries: list[ParsedEntry], take: TakeResult) -> Outcome:
        """Publish and move a file this host took; move one taken before, once its taker had time."""
        if not take.taken:
            # Taken by this host (its earlier life, or this very call whose answer was lost with the
            # connection): nobody else is about to move it.
            if take.taken_by == self.settings.taken_by or take.taken_s_ago >= self.settings.taken_grace_s:
                log.info(
                    "%s was taken %.0fs ago and is still here: moving it", display_name(path.name), take.taken_s_ago
                )
                self._move_quietly(path, take.folder, entries)
            return Outcome()
        outcome = self._record(path, entries, iter(take.results), iter(take.rejected))
        crash_point("before_move", path.name)
        self._move_quietly(path, take.folder, entries)
        return outcome

    def _move_quietly(self, path: Path, folder: str, entries: list[ParsedEntry]) -> None:
        try:
            self._move(path, folder, entries)
        except OSError:
            log.exception("could not move %s out of the inbox", display_name(path.name))

    def _parse(self, path: Path) -> tuple[list[ParsedEntry], str] | None:
        """The file's entries (each a spec or a rejection) and its identity (`file_key`), or None
        if it vanished meanwhile."""
        try:
            info = path.lstat()
            rejection = self._entry_problem(path)
        except FileNotFoundError:
            return None
        fallback = sanitize_name(Path(path.name).stem)
        if rejection is not None:
            return [ParsedEntry(name=fallback, line=None, rejection=rejection)], file_key(path.name, info, b"")
        try:
            data = self._read(path)
        except JobRejected as problem:
            return [ParsedEntry(name=fallback, line=None, rejection=problem)], file_key(path.name, info, b"")
        except FileNotFoundError:
            return None
        return parse_job_file(path.name, data, self.settings.job_defaults), file_key(path.name, info, data)

    def _entry_problem(self, path: Path) -> JobRejected | None:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return JobRejected("not_regular", "symbolic links are not accepted: drop the file itself")
        if stat.S_ISDIR(info.st_mode):
            return JobRejected("not_regular", "this is a folder, not a job file")
        if not stat.S_ISREG(info.st_mode):
            return JobRejected("not_regular", "only regular files are jobs (this is a FIFO, socket or device)")
        if not path.name.lower().endswith(JOB_SUFFIXES):
            return JobRejected("unsupported_file", f"only {', '.join(JOB_SUFFIXES)} files are jobs")
        if info.st_size > self.settings.job_defaults.max_file_bytes:
            return JobRejected(
                "too_large",
                f"the file is {info.st_size} bytes; the limit is {self.settings.job_defaults.max_file_bytes}",
            )
        return None

    def _read(self, path: Path) -> bytes:
        limit = self.settings.job_defaults.max_file_bytes
        try:
            return read_regular_file(path, limit + 1)
        except NotRegularFile:
            raise JobRejected("not_regular", "only regular files are jobs") from None
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise JobRejected("unreadable", f"the file cannot be opened: {exc.strerror}") from exc

    def _held_back(self, entries: list[ParsedEntry]) -> bool:
        """Backpressure: a file waits in the inbox while its model's queue is full."""
        models = {entry.spec.model for entry in entries if entry.spec is not None}
        return any(self._room_for(model) <= 0 for model in models)

    def _remember_held_back(self, path: Path, entries: list[ParsedEntry]) -> None:
        try:
            info = path.lstat()
        except OSError:
            return
        self._held[path] = (file_signature(info), frozenset(entry.spec.model for entry in entries if entry.spec))

    def _room_for(self, model: str) -> int:
        # Within a pass the count only errs low (workers may finish jobs meanwhile): a file held
        # back by it is taken at the next scan, and the queue limit is never overshot.
        room = None if self._room is None else self._room.get(model)
        if room is None:
            room = self.settings.max_queue_size - self.store.pending_count(model)
            if self._room is not None:
                self._room[model] = room
        return room

    def _record(
        self, path: Path, entries: list[ParsedEntry], results: Iterator[EnqueueResult], rejected_rows: Iterator[Job]
    ) -> Outcome:
        """Publish what recording this file's jobs did (`results` and `rejected_rows` hold them, in order)."""
        queued = duplicates = rejected = 0
        source = display_name(path.name)
        for entry in entries:
            if entry.spec is None:
                row = next(rejected_rows)
                rejected += 1
                log.warning("rejected %s: %s", source, row.error_message, extra=job_extra(row))
                document = status_document(row)
                self._write_status(row, document)
                continue
            result = next(results)
            if result.created:
                queued += 1
            else:
                duplicates += 1
            job = announce(result, self.store, self._publisher)
            self.on_enqueued(job.model)
        return Outcome(queued=queued, duplicates=duplicates, rejected=rejected)

    def _write_status(self, job: Job, document: dict[str, Any]) -> None:
        # The queue is the truth: a status file that cannot be written now (a full disk) is owed and
        # written when it can; it must not keep the job file in the inbox, to fail again each scan.
        try:
            self.outbox.write_status(job.name, document)
        except OSError:
            self._publisher.owe(job.id)
        except TtsdError:
            log.exception("could not write the status file of %s", job.name, extra=job_extra(job))

    def _move(self, path: Path, folder: str, entries: list[ParsedEntry]) -> None:
        destination = unique_destination(self.inbox / folder, path.name)
        try:
            path.rename(destination)
        except FileNotFoundError:
            return
        except OSError:
            log.exception("could not move %s to %s/", display_name(path.name), folder)
            with contextlib.suppress(OSError):
                path.unlink()
            return
        if folder == REJECTED_DIR:
            reasons = "\n".join(
                ("" if entry.line is None else f"line {entry.line}: ")
                + f"{entry.rejection.code}: {entry.rejection.message}"
                for entry in entries
                if entry.rejection is not None
            )
            try:
                write_new_file(
                    destination.with_name(destination.name + REASON_SUFFIX), (reasons + "\n").encode("utf-8", "replace")
                )
            except OSError:
                log.exception("could not write the reason file of %s", display_name(path.name))
