"""ttsd's own generation loop against the official qwen-tts path it replaces.

With greedy decoding (no sampling) the loop must produce the very codes of the official path, for every
model kind (CustomVoice with speakers, dialect and instruct; VoiceDesign; Base voice clone in context
and x-vector-only mode), for a whole batch at once and for rows that join a running batch mid-flight,
on the tiny checkpoints and at the real 0.6B widths. The official path here is `QwenEngine.generate`,
which `test_engine_split` holds to qwen-tts' own `generate_*` wrappers, code for code and sample for
sample. With sampling, a seeded row's codes must not depend on which rows share its batch, and the
sampled codes must follow the official path's distribution.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.requests import TEXTS, batch_of
from ttsd.catalog import ModelKind
from ttsd.errors import TransientEngineError
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest, Takes
from ttsd.synth.engine.progressive import WINDOW_FRAMES, ProgressiveDecoder, speech_tokenizer_decoder
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.stepping import batch as batch_module
from ttsd.synth.engine.stepping.engine import LoopEngine, Spoken, Stream
from ttsd.synth.engine.tiny_parts import SAMPLES_PER_FRAME

FULL = DevicePlan("cpu", "float32", "sdpa")
GREEDY = {"do_sample": False, "subtalker_dosample": False}
SAMPLED = {"do_sample": True, "subtalker_dosample": True}
CHECKPOINTS: dict[ModelKind, str] = {"custom_voice": "tiny", "voice_design": "tiny-design", "base": "tiny-base"}
LONGER = "Please leave the parcel at the front door, and remember to water the plants on Sunday."


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


Pair = tuple[QwenEngine, LoopEngine]


@pytest.fixture(scope="module")
def engines(tiny_models: Path) -> Iterator[Callable[[ModelKind], Pair]]:
    """The official path and ttsd's loop on the same tiny checkpoint, each loaded on its own."""
    loaded: dict[ModelKind, Pair] = {}

    def get(kind: ModelKind) -> Pair:
        if kind not in loaded:
            path = tiny_models / CHECKPOINTS[kind]
            loaded[kind] = (
                QwenEngine.load(CHECKPOINTS[kind], kind, path, FULL, "paced"),
                LoopEngine.load(CHECKPOINTS[kind], kind, path, FULL, "paced"),
            )
        return loaded[kind]

    yield get
    for pair in loaded.values():
        for engine in pair:
            engine.close()


def assert_same_codes(official: Takes, mine: Takes) -> None:
    assert mine.frames == official.frames
    assert mine.capped == official.capped
    for theirs, ours in zip(official.rows, mine.rows, strict=True):
        assert ours.shape == theirs.shape
        assert bool((ours == theirs).all()), f"first differing frame: {int((ours != theirs).any(1).nonzero()[0])}"


def run_stream(
    stream: Stream, joining: Mapping[int, Sequence[tuple[Hashable, SynthesisRequest, int]]], **kw: Any
) -> dict[Hashable, Spoken]:
    """Step `stream` until it is empty, admitting `joining[step]` before that step."""
    done: dict[Hashable, Spoken] = {}
    step = 0
    while len(stream) or any(at >= step for at in joining):
        for tag, request, budget in joining.get(step, []):
            done.update((s.tag, s) for s in stream.admit([tag], [request], kw.get("generation", GREEDY), [budget]))
        done.update((s.tag, s) for s in stream.step())
        step += 1
    return done


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
def test_a_batch_gives_the_official_codes_and_audio(
    kind: ModelKind, engines: Callable[[ModelKind], Pair], tmp_path: Path
) -> None:
    official, mine = engines(kind)
    requests = batch_of(kind, tmp_path, [TEXTS[0], TEXTS[1], LONGER])
    theirs = official.generate(requests, GREEDY, None, 60)
    ours = mine.generate(requests, GREEDY, None, 60)
    assert_same_codes(theirs, ours)
    assert len(set(ours.frames)) == 3, "rows of different lengths, so rows leave the batch at different steps"
    for a, b in zip(official.decode(theirs), mine.decode(ours), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["custom_voice", "voice_design", "base"])
def test_rows_joining_mid_flight_give_each_rows_official_codes(
    kind: ModelKind, engines: Callable[[ModelKind], Pair], tmp_path: Path
) -> None:
    official, mine = engines(kind)
    requests = batch_of(kind, tmp_path, [LONGER, TEXTS[1], TEXTS[0]])
    budgets = [60, 45, 30]
    joining = {0: [(0, requests[0], budgets[0])], 3: [(1, requests[1], budgets[1])], 7: [(2, requests[2], budgets[2])]}
    done = run_stream(mine.stream(), joining)
    for tag, (request, budget) in enumerate(zip(requests, budgets, strict=True)):
        assert_same_codes(official.generate([request], GREEDY, None, budget), done[tag].takes)


