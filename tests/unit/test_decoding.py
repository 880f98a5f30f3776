"""The decode lane: calls kept a few rows at a time, the most urgent first."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

from ttsd.synth.decoding import DECODE_SLICE, DecodeLane
from ttsd.synth.engine.base import Takes
from ttsd.synth.rendering import Generated


def call(number: int, rows: int, frames: int, priority: int = 0) -> Generated:
    units = [cast(Any, SimpleNamespace(job=SimpleNamespace(priority=priority, id=f"j{number}"))) for _ in range(rows)]
    takes = Takes(rows=tuple(range(rows)), frames=(frames,) * rows, capped=(False,) * rows)
    return Generated(units=units, takes=takes, seconds=1.0, number=number)


class Recorder:
    """Records what the lane keeps; holds the first slice until told to go on."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, list[int]]] = []
        self.finished: list[int] = []
        self.first_slice = threading.Event()
        self.go_on = threading.Event()

    def keep_rows(self, generated: Generated, rows: Sequence[int]) -> None:
        self.kept.append((generated.number, list(rows)))
        if len(self.kept) == 1:
            self.first_slice.set()
            assert self.go_on.wait(timeout=10)

    def call_kept(self, generated: Generated) -> None:
        self.finished.append(generated.number)


def test_a_short_call_is_kept_between_the_slices_of_a_long_one() -> None:
    recorder = Recorder()
    lane = DecodeLane(recorder)
    lane.put(call(1, rows=2 * DECODE_SLICE, frames=500))
    assert recorder.first_slice.wait(timeout=10)
    lane.put(call(2, rows=1, frames=6))
    recorder.go_on.set()
    lane.close()
    assert recorder.kept == [(1, [0, 1, 2, 3]), (2, [0]), (1, [4, 5, 6, 7])]
    assert recorder.finished == [2, 1]


def test_priority_goes_before_length() -> None:
    recorder = Recorder()
    lane = DecodeLane(recorder)
    lane.put(call(1, rows=2 * DECODE_SLICE, frames=6))
    assert recorder.first_slice.wait(timeout=10)
    lane.put(call(2, rows=1, frames=400, priority=5))
    recorder.go_on.set()
    lane.close()
    assert [number for number, _rows in recorder.kept] == [1, 2, 1]


def test_close_keeps_everything_queued() -> None:
    recorder = Recorder()
    recorder.go_on.set()
    lane = DecodeLane(recorder)
    for number in range(1, 4):
        lane.put(call(number, rows=1, frames=10))
    lane.close()
    assert sorted(recorder.finished) == [1, 2, 3]
