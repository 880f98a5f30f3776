"""ttsd's sampler chooses codes exactly as qwen-tts' Hugging Face `generate` calls do, row by row.

The reference is transformers 4.57.3 itself: `GenerationMixin._get_logits_processor` builds the
processor list from a `GenerationConfig` holding what qwen-tts hands the talker (repetition penalty,
`min_new_tokens=2`, the suppressed control codes, EOS; then temperature / top-k / top-p when sampling)
or the code predictor (the warpers only), and that list is applied to one row at a time, as a HF
call whose rows all share that row's settings would. What is proved, on float32 CPU logits:

- `Sampler.penalise` equals HF's repetition penalty over the codes sampled so far, bit for bit, with
  different penalties (1.0, 1.05, 1.3) in one batch.
- `Sampler._warp` equals HF's warpers bit for bit (same -inf positions, same finite values) with every
  row's own temperature, top-k (off, small, beyond the vocabulary) and top-p (off, 0.8, 0.95) in one
  batch, ties at the k-th value included, and at the top-p threshold's last float32 ulp.
- `RunningBatch._choose` (the talker's choice) hands the sampler exactly HF's processed scores: EOS
  banned before two codes, suppressed codes never chosen; greedy rows take their argmax while other
  rows of the batch sample; sampling rows take the code their uniform picks by inverse CDF from HF's
  softmax.
- Drawn 20000 times, the codes follow HF's warped softmax (chi-square, p > 0.001), and codes the
  warpers removed never appear.
- `RowRandom` streams depend only on their seed, never on the other rows or on torch's global RNG.

Bit-exactness is a CPU result. On CUDA, PyTorch divides by a Python scalar (HF's temperature and
penalty) as a multiplication by its float32 reciprocal, while ttsd divides by a per-row tensor: the
two can differ there by one ulp. Nothing here runs on an accelerator.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from ttsd.synth.engine.stepping.batch import Row, RunningBatch
from ttsd.synth.engine.stepping.prompts import CallSettings
from ttsd.synth.engine.stepping.sampling import MIN_NEW_TOKENS, RowRandom, Sampler, Sampling, uniforms

if TYPE_CHECKING:
    import torch

VOCAB = 3072
"""The talker's vocabulary in the released checkpoints; the last 1024 codes are control codes."""
EOS = 2150
"""End of speech: among the control codes (as in the checkpoints), the one qwen-tts leaves unsuppressed."""
SUPPRESSED = tuple(i for i in range(VOCAB - 1024, VOCAB) if i != EOS)
"""qwen-tts' `suppress_tokens` for the talker (`modeling_qwen3_tts.py` 2044-2066)."""


def hf_processors(setting: Sampling, *, talker: bool) -> Any:
    """HF's own processor list for a call whose rows all have `setting`, as `generate` builds it."""
    import torch
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    options: dict[str, Any] = {"do_sample": setting.do_sample}
    if setting.do_sample:
        options.update(temperature=setting.temperature, top_k=setting.top_k, top_p=setting.top_p)
    if talker:
        options.update(
            repetition_penalty=setting.repetition_penalty,
            min_new_tokens=MIN_NEW_TOKENS,
            suppress_tokens=list(SUPPRESSED),
            eos_token_id=EOS,
        )
    config: Any = GenerationConfig(**options)  # type: ignore[no-untyped-call]
    config._eos_token_tensor = torch.tensor([EOS]) if talker else None  # `generate` sets it
    # The prompt is all embeddings (`inputs_embeds`): input_ids holds only the codes sampled so far.
    return GenerationMixin._get_logits_processor(
        GenerationMixin(), generation_config=config, input_ids_seq_length=0, device="cpu"
    )


def hf_row(scores: torch.Tensor, setting: Sampling, history: Sequence[int] = (), *, talker: bool) -> torch.Tensor:
    """One row's scores (V) through HF's processors, with `history` as the codes sampled so far."""
    import torch

    input_ids = torch.tensor([list(history)], dtype=torch.long).view(1, len(history))
    return cast("torch.Tensor", hf_processors(setting, talker=talker)(input_ids, scores.view(1, -1).clone())[0])


def inverse_cdf(scores: torch.Tensor, u: float) -> int:
    """The code a uniform `u` picks from softmax(`scores`): the first whose cumulative probability
    reaches (1 - u) of the total (what `Sampler.choose` promises, restated)."""
    import torch

    cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1)
    target = (1.0 - u) * float(cdf[-1])
    return int(torch.nonzero(cdf >= target)[0])


def sample(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, penalty: float = 1.0) -> Sampling:
    return Sampling(do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature, repetition_penalty=penalty)