def test_never_ending_rows_are_cut_at_their_budget_like_the_official_path(tiny_models: Path) -> None:
    path = tiny_models / "tiny"
    official = QwenEngine.load("tiny", "custom_voice", path, FULL, "never")
    mine = LoopEngine.load("tiny", "custom_voice", path, FULL, "never")
    try:
        requests = [SynthesisRequest(t) for t in TEXTS]
        theirs, ours = official.generate(requests, GREEDY, None, 9), mine.generate(requests, GREEDY, None, 9)
        assert_same_codes(theirs, ours)
        assert ours.frames == (8, 8, 8) and all(ours.capped)
        # A job's own max_new_tokens lowers a streamed row's budget too.
        spoken = mine.stream().admit(["x"], requests[:1], {**GREEDY, "max_new_tokens": 1}, [60])
        assert spoken[0].takes.frames == (0,) and spoken[0].takes.capped == (True,)
    finally:
        official.close()
        mine.close()


def test_a_dropped_row_leaves_the_others_untouched(engines: Callable[[ModelKind], Pair]) -> None:
    official, mine = engines("custom_voice")
    stream = mine.stream()
    rows = [SynthesisRequest(LONGER, speaker="ryan"), SynthesisRequest(TEXTS[1], speaker="vivian")]
    stream.admit(["keep", "drop"], rows, GREEDY, [60, 60])
    done: dict[Hashable, Spoken] = {}
    for step in range(200):
        if step == 4:
            stream.drop(["drop"])
        if not len(stream):
            break
        done.update((s.tag, s) for s in stream.step())
    assert set(done) == {"keep"}
    assert_same_codes(official.generate(rows[:1], GREEDY, None, 60), done["keep"].takes)


def test_a_seeded_row_is_the_same_in_any_batch(engines: Callable[[ModelKind], Pair]) -> None:
    _, mine = engines("custom_voice")
    seeded = SynthesisRequest(LONGER, speaker="ryan", seed=42)
    alone = run_stream(mine.stream(), {0: [("x", seeded, 60)]}, generation=SAMPLED)["x"].takes.rows[0]
    neighbours = [SynthesisRequest(t, speaker="vivian") for t in (TEXTS[1], TEXTS[2], LONGER)]
    crowded = run_stream(
        mine.stream(),
        {
            0: [("a", neighbours[0], 60), ("b", neighbours[1], 60)],
            2: [("x", seeded, 60)],
            5: [("c", neighbours[2], 60)],
        },
        generation=SAMPLED,
    )["x"].takes.rows[0]
    assert bool((alone == crowded).all()) and alone.shape == crowded.shape
    other_seed = SynthesisRequest(LONGER, speaker="ryan", seed=43)
    different = run_stream(mine.stream(), {0: [("x", other_seed, 60)]}, generation=SAMPLED)["x"].takes.rows[0]
    assert not bool((different == alone).all())


def test_a_seeded_call_is_reproducible(engines: Callable[[ModelKind], Pair]) -> None:
    _, mine = engines("voice_design")
    requests = [SynthesisRequest(t, instruct="Warm.") for t in TEXTS]
    first, again = (mine.generate(requests, SAMPLED, 7, 40) for _ in range(2))
    for a, b in zip(first.rows, again.rows, strict=True):
        assert bool((a == b).all())


def _histogram(takes: list[Takes], group: int) -> Counter[int]:
    return Counter(int(row[0, group]) for t in takes for row in t.rows)


def test_sampled_codes_follow_the_official_distribution(engines: Callable[[ModelKind], Pair]) -> None:
    """The first frame's talker code and first sub-talker code, drawn 1200 times by each path from
    one prompt, pass a two-sample chi-square test (seeded, so the test is deterministic)."""
    official, mine = engines("custom_voice")
    batch = [SynthesisRequest(TEXTS[1], speaker="ryan")] * 200
    theirs = [official.generate(batch, SAMPLED, 1000 + i, 2) for i in range(6)]
    ours = [mine.generate(batch, SAMPLED, 2000 + 200 * i, 2) for i in range(6)]
    for group in (0, 1):
        a, b = _histogram(theirs, group), _histogram(ours, group)
        codes = sorted(set(a) | set(b))
        observed = np.array([[a[c] for c in codes], [b[c] for c in codes]], dtype=float)
        assert observed.shape[1] > 5, "sampling must spread over several codes"
        expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
        statistic = float(((observed - expected) ** 2 / expected).sum())
        dof = len(codes) - 1
        # Wilson-Hilferty: the chi-square quantile at p = 0.001 (z = 3.09) for `dof` degrees of freedom.
        critical = dof * (1 - 2 / (9 * dof) + 3.09 * (2 / (9 * dof)) ** 0.5) ** 3
        assert statistic < critical, f"group {group}: chi2 {statistic:.1f} >= {critical:.1f} with {dof} dof"


