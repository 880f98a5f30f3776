"""Whether intake can list its inbox, said once per episode rather than at every scan.

A scan that fails (macOS's privacy protection refusing the folder, a permission, an inbox moved
away) would otherwise be a traceback every scan interval while no job is ever taken. The first
failure of an episode is logged as one line, with what to grant on macOS, and recorded in the state
directory, where `ttsd status` and `ttsd doctor` read it; the first scan that succeeds again logs
that and removes the record, and a starting daemon removes what an earlier one left.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ttsd.fsutil import atomic_write
from ttsd.privacy import folder_problem

log = logging.getLogger(__name__)

RECORD_NAME = "inbox-problem.json"


class InboxAccess:
    """Tracks one inbox's listing episodes; `record` is the file that tells the CLI (None: no file)."""

    def __init__(self, inbox: Path, record: Path | None) -> None:
        self.inbox = inbox
        self.record = record
        self._failing: int | None = None  # the errno of the episode under way

    def clear(self) -> None:
        """Remove the record (a starting daemon: what an earlier one left is no longer true)."""
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.unlink(missing_ok=True)

    def failed(self, exc: OSError) -> None:
        """A scan could not list the inbox: log and record it, unless this episode already did."""
        if self._failing == exc.errno:
            return
        self._failing = exc.errno
        message = folder_problem("inbox", self.inbox, exc)
        log.error("intake %s; no job is taken until it can list the inbox again", message)
        if self.record is None:
            return
        document = {"since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "message": message}
        try:
            atomic_write(self.record, json.dumps(document).encode("utf-8"), mode=0o600, durable=False)
        except OSError as problem:
            log.warning("could not record the inbox problem in %s: %s", self.record, problem.strerror)

    def succeeded(self) -> None:
        """A scan listed the inbox: end the episode, if one was under way."""
        if self._failing is None:
            return
        self._failing = None
        log.info("intake can list the inbox %s again", self.inbox)
        self.clear()


def recorded_inbox_problem(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon of `state_dir` recorded about its inbox (`since`, `message`), or None."""
    try:
        document = json.loads((state_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and "message" in document else None
