"""Joining chunks and the quality guards, on synthetic waveforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsd.audio import EDGE_FADE_S, MAX_EDGE_SILENCE_S, chunk_piece, fade_edges, join_chunks, trim_edges
from ttsd.synth.quality import expected_seconds, quality_problem

RATE = 24_000


def tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_a_single_chunk_is_delivered_untouched() -> None:
    audio = tone(0.5)
    assert np.array_equal(join_chunks([audio], [0], RATE), audio)


def test_long_silences_at_the_edges_are_trimmed_to_a_bound() -> None:
    padded = np.concatenate([np.zeros(RATE, np.float32), tone(1.0), np.zeros(2 * RATE, np.float32)])
    trimmed = trim_edges(padded, RATE)
    assert abs(len(trimmed) / RATE - (1.0 + 2 * MAX_EDGE_SILENCE_S)) < 0.02


@given(
    lengths=st.lists(st.floats(min_value=0.05, max_value=1.0), min_size=2, max_size=6),
    pauses=st.lists(st.integers(min_value=0, max_value=900), min_size=6, max_size=6),
)
@settings(max_examples=30, deadline=None)
def test_joined_length_is_the_chunks_plus_the_pauses(lengths: list[float], pauses: list[int]) -> None:
    chunks = [tone(seconds) for seconds in lengths]
    gaps = [*pauses[: len(chunks) - 1], 0]
    joined = join_chunks(chunks, gaps, RATE)
    expected = sum(len(c) for c in chunks) + sum(int(RATE * gap / 1000) for gap in gaps)
    assert len(joined) == expected
    fade = int(EDGE_FADE_S * RATE)
    assert abs(float(joined[0])) < 1e-6 and float(np.abs(joined[:fade]).max()) <= 0.3 + 1e-6


def test_expected_seconds_reads_cjk_slower_per_character() -> None:
    assert expected_seconds("Hello there, how are you today?") == pytest.approx(24 / 14)
    assert expected_seconds("今天天气很好") == pytest.approx(6 / 5)


@pytest.mark.parametrize(
    ("audio", "text", "check_length", "problem"),
    [
        (tone(2.0), "A sentence of about two seconds.", True, None),
        (np.clip(tone(2.0, level=3.0), -1, 1), "A sentence of about two seconds.", True, "clipped"),
        (tone(30.0), "Short.", True, "runaway"),
        (tone(0.3), "This sentence is far too long to be said in a third of a second, surely.", True, "cut short"),
        (tone(30.0), "Short.", False, None),
    ],
)
def test_quality_guards(audio: np.ndarray, text: str, check_length: bool, problem: str | None) -> None:
    found = quality_problem(audio, RATE, text, check_length)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_chunk_piece_is_its_trimmed_faded_chunk_then_its_pause() -> None:
    # join_chunks is built from chunk_piece, so the piece is checked against what a join means.
    rng = np.random.default_rng(1)
    silence = np.zeros(4800, dtype=np.float32)
    chunk = np.concatenate([silence, rng.uniform(-0.5, 0.5, 5000).astype(np.float32), silence])
    piece = chunk_piece(chunk, 300, RATE, alone=False)
    kept = fade_edges(trim_edges(chunk, RATE), RATE)
    assert len(kept) < len(chunk)  # the edges' silence was trimmed
    np.testing.assert_array_equal(piece[: len(kept)], kept)
    np.testing.assert_array_equal(piece[len(kept) :], np.zeros(int(RATE * 0.3), dtype=np.float32))
    np.testing.assert_array_equal(chunk_piece(chunk, 300, RATE, alone=True), chunk)  # a job's only chunk
