"""A running batch: rows join at any step and leave at their own end of speech.

Each step speaks one frame for every row: the code predictor completes the frame the talker chose at
the previous step, the frame's embedding plus the row's next text embedding goes through the talker,
and the talker chooses the next frame's first code. That is qwen-tts' talker `forward` in generation
(`modeling_qwen3_tts.py` 1669-1727) with the state HF's loop keeps for a whole batch kept per row:
RoPE position, text step, codes sampled (for the repetition penalty), budget and random stream.

New rows are prefilled together, then merged into the running KV cache by left-padding the shorter
side; rows that end leave at once (`batch_select_indices`), and cache columns that are padding for
every remaining row are dropped. This holds transformers' `DynamicCache` layout of 4.57
(`layers[i].keys / values`, B x heads x T x d); `ttsd.synth.engine.stepping.pins` checks it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ttsd.synth.engine.stepping.codes import next_codes
from ttsd.synth.engine.stepping.prompts import CallSettings, RowPrompt, left_padded
from ttsd.synth.engine.stepping.sampling import RowRandom, Sampler, uniforms

if TYPE_CHECKING:
    import torch

NEVER: int = -1
"""A row's `end_at` when end of speech is banned (a tiny model in never-ending mode)."""


@dataclass
class Row:
    """One row's state in the running batch."""

    tag: Hashable
    prompt: RowPrompt
    random: RowRandom
    end_at: int | None
    """Tiny models only: the number of codes after which the row must end (None: the model decides;
    `NEVER`: it may not)."""
    position: int = 0
    text_step: int = 0
    sampled: int = 0
    codes: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Ended:
    """A row that left the batch: its frames (F x 16) and whether the budget cut it."""

    tag: Hashable
    codes: torch.Tensor
    capped: bool
    seconds: float
    """Its share of the steps it took part in (compute spent on it)."""
    wall_s: float
    """From its admission to its end."""


