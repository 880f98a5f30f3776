"""What a failure inside a worker means for its job, and waiting for disk space.

Every failure is an EngineError by the time it reaches the queue: ttsd's own refusals repeat (a
permanent failure), a full disk is the machine's problem and not the job's (the job waits for space,
its try uncounted), anything else may pass (a transient failure, retried with backoff).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ttsd.errors import EngineError, PermanentEngineError, TransientEngineError, TtsdError

log = logging.getLogger(__name__)

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SPACE_CHECK_S = 2.0
MAX_SPACE_WAIT_S = 300.0
SPACE_MARGIN_BYTES = 64 * 1024


class OutOfSpace(TransientEngineError):
    """No space left on a disk ttsd writes to: the job waits for space; its try does not count."""

    code = "no_space"


def failure_of(exc: BaseException, doing: str) -> EngineError:
    """The EngineError a failure while `doing` something for a job amounts to."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, TtsdError):
        return PermanentEngineError(exc.message, code=exc.code)
    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return OutOfSpace(f"no space left while {doing}; the job waits for space ({detail})")
    code = "delivery_failed" if doing == "delivering the audio" else "worker_error"
    return TransientEngineError(f"{doing} failed: {detail}", code=code)


class SpaceWait:
    """After a write failed for lack of space, hold off new work until one of `folders` has more room
    than it had then (checked every SPACE_CHECK_S), or MAX_SPACE_WAIT_S passed: claiming work that
    cannot be stored would only synthesize it for nothing."""

    def __init__(self, folders: Sequence[Path], clock: Callable[[], float] = time.monotonic) -> None:
        self._folders = tuple(folders)
        self._clock = clock
        self._free_then: tuple[int, ...] | None = None
        self._since = self._next_check = 0.0

    def out_of_space(self) -> None:
        """A write just failed with no space left: start (or keep) waiting."""
        if self._free_then is None:
            self._free_then = self._free()
            self._since = self._clock()
            log.warning("no space left to store work (free bytes: %s); waiting for space", self._describe())
        self._next_check = self._clock() + SPACE_CHECK_S

    def ready(self) -> bool:
        """Whether new work may be claimed (no space problem, or space came back)."""
        if self._free_then is None:
            return True
        now = self._clock()
        if now - self._since < MAX_SPACE_WAIT_S:
            if now < self._next_check:
                return False
            free = self._free()
            if not any(
                after > before + SPACE_MARGIN_BYTES for before, after in zip(self._free_then, free, strict=True)
            ):
                self._next_check = now + SPACE_CHECK_S
                return False
        log.info("trying to store work again (free bytes: %s)", self._describe())
        self._free_then = None
        return True

    def _free(self) -> tuple[int, ...]:
        return tuple(_free_bytes(folder) for folder in self._folders)

    def _describe(self) -> str:
        return ", ".join(f"{folder} {free}" for folder, free in zip(self._folders, self._free(), strict=True))


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0
