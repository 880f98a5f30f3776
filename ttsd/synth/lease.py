"""Keeping a lease alive: while a worker holds claimed jobs, a background thread renews their
heartbeat so stall detection does not take them back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ttsd.jobqueue.protocols import WorkerQueue

log = logging.getLogger(__name__)


class LeaseHeartbeat:
    """Renews a lease in the background while a batch is synthesized."""

    def __init__(
        self, store: WorkerQueue, token: str, interval_s: float, on_beat: Callable[[], None] = lambda: None
    ) -> None:
        self._store = store
        self._token = token
        self._interval_s = interval_s
        self._on_beat = on_beat
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop_event.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                self._store.heartbeat(self._token)
            except Exception:
                log.exception("heartbeat failed")
            self._on_beat()