class RunningBatch:
    """The rows generating together on one loaded talker; not thread-safe (its engine serialises)."""

    def __init__(self, talker: Any, settings: CallSettings) -> None:
        import torch

        self._talker = talker
        self._settings = settings
        self._device = talker.device
        self._groups = int(talker.config.num_code_groups)
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._last: torch.Tensor | None = None
        self._hidden: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None
        vocab = int(talker.config.vocab_size)
        self._suppress = torch.zeros(vocab, dtype=torch.bool, device=self._device)
        if settings.suppress:
            self._suppress[list(settings.suppress)] = True
        self._talker_sampler: Sampler | None = None
        self._sub_sampler: Sampler | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def frames(self) -> dict[Hashable, int]:
        """Frames generated so far per row."""
        return {row.tag: len(row.codes) for row in self.rows}

    def codes_of(self, tag: Hashable) -> torch.Tensor | None:
        """A running row's frames so far (F x 16), for decoding its audio while it grows (the codec
        is causal: `ttsd.synth.engine.progressive`); None when no such row runs."""
        for row in self.rows:
            if row.tag == tag:
                return _stacked(row, self._groups, self._device)
        return None

    # -- joining --------------------------------------------------------------------------------

    def admit(
        self,
        tags: Sequence[Hashable],
        prompts: Sequence[RowPrompt],
        seeds: Sequence[int | None],
        ends: Sequence[int | None],
    ) -> list[Ended]:
        """Prefill new rows together and merge them into the batch; returns rows that ended at once
        (a budget of one code)."""
        import torch
        from transformers import DynamicCache

        started = time.perf_counter()
        rows = [
            Row(tag, prompt, RowRandom(seed), end)
            for tag, prompt, seed, end in zip(tags, prompts, seeds, ends, strict=True)
        ]
        embeds, mask, positions = left_padded(prompts)
        cache = DynamicCache()
        with torch.no_grad():
            out = self._talker.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                cache_position=torch.arange(embeds.shape[1], device=self._device),
            )
            hidden = out.last_hidden_state
            logits = self._talker.codec_head(hidden)[:, -1].float()
            vocab = logits.shape[-1]
            seen = torch.zeros(len(rows), vocab, dtype=torch.bool, device=self._device)
            sampler = Sampler([row.prompt.sampling.talker for row in rows], self._device)
            # Drawn whatever the settings: a row's stream must advance alike in any company.
            draws = uniforms([row.random for row in rows], 1, self._device)
            first = self._choose(logits, rows, seen, sampler, draws)
        for i, row in enumerate(rows):
            row.position = int(mask[i].sum())
            row.sampled = 1
            row.seconds = (time.perf_counter() - started) / len(rows)
        seen[torch.arange(len(rows), device=self._device), first] = True
        self._merge(rows, cache, mask, first, hidden[:, -1:], seen)
        assert self._last is not None
        # Rows already running cannot end here: they would have left at their last step.
        return self._retire(self._last)

    def _merge(
        self,
        rows: list[Row],
        cache: Any,
        mask: torch.Tensor,
        first: torch.Tensor,
        hidden: torch.Tensor,
        seen: torch.Tensor,
    ) -> None:
        import torch

        if not self.rows:
            self.rows, self._cache, self._mask = rows, cache, mask
            self._last, self._hidden, self._seen = first, hidden, seen
            self._samplers_changed()
            return
        assert self._mask is not None and self._last is not None and self._hidden is not None
        assert self._seen is not None
        old_width, new_width = self._mask.shape[1], mask.shape[1]
        width = max(old_width, new_width)

        def joined(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([_left_pad(old, width - old_width), _left_pad(new, width - new_width)])

        # Everything is built before anything is replaced: running out of memory half way must
        # leave the running batch as it was.
        keys = [joined(old.keys, new.keys) for old, new in zip(self._cache.layers, cache.layers, strict=True)]
        values = [joined(old.values, new.values) for old, new in zip(self._cache.layers, cache.layers, strict=True)]
        state = (
            torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)]),
            torch.cat([self._last, first]),
            torch.cat([self._hidden, hidden]),
            torch.cat([self._seen, seen]),
        )
        self._replace(self.rows + rows, keys, values, *state)

    def _replace(
        self,
        rows: list[Row],
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        mask: torch.Tensor,
        last: torch.Tensor,
        hidden: torch.Tensor,
        seen: torch.Tensor,
    ) -> None:
        """Install a new state of the batch at once (no allocation happens here)."""
        for layer, layer_keys, layer_values in zip(self._cache.layers, keys, values, strict=True):
            layer.keys, layer.values = layer_keys, layer_values
        self.rows, self._mask, self._last, self._hidden, self._seen = rows, mask, last, hidden, seen
        self._samplers_changed()

    def _samplers_changed(self) -> None:
        self._talker_sampler = Sampler([row.prompt.sampling.talker for row in self.rows], self._device)
        self._sub_sampler = Sampler([row.prompt.sampling.sub for row in self.rows], self._device)

    # -- stepping -------------------------------------------------------------------------------

    def step(self) -> list[Ended]:
        """One frame for every row; returns the rows that ended."""
        import torch

        if not self.rows:
            return []
        assert self._last is not None and self._hidden is not None and self._mask is not None
        assert self._seen is not None and self._talker_sampler is not None and self._sub_sampler is not None
        started = time.perf_counter()
        rows, count = self.rows, len(self.rows)
        sampling = self._talker_sampler.any_sample or self._sub_sampler.any_sample
        draws = uniforms([row.random for row in rows], 16, self._device) if sampling else None
        with torch.no_grad():
            frame, codec_sum = next_codes(
                self._talker, self._hidden, self._last, self._sub_sampler, None if draws is None else draws[:, :15]
            )
            text = torch.cat([_text_at(row) for row in rows])
            width = self._mask.shape[1]
            self._mask = torch.cat([self._mask, self._mask.new_ones(count, 1)], dim=1)
            positions = torch.tensor([row.position for row in rows], device=self._device).view(1, count, 1)
            out = self._talker.model(
                inputs_embeds=codec_sum + text,
                attention_mask=self._mask,
                position_ids=positions.expand(3, count, 1),
                past_key_values=self._cache,
                use_cache=True,
                cache_position=torch.tensor([width], device=self._device),
            )
            hidden = out.last_hidden_state
            logits = self._talker.codec_head(hidden)[:, -1].float()
            chosen = self._choose(
                logits, rows, self._seen, self._talker_sampler, None if draws is None else draws[:, 15]
            )
        self._seen[torch.arange(count, device=self._device), chosen] = True
        share = (time.perf_counter() - started) / count
        for i, row in enumerate(rows):
            row.codes.append(frame[i])
            row.position += 1
            row.text_step += 1
            row.sampled += 1
            row.seconds += share
        self._last, self._hidden = chosen, hidden[:, -1:]
        return self._retire(chosen)

    def _choose(
        self,
        logits: torch.Tensor,
        rows: Sequence[Row],
        seen: torch.Tensor,
        sampler: Sampler,
        draws: torch.Tensor | None,
    ) -> torch.Tensor:
        """The talker's next code per row: HF's processors in qwen-tts' order, then the warpers."""
        eos = self._settings.eos
        scores = sampler.penalise(logits, seen)
        for i, row in enumerate(rows):
            if row.sampled < self._settings.min_new_tokens:
                scores[i, eos] = float("-inf")
        scores = scores.masked_fill(self._suppress, float("-inf"))
        for i, row in enumerate(rows):
            if row.end_at is None:
                continue
            if row.end_at != NEVER and row.sampled >= row.end_at:
                scores[i] = float("-inf")
                scores[i, eos] = 0.0
            else:
                scores[i, eos] = float("-inf")
        return sampler.choose(scores, draws)

    # -- leaving --------------------------------------------------------------------------------

    def _retire(self, chosen: torch.Tensor) -> list[Ended]:
        eos = self._settings.eos
        codes = chosen.tolist()
        ended: list[Ended] = []
        keep: list[int] = []
        for i, row in enumerate(self.rows):
            stopped = codes[i] == eos
            if stopped or row.sampled >= row.prompt.budget:
                ended.append(
                    Ended(
                        row.tag,
                        _stacked(row, self._groups, self._device),
                        capped=not stopped,
                        seconds=row.seconds,
                        wall_s=time.perf_counter() - row.started,
                    )
                )
            else:
                keep.append(i)
        if ended:
            self._keep_only(keep)
        return ended

    def split_off(self, tags: Collection[Hashable]) -> RunningBatch:
        """Move the rows `tags` into a batch of their own, state and all (a paused batch is simply
        not stepped); `absorb` brings them back, with the same codes to come."""
        other = RunningBatch(self._talker, self._settings)
        moving = [i for i, row in enumerate(self.rows) if row.tag in tags]
        if not moving:
            return other
        # The new batch starts as a view of this one (own layer objects, shared tensors), then each
        # keeps its own rows.
        other._cache = copy.copy(self._cache)
        other._cache.layers = [copy.copy(layer) for layer in self._cache.layers]
        other.rows, other._mask, other._last = self.rows, self._mask, self._last
        other._hidden, other._seen = self._hidden, self._seen
        other._keep_only(moving)
        self._keep_only([i for i in range(len(self.rows)) if i not in set(moving)])
        return other

    def absorb(self, other: RunningBatch) -> None:
        """Merge the rows of `other` (split off before) back into this batch."""
        if not other.rows:
            return
        assert other._mask is not None and other._last is not None
        assert other._hidden is not None and other._seen is not None
        self._merge(other.rows, other._cache, other._mask, other._last, other._hidden, other._seen)

    def drop(self, tags: Sequence[Hashable]) -> None:
        """Rows that must stop now (their job was cancelled), without a result."""
        gone = set(tags)
        self._keep_only([i for i, row in enumerate(self.rows) if row.tag not in gone])

    def _keep_only(self, keep: list[int]) -> None:
        import torch

        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows = []
            self._cache = self._mask = self._last = self._hidden = self._seen = None
            return
        assert self._mask is not None and self._last is not None and self._hidden is not None
        assert self._seen is not None
        index = torch.tensor(keep, dtype=torch.long, device=self._device)
        mask = self._mask[index]
        # Cache columns that are padding for every remaining row go too.
        start = int(mask.argmax(dim=1).min())
        keys = [layer.keys[index, :, start:] for layer in self._cache.layers]
        values = [layer.values[index, :, start:] for layer in self._cache.layers]
        state = (mask[:, start:], self._last[index], self._hidden[index], self._seen[index])
        self._replace([self.rows[i] for i in keep], keys, values, *state)


def _text_at(row: Row) -> torch.Tensor:
    trailing = row.prompt.trailing
    if row.text_step < trailing.shape[1]:
        return trailing[:, row.text_step : row.text_step + 1]
    return row.prompt.pad


def _stacked(row: Row, groups: int, device: Any) -> torch.Tensor:
    import torch

    if not row.codes:
        return torch.zeros(0, groups, dtype=torch.long, device=device)
    return torch.stack(row.codes)


def _left_pad(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """B x heads x T x d, `count` zero columns in front of T."""
    import torch

    if count == 0:
        return tensor
    return torch.cat([tensor.new_zeros(*tensor.shape[:2], count, tensor.shape[3]), tensor], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    import torch

    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
