"""Component tests run ttsd's threads in-process: each test must stop every thread it starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

# A thread told to stop may need a moment to notice (a poll interval, a join in progress); a thread
# still alive after this is one nobody stopped.
THREAD_STOP_GRACE_S = 5.0


def _describe(thread: threading.Thread) -> str:
    kind = "daemon" if thread.daemon else "non-daemon"
    target = getattr(thread, "_target", None)
    where = f", target {getattr(target, '__qualname__', target)!s}" if target is not None else ""
    return f"{thread.name} ({kind}{where})"


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread running after it ends (watchdog's `_no_thread_leaks`).

    Threads alive before the test (pytest's own, a session fixture's) are not its business. A
    leaked thread keeps working on a test's deleted folders and closed databases, and its errors
    then land in whichever test runs next; a leaked non-daemon thread also keeps the run from exiting.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_STOP_GRACE_S
    for thread in _new_threads(before):
        # A thread Python did not start (a _DummyThread) cannot be joined; it is reported below.
        if not isinstance(thread, threading._DummyThread):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = _new_threads(before)
    assert not alive, f"the test left {len(alive)} thread(s) running: {', '.join(map(_describe, alive))}"


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]
