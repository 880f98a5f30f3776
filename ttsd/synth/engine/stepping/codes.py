"""The code predictor as a plain batched loop: one frame's 15 remaining codes for every row.

qwen-tts runs it per frame as a nested Hugging Face `generate` (`modeling_qwen3_tts.py` 1671-1680):
a fresh cache, stopping criteria, logits processors and keyword plumbing around 15 forwards of a
small transformer. That machinery is a third of a tiny model's call and most of a frame at the real
widths on small batches. Here the same 15 forwards run back to back over qwen-tts' own modules and
weights, with the same inputs, heads and sampling, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ttsd.synth.engine.stepping.sampling import Sampler

if TYPE_CHECKING:
    import torch


def next_codes(
    talker: Any, past_hidden: torch.Tensor, first: torch.Tensor, sampler: Sampler, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame's codes (B x 16: `first`, then the 15 predicted) and the sum of their embeddings
    (B x 1 x H), which is the talker's next input before the text is added.

    `past_hidden` is the talker's last hidden state per row (B x 1 x H), `first` the code the talker
    sampled (B), `uniforms` B x 15 draws for the sampling rows (None when no row samples).
    """
    import torch
    from transformers import DynamicCache

    predictor = talker.code_predictor
    embeddings = predictor.get_input_embeddings()
    groups = len(embeddings)
    first_embed = talker.get_input_embeddings()(first.view(-1, 1))
    device = first_embed.device
    cache = DynamicCache()
    inputs = predictor.small_to_mtp_projection(torch.cat((past_hidden, first_embed), dim=1))
    hidden = _forward(predictor, inputs, cache, start=0)
    # qwen-tts' head sees the whole 2-token prefill; the same shape keeps its float rounding.
    logits = predictor.lm_head[0](hidden)[:, -1].float()
    codes: list[torch.Tensor] = []
    code_embeds = [first_embed]
    for group in range(groups):
        code = sampler.choose(logits, None if uniforms is None else uniforms[:, group])
        codes.append(code)
        embed = embeddings[group](code.view(-1, 1))
        code_embeds.append(embed)
        if group + 1 == groups:
            break
        hidden = _forward(predictor, predictor.small_to_mtp_projection(embed), cache, start=group + 2)
        logits = predictor.lm_head[group + 1](hidden)[:, -1].float()
    frame = torch.cat((first.view(-1, 1), torch.stack(codes, dim=1)), dim=1).to(device)
    return frame, torch.cat(code_embeds, dim=1).sum(1, keepdim=True)


def _forward(predictor: Any, inputs: torch.Tensor, cache: Any, start: int) -> torch.Tensor:
    """The code predictor's transformer over `inputs` at positions `start`...: its layers and norm,
    as its `forward` runs them, without rebuilding a mask (none is needed: no row is padded, so sdpa
    is causal by itself, as HF's mask builder decides for this case) or the rotary tables (the same
    16 positions every frame) each time."""
    model = predictor.model
    width = inputs.shape[1]
    positions, rotary = _rotary(model, inputs, start, width)
    hidden = inputs
    for layer in model.layers[: model.config.num_hidden_layers]:
        hidden = layer(
            hidden,
            attention_mask=None,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            cache_position=positions[0],
            position_embeddings=rotary,
        )[0]
    return model.norm(hidden)  # type: ignore[no-any-return]


def _rotary(model: Any, inputs: torch.Tensor, start: int, width: int) -> tuple[torch.Tensor, Any]:
    import torch

    key = (start, width, inputs.device, inputs.dtype)
    tables: dict[Any, tuple[torch.Tensor, Any]] = model.__dict__.setdefault("_ttsd_rotary", {})
    if key not in tables:
        positions = torch.arange(start, start + width, device=inputs.device).unsqueeze(0)
        tables[key] = (positions, model.rotary_emb(inputs, positions))
    return tables[key]
