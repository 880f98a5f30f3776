"""Choosing codes the way qwen-tts' Hugging Face `generate` calls do, with settings per row.

qwen-tts asks HF for, on the talker (`modeling_qwen3_tts.py` 2044-2066): repetition penalty over the
codes sampled so far, no end of speech before 2 codes (`min_new_tokens`), the 1023 control codes
suppressed, then greedy or temperature / top-k / top-p sampling; on the code predictor: greedy or
temperature / top-k / top-p only. HF applies them in that order (`_get_logits_processor`, transformers
4.57) to float32 logits. Here the same arithmetic runs for a whole batch whose rows may each have their
own settings, so rows of different jobs share a step.

Sampling draws from per-row random streams: each row owns a CPU generator (seeded by its job when the
job is seeded) and takes its uniforms from it in a fixed order, one per code, so a row's codes never
depend on which rows share its batch. A uniform picks a code by inverse CDF, which draws from exactly
the softmax distribution `torch.multinomial` draws from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch

MIN_NEW_TOKENS: Final = 2
"""qwen-tts' `min_new_tokens` for the talker: no end of speech among the first two codes."""


@dataclass(frozen=True)
class Sampling:
    """One sampler's settings (the talker's or the code predictor's) for one row."""

    do_sample: bool
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class RowSampling:
    """Everything that decides one row's codes besides the model: its talker and sub-talker settings."""

    talker: Sampling
    sub: Sampling

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> RowSampling:
        """From the keyword arguments qwen-tts hands the talker's `generate` (defaults merged)."""
        return cls(
            talker=Sampling(
                do_sample=bool(kwargs["do_sample"]),
                top_k=int(kwargs["top_k"] or 0),
                top_p=float(kwargs["top_p"] if kwargs["top_p"] is not None else 1.0),
                temperature=float(kwargs["temperature"] if kwargs["temperature"] is not None else 1.0),
                repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
            ),
            sub=Sampling(
                do_sample=bool(kwargs["subtalker_dosample"]),
                top_k=int(kwargs["subtalker_top_k"] or 0),
                top_p=float(kwargs["subtalker_top_p"] if kwargs["subtalker_top_p"] is not None else 1.0),
                temperature=float(
                    kwargs["subtalker_temperature"] if kwargs["subtalker_temperature"] is not None else 1.0
                ),
            ),
        )


class Sampler:
    """The settings of a batch's rows as tensors, for one sampler (talker or code predictor)."""

    def __init__(self, rows: Sequence[Sampling], device: Any) -> None:
        import torch

        self.do_sample = torch.tensor([r.do_sample for r in rows], dtype=torch.bool, device=device)
        self.any_sample = any(r.do_sample for r in rows)
        self.temperature = _per_row([r.temperature for r in rows], device)
        self.top_k = [r.top_k for r in rows]
        self._kth: tuple[int, torch.Tensor] | None = None
        self.uses_top_p = torch.tensor([[r.top_p < 1.0] for r in rows], dtype=torch.bool, device=device)
        # HF compares with the Python float `1 - top_p` (rounded to float32 once); 1 - float32(top_p)
        # in float32 can be one ulp off it (0.8: 0.19999999 against 0.20000000), which keeps or drops a
        # code whose cumulative probability lies between the two.
        self.top_p_cut = torch.tensor([[1.0 - r.top_p] for r in rows], dtype=torch.float32, device=device)
        self.any_top_p = any(r.top_p < 1.0 for r in rows)
        self.penalty = _per_row([r.repetition_penalty for r in rows], device)
        self.any_penalty = any(r.repetition_penalty != 1.0 for r in rows)

    def penalise(self, scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """HF's RepetitionPenaltyLogitsProcessor over the codes each row has sampled (`seen`, B x V)."""
        import torch

        if not self.any_penalty:
            return scores
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)

    def choose(self, scores: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        """The code of every row: argmax for greedy rows; for sampling rows HF's temperature, top-k and
        top-p warpers, then the code the row's uniform picks from the softmax."""
        import torch

        greedy = scores.argmax(dim=-1)
        if not self.any_sample:
            return greedy
        assert uniforms is not None
        warped = self._warp(scores)
        probs = torch.softmax(warped, dim=-1)
        cdf = probs.cumsum(dim=-1)
        # 1 - u lies in (0, 1]: a code of probability 0 is never picked, not even at u = 0.
        target = (1.0 - uniforms.view(-1, 1)) * cdf[:, -1:]
        sampled = torch.searchsorted(cdf, target).view(-1).clamp_(max=scores.shape[-1] - 1)
        return torch.where(self.do_sample, sampled, greedy)

    def _warp(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        # Dividing by 1.0 changes nothing, so rows without a temperature need no mask.
        scores = scores / self.temperature
        kth = self._kth_places(scores)
        if kth is not None:
            widest, places = kth
            top = torch.topk(scores, widest, dim=-1).values
            scores = scores.masked_fill(scores < top.gather(1, places), float("-inf"))
        if self.any_top_p:
            sorted_scores, order = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= self.top_p_cut
            remove[:, -1] = False  # HF keeps at least one code
            remove &= self.uses_top_p.expand_as(remove)
            scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
        return scores

    def _kth_places(self, scores: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """Top-k per row as (the widest k, each row's k - 1); None when no row cuts (k 0 or >= V)."""
        import torch

        if self._kth is None:
            vocab = scores.shape[-1]
            ks = [min(k, vocab) if k > 0 else vocab for k in self.top_k]
            if min(ks) == vocab:
                return None
            self._kth = (max(ks), torch.tensor([[k - 1] for k in ks], device=scores.device))
        return self._kth


def _per_row(values: Sequence[float], device: Any) -> float | torch.Tensor:
    """One Python number when every row agrees, as HF divides by (on CUDA a division by a tensor may
    round differently from one by a number); else a B x 1 tensor."""
    import torch

    if len(set(values)) == 1:
        return values[0]
    return torch.tensor([[v] for v in values], dtype=torch.float32, device=device)


class RowRandom:
    """A row's own random stream: a CPU generator, so draws are the same on every device."""

    def __init__(self, seed: int | None) -> None:
        import torch

        self.generator = torch.Generator(device="cpu")
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def draw(self, count: int) -> torch.Tensor:
        """The next `count` uniforms of this row."""
        import torch

        return torch.rand(count, generator=self.generator)


def uniforms(randoms: Sequence[RowRandom], count: int, device: Any) -> torch.Tensor:
    """`count` uniforms per row (B x count), each row from its own stream."""
    import torch

    return torch.stack([r.draw(count) for r in randoms]).to(device)