def test_a_loop_that_fails_on_its_device_falls_back_to_the_official_path(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_models / "tiny"
    official = QwenEngine.load("tiny", "custom_voice", path, FULL, "paced")
    mine = LoopEngine.load("tiny", "custom_voice", path, FULL, "paced")
    try:

        def unsupported(self: Any) -> Any:
            raise NotImplementedError("aten::something is not implemented for the device")

        monkeypatch.setattr(batch_module.RunningBatch, "step", unsupported)
        requests = [SynthesisRequest(t) for t in TEXTS]
        with caplog.at_level(logging.WARNING):
            takes = mine.generate(requests, GREEDY, None, 40)
        assert mine.loop_failed is not None and "not implemented" in mine.loop_failed
        assert "using the official qwen-tts path" in caplog.text
        assert_same_codes(official.generate(requests, GREEDY, None, 40), takes)
        with pytest.raises(TransientEngineError, match="loop is off"):
            mine.stream().admit(["x"], requests[:1], GREEDY, [40])
    finally:
        official.close()
        mine.close()


def test_running_out_of_memory_does_not_turn_the_loop_off(
    engines: Callable[[ModelKind], Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mine = engines("custom_voice")

    def out_of_memory(self: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(batch_module.RunningBatch, "step", out_of_memory)
    stream = mine.stream()
    stream.admit(["x"], [SynthesisRequest(TEXTS[1])], GREEDY, [40])
    with pytest.raises(TransientEngineError) as raised:
        stream.step()
    assert raised.value.code == "out_of_memory"
    assert mine.loop_failed is None and not len(stream)


def test_the_real_widths_give_the_official_codes(real_width_checkpoint: Path, real_width_engine: QwenEngine) -> None:
    """At the published 0.6B widths (random weights, a few frames): a batch, and a row joining mid-flight."""
    mine = LoopEngine.load("tiny-0.6b", "custom_voice", real_width_checkpoint, FULL, "never")
    try:
        requests = [SynthesisRequest("Hello there."), SynthesisRequest(TEXTS[1], speaker=None)]
        assert_same_codes(
            real_width_engine.generate(requests, GREEDY, None, 4), mine.generate(requests, GREEDY, None, 4)
        )
        done = run_stream(mine.stream(), {0: [(0, requests[0], 5)], 2: [(1, requests[1], 4)]})
        assert_same_codes(real_width_engine.generate(requests[1:], GREEDY, None, 4), done[1].takes)
    finally:
        mine.close()


def test_a_rows_audio_grows_while_it_is_generated(engines: Callable[[ModelKind], Pair]) -> None:
    """The codec is causal: a running row's frames are decoded in windows as they come, the first
    window after `WINDOW_FRAMES` frames, and together they are its one-shot audio within tolerance."""
    _, mine = engines("custom_voice")
    stream = mine.stream()
    request = SynthesisRequest(LONGER * 2, speaker="ryan")
    stream.admit(["x"], [request], GREEDY, [200])
    decoder = ProgressiveDecoder(speech_tokenizer_decoder(mine._model.model.speech_tokenizer), SAMPLES_PER_FRAME)
    pieces: list[np.ndarray] = []
    first_audio_at = None
    done: list[Spoken] = []
    while not done:
        done = stream.step()
        codes = done[0].takes.rows[0] if done else stream.partial("x")
        piece = decoder.finish(codes) if done else decoder.feed(codes)
        if piece.size and first_audio_at is None:
            first_audio_at = int(codes.shape[0])
        pieces.append(piece)
    assert first_audio_at == WINDOW_FRAMES
    whole = mine.decode(done[0].takes)[0]
    grown = np.concatenate(pieces)
    assert grown.shape == whole.shape and done[0].takes.frames[0] > 4 * WINDOW_FRAMES
    assert float(np.max(np.abs(grown - whole))) <= 2e-3


def test_paused_rows_resume_with_the_official_codes(engines: Callable[[ModelKind], Pair]) -> None:
    """Rows set aside while others step alone, then merged back, speak as if never paused."""
    official, mine = engines("custom_voice")
    stream = mine.stream()
    long_rows = [SynthesisRequest(LONGER, speaker="ryan"), SynthesisRequest(LONGER + " Then rest.", speaker="vivian")]
    short = SynthesisRequest(TEXTS[1], speaker="ryan")
    done = {s.tag: s for s in stream.admit(["a", "b"], long_rows, GREEDY, [80, 80])}
    for _ in range(3):
        done.update((s.tag, s) for s in stream.step())
    done.update((s.tag, s) for s in stream.admit(["short"], [short], GREEDY, [60]))
    stream.pause(running=["short"])
    assert stream.paused == 2 and len(stream) == 3
    while "short" not in done:
        done.update((s.tag, s) for s in stream.step())
        assert stream.frames()["a"] == 3, "a paused row does not step"
    while len(stream):
        done.update((s.tag, s) for s in stream.step())
    for tag, request, budget in (("a", long_rows[0], 80), ("b", long_rows[1], 80), ("short", short, 60)):
        assert_same_codes(official.generate([request], GREEDY, None, budget), done[tag].takes)
