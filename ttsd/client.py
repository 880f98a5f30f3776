"""The client side of the folder protocol: put a job file into an inbox, read a status file from an
outbox, wait for a job to finish. The CLI, the tests, the benchmark and any script use these, so
there is one way to drop a job safely and one way to read its outcome.

A job file appears in the inbox complete, under a name no other waiting file has: it is staged
under a hidden temp name (which intake ignores) and then hard-linked or renamed into place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsd.config import LoadedSettings
from ttsd.delivery.status import STATUS_SUFFIX, is_terminal, read_status_document
from ttsd.errors import TtsdError
from ttsd.fsutil import link_new, stage_file
from ttsd.jobqueue.tables import DaemonRecord
from ttsd.ops.lock import daemon_running

POLL_S = 0.1
MAX_NAME_ATTEMPTS = 1000


@dataclass(frozen=True)
class DaemonFolders:
    """Where the CLI drops job files and writes status files, and whether a daemon serves them now."""

    inbox: Path
    outbox: Path
    running: bool
    source: str


def daemon_folders(loaded: LoadedSettings, record: DaemonRecord | None) -> DaemonFolders:
    """Where to drop jobs and write status files: the folders of the daemon that owns the state
    directory (its latest `record`), whether or not it runs now, so a job submitted while it is down
    still lands where it will look. Folders set explicitly (flags, environment, config file) win."""
    explicit = {"inbox", "outbox"} & set(loaded.sources)
    running = daemon_running(loaded.settings)
    if record is not None and not explicit:
        return DaemonFolders(Path(record.inbox), Path(record.outbox), running, "the daemon's record")
    source = "the settings given here" if explicit else "the default settings"
    return DaemonFolders(loaded.settings.inbox, loaded.settings.outbox, running, source)


class InboxCrowded(TtsdError):
    """Every name a job file could take is held by a file still waiting in the inbox."""

    code = "inbox_crowded"


def job_bytes(job: Mapping[str, Any]) -> bytes:
    """A job object as the bytes of a `.json` job file."""
    return json.dumps(job, ensure_ascii=False).encode("utf-8")


def _candidate_names(name: str) -> Iterator[str]:
    yield f"{name}.json"
    for attempt in range(2, MAX_NAME_ATTEMPTS):
        yield f"{name}-{attempt}.json"


def submit_job(inbox: Path, name: str, job: Mapping[str, Any]) -> Path:
    """Drop `job` into `inbox` as `<name>.json` (or `<name>-2.json`, ... when that file is still
    waiting there): complete from the moment it appears, never replacing a waiting file."""
    inbox.mkdir(parents=True, exist_ok=True)
    try:
        return link_new(job_bytes(job), inbox, _candidate_names(name))
    except FileExistsError:
        raise InboxCrowded(f"too many files named {name}*.json are waiting in {inbox}") from None


@dataclass(frozen=True)
class StagedJob:
    """A job file written under a hidden temp name in the inbox, waiting to be dropped."""

    temp: Path
    target: Path

    def drop(self) -> Path:
        """Rename it into place (replacing a file of that name): the moment the daemon sees it."""
        self.temp.replace(self.target)
        return self.target


def stage_job(inbox: Path, file_name: str, job: Mapping[str, Any]) -> StagedJob:
    """Write a job file now and drop it later (to release many at once, or to time the drop)."""
    return StagedJob(stage_file(inbox, job_bytes(job), durable=False), inbox / file_name)


def status_path(outbox: Path, name: str) -> Path:
    """Where the status file of output `name` is."""
    return outbox / f"{name}{STATUS_SUFFIX}"


def read_status(outbox: Path, name: str) -> dict[str, Any] | None:
    """The status document of output `name`, or None while there is none (or it is not one of
    ttsd's: a symlink, a FIFO, something that is not a JSON object)."""
    return read_status_document(status_path(outbox, name))


def wait_for_status(
    outbox: Path,
    name: str,
    timeout: float | None = None,
    on_change: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = POLL_S,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Wait until the status file of `name` says the job finished (done, failed, cancelled or
    rejected) and return it. With `job_id`, only that job's documents count (an output name can be
    reused by another job). `on_change` sees every new document on the way. Raises TimeoutError,
    naming the last state seen, after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        document = read_status(outbox, name)
        if document is not None and job_id is not None and document.get("job_id") != job_id:
            document = None
        if document is not None and document != last:
            last = document
            if on_change is not None:
                on_change(document)
        if document is not None and is_terminal(document):
            return document
        _check_deadline(deadline, timeout, name, f" (last state: {(last or {}).get('state') or 'none'})")
        time.sleep(poll_s)


def wait_for_submitted(
    job_file: Path,
    outbox: Path,
    name: str,
    timeout: float | None = None,
    on_change: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = POLL_S,
) -> dict[str, Any]:
    """Wait for the job written to `job_file` (by `submit_job`) to finish, and return its status.

    An earlier job may have used the same output name, so its finished status file says nothing
    about this one. Intake writes a file's status before it moves the file out of the inbox: once
    `job_file` is gone, the status file names this job (or its rejection), and only that job's
    documents count from then on."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while job_file.exists():
        _check_deadline(deadline, timeout, f"{job_file.name} to be taken from the inbox", " (is the daemon running?)")
        time.sleep(poll_s)
    taken = read_status(outbox, name)
    job_id = taken.get("job_id") if taken is not None else None
    if taken is not None and job_id is None:
        return _seen(taken, on_change)  # rejected: it never became a job
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    return wait_for_status(outbox, name, remaining, on_change, poll_s, job_id=job_id)


def _seen(document: dict[str, Any], on_change: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    if on_change is not None:
        on_change(document)
    return document


def _check_deadline(deadline: float | None, timeout: float | None, what: str, detail: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"gave up waiting for {what} after {timeout:g}s{detail}")
