"""The automatic batch size (`TTS_MAX_BATCH=auto`): how many chunks one generate call takes.

At preload the worker times short calls of B copies of one text at B = 1, 2, 4, ... and keeps the
smallest B that comes close to the best throughput, bounded by the memory the longest chunk's rows
would need. Bigger is not free: a call's latency grows with B, and a failing batch is spoken again
one chunk at a time, so the smallest B near the knee is the one to keep.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from ttsd.errors import EngineError
from ttsd.synth.engine.base import Engine, SynthesisRequest
from ttsd.synth.pacing import frame_budget

MAX_AUTO_BATCH: Final = 32
"""The largest batch `auto` picks. Per-call latency grows with B, and a failing batch is re-rendered
chunk by chunk, so a failure costs more the bigger B is. The real 0.6B's knee on CPU is about 16-32
(FINDINGS Q4); a GPU keeps gaining past 32, but only by making every call, and every failure, longer."""

DEFAULT_TOLERANCE: Final = 0.9
"""Keep the smallest B within 10 % of the best: the loose end of the issue's 5-10 % band, on purpose.
Short probe calls stay noisy even as the best of two (FINDINGS Q3: repeats on a shared host differ
by far more than 5 %), so a tighter tolerance lets noise push the choice up a doubling; and near the
top of the curve a doubling buys about 10 % (tiny: B=16 is 0.89 of B=32) while it doubles the
call's latency, its memory and what a failed batch costs to speak again."""

FALLBACK_BATCH: Final = 4
"""When the probe fails: ttsd's former static default (TTS_MAX_BATCH=4), within the memory bound."""

MEMORY_SHARE: Final = 0.7
"""The share of free memory a batch's rows may fill: the rest is headroom for the codec, the
allocator's fragmentation and whatever else the device serves."""

LONGEST_CHUNK_CHARS: Final = 600
"""TTS_MAX_TEXT_LENGTH's default, the longest chunk the worker speaks unless configured otherwise."""

PROMPT_OVERHEAD_TOKENS: Final = 32
"""The chat template's tokens around a text (role markers, the speaker, the language)."""

PROBE_TEXT: Final = "Hello there."

_STOP_AFTER_FALLS: Final = 2
"""Stop probing after this many successive sizes below the best: one may be noise, two is a trend."""

_MIN_SECONDS: Final = 1e-6
"""A floor for a timed call, so a clock too coarse to see it gives a large rate, not a division by 0."""

_CJK_CHAR: Final = "\u4e00"
"""A CJK ideograph: the script with the most speech per character, for the worst-case chunk."""


@dataclass(frozen=True)
class BatchChoice:
    """The batch size chosen, and why: what status, doctor and the log show."""

    size: int
    limit: int
    """The upper bound the choice was made under (the caller's, lowered by memory)."""
    reason: str
    rates: dict[int, float] = field(default_factory=dict)
    """Rows per second per probed B (empty when nothing could be measured)."""
    room: int = 0
    """Rows memory allows at most (0: no more than `limit`): a running batch may grow up to this for
    jobs that have no row in it yet."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (rates keyed by B as text, rounded to what a person reads)."""
        return {
            "size": self.size,
            "limit": self.limit,
            "reason": self.reason,
            "rates": {str(size): round(rate, 3) for size, rate in sorted(self.rates.items())},
            "room": self.room,
        }


# --- the choice from measured throughput -------------------------------------------------------


def probe_sizes(limit: int) -> Iterator[int]:
    """1, 2, 4, ... below `limit`, then `limit` itself (so a bound like 12 is tried too)."""
    size = 1
    while size < limit:
        yield size
        size *= 2
    yield max(1, limit)


def choose_batch(measure: Callable[[int], float], limit: int, tolerance: float = DEFAULT_TOLERANCE) -> BatchChoice:
    """Measure rows/s with `measure(B)` at B = 1, 2, 4, ... up to `limit`, stopping once throughput
    has fallen below the best at two successive sizes, and choose the smallest B whose rate is at
    least `tolerance` x the best."""
    if not 0.0 < tolerance <= 1.0:
        raise ValueError(f"tolerance must be in (0, 1], got {tolerance}")
    rates: dict[int, float] = {}
    falls = 0
    for size in probe_sizes(limit):
        rate = _finite(measure(size))
        falls = falls + 1 if rates and rate < max(rates.values()) else 0
        rates[size] = rate
        if falls >= _STOP_AFTER_FALLS:
            break
    best = max(rates, key=lambda size: (rates[size], -size))
    chosen = min(size for size, rate in rates.items() if rate >= tolerance * rates[best])
    return BatchChoice(
        size=chosen, limit=max(1, limit), reason=_measured_reason(chosen, best, rates, tolerance), rates=rates
    )


def _finite(rate: float) -> float:
    """A rate that compares sanely: NaN or a negative reading counts as nothing done."""
    return 0.0 if math.isnan(rate) or rate < 0.0 else rate


def _measured_reason(chosen: int, best: int, rates: Mapping[int, float], tolerance: float) -> str:
    if chosen == best:
        return f"measured: {chosen} rows is the best ({rates[best]:.1f} rows/s)"
    within = round((1.0 - tolerance) * 100)
    return f"measured: {chosen} rows within {within}% of the best ({best} at {rates[best]:.1f} rows/s)"


# --- the memory bound ----------------------------------------------------------------------------


def memory_limit(bytes_per_row_frame: int | None, row_frames: int, free_bytes: int | None, cap: int) -> int:
    """The largest B whose rows, `row_frames` tokens long at `bytes_per_row_frame` each, fit in
    `MEMORY_SHARE` of `free_bytes`; between 1 and `cap`, and `cap` when any input is unknown."""
    cap = max(1, cap)
    if bytes_per_row_frame is None or free_bytes is None or bytes_per_row_frame <= 0 or row_frames <= 0:
        return cap
    fitting = int(max(0, free_bytes) * MEMORY_SHARE) // (bytes_per_row_frame * row_frames)
    return max(1, min(cap, fitting))


