"""The decode lane of a worker: a thread that decodes and keeps generated calls while the next ones
generate (the codec and the disk work then use the other core)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ttsd.joblog import job_extra
from ttsd.synth.rendering import Generated

log = logging.getLogger(__name__)

DECODE_SLICE: Final = 4
"""Rows decoded at a time: between slices a more urgent call that just generated goes first."""
WAITING_ROWS: Final = 64
"""Rows generated and not yet decoded before generation waits: two calls of the largest automatic
batch, or as many rows of a running batch (which hands over one row per call)."""


class CallKeeper(Protocol):
    """What the lane asks of its worker."""

    def keep_rows(self, generated: Generated, rows: Sequence[int]) -> None: ...

    def call_kept(self, generated: Generated) -> None: ...


class DecodeLane:
    """A thread that decodes and keeps generated calls while the next ones generate, a few rows at
    a time and the most urgent call first (higher priority, then less audio left to decode): a short
    job's call generated while a long call decodes is kept at the next slice, not after the whole
    long call. At most `WAITING_ROWS` rows wait, so generation never runs far ahead of keeping."""

    def __init__(self, worker: CallKeeper) -> None:
        self._worker = worker
        self._calls: list[_Decoding] = []
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="keeping", daemon=True)
        self._thread.start()

    def put(self, generated: Generated) -> None:
        """Queue a generated call (waits while `WAITING_ROWS` rows are queued)."""
        with self._changed:
            self._changed.wait_for(lambda: sum(len(c.rows) for c in self._calls) < WAITING_ROWS)
            self._calls.append(_Decoding(generated, list(range(len(generated.units)))))
            self._changed.notify_all()

    def close(self) -> None:
        """Keep what is queued, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._calls) or self._closing)
                if not self._calls:
                    return
                current = min(self._calls, key=_Decoding.urgency)
                rows, current.rows = current.rows[:DECODE_SLICE], current.rows[DECODE_SLICE:]
            try:
                self._worker.keep_rows(current.generated, rows)
            except Exception:
                log.exception("could not keep %d chunk(s)", len(rows), extra=job_extra(current.generated.units[0].job))
            if current.rows:
                continue
            with self._changed:
                self._calls.remove(current)
                self._changed.notify_all()
            self._worker.call_kept(current.generated)


@dataclass
class _Decoding:
    """A generated call and its rows not yet decoded."""

    generated: Generated
    rows: list[int]

    def urgency(self) -> tuple[int, int]:
        units, frames = self.generated.units, self.generated.takes.frames
        return (-max(units[i].job.priority for i in self.rows), sum(frames[i] for i in self.rows))
