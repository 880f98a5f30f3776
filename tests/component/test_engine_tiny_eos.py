"""The tiny model ends its rows like a trained one: after a number of frames that follows the text,
the same for the same seed, cut by the budget when the budget is smaller; with end-of-speech off,
every row runs to the budget. Loaded through the production loader, as the daemon loads it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsd.catalog import ModelEntry
from ttsd.synth.engine.base import Engine, SynthesisRequest
from ttsd.synth.engine.pool import LoadOptions, qwen_loader
from ttsd.synth.engine.tiny_eos import JITTER, EndOfSpeech, paced_frames
from ttsd.synth.pacing import expected_frames

TINY = ModelEntry(name="tiny", kind="custom_voice", tiny=True)
SHORT = "Hello there."  # 12 characters: about 10 frames
TEXTS = [SHORT, "A sentence about five times longer than the short one.", SHORT * 10]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


def load(models: Path, tiny_eos: bool) -> Engine:
    options = LoadOptions(device="cpu", dtype="float32", models_dir=models, tiny_eos=tiny_eos)
    return qwen_loader(options)(TINY)


@pytest.fixture(scope="module")
def paced(tiny_models: Path) -> Iterator[Engine]:
    engine = load(tiny_models, tiny_eos=True)
    yield engine
    engine.close()


def requests(texts: list[str]) -> list[SynthesisRequest]:
    return [SynthesisRequest(text, "English", "ryan") for text in texts]


def test_paced_lengths_follow_the_text_within_the_jitter() -> None:
    frames = paced_frames(TEXTS, seed=None)
    assert frames == paced_frames(TEXTS, seed=0), "no seed is seed 0"
    for text, n in zip(TEXTS, frames, strict=True):
        assert (1 - JITTER) * expected_frames(text) - 0.5 <= n <= (1 + JITTER) * expected_frames(text) + 0.5
    draws = {tuple(paced_frames(TEXTS, seed)) for seed in range(8)}
    assert len(draws) > 4, "the seed moves the jitter"


def test_rows_end_after_their_texts_frames(paced: Engine) -> None:
    assert paced.stops_by_itself
    takes = paced.generate(requests(TEXTS), {}, seed=4, max_frames=200)
    assert takes.frames == tuple(paced_frames(TEXTS, 4))
    assert takes.capped == (False, False, False)
    short, _, ten_times = takes.frames
    assert 10 * (1 - JITTER) / (1 + JITTER) <= ten_times / short <= 10 * (1 + JITTER) / (1 - JITTER)


def test_the_same_seed_gives_the_same_lengths(paced: Engine) -> None:
    texts = [SHORT, "Another short one.", "And a third, a little longer than both."]
    first = paced.generate(requests(texts), {}, seed=7, max_frames=60)
    again = paced.generate(requests(texts), {}, seed=7, max_frames=60)
    assert first.frames == again.frames
    other_seeds = {paced.generate(requests(texts), {}, seed=s, max_frames=60).frames for s in (1, 2, 3)}
    assert other_seeds - {first.frames}, "another seed draws other lengths"


def test_a_budget_smaller_than_the_text_caps_the_row(paced: Engine) -> None:
    takes = paced.generate(requests([SHORT, SHORT * 4]), {}, seed=None, max_frames=20)
    assert takes.frames == (paced_frames([SHORT], None)[0], 19)
    assert takes.capped == (False, True)


def test_with_end_of_speech_off_every_row_runs_to_the_budget(tiny_models: Path) -> None:
    never = load(tiny_models, tiny_eos=False)
    assert not never.stops_by_itself
    takes = never.generate(requests([SHORT, "Hi.", SHORT * 3]), {}, seed=None, max_frames=16)
    assert takes.frames == (15, 15, 15)
    assert takes.capped == (True, True, True)
    assert [len(w) for w in never.decode(takes)] == [15 * 1920] * 3
    never.close()


def test_the_processor_forbids_the_end_before_its_frame_and_forces_it_there() -> None:
    import torch

    processor = EndOfSpeech(eos_id=5, frames=[2, 4])
    scores = processor(torch.zeros((2, 3), dtype=torch.long), torch.zeros((2, 8)))
    assert scores[0].argmax() == 5 and torch.isinf(scores[0]).sum() == 7, "row 0 must end now"
    assert scores[1, 5] == float("-inf") and scores[1, :5].eq(0).all(), "row 1 must not end yet"
    banned = EndOfSpeech(eos_id=5, frames=None)(torch.zeros((2, 99), dtype=torch.long), torch.zeros((2, 8)))
    assert banned[:, 5].eq(float("-inf")).all() and banned[:, :5].eq(0).all()
