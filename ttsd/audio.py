"""All signal processing on waveforms (mono float32): resampling, loudness, trimming, fades,
joining chunks, and speed changes. Encoding into file formats lives in ttsd.encoding."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise

import numpy as np

PEAK_TARGET = 0.891  # -1 dBFS: headroom for lossy encoders
EDGE_FADE_S = 0.008
MAX_EDGE_SILENCE_S = 0.12
_FRAME_S = 0.01
_SILENCE_RATIO = 0.02  # a 10 ms frame quieter than 2% of the chunk's loudest frame counts as silence
SPEED_RANGE = (0.25, 4.0)  # OpenAI's speech `speed`
# One atempo blends windows only for tempos of 0.5 to 2: it refuses less, and skips samples beyond.
_ATEMPO_RANGE = (0.5, 2.0)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling (soxr), a no-op when the rates agree."""
    if from_rate == to_rate:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, from_rate, to_rate), dtype=np.float32)


def peak_normalize(audio: np.ndarray) -> np.ndarray:
    """Scale so the loudest sample sits at -1 dBFS; silence stays silence."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if peak == 0.0 else (audio * (PEAK_TARGET / peak)).astype(np.float32)


def trim_edges(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing silence down to MAX_EDGE_SILENCE_S, judged on 10 ms frames."""
    start, end = trim_bounds(audio, sample_rate)
    return audio[start:end]


def trim_bounds(audio: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """Where `trim_edges` cuts: the kept span [start, end) of `audio`."""
    frame = max(1, int(sample_rate * _FRAME_S))
    count = len(audio) // frame
    if count == 0:
        return 0, len(audio)
    rms = np.sqrt(np.mean(audio[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * _SILENCE_RATIO)
    if loud.size == 0:
        return 0, len(audio)
    keep = int(MAX_EDGE_SILENCE_S * sample_rate)
    return max(0, int(loud[0]) * frame - keep), min(len(audio), (int(loud[-1]) + 1) * frame + keep)


def fade_edges(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Short linear fades in and out, so a cut never clicks."""
    length = min(len(audio) // 2, int(EDGE_FADE_S * sample_rate))
    if length == 0:
        return audio
    faded = audio.astype(np.float32, copy=True)
    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)
    faded[:length] *= ramp
    faded[-length:] *= ramp[::-1]
    return faded


def chunk_piece(audio: np.ndarray, pause_ms: int, sample_rate: int, alone: bool) -> np.ndarray:
    """One chunk's share of the joined waveform: trimmed and faded, then its pause. A job's only
    chunk (`alone`) is exactly what the model made. A stream sends these pieces as they come, and
    their concatenation is `join_chunks`' result."""
    if alone:
        return np.asarray(audio, dtype=np.float32)
    piece = fade_edges(trim_edges(audio, sample_rate), sample_rate)
    if pause_ms <= 0:
        return piece
    return np.concatenate([piece, silence(pause_ms, sample_rate)])


def join_chunks(chunks: Sequence[np.ndarray], pauses_ms: Sequence[int], sample_rate: int) -> np.ndarray:
    """One waveform: every chunk trimmed and faded, followed by its pause (see `chunk_piece`)."""
    return join_timed(chunks, pauses_ms, sample_rate)[0]


def join_timed(
    chunks: Sequence[np.ndarray], pauses_ms: Sequence[int], sample_rate: int, lead_ms: int = 0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`join_chunks` after `lead_ms` of silence, and where each chunk's speech landed: its
    [start, end) in samples of the joined waveform, its pause after it. Subtitles and segment times
    are read off these, so they are exact, not estimated."""
    alone = joined_alone(pauses_ms, lead_ms)
    parts = [silence(lead_ms, sample_rate)] if lead_ms else []
    spans: list[tuple[int, int]] = []
    at = len(parts[0]) if parts else 0
    for audio, pause_ms in zip(chunks, pauses_ms, strict=True):
        piece = chunk_piece(audio, pause_ms, sample_rate, alone)
        gap = 0 if alone else len(silence(pause_ms, sample_rate))
        spans.append((at, at + len(piece) - gap))
        parts.append(piece)
        at += len(piece)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), spans


def joined_alone(pauses_ms: Sequence[int], lead_ms: int = 0) -> bool:
    """Whether a job's one chunk is delivered exactly as the model made it: alone, with no silence
    asked for before or after it (pause markup), which trimming its edges would distort."""
    return len(pauses_ms) == 1 and pauses_ms[0] <= 0 and lead_ms <= 0


def silence(ms: int, sample_rate: int) -> np.ndarray:
    """`ms` milliseconds of silence (rounded down to whole samples)."""
    return np.zeros(max(0, int(sample_rate * ms / 1000)), dtype=np.float32)


def change_speed(audio: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """`audio` played `speed` times as fast (within SPEED_RANGE) at the same pitch; 1.0 returns it
    untouched.

    ffmpeg's atempo filter (through PyAV) does it: a WSOLA-style time stretch, which splices
    overlapping windows of the waveform at the offsets where they match best, so a voice keeps its
    pitch and its crispness. A phase vocoder (librosa's time_stretch) smears the phases of speech's
    harmonics and makes it sound phasey and distant. Speeds beyond 0.5 to 2 chain atempo instances.
    """
    low, high = SPEED_RANGE
    if not low <= speed <= high:
        raise ValueError(f"speed must be within [{low}, {high}], got {speed}")
    if speed == 1.0 or audio.size == 0:
        return audio
    import av
    import av.filter

    graph = av.filter.Graph()
    time_base = Fraction(1, sample_rate)
    chain = [graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono", time_base=time_base)]
    chain += [graph.add("atempo", str(factor)) for factor in _atempo_factors(speed)]
    chain.append(graph.add("abuffersink"))
    for source, target in pairwise(chain):
        source.link_to(target)
    graph.configure()
    samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.time_base = time_base
    frame.pts = 0
    graph.push(frame)
    graph.push(None)
    pieces: list[np.ndarray] = []
    while True:
        try:
            pieces.append(graph.pull().to_ndarray()[0])
        except av.error.EOFError:
            break
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _atempo_factors(speed: float) -> list[float]:
    """Tempo factors, each within one atempo's range, whose product is `speed`."""
    low, high = _ATEMPO_RANGE
    factors: list[float] = []
    while speed < low:
        factors.append(low)
        speed /= low
    while speed > high:
        factors.append(high)
        speed /= high
    return [*factors, speed]
