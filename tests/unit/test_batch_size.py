"""The automatic batch size (ttsd/synth/batch_size.py): the choice from a known cost curve, the early
stop past the peak, the memory bound, where free memory is read, and the probe's glue and fallback.
Time is a fake clock the fake engine advances, so nothing sleeps and every figure is exact."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ttsd.catalog import ModelKind
from ttsd.errors import EngineError, TransientEngineError
from ttsd.synth import batch_size
from ttsd.synth.batch_size import (
    FALLBACK_BATCH,
    MAX_AUTO_BATCH,
    BatchChoice,
    choose_batch,
    free_memory,
    longest_row_frames,
    memory_limit,
    probe_batch,
    probe_sizes,
)
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest, Takes, Voices


class FakeClock:
    """A clock that moves only when the fake engine spends time."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def knee_cost(size: int, fixed: float = 1.0, per_row: float = 0.1, knee: int = 16) -> float:
    """Seconds per call: a fixed part plus a part per row up to the knee, then each extra row costs
    five times as much (the device is saturated)."""
    return fixed + per_row * min(size, knee) + 5 * per_row * max(0, size - knee)


@dataclass(frozen=True)
class Call:
    rows: int
    texts: tuple[str, ...]
    generation: Mapping[str, Any]
    seed: int | None
    max_frames: int | None