def longest_row_frames(max_chars: int = LONGEST_CHUNK_CHARS, max_frames: int = 2048) -> int:
    """The sequence one row of the longest chunk may hold: its prompt (at most a token per character,
    plus the template) and the call's frame budget for the script with the most speech per character,
    within the model's `max_frames`."""
    return max_chars + PROMPT_OVERHEAD_TOKENS + frame_budget([_CJK_CHAR * max_chars], max_frames)


def free_memory(device: str) -> int | None:
    """Free bytes where a batch on `device` lives (cuda, mps, cpu); None when it cannot be told."""
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        return _cuda_free(device)
    if kind == "mps":
        return _mps_free()
    if kind == "cpu":
        return _ram_free()
    return None


def _cuda_free(device: str) -> int | None:
    try:
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
    except (ImportError, RuntimeError, AssertionError, ValueError):  # no CUDA build, no device, bad index
        return None
    return int(free)


def _mps_free() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    mps: Any = getattr(torch, "mps", None)
    # Both arrived in torch 2.x releases; an older torch cannot tell, and then the cap decides.
    recommended = getattr(mps, "recommended_max_memory", None)
    allocated = getattr(mps, "driver_allocated_memory", None)
    if recommended is None or allocated is None:
        return None
    try:
        return max(0, int(recommended()) - int(allocated()))
    except RuntimeError:
        return None


def _ram_free() -> int | None:
    if sys.platform.startswith("linux"):
        return _meminfo_available(Path("/proc/meminfo"))
    return _sysconf_available()


def _meminfo_available(path: Path) -> int | None:
    """MemAvailable (free plus reclaimable cache), which MemFree alone would badly understate."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == "MemAvailable":
            parts = value.split()
            return int(parts[0]) * 1024 if parts and parts[0].isdigit() else None
    return None


def _sysconf_available() -> int | None:
    """Available pages times the page size where the platform tells (macOS has no available-pages
    name; total RAM would overstate what is free, so it stays unknown and the cap decides)."""
    names = getattr(os, "sysconf_names", {})
    if "SC_AVPHYS_PAGES" not in names or "SC_PAGE_SIZE" not in names:
        return None
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        return None


# --- the probe -----------------------------------------------------------------------------------


ROOM_FACTOR = 2
"""How far beyond the probe's limit memory is asked about, for a running batch's newcomers."""


def probe_batch(
    engine: Engine,
    limit: int,
    frames: int = 3,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    request: SynthesisRequest | None = None,
    generation: Mapping[str, Any] | None = None,
    longest_text_frames: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    free_bytes: Callable[[str], int | None] = free_memory,
) -> BatchChoice:
    """Choose the batch size for `engine` by timing `frames`-frame calls of B copies of `request`
    (default: a short English text in the model's default voice; the caller passes one with a valid
    speaker), B up to `limit` lowered by what memory allows for rows `longest_text_frames` long
    (default: the longest chunk's, see `longest_row_frames`). Never raises: an EngineError during the
    probe falls back to `FALLBACK_BATCH` (within the bounds), with the reason saying why."""
    row_frames = (
        longest_text_frames if longest_text_frames is not None else longest_row_frames(max_frames=engine.max_frames)
    )
    room = memory_limit(engine.bytes_per_row_frame(), row_frames, free_bytes(engine.plan.device), ROOM_FACTOR * limit)
    bound = min(room, limit)
    probe = request if request is not None else SynthesisRequest(text=PROBE_TEXT)
    timer = _Timer(engine, probe, dict(generation or {}), frames, clock)
    try:
        timer.warm_up()
        choice = choose_batch(timer.rate, bound, tolerance)
    except EngineError as exc:
        choice = _fallback(exc, timer, bound)
    return replace(choice, reason=choice.reason + _bound_note(bound, limit), room=room)


@dataclass
class _Timer:
    """Times calls of B copies of one request; remembers what it measured, for a fallback."""

    engine: Engine
    request: SynthesisRequest
    generation: dict[str, Any]
    frames: int
    clock: Callable[[], float]
    rates: dict[int, float] = field(default_factory=dict)
    trying: int = 1

    def warm_up(self) -> None:
        """One untimed call: the first pays for lazy allocations, kernel choice and caches."""
        self._seconds(1)

    def rate(self, size: int) -> float:
        """Rows per second at B = `size`, from the best of two calls so a noisy neighbour does not
        decide."""
        self.trying = size
        seconds = min(self._seconds(size), self._seconds(size))
        rate = size / max(seconds, _MIN_SECONDS)
        self.rates[size] = rate
        return rate

    def _seconds(self, size: int) -> float:
        started = self.clock()
        self.engine.synthesize([self.request] * size, self.generation, None, self.frames)
        return self.clock() - started


def _fallback(exc: EngineError, timer: _Timer, bound: int) -> BatchChoice:
    """`FALLBACK_BATCH` within the memory bound and below the size that just failed."""
    below_failure = max((size for size in timer.rates if size < timer.trying), default=FALLBACK_BATCH)
    size = max(1, min(FALLBACK_BATCH, bound, below_failure))
    reason = f"probe failed at B={timer.trying} ({exc.code}: {exc.message}); using {size}"
    return BatchChoice(size=size, limit=bound, reason=reason, rates=dict(timer.rates))


def _bound_note(bound: int, limit: int) -> str:
    return f"; memory allows at most {bound}" if bound < limit else ""
