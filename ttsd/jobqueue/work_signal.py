"""Wake-ups from a shared queue: PostgreSQL's LISTEN/NOTIFY tells a host that a model's queue got
work (a job enqueued, retried, or given back by another host), so its idle workers claim at once
instead of polling the database every second.

Notifications are hints, not the truth: one sent while the connection was down is lost. So the
listener reconnects with backoff, and after every (re)connection it reports "anything may have
changed" (`None`); the daemon's slow poll (`TTS_DATABASE_POLL_S`) covers the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import psycopg

from ttsd.jobqueue.postgres import WORK_CHANNEL, connect_listener

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
WAIT_S: Final = 1.0
"""How long one wait for notifications lasts: the stop event is looked at this often."""


class WorkListener(threading.Thread):
    """LISTENs on its own connection until `stop_event` is set; `on_work(model)` for each
    notification, `on_work(None)` after each (re)connection."""

    def __init__(self, url: str, on_work: Callable[[str | None], None], stop_event: threading.Event) -> None:
        super().__init__(name="work-listener", daemon=True)
        self._url = url
        self._on_work = on_work
        self._stop_event = stop_event
        self.connected = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self._stop_event.is_set():
            try:
                with connect_listener(self._url) as connection:
                    connection.execute(f"LISTEN {WORK_CHANNEL}")
                    failures = 0
                    self.connected.set()
                    self._on_work(None)
                    self._follow(connection)
            except psycopg.Error as exc:
                self.connected.clear()
                pause = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                failures += 1
                log.warning("work notifications lost (%s); listening again in %.1fs", type(exc).__name__, pause)
                self._stop_event.wait(pause)
        self.connected.clear()

    def _follow(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stop_event.is_set():
            for notice in connection.notifies(timeout=WAIT_S):
                self._on_work(notice.payload or None)