def greedy(penalty: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampling:
    """A greedy row: its warper settings must change nothing."""
    return Sampling(do_sample=False, top_k=top_k, top_p=top_p, temperature=temperature, repetition_penalty=penalty)


def logits(rows: int, vocab: int, seed: int, scale: float = 4.0) -> torch.Tensor:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=generator, dtype=torch.float32) * scale


# -- 1. repetition penalty ------------------------------------------------------------------------


def test_penalty_equals_hf_row_by_row_with_each_rows_own_penalty() -> None:
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    penalties = [1.0, 1.05, 1.3] * 4
    count = len(penalties)
    scores = logits(count, VOCAB, seed=1)
    scores[:, :40] = 0.0  # zero is neither raised nor lowered
    generator = torch.Generator().manual_seed(2)
    # Histories of 0 to 300 codes from a narrow range, so codes repeat; the first row has none yet.
    histories = [torch.randint(0, 400, (n,), generator=generator).tolist() for n in [0, *range(25, 300, 25)][:count]]
    assert any(len(set(h)) < len(h) for h in histories)
    seen = torch.zeros(count, VOCAB, dtype=torch.bool)
    for i, history in enumerate(histories):
        seen[i, history] = True

    ours = Sampler([sample(penalty=p) for p in penalties], "cpu").penalise(scores.clone(), seen)

    for i, (penalty, history) in enumerate(zip(penalties, histories, strict=True)):
        expected = scores[i : i + 1].clone()
        if penalty != 1.0:  # HF adds the processor only then
            ids = torch.tensor([history], dtype=torch.long).view(1, len(history))
            expected = RepetitionPenaltyLogitsProcessor(penalty=penalty)(ids, expected)
        assert torch.equal(ours[i], expected[0]), f"row {i} (penalty {penalty})"
    assert not torch.equal(ours[1], scores[1])


def test_no_penalty_anywhere_leaves_the_scores_alone() -> None:
    import torch

    scores = logits(2, VOCAB, seed=3)
    seen = torch.ones(2, VOCAB, dtype=torch.bool)
    assert torch.equal(Sampler([sample(), greedy()], "cpu").penalise(scores, seen), scores)


# -- 2. temperature, top-k, top-p -----------------------------------------------------------------

WARP_SETTINGS = [
    sample(temperature=t, top_k=k, top_p=p)
    for t, k, p in itertools.product([1.0, 0.7], [0, 1, 50, VOCAB + 100], [1.0, 0.8, 0.95])
]


def test_warpers_equal_hf_row_by_row_with_settings_mixed_in_one_batch() -> None:
    import torch

    rows = WARP_SETTINGS * 2
    scores = logits(len(rows), VOCAB, seed=4)
    # The second half: coarse logits with many ties, some at the k-th value, and the suppressed
    # codes already at -inf, as the talker hands them over.
    half = len(WARP_SETTINGS)
    scores[half:] = torch.round(scores[half:] * 2) / 2
    scores[half:, list(SUPPRESSED)] = float("-inf")

    ours = Sampler(rows, "cpu")._warp(scores)

    for i, setting in enumerate(rows):
        expected = hf_row(scores[i], setting, talker=False)
        assert torch.equal(ours[i], expected), f"row {i}: {setting}"
    # The settings did something: top-k 1 keeps one code (or its ties), top-p 0.8 fewer than all.
    kept = torch.isfinite(ours).sum(dim=-1)
    assert int(kept[WARP_SETTINGS.index(sample(top_k=1))]) == 1
    assert int(kept[WARP_SETTINGS.index(sample(top_p=0.8))]) < VOCAB


def test_top_p_keeps_and_drops_exactly_what_hf_does_at_the_thresholds_last_ulp() -> None:
    """HF compares the cumulative probability with the Python float 1 - top_p (float32 once rounded).
    Rows are built whose cumulative probability lands within an ulp of that threshold; computing
    1 - top_p in float32 instead moves the threshold by one ulp and gets some of them wrong."""
    import torch

    count = 2000
    generator = torch.Generator().manual_seed(5)
    for top_p in (0.8, 0.95):
        # Three codes a < b < 0: the cumulative probability of a and b is c = 1 - top_p (+- 1e-7).
        cut = torch.tensor(1.0 - top_p, dtype=torch.float64)
        c = cut + (torch.rand(count, generator=generator, dtype=torch.float64) * 2 - 1) * 1e-7
        a = -7.0 - torch.rand(count, generator=generator, dtype=torch.float64)
        b = torch.log(c / (1 - c) - torch.exp(a))
        scores = torch.stack([a, b, torch.zeros(count, dtype=torch.float64)], dim=1).float()
        cumulative = scores.softmax(dim=-1).cumsum(dim=-1)[:, 1]
        hf_cut = torch.tensor(1.0 - top_p, dtype=torch.float32)
        float32_cut = 1.0 - torch.tensor(top_p, dtype=torch.float32)
        low, high = min(hf_cut, float32_cut), max(hf_cut, float32_cut)
        assert hf_cut != float32_cut
        assert int(((cumulative > low) & (cumulative <= high)).sum()) > 0, "no row between the two cuts"

        ours = Sampler([sample(top_p=top_p)] * count, "cpu")._warp(scores)
        expected = hf_processors(sample(top_p=top_p), talker=False)(None, scores.clone())
        assert torch.equal(ours, expected), f"top_p {top_p}"


