"""Instance-level wrappers around a loaded model's talker (no class in qwen-tts is changed).

* Trim: `Qwen3TTSForConditionalGeneration.generate` always asks the talker's HF `generate` for
  `output_hidden_states` (`getattr` on a dict always returns its default), and HF then keeps every
  layer's hidden state of every step until the call ends, (layers + 1) x hidden per row per token.
  qwen-tts reads only the last layer's last position and the codec ids (`hid[0][-1][:, -1:]`,
  `hid[-1]`), so the wrapped `forward` hands HF just those.
* Per call: a logits processor (the tiny model's end of speech) is added to the talker's `generate`,
  and the codes it sampled are kept, to tell a row that stopped at the budget's last step from one
  the budget cut (their code lists look alike).
* Capture: ttsd's own generation loop (`ttsd.synth.engine.stepping`) lets qwen-tts build a call's
  prompts, then stops it at the talker's `generate` and takes what qwen-tts would have handed HF.

The engine holds its lock around a watched call, so one `TalkerCall` at a time is in flight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

CODE_ID_BYTES: Final = 8
"""Codec ids are int64."""


class PromptCaptured(Exception):
    """Raised in place of the talker's `generate` while capturing: carries its keyword arguments."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("the talker's generate was captured")
        self.kwargs = kwargs


@dataclass
class TalkerCall:
    """One watched talker `generate`: the processor it adds, and what it sampled (B x steps)."""

    processor: Any | None = None
    sequences: Any | None = None


class TalkerHooks:
    """The wrappers installed on one loaded model; `watching` scopes a call's processor."""

    def __init__(self, talker: Any) -> None:
        self.current: TalkerCall | None = None
        self.capture = False
        real_forward, real_generate = talker.forward, talker.generate
        # wraps(): HF validates generate's keyword arguments against forward's signature.
        talker.forward = functools.wraps(real_forward)(_trimmed(real_forward))
        talker.generate = functools.wraps(real_generate)(self._watched(real_generate))

    @contextmanager
    def watching(self, processor: Any | None = None) -> Iterator[TalkerCall]:
        """Within the block, the talker's `generate` adds `processor` and records its sequences."""
        call = TalkerCall(processor)
        self.current = call
        try:
            yield call
        finally:
            self.current = None

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Within the block, the talker's `generate` raises `PromptCaptured` instead of generating."""
        self.capture = True
        try:
            yield
        finally:
            self.capture = False

    def _watched(self, real_generate: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            if self.capture:
                raise PromptCaptured(kwargs)
            call = self.current
            if call is not None and call.processor is not None:
                from transformers import LogitsProcessorList

                kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", ()), call.processor])
            result = real_generate(*args, **kwargs)
            if call is not None:
                call.sequences = getattr(result, "sequences", None)
            return result

        return generate


def _trimmed(real_forward: Callable[..., Any]) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        output = real_forward(*args, **kwargs)
        hidden = getattr(output, "hidden_states", None)
        if hidden is not None and hidden[0] is not None:
            # contiguous(): a slice is a view that would keep the whole prefill tensor alive.
            output.hidden_states = ((hidden[0][-1][:, -1:].contiguous(),), hidden[1])
        return output

    return forward


def install_talker_hooks(model: Any) -> TalkerHooks:
    """Wrap the talker of a loaded `Qwen3TTSModel`; returns the hooks that scope a call."""
    return TalkerHooks(model.model.talker)


def bytes_per_row_token(talker_config: Any, dtype_bytes: int) -> int:
    """What one row holds per token of its sequence while the talker generates: the KV cache of
    every layer, plus what the trimmed hidden states retain per step (the last layer's state at one
    position, the frame's codec ids and the sampled code)."""
    layers = int(talker_config.num_hidden_layers)
    head_dim = int(
        getattr(talker_config, "head_dim", None) or talker_config.hidden_size // talker_config.num_attention_heads
    )
    kv = 2 * layers * int(talker_config.num_key_value_heads) * head_dim * dtype_bytes
    retained = int(talker_config.hidden_size) * dtype_bytes + (int(talker_config.num_code_groups) + 1) * CODE_ID_BYTES
    return kv + retained
