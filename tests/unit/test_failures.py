"""What a failure inside a worker means for its job, and waiting for disk space (ttsd/synth/failures.py)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import ttsd.synth.failures as failures_module
from tests.support.fakes import FakeClock
from ttsd.errors import EngineError, JobRejected, PermanentEngineError, TransientEngineError
from ttsd.synth.failures import MAX_SPACE_WAIT_S, SPACE_CHECK_S, SPACE_MARGIN_BYTES, OutOfSpace, SpaceWait, failure_of


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_out_of_space(number: int) -> None:
    failure = failure_of(OSError(number, "No space left on device"), "keeping a finished chunk")
    assert isinstance(failure, OutOfSpace) and failure.code == "no_space"
    assert "keeping a finished chunk" in failure.message


def test_other_failures_keep_their_meaning() -> None:
    engine = TransientEngineError("busy", code="oom")
    assert failure_of(engine, "x") is engine
    refused = failure_of(JobRejected("invalid_output", "name: bad"), "delivering the audio")
    assert isinstance(refused, PermanentEngineError) and refused.code == "invalid_output"
    broken = failure_of(OSError(errno.EIO, "Input/output error"), "delivering the audio")
    assert type(broken) is TransientEngineError and broken.code == "delivery_failed"
    odd = failure_of(KeyError("x"), "planning its chunks")
    assert isinstance(odd, EngineError) and odd.code == "worker_error" and "KeyError" in odd.message


def test_work_waits_until_a_disk_has_room_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    free = {tmp_path / "outbox": 100, tmp_path / "state": 5_000}
    monkeypatch.setattr(failures_module, "_free_bytes", lambda folder: free[folder])
    clock = FakeClock()
    space = SpaceWait(list(free), clock=clock)
    assert space.ready()
    space.out_of_space()
    assert not space.ready()
    clock.advance(SPACE_CHECK_S)
    free[tmp_path / "outbox"] += SPACE_MARGIN_BYTES // 2  # a little is not room yet
    assert not space.ready()
    clock.advance(SPACE_CHECK_S)
    free[tmp_path / "outbox"] += SPACE_MARGIN_BYTES
    assert space.ready()
    assert space.ready(), "and stays ready"


def test_work_is_tried_again_after_the_longest_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(failures_module, "_free_bytes", lambda _folder: 0)
    clock = FakeClock()
    space = SpaceWait([tmp_path], clock=clock)
    space.out_of_space()
    clock.advance(MAX_SPACE_WAIT_S - 1)
    assert not space.ready()
    clock.advance(1)
    assert space.ready()
