"""Component tests run ttsd's threads in-process: each test must stop every thread it starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ttsd.synth.engine.qwen import QwenEngine

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


@pytest.fixture(scope="session")
def real_width_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A custom_voice checkpoint at the published Qwen3-TTS-12Hz-0.6B widths (random weights, tiny
    tokenizers and codec), built once per session that asks for it: about 10 s and 1.2 GB.

    Deleted when the session ends: pytest keeps the last three runs' temporary folders, and 1.2 GB
    apiece would pile up.
    """
    import shutil

    from ttsd.synth.engine.tiny import ensure_tiny_checkpoint

    root = tmp_path_factory.mktemp("real-width")
    try:
        yield ensure_tiny_checkpoint(root / "tiny-0.6b", "custom_voice", widths="0.6b")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def real_width_engine(real_width_checkpoint: Path) -> Iterator[QwenEngine]:
    """`real_width_checkpoint` loaded by ttsd's engine in float32 on the CPU (2.4 GB of memory, about
    4 s), rows never ended by the engine: every row runs to its call's frame budget."""
    from ttsd.synth.engine.base import DevicePlan
    from ttsd.synth.engine.qwen import QwenEngine

    engine = QwenEngine.load(
        "tiny-0.6b", "custom_voice", real_width_checkpoint, DevicePlan("cpu", "float32", "sdpa"), "never"
    )
    try:
        yield engine
    finally:
        engine.close()