@dataclass
class TimedEngine:
    """The Engine protocol with a known cost per call, paid on `clock`; `fail_at` raises from the
    first call of that many rows on."""

    clock: FakeClock
    cost: Callable[[int], float] = knee_cost
    fail_at: int | None = None
    row_bytes: int | None = None
    device: str = "cpu"
    name: str = "fake"
    kind: ModelKind = "custom_voice"
    sample_rate: int = 24_000
    max_frames: int = 2048
    stops_by_itself: bool = True
    calls: list[Call] = field(default_factory=list)
    plan: DevicePlan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = DevicePlan(self.device, "float32", "sdpa")

    def generate(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> Takes:
        raise AssertionError("the probe times whole calls through synthesize")

    def decode(self, takes: Takes) -> list[np.ndarray]:
        raise AssertionError("the probe times whole calls through synthesize")

    def synthesize(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> list[np.ndarray]:
        texts = tuple(request.text for request in requests)
        self.calls.append(Call(len(requests), texts, dict(generation), seed, max_frames))
        if self.fail_at is not None and len(requests) >= self.fail_at:
            raise TransientEngineError("out of memory on the fake device")
        self.clock.now += self.cost(len(requests))
        return [np.zeros(8, dtype=np.float32) for _ in requests]

    def bytes_per_row_frame(self) -> int | None:
        return self.row_bytes

    def voices(self) -> Voices:
        return Voices(speakers=("vivian",), languages=("auto",))

    def close(self) -> None:
        pass


def table(rates: Mapping[int, float]) -> tuple[Callable[[int], float], list[int]]:
    """A measure reading rows/s from `rates`, and the list of sizes it was asked for."""
    asked: list[int] = []

    def measure(size: int) -> float:
        asked.append(size)
        return rates[size]

    return measure, asked


def no_memory_info(device: str) -> int | None:
    return None


def probe(engine: TimedEngine, limit: int = MAX_AUTO_BATCH, **options: Any) -> BatchChoice:
    options.setdefault("free_bytes", no_memory_info)
    return probe_batch(engine, limit, clock=engine.clock, **options)


# --- choose_batch --------------------------------------------------------------------------------


def test_the_knee_of_a_known_curve_is_chosen() -> None:
    engine = TimedEngine(FakeClock())
    choice = probe(engine)
    # Rows/s = B / (1 + 0.1 B) up to 16 (16 / 2.6 = 6.15, the best), then falling: 32 / 9.2 = 3.5.
    assert choice.size == 16
    assert choice.rates[16] == pytest.approx(16 / 2.6)
    assert choice.reason == "measured: 16 rows is the best (6.2 rows/s)"


def test_a_looser_tolerance_takes_the_smaller_batch_and_says_so() -> None:
    engine = TimedEngine(FakeClock())
    choice = probe(engine, tolerance=0.7)
    # 8 / 1.8 = 4.44 is 72 % of the best 6.15; 4 / 1.4 = 2.86 is 46 %.
    assert choice.size == 8
    assert choice.reason == "measured: 8 rows within 30% of the best (16 at 6.2 rows/s)"


def test_the_tolerance_edge_is_inclusive() -> None:
    rates = {1: 1.0, 2: 2.0, 4: 4.0, 8: 7.5, 16: 10.0, 32: 9.0, 64: 8.0}
    assert choose_batch(table(rates)[0], 64, tolerance=0.75).size == 8
    assert choose_batch(table(rates)[0], 64, tolerance=0.76).size == 16
    assert choose_batch(table(rates)[0], 64, tolerance=1.0).size == 16


def test_a_flat_top_picks_its_smallest_size() -> None:
    choice = choose_batch(table({1: 1.0, 2: 5.0, 4: 5.0, 8: 5.0})[0], 8)
    assert choice.size == 2
    assert choice.reason == "measured: 2 rows is the best (5.0 rows/s)"


@pytest.mark.parametrize("tolerance", [0.0, -0.5, 1.01, math.nan])
def test_a_tolerance_outside_0_to_1_is_refused(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        choose_batch(lambda size: 1.0, 8, tolerance)


def test_probing_stops_after_two_sizes_below_the_peak() -> None:
    measure, asked = table({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 7.0, 32: 6.0, 64: 9.0})
    choice = choose_batch(measure, 64)
    assert asked == [1, 2, 4, 8, 16, 32]
    assert choice.size == 8
    assert set(choice.rates) == {1, 2, 4, 8, 16, 32}


def test_one_dip_below_the_peak_does_not_stop_the_probe() -> None:
    measure, asked = table({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 7.0, 32: 12.0, 64: 11.0})
    assert choose_batch(measure, 64).size == 32
    assert asked == [1, 2, 4, 8, 16, 32, 64]


def test_the_engine_is_not_timed_past_the_peak() -> None:
    engine = TimedEngine(FakeClock(), cost=lambda size: knee_cost(size, knee=4))
    choice = probe(engine, limit=64)
    assert choice.size == 4
    # Warm-up, then two timed calls per size: 8 and 16 fall below 4's rate, so 32 and 64 never run.
    assert [call.rows for call in engine.calls] == [1, 1, 1, 2, 2, 4, 4, 8, 8, 16, 16]


@pytest.mark.parametrize(
    ("limit", "sizes"),
    [(12, [1, 2, 4, 8, 12]), (16, [1, 2, 4, 8, 16]), (3, [1, 2, 3]), (1, [1]), (0, [1])],
)
def test_the_sizes_probed_end_at_the_limit_itself(limit: int, sizes: list[int]) -> None:
    assert list(probe_sizes(limit)) == sizes


def test_a_limit_that_is_not_a_power_of_two_is_measured() -> None:
    measure, asked = table({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 12: 12.0})
    choice = choose_batch(measure, 12)
    assert asked == [1, 2, 4, 8, 12]
    assert (choice.size, choice.limit) == (12, 12)


def test_an_unreadable_rate_counts_as_nothing_done() -> None:
    choice = choose_batch(table({1: 1.0, 2: math.nan, 4: -3.0, 8: 0.5})[0], 8)
    assert choice.size == 1
    assert choice.rates[2] == 0.0
    assert choice.rates[4] == 0.0


def test_as_dict_is_json_ready() -> None:
    choice = choose_batch(table({1: 1.0, 2: 1.9, 4: 3.123456})[0], 4)
    data = choice.as_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == {
        "size": 4,
        "limit": 4,
        "reason": "measured: 4 rows is the best (3.1 rows/s)",
        "rates": {"1": 1.0, "2": 1.9, "4": 3.123},
        "room": 0,
    }


# --- memory --------------------------------------------------------------------------------------


def test_memory_limit_fits_rows_in_70_percent_of_free_memory() -> None:
    # 1,000 bytes x 100 row-frames = 100 kB a row; 70 % of 10 MB holds 70 rows.
    assert memory_limit(1_000, 100, 10_000_000, cap=100) == 70
    assert memory_limit(1_000, 100, 10_000_000, cap=32) == 32
    assert memory_limit(1_000, 100, 1_000_000, cap=32) == 7
    assert memory_limit(1_000, 100, 999_999, cap=32) == 6


@pytest.mark.parametrize(
    ("row_bytes", "row_frames", "free", "cap", "expected"),
    [
        (None, 100, 10**9, 32, 32),  # the engine cannot tell its row size
        (1_000, 100, None, 32, 32),  # the device cannot tell its free memory
        (0, 100, 10**9, 32, 32),
        (1_000, 0, 10**9, 32, 32),
        (1_000, 100, 1_000, 32, 1),  # not even one row fits: still one
        (1_000, 100, 0, 32, 1),
        (1_000, 100, -5, 32, 1),
        (1_000, 100, 10**9, 0, 1),  # a cap below one is one
    ],
)
def test_memory_limit_unknowns_and_bounds(
    row_bytes: int | None, row_frames: int, free: int | None, cap: int, expected: int
) -> None:
    assert memory_limit(row_bytes, row_frames, free, cap) == expected


def test_the_longest_row_is_a_cjk_chunk_at_its_budget_plus_its_prompt() -> None:
    # 600 CJK characters expect 1,667 frames, so the budget is the model's cap.
    assert longest_row_frames(600, 2048) == 600 + batch_size.PROMPT_OVERHEAD_TOKENS + 2048
    # 20 characters: 55.6 frames expected, twice that plus the 24-frame margin.
    assert longest_row_frames(20, 2048) == 20 + batch_size.PROMPT_OVERHEAD_TOKENS + 136


def test_the_probe_is_bounded_by_memory_for_the_longest_row() -> None:
    devices: list[str] = []

    def free(device: str) -> int:
        devices.append(device)
        return 10_000_000

    engine = TimedEngine(FakeClock(), row_bytes=1_000, device="cuda:1")
    choice = probe(engine, longest_text_frames=1_000, free_bytes=free)
    # 1 MB a row, 7 MB usable: 7 rows at most, so 1, 2, 4 and 7 are timed.
    assert devices == ["cuda:1"]
    assert choice.limit == 7
    assert sorted(choice.rates) == [1, 2, 4, 7]
    assert choice.size == 7
    assert choice.reason.endswith("; memory allows at most 7")
    assert choice.room == 7, "a running batch may not grow past memory either"


def test_a_running_batch_may_grow_past_the_probes_limit_as_far_as_memory_allows() -> None:
    engine = TimedEngine(FakeClock(), row_bytes=1_000)
    roomy = probe(engine, limit=8, longest_text_frames=1_000, free_bytes=lambda device: 10**12)
    assert (roomy.limit, roomy.room) == (8, 16)
    tight = probe(engine, limit=8, longest_text_frames=1_000, free_bytes=lambda device: 12_000_000)
    assert (tight.limit, tight.room) == (8, 8)


def test_the_probe_defaults_to_the_longest_row_the_model_allows() -> None:
    engine = TimedEngine(FakeClock(), row_bytes=1, max_frames=100)
    row = longest_row_frames(max_frames=100)
    choice = probe(engine, free_bytes=lambda device: math.ceil(3 * row / 0.7) + 1)
    assert choice.limit == 3


# --- free memory, with a stand-in torch --------------------------------------------------------


def test_cuda_free_memory_is_asked_of_the_device_named(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def mem_get_info(device: str) -> tuple[int, int]:
        asked.append(device)
        return 5_000, 9_000

    fake = SimpleNamespace(device=str, cuda=SimpleNamespace(mem_get_info=mem_get_info))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert free_memory("cuda:1") == 5_000
    assert asked == ["cuda:1"]


def test_cuda_without_a_device_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def mem_get_info(device: str) -> tuple[int, int]:
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setitem(
        sys.modules, "torch", SimpleNamespace(device=str, cuda=SimpleNamespace(mem_get_info=mem_get_info))
    )
    assert free_memory("cuda") is None


def test_mps_free_memory_is_the_recommended_share_left(monkeypatch: pytest.MonkeyPatch) -> None:
    mps = SimpleNamespace(recommended_max_memory=lambda: 10_000, driver_allocated_memory=lambda: 4_000)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(mps=mps))
    assert free_memory("mps") == 6_000


def test_mps_on_an_older_torch_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(mps=SimpleNamespace()))
    assert free_memory("mps") is None


def test_cpu_free_memory_is_memavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert batch_size._meminfo_available(meminfo) == 8_000_000 * 1024
    meminfo.write_text("MemTotal:       16000000 kB\n")
    assert batch_size._meminfo_available(meminfo) is None
    assert batch_size._meminfo_available(tmp_path / "absent") is None


def test_an_unknown_device_has_unknown_free_memory() -> None:
    assert free_memory("xpu") is None


# --- the probe's calls and its fallback -----------------------------------------------------------


def test_the_probe_speaks_b_copies_of_the_request_within_the_frame_budget() -> None:
    engine = TimedEngine(FakeClock())
    request = SynthesisRequest(text="Good morning.", speaker="vivian")
    probe(engine, limit=4, frames=5, request=request, generation={"temperature": 0.5})
    assert [call.rows for call in engine.calls] == [1, 1, 1, 2, 2, 4, 4]
    assert all(call.max_frames == 5 for call in engine.calls)
    assert all(call.texts == ("Good morning.",) * call.rows for call in engine.calls)
    assert all(call.generation == {"temperature": 0.5} and call.seed is None for call in engine.calls)


def test_the_default_request_is_a_short_text_and_three_frames() -> None:
    engine = TimedEngine(FakeClock())
    probe(engine, limit=1)
    assert {(call.texts, call.max_frames) for call in engine.calls} == {(("Hello there.",), 3)}


def test_the_best_of_two_timings_decides() -> None:
    clock = FakeClock()
    slow_once = iter([0.0, 50.0])  # the first timed call of B=1 meets a noisy neighbour

    def cost(size: int) -> float:
        return 1.0 + next(slow_once, 0.0) if size == 1 else 1.0

    choice = probe(TimedEngine(clock, cost=cost), limit=1)
    assert choice.rates == {1: 1.0}


def test_an_engine_error_falls_back_below_the_failing_size() -> None:
    engine = TimedEngine(FakeClock(), fail_at=16)
    choice = probe(engine)
    assert choice.size == FALLBACK_BATCH
    assert choice.reason.startswith("probe failed at B=16 (engine_transient: out of memory on the fake device)")
    assert choice.reason.endswith(f"using {FALLBACK_BATCH}")
    assert sorted(choice.rates) == [1, 2, 4, 8]


def test_a_failure_at_two_rows_falls_back_to_one() -> None:
    choice = probe(TimedEngine(FakeClock(), fail_at=2))
    assert (choice.size, set(choice.rates)) == (1, {1})


def test_a_failing_warm_up_falls_back_within_the_memory_bound() -> None:
    engine = TimedEngine(FakeClock(), fail_at=1, row_bytes=1_000)
    choice = probe(engine, longest_text_frames=1_000, free_bytes=lambda device: 3_000_000)
    assert len(engine.calls) == 1
    assert (choice.size, choice.limit, choice.rates) == (2, 2, {})
    assert choice.reason == "probe failed at B=1 (engine_transient: out of memory on the fake device); using 2" + (
        "; memory allows at most 2"
    )
    assert json.loads(json.dumps(choice.as_dict()))["size"] == 2


def test_any_engine_error_is_caught() -> None:
    class Refusing(TimedEngine):
        def synthesize(
            self,
            requests: Sequence[SynthesisRequest],
            generation: Mapping[str, Any],
            seed: int | None,
            max_frames: int | None = None,
        ) -> list[np.ndarray]:
            raise EngineError("speaker unknown", code="unknown_speaker")

    choice = probe(Refusing(FakeClock()))
    assert choice.size == FALLBACK_BATCH
    assert "unknown_speaker: speaker unknown" in choice.reason
