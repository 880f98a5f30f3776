"""The official `Qwen3TTSModel.generate_*` wrappers, split in two: codes, then waveforms.

Each `generate_custom_voice` / `generate_voice_design` / `generate_voice_clone` of qwen-tts 0.1.1
(`qwen_tts/inference/qwen3_tts_model.py`) tokenises, calls `model.model.generate` for the codes and
decodes them with `speech_tokenizer.decode` in one go. ttsd decodes one call while the next one
generates, so the ~20 lines of each wrapper are replicated here, in the same order and calling the
same qwen-tts functions, with the decode moved to `decode_codes`. Only the arguments ttsd uses are
handled: one list entry per row (no scalar broadcasting) and, for voice clone, prompt items built
beforehand. A greedy equivalence test holds them to the official wrappers, and a pin test fails when
the installed qwen-tts (so possibly these wrappers) changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ttsd.catalog import ModelKind

PINNED_QWEN_TTS: Final = "0.1.1"
"""The qwen-tts version whose wrappers these functions replicate."""

NON_STREAMING_DEFAULTS: Final[Mapping[ModelKind, bool]] = {
    "custom_voice": True,
    "voice_design": True,
    "base": False,
}
"""Each official wrapper's `non_streaming_mode` default (voice clone streams the text in)."""


@dataclass(frozen=True)
class Batch:
    """One call's rows, with the voice fields of its model kind resolved (one entry per row)."""

    texts: list[str]
    languages: list[str]
    speakers: list[str] = field(default_factory=list)
    instructs: list[str] = field(default_factory=list)
    clone_prompts: list[Any] = field(default_factory=list)
    """`VoiceClonePromptItem`s (voice clone only)."""


@dataclass(frozen=True)
class Codes:
    """What `generate_codes` produced: codes per row, and the reference codes (voice clone in ICL
    mode) that decoding puts in front of them and trims off again."""

    rows: list[Any]
    ref_codes: list[Any | None]


def generate_codes(model: Any, kind: ModelKind, batch: Batch, generation: Mapping[str, Any]) -> Codes:
    """The first half of the official wrapper of `kind`: validate, tokenise, merge the generation
    defaults and run `model.model.generate`. Runs under `torch.no_grad` like the wrappers."""
    import torch

    kwargs = dict(generation)
    non_streaming = bool(kwargs.pop("non_streaming_mode", NON_STREAMING_DEFAULTS[kind]))
    with torch.no_grad():
        if kind == "custom_voice":
            return _custom_voice(model, batch, non_streaming, kwargs)
        if kind == "voice_design":
            return _voice_design(model, batch, non_streaming, kwargs)
        return _voice_clone(model, batch, non_streaming, kwargs)


def _instruct_ids(model: Any, instructs: Sequence[str | None]) -> list[Any | None]:
    return [
        None if not instruct else model._tokenize_texts([model._build_instruct_text(instruct)])[0]
        for instruct in instructs
    ]


def _input_ids(model: Any, texts: Sequence[str]) -> list[Any]:
    return list(model._tokenize_texts([model._build_assistant_text(text) for text in texts]))


def _custom_voice(model: Any, batch: Batch, non_streaming: bool, kwargs: dict[str, Any]) -> Codes:
    # The 0.6B CustomVoice drops instruct (a substring test in qwen-tts, kept as it is).
    instructs = [""] * len(batch.texts) if model.model.tts_model_size in "0b6" else batch.instructs
    model._validate_languages(batch.languages)
    model._validate_speakers(batch.speakers)
    codes, _ = model.model.generate(
        input_ids=_input_ids(model, batch.texts),
        instruct_ids=_instruct_ids(model, instructs),
        languages=batch.languages,
        speakers=batch.speakers,
        non_streaming_mode=non_streaming,
        **model._merge_generate_kwargs(**kwargs),
    )
    return Codes(rows=list(codes), ref_codes=[None] * len(codes))


def _voice_design(model: Any, batch: Batch, non_streaming: bool, kwargs: dict[str, Any]) -> Codes:
    model._validate_languages(batch.languages)
    codes, _ = model.model.generate(
        input_ids=_input_ids(model, batch.texts),
        instruct_ids=_instruct_ids(model, batch.instructs),
        languages=batch.languages,
        non_streaming_mode=non_streaming,
        **model._merge_generate_kwargs(**kwargs),
    )
    return Codes(rows=list(codes), ref_codes=[None] * len(codes))


def _voice_clone(model: Any, batch: Batch, non_streaming: bool, kwargs: dict[str, Any]) -> Codes:
    model._validate_languages(batch.languages)
    prompt = model._prompt_items_to_voice_clone_prompt(batch.clone_prompts)
    input_ids = _input_ids(model, batch.texts)
    ref_ids = [
        None if not item.ref_text else model._tokenize_texts([model._build_ref_text(item.ref_text)])[0]
        for item in batch.clone_prompts
    ]
    codes, _ = model.model.generate(
        input_ids=input_ids,
        ref_ids=ref_ids,
        voice_clone_prompt=prompt,
        languages=batch.languages,
        non_streaming_mode=non_streaming,
        **model._merge_generate_kwargs(**kwargs),
    )
    return Codes(rows=list(codes), ref_codes=list(prompt["ref_code"]))


def decode_codes(model: Any, codes: Codes) -> list[Any]:
    """The second half of the official wrappers: one `speech_tokenizer.decode` over the padded
    batch; in ICL voice clone the reference codes go first and their share of the audio is cut off."""
    import torch

    full = [
        row if ref is None else torch.cat([ref.to(row.device), row], dim=0)
        for row, ref in zip(codes.rows, codes.ref_codes, strict=True)
    ]
    wavs, _rate = model.model.speech_tokenizer.decode([{"audio_codes": row} for row in full])
    out = []
    for wav, ref, row in zip(wavs, codes.ref_codes, full, strict=True):
        if ref is None:
            out.append(wav)
        else:
            # The official proportional cut (float rounding may put it a sample away from
            # ref_len * samples per frame; kept so the waveforms equal the official ones).
            cut = int(int(ref.shape[0]) / max(int(row.shape[0]), 1) * wav.shape[0])
            out.append(wav[cut:])
    return out
