"""The `listen` event on its way from the supervisor to a worker: `Supervisor.listen` writes it to
the model's live workers (none: nothing; a dead pipe: no error), and `runner.listen` hands it to
`Worker.listen` without waking the worker."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

import pytest

from ttsd.config import Settings
from ttsd.jobqueue.tables import Job
from ttsd.synth import runner, wire
from ttsd.synth.supervisor import Supervisor, SupervisorHooks, _Process
from ttsd.synth.worker import Worker

ECHO_ONE_LINE = "import sys; sys.stdout.write(sys.stdin.readline())"


class NoQueue:
    def interrupt_lease(self, token: str, max_attempts: int, only: Collection[str] | None = None) -> list[Job]:
        return []

    def release_lease(self, token: str) -> list[str]:
        return []


def supervisor(tmp_path: Path) -> Supervisor:
    settings = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state_dir=tmp_path / "state")
    return Supervisor(settings, NoQueue(), SupervisorHooks())


def process(model: str, code: str) -> _Process:
    """A stand-in worker process (a Python one-liner) with the supervisor's non-blocking stdin."""
    popen = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
    )
    assert popen.stdin is not None
    os.set_blocking(popen.stdin.fileno(), False)
    return _Process(model, "token", popen, time.monotonic(), time.monotonic())


def test_supervisor_listen_without_a_worker_is_a_no_op(tmp_path: Path) -> None:
    supervisor(tmp_path).listen("tiny", "job-1")


def test_supervisor_listen_reaches_the_models_live_workers_and_survives_a_dead_one(tmp_path: Path) -> None:
    boss = supervisor(tmp_path)
    echo, dead, other = process("tiny", ECHO_ONE_LINE), process("tiny", "pass"), process("big", ECHO_ONE_LINE)
    try:
        dead.popen.wait(timeout=30)
        boss._processes.extend([echo, dead, other])
        for _ in range(3):  # a dead pipe is written to again and again without a word
            boss.listen("tiny", "job-1")
        assert echo.popen.stdout is not None
        assert wire.decode(echo.popen.stdout.readline()) == {"event": wire.LISTEN, "job": "job-1"}
    finally:
        for stand_in in (echo, dead, other):
            stand_in.popen.kill()
            out, _ = stand_in.popen.communicate(timeout=30)
    assert out == "", "another model's worker hears nothing"


class Listener:
    """What `runner.listen` touches of a worker."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.listened: list[str] = []

    def listen(self, job_id: str) -> None:
        self.listened.append(job_id)


class Orphaned(Exception):
    pass


def test_runner_passes_listen_to_the_worker_without_waking_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_now(code: int) -> Any:
        raise Orphaned(code)

    monkeypatch.setattr(os, "_exit", exit_now)  # runner.listen exits at the end of stdin
    worker = Listener()
    lines = io.StringIO(wire.encode(wire.LISTEN, {"job": "job-1"}))
    with pytest.raises(Orphaned):
        runner.listen(lines, cast("Worker", worker))
    assert worker.listened == ["job-1"]
    assert not worker.wake.is_set() and not worker.stop_event.is_set()
    with pytest.raises(Orphaned):
        runner.listen(io.StringIO(wire.encode(wire.WAKE)), cast("Worker", worker))
    assert worker.listened == ["job-1"] and worker.wake.is_set()