# -- 3. the talker's choice -------------------------------------------------------------------------


class RecordingSampler(Sampler):
    """A sampler that keeps the scores it was asked to choose from."""

    scores: torch.Tensor | None = None

    def choose(self, scores: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        self.scores = scores.clone()
        return super().choose(scores, uniforms)


def talker_batch() -> RunningBatch:
    """A running batch with no rows and no model: enough for `_choose`."""
    talker = SimpleNamespace(device="cpu", config=SimpleNamespace(num_code_groups=16, vocab_size=VOCAB))
    return RunningBatch(talker, CallSettings(eos=EOS, suppress=SUPPRESSED, min_new_tokens=MIN_NEW_TOKENS))


def talker_rows(histories: Sequence[Sequence[int]]) -> tuple[list[Row], torch.Tensor]:
    """Rows that have sampled `histories` (seeded streams), and their `seen` mask."""
    import torch

    rows = [
        Row(tag=i, prompt=cast(Any, None), random=RowRandom(100 + i), end_at=None, sampled=len(history))
        for i, history in enumerate(histories)
    ]
    seen = torch.zeros(len(rows), VOCAB, dtype=torch.bool)
    for i, history in enumerate(histories):
        seen[i, list(history)] = True
    return rows, seen


def test_talker_choice_is_hfs_processing_then_greedy_or_the_uniforms_pick() -> None:
    import torch

    # qwen-tts' defaults (sample, top-k 50, temperature 0.9, penalty 1.05) and variations, greedy rows
    # among them, each at 0, 1, 2 and 7 codes sampled.
    settings = [
        sample(temperature=0.9, top_k=50, penalty=1.05),
        greedy(penalty=1.05, top_k=50, temperature=0.9),
        sample(temperature=0.7, top_p=0.8, penalty=1.3),
        greedy(),
        sample(top_k=VOCAB + 1, top_p=0.95),
    ]
    generator = torch.Generator().manual_seed(6)
    cases = [(s, n) for s in settings for n in (0, 1, 2, 7)]
    histories = [torch.randint(0, 2048, (n,), generator=generator).tolist() for _s, n in cases]
    scores = logits(len(cases), VOCAB, seed=7)
    scores[:, EOS] = 30.0  # the most likely code, where it is allowed
    scores[:, list(SUPPRESSED)] = 40.0  # likelier still, but never allowed
    rows, seen = talker_rows(histories)
    sampler = RecordingSampler([s for s, _n in cases], "cpu")
    draws = uniforms([row.random for row in rows], 1, "cpu")[:, 0]

    chosen = talker_batch()._choose(scores.clone(), rows, seen, sampler, draws)

    assert sampler.scores is not None
    for i, ((setting, count), history) in enumerate(zip(cases, histories, strict=True)):
        processed = hf_row(scores[i], greedy(penalty=setting.repetition_penalty), history, talker=True)
        assert torch.equal(sampler.scores[i], processed), f"row {i}: {setting}, {count} sampled"
        assert (processed[EOS] == float("-inf")) == (count < MIN_NEW_TOKENS)
        code = int(chosen[i])
        assert code not in SUPPRESSED
        if setting.do_sample:
            warped = hf_row(scores[i], setting, history, talker=True)
            assert code == inverse_cdf(warped, float(draws[i])), f"row {i}"
        else:
            assert code == int(processed.argmax())
            assert (code == EOS) == (count >= MIN_NEW_TOKENS)


def test_suppressed_codes_and_early_eos_are_never_sampled() -> None:
    import torch

    # Uniforms spread over [0, 1), both ends included, on rows whose banned codes are the likeliest.
    count = 1024
    draws = torch.arange(count, dtype=torch.float32) / count
    draws[-1] = 1.0 - 2.0**-24
    scores = logits(1, VOCAB, seed=8, scale=1.0).expand(count, VOCAB).clone()
    scores[:, list(SUPPRESSED)] = 5.0
    scores[:, EOS] = 5.0
    rows, seen = talker_rows([[] if i % 2 else [1] for i in range(count)])
    chosen = talker_batch()._choose(scores, rows, seen, Sampler([sample(temperature=1.3)] * count, "cpu"), draws)

    assert not set(chosen.tolist()) & {*SUPPRESSED, EOS}
    assert len(set(chosen.tolist())) > 100


# -- 4. greedy rows -----------------------------------------------------------------------------


def test_greedy_rows_take_the_argmax_in_a_batch_where_others_sample() -> None:
    import torch

    settings = [greedy(top_k=1), sample(0.7, 50, 0.8), greedy(temperature=0.5, top_p=0.5), sample(), greedy()]
    scores = logits(len(settings), VOCAB, seed=9)
    scores[:, list(SUPPRESSED)] = float("-inf")
    argmax = scores.argmax(dim=-1)
    sampler = Sampler(settings, "cpu")
    for u in (0.0, 0.3, 0.999):
        chosen = sampler.choose(scores, torch.full((len(settings),), u))
        for i, setting in enumerate(settings):
            if not setting.do_sample:
                assert int(chosen[i]) == int(argmax[i])
    # No row samples: no uniforms needed.
    only_greedy = [s for s in settings if not s.do_sample]
    greedy_scores = scores[[i for i, s in enumerate(settings) if not s.do_sample]]
    assert torch.equal(Sampler(only_greedy, "cpu").choose(greedy_scores, None), greedy_scores.argmax(dim=-1))


# -- 5. the distribution -------------------------------------------------------------------------


def test_codes_drawn_with_row_streams_follow_hfs_warped_softmax() -> None:
    import torch
    from scipy import stats  # type: ignore[import-untyped]

    draws_per_row = 20000
    vocab = 48
    settings = [
        sample(temperature=0.9, top_k=20),
        sample(temperature=0.7, top_p=0.95),
        sample(top_k=10, top_p=0.8),
        sample(temperature=1.3),
    ]
    row_scores = logits(1, vocab, seed=10, scale=1.5)[0]
    # One stream per setting gives all its draws, as a row's stream gives one per step; they are
    # used `width` at a time, in a batch holding every setting `width` times.
    streams = [RowRandom(200 + i).draw(draws_per_row) for i in range(len(settings))]
    width = 1000
    sampler = Sampler([s for s in settings for _ in range(width)], "cpu")
    batch_scores = row_scores.expand(len(settings) * width, vocab).clone()
    chunks = [
        sampler.choose(batch_scores, torch.cat([stream[start : start + width] for stream in streams])).view(-1, width)
        for start in range(0, draws_per_row, width)
    ]
    chosen = torch.cat(chunks, dim=1)
    assert chosen.shape == (len(settings), draws_per_row)

    for i, setting in enumerate(settings):
        counts = torch.bincount(chosen[i], minlength=vocab).double()
        probs = torch.softmax(hf_row(row_scores, setting, talker=False), dim=-1).double()
        assert int(counts[probs == 0].sum()) == 0, f"{setting}: a removed code was drawn"
        expected = probs * draws_per_row
        # Cells expected fewer than 5 times are pooled into one, as a chi-square test needs.
        big, small = expected >= 5, (expected < 5) & (probs > 0)
        assert int(big.sum()) >= 5
        observed, wanted = [counts[big]], [expected[big]]
        if bool(small.any()):
            observed.append(counts[small].sum().view(1))
            wanted.append(expected[small].sum().view(1))
        f_obs, f_exp = torch.cat(observed), torch.cat(wanted)
        f_exp *= f_obs.sum() / f_exp.sum()  # the float sum of the probabilities is 1 only nearly
        p_value = float(stats.chisquare(f_obs.numpy(), f_exp.numpy()).pvalue)
        assert p_value > 0.001, f"{setting}: p = {p_value}"


# -- 6. per-row random streams --------------------------------------------------------------------


def test_a_rows_stream_depends_only_on_its_seed() -> None:
    import torch

    alone = uniforms([RowRandom(7)], 16, "cpu")
    torch.manual_seed(0)  # the global generator plays no part
    crowd = [RowRandom(1), RowRandom(2), RowRandom(7), RowRandom(None)]
    together = uniforms(crowd, 16, "cpu")
    assert together.shape == (4, 16)
    assert torch.equal(together[2], alone[0])
    # Rows stack in order, each from its own stream.
    for i, seed in enumerate([1, 2, 7]):
        assert torch.equal(together[i], RowRandom(seed).draw(16))
    # A stream goes on where it stopped, however its draws are split and whatever else draws between.
    one = RowRandom(7)
    first = one.draw(16)
    torch.rand(100)
    assert torch.equal(torch.cat([first, one.draw(1), one.draw(15)]), RowRandom(7).draw(32))
    assert torch.equal(uniforms(crowd[2:3], 1, "cpu")[0], RowRandom(7).draw(17)[16:])


def test_unseeded_rows_differ() -> None:
    import torch

    first, second = RowRandom(None), RowRandom(None)
    assert not torch.equal(first.draw(16), second.draw(16))
    assert not torch.equal(RowRandom(None).draw(16), RowRandom(None).draw(16))
