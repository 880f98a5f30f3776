"""The parts of a tiny Qwen3-TTS checkpoint: configs of the talker, its code predictor, the speaker
encoder and the speech tokenizer at tiny widths, and a small trained text tokenizer. `tiny.py`
assembles them into a checkpoint folder the official loader reads.

torch, transformers and tokenizers are imported inside the functions: importing this module stays
cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

TinyKind = Literal["custom_voice", "voice_design", "base"]
Widths = Literal["tiny", "0.6b"]
"""The talker's and code predictor's widths: tiny ones, or the published Qwen3-TTS-12Hz-0.6B ones."""

SAMPLE_RATE: Final = 24000
SAMPLES_PER_FRAME: Final = 1920
NUM_CODE_GROUPS: Final = 16
CODEBOOK_SIZE: Final = 2048

_TEXT_HIDDEN_SIZE: Final = 32
# The published Qwen3-TTS-12Hz-0.6B widths (its config.json on the Hub). text_hidden_size is the
# real 2048 too: the text embedding stays a lookup over the tiny vocabulary (about 2 M parameters),
# and the text projection (2048 -> 2048 -> 1024, about 6 M) runs at its real cost.
_REAL_06B_TALKER: Final = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "text_hidden_size": 2048,
}
# The sections sum to head_dim / 2 = 64, interleaved like the tiny talker's.
_REAL_06B_MROPE_SECTION: Final = (24, 20, 20)
_REAL_06B_CODE_PREDICTOR: Final = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 5,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
# Per-head widths stay fixed whatever the scale: the talker's multimodal RoPE sections are tied to its
# head_dim, and scaling widths through the head count keeps heads * head_dim == hidden_size.
_TALKER_HEAD_DIM: Final = 16
_CODE_PREDICTOR_HEAD_DIM: Final = 12
# qwen_tts loads the text tokenizer with fix_mistral_regex=True, which in transformers 4.57.3 can swap
# the Qwen pre-tokenizer regex for Mistral's when config.json declares a version in (4.57.2, 5.0.0).
# save_pretrained writes the running version, so the configs are rewritten to declare an older one.
_DECLARED_TRANSFORMERS_VERSION: Final = "4.57.1"
_TEXT_SPECIAL_TOKENS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
# The Qwen2/Qwen3 pre-tokenizer regex, as in the real tokenizer.json.
_QWEN_PRETOKENIZE_PATTERN: Final = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_TOKENIZER_CORPUS: Final = (
    "<|im_start|>assistant\nHello world.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nSpeak slowly and calmly.<|im_end|>\n",
    "The quick brown fox jumps over the lazy dog.",
    "She said she would be here by noon.",
    "This is a tiny test of the text to speech pipeline.",
    "Testing one two three, testing again.",
    "其实我真的有发现，我是一个特别善于观察别人情绪的人。",
    "こんにちは、世界。",
    "안녕하세요 세계",
    "Bonjour le monde.",
    "Hallo Welt.",
    "Привет, мир.",
    "Olá mundo.",
    "Hola mundo.",
    "Ciao mondo.",
)
_CUSTOM_VOICE_SPEAKERS: Final = (
    "vivian",
    "serena",
    "uncle_fu",
    "dylan",
    "eric",
    "ryan",
    "aiden",
    "ono_anna",
    "sohee",
)
_DIALECT_SPEAKERS: Final = {"dylan": "beijing_dialect", "eric": "sichuan_dialect"}


def round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def train_text_tokenizer(vocab_size: int = 1024) -> Any:
    """A small byte-level BPE with the Qwen2 pre-tokenizer, wrapped as Qwen2TokenizerFast."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(_TEXT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repetition makes "assistant" and "user" single tokens: the model slices the prompt by token
    # position (input_ids[:, :3] is "<|im_start|>assistant\n", input_ids[:, -5:] the closing frame).
    tokenizer.train_from_iterator([line for line in _TOKENIZER_CORPUS for _ in range(50)], trainer=trainer)

    wrapped = Qwen2TokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",  # noqa: S106 (a token name, not a password)
        pad_token="<|endoftext|>",  # noqa: S106
        additional_special_tokens=[t for t in _TEXT_SPECIAL_TOKENS if t != "<|endoftext|>"],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        errors="replace",
    )
    ids = wrapped("<|im_start|>assistant\nHi there.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    tokens = wrapped.convert_ids_to_tokens(ids)
    frame_open = ["<|im_start|>", "assistant", "Ċ"]
    if tokens[:3] != frame_open or tokens[-5:] != ["<|im_end|>", "Ċ", *frame_open]:
        raise RuntimeError(f"tiny tokenizer splits the chat frame differently than qwen_tts slices it: {tokens}")
    return wrapped


def talker_config(text_vocab_size: int, kind: TinyKind, scale: int) -> dict[str, Any]:
    # Special codec ids live above the codebook, in the 1024 extra slots the real models have.
    special = CODEBOOK_SIZE
    language_ids = {
        "english": special + 2,
        "german": special + 5,
        "spanish": special + 6,
        "chinese": special + 7,
        "japanese": special + 10,
        "french": special + 13,
        "korean": special + 16,
        "russian": special + 21,
        "italian": special + 22,
        "portuguese": special + 23,
        "beijing_dialect": special + 26,
        "sichuan_dialect": special + 27,
    }
    speakers = _CUSTOM_VOICE_SPEAKERS if kind == "custom_voice" else ()
    return {
        "vocab_size": CODEBOOK_SIZE + 1024,
        "hidden_size": 2 * scale * _TALKER_HEAD_DIM,
        "intermediate_size": 64 * scale,
        "num_hidden_layers": 2 * scale,
        "num_attention_heads": 2 * scale,
        "num_key_value_heads": scale,
        "head_dim": _TALKER_HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        # The talker uses 3-section multimodal RoPE; the sections must sum to head_dim / 2 (8).
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "attention_bias": False,
        "use_sliding_window": False,
        "num_code_groups": NUM_CODE_GROUPS,
        "text_vocab_size": text_vocab_size,
        "text_hidden_size": _TEXT_HIDDEN_SIZE,
        "codec_pad_id": special + 100,
        "codec_bos_id": special + 101,
        "codec_eos_token_id": special + 102,
        "codec_think_id": special + 106,
        "codec_nothink_id": special + 107,
        "codec_think_bos_id": special + 108,
        "codec_think_eos_id": special + 109,
        "codec_language_id": language_ids,
        "spk_id": {name: special + 200 + i for i, name in enumerate(speakers)},
        "spk_is_dialect": {name: _DIALECT_SPEAKERS.get(name, False) for name in speakers},
        "code_predictor_config": {
            "vocab_size": CODEBOOK_SIZE,
            # Differs from the talker's width so small_to_mtp_projection is exercised, as in 1.7B.
            "hidden_size": 2 * scale * _CODE_PREDICTOR_HEAD_DIM,
            "intermediate_size": 48 * scale,
            "num_hidden_layers": scale,
            "num_attention_heads": 2 * scale,
            "num_key_value_heads": scale,
            "head_dim": _CODE_PREDICTOR_HEAD_DIM,
            "hidden_act": "silu",
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "num_code_groups": NUM_CODE_GROUPS,
        },
    }


def real_06b_talker_config(text_vocab_size: int, kind: TinyKind) -> dict[str, Any]:
    """`talker_config` with the published 0.6B widths of the talker and its code predictor.

    Everything else (codec ids, speakers, languages, the tiny text vocabulary) is the tiny config's.
    The code predictor is as wide as the talker, so small_to_mtp_projection is an identity, as in
    the real 0.6B model (the tiny config differs there on purpose, like 1.7B).
    """
    config = talker_config(text_vocab_size, kind, scale=1)
    config.update(_REAL_06B_TALKER)
    config["rope_scaling"] = {
        "rope_type": "default",
        "mrope_section": list(_REAL_06B_MROPE_SECTION),
        "interleaved": True,
    }
    config["code_predictor_config"].update(_REAL_06B_CODE_PREDICTOR)
    return config


def speaker_encoder_config(enc_dim: int) -> dict[str, Any]:
    return {
        "mel_dim": 128,
        "enc_dim": enc_dim,  # must equal the talker's hidden_size
        "enc_channels": [16, 16, 16, 16, 48],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 8,
        "enc_res2net_scale": 2,
        "enc_se_channels": 8,
        "sample_rate": SAMPLE_RATE,
    }


def speech_tokenizer_config() -> dict[str, Any]:
    return {
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "decode_upsample_rate": SAMPLES_PER_FRAME,
        "encode_downsample_rate": SAMPLES_PER_FRAME,
        # transformers' MimiConfig; the upsampling ratios multiply to 8*6*5*4*2 = 1920.
        "encoder_config": {
            "sampling_rate": SAMPLE_RATE,
            "frame_rate": SAMPLE_RATE / SAMPLES_PER_FRAME,
            "audio_channels": 1,
            "hidden_size": 16,
            "num_filters": 2,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "compress": 2,
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "num_quantizers": NUM_CODE_GROUPS,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 16,
            "upsample_groups": 16,
            "num_hidden_layers": 1,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 8000,
            "sliding_window": 250,
        },
        # Qwen3TTSTokenizerV2DecoderConfig; 8*5*4*3 * 2*2 = 1920.
        "decoder_config": {
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "latent_dim": 32,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "sliding_window": 72,
            "num_quantizers": NUM_CODE_GROUPS,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 64,
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
        },
    }


def write_generation_defaults(path: Path, max_new_tokens: int) -> None:
    # Qwen3TTSModel takes its sampling defaults from this file; the small cap matters because random
    # weights would otherwise run to the real default of 2048 frames.
    defaults = {
        "do_sample": True,
        "top_k": 50,
        "top_p": 1.0,
        "temperature": 0.9,
        "repetition_penalty": 1.05,
        "subtalker_dosample": True,
        "subtalker_top_k": 50,
        "subtalker_top_p": 1.0,
        "subtalker_temperature": 0.9,
        "max_new_tokens": max_new_tokens,
    }
    path.write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")


def fix_talker_config_json(config: dict[str, Any]) -> None:
    config["transformers_version"] = _DECLARED_TRANSFORMERS_VERSION
    # Qwen3TTSSpeakerEncoderConfig.__init__ takes no **kwargs, yet save_pretrained writes a
    # "model_type" key into the sub-config, which would make reloading raise TypeError.
    config["speaker_encoder_config"].pop("model_type", None)


def fix_speech_tokenizer_config_json(config: dict[str, Any]) -> None:
    config["transformers_version"] = _DECLARED_TRANSFORMERS_VERSION


def rewrite_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
