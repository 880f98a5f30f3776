"""Which generate calls of a worker are still in progress, for crash attribution.

A worker says, before each call (or each admission into its running batch), which jobs it holds,
and once every row of it is kept (or failed, or dropped) that it is settled. If the worker dies, the
jobs of the calls not settled are the ones charged an attempt (`ttsd.synth.supervisor`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ttsd.synth import wire

Report = Callable[[str, dict[str, Any]], None]
"""Where a worker says what it does (its supervisor, with the events of `ttsd.synth.wire`)."""


class CallLedger:
    """Open calls and their rows not yet settled; thread-safe (rows are kept in a second thread)."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._open: dict[int, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def started(self, job_ids: Sequence[str]) -> int:
        """Number a new call of these jobs' rows (one per entry) and say which jobs it holds."""
        with self._lock:
            self._count += 1
            call = self._count
            self._open[call] = len(job_ids)
        self._report(wire.GENERATING, {"call": call, "jobs": sorted(set(job_ids))})
        return call

    def settle(self, call: int, rows: int = 1) -> None:
        """Rows of a call are kept, failed or gone; once all are, the call is reported kept."""
        with self._lock:
            left = self._open.get(call, 0) - rows
            if left > 0:
                self._open[call] = left
                return
            self._open.pop(call, None)
        self._report(wire.KEPT, {"call": call})
