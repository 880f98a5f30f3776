"""A call's prompts, built by qwen-tts itself and taken apart row by row.

ttsd's loop does not rebuild qwen-tts' prompts (speaker and language codes, instruct, voice-clone
reference and in-context codes, streaming or not; `modeling_qwen3_tts.py` 2068-2269). It runs the
official path up to the talker's `generate` and takes what that would have received: the
left-padded prompt embeddings, the text still to be streamed in per frame, the pad embedding, and
the sampling settings with the checkpoint's defaults merged. Each row is then cut free of the
call's padding, so it can join a batch of other rows at any step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ttsd.synth.engine.stepping.sampling import RowSampling

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RowPrompt:
    """What one row starts from."""

    embeds: torch.Tensor
    """The prompt's embeddings, 1 x L x H, no padding."""
    trailing: torch.Tensor
    """The text embeddings added frame by frame after the prompt, 1 x Lt x H (then `pad`)."""
    pad: torch.Tensor
    """The text pad embedding, 1 x 1 x H."""
    sampling: RowSampling
    budget: int
    """`max_new_tokens`: codes the row may sample, so at most budget - 1 frames."""


@dataclass(frozen=True)
class CallSettings:
    """What qwen-tts asks of the talker's generate besides the prompts."""

    eos: int
    suppress: tuple[int, ...]
    min_new_tokens: int


def split_rows(captured: dict[str, Any]) -> tuple[list[RowPrompt], CallSettings]:
    """The rows of a captured talker `generate` call, each without the call's left padding."""
    embeds = captured["inputs_embeds"]
    mask = captured["attention_mask"]
    trailing = captured["trailing_text_hidden"]
    pad = captured["tts_pad_embed"]
    sampling = RowSampling.of(captured)
    lengths = mask.sum(dim=1).tolist()
    width = embeds.shape[1]
    rows = [
        RowPrompt(
            embeds=embeds[i : i + 1, width - int(length) :],
            trailing=trailing[i : i + 1],
            pad=pad,
            sampling=sampling,
            budget=int(captured["max_new_tokens"]),
        )
        for i, length in enumerate(lengths)
    ]
    settings = CallSettings(
        eos=int(captured["eos_token_id"]),
        suppress=tuple(int(t) for t in captured.get("suppress_tokens") or ()),
        min_new_tokens=int(captured.get("min_new_tokens") or 0),
    )
    return rows, settings


def left_padded(prompts: Sequence[RowPrompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows' embeddings left-padded with zeros to one length, their attention mask and their
    multimodal RoPE positions, as qwen-tts builds them for a batch (`get_rope_index`)."""
    import torch

    width = max(p.embeds.shape[1] for p in prompts)
    hidden = prompts[0].embeds.shape[2]
    first = prompts[0].embeds
    embeds = first.new_zeros(len(prompts), width, hidden)
    mask = torch.zeros(len(prompts), width, dtype=torch.long, device=first.device)
    for i, prompt in enumerate(prompts):
        length = prompt.embeds.shape[1]
        embeds[i, width - length :] = prompt.embeds[0]
        mask[i, width - length :] = 1
    positions = mask.float().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)
    return embeds, mask, positions.unsqueeze(0).expand(3, -1, -1).to(first.device)
