"""Tiny, randomly initialised Qwen3-TTS checkpoints that the official loader reads offline.

`build_tiny_checkpoint` writes the *real* architecture (same classes and code paths as the Hub
models, 16 code groups, codebook 2048, 24 kHz, 1920 samples per 12.5 Hz frame) at tiny widths,
about 12 MB, so tests exercise `qwen_tts.Qwen3TTSModel` end to end without network or GPU.
`scale` grows the talker and its code predictor (for memory measurements on a bigger model).
The layout uses the Hub repositories' file names:

    out_dir/
      config.json, generation_config.json, model.safetensors
      tokenizer.json, tokenizer_config.json, special_tokens_map.json, ...
      speech_tokenizer/config.json, model.safetensors, preprocessor_config.json

Random weights practically never emit EOS, so every generate call runs until `max_new_tokens`
and returns `max_new_tokens - 1` frames of `SAMPLES_PER_FRAME` samples.

torch, transformers, tokenizers and qwen_tts are imported inside the functions: importing this
module stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly

TinyKind = Literal["custom_voice", "voice_design", "base"]

BUILDER_VERSION: Final = 1
"""Bumped whenever the builder writes a different checkpoint; recorded in the marker file."""
MARKER_NAME: Final = "ttsd-tiny.json"
SAMPLE_RATE: Final = 24000
SAMPLES_PER_FRAME: Final = 1920

_DEFAULT_SEED: Final = 0
_NUM_CODE_GROUPS: Final = 16
_CODEBOOK_SIZE: Final = 2048
_TEXT_HIDDEN_SIZE: Final = 32
# Per-head widths stay fixed whatever the scale: the talker's multimodal RoPE sections are tied to its
# head_dim, and scaling widths through the head count keeps heads * head_dim == hidden_size.
_TALKER_HEAD_DIM: Final = 16
_CODE_PREDICTOR_HEAD_DIM: Final = 12
# "1b7" rather than "0b6": the 0.6B code path drops `instruct`, and ttsd passes it through.
_MODEL_SIZE: Final = "1b7"
# qwen_tts loads the text tokenizer with fix_mistral_regex=True, which in transformers 4.57.3 can swap
# the Qwen pre-tokenizer regex for Mistral's when config.json declares a version in (4.57.2, 5.0.0).
# save_pretrained writes the running version, so the configs are rewritten to declare an older one.
_DECLARED_TRANSFORMERS_VERSION: Final = "4.57.1"
# Target loudness of random codes after decoding: audible noise, well clear of clipping.
_DECODED_NOISE_STD: Final = 0.1

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


@dataclass(frozen=True)
class TinyBuildReport:
    """What `build_tiny_checkpoint` wrote and how long it took."""

    out_dir: Path
    kind: TinyKind
    bytes_on_disk: int
    build_seconds: float


def build_tiny_checkpoint(
    out_dir: Path,
    kind: TinyKind = "custom_voice",
    *,
    seed: int = _DEFAULT_SEED,
    max_new_tokens: int = 24,
    scale: int = 1,
) -> TinyBuildReport:
    """Write a tiny random Qwen3-TTS checkpoint of model type `kind` into `out_dir`.

    `seed` makes the weights reproducible; the caller's torch RNG state is left untouched.
    `max_new_tokens` becomes the default generation cap in generation_config.json. Files already in
    `out_dir` with the same names are overwritten; for a build that is atomic and shared between
    processes use `ensure_tiny_checkpoint`. `build_seconds` excludes the one-off qwen_tts import.

    `scale` multiplies the talker's and the code predictor's hidden and intermediate sizes, attention
    head counts (head_dim stays fixed) and layer counts, and with them the speaker encoder's output
    width, which must equal the talker's hidden size. Their parameters grow about as scale**3: scale=8
    writes about 115 MB, scale=12 about 260 MB. The text and speech tokenizers do not change. scale=1,
    the default, writes the tiny checkpoint byte for byte.
    """
    if kind not in get_args(TinyKind):
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}; expected one of {get_args(TinyKind)}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    import torch

    import_qwen_tts_quietly()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    started = time.perf_counter()
    speech_dir = out_dir / "speech_tokenizer"
    speech_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)

        text_tokenizer = _train_text_tokenizer()
        text_tokenizer.save_pretrained(str(out_dir))
        token_id = text_tokenizer.convert_tokens_to_ids
        talker_config = _talker_config(_round_up(len(text_tokenizer), 64), kind, scale)
        config = Qwen3TTSConfig(
            talker_config=talker_config,
            speaker_encoder_config=_speaker_encoder_config(enc_dim=talker_config["hidden_size"]),
            tokenizer_type="qwen3_tts_tokenizer_12hz",
            tts_model_size=_MODEL_SIZE,
            tts_model_type=kind,
            im_start_token_id=token_id("<|im_start|>"),
            im_end_token_id=token_id("<|im_end|>"),
            tts_pad_token_id=token_id("<tts_pad>"),
            tts_bos_token_id=token_id("<tts_text_bos>"),
            tts_eos_token_id=token_id("<tts_text_eod>"),
            architectures=["Qwen3TTSForConditionalGeneration"],
        )
        Qwen3TTSForConditionalGeneration(config).eval().save_pretrained(str(out_dir), safe_serialization=True)
        _write_generation_defaults(out_dir / "generation_config.json", max_new_tokens)
        _rewrite_json(out_dir / "config.json", _fix_talker_config_json)

        _build_speech_tokenizer(speech_dir)

    bytes_on_disk = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    return TinyBuildReport(
        out_dir=out_dir,
        kind=kind,
        bytes_on_disk=bytes_on_disk,
        build_seconds=round(time.perf_counter() - started, 3),
    )


def ensure_tiny_checkpoint(out_dir: Path, kind: TinyKind) -> Path:
    """Return `out_dir` holding a tiny checkpoint of `kind`, building it first if it is missing.

    Safe when several threads or processes call it at once: builders are serialised by an
    `flock` on a lock file beside `out_dir`, each build happens in a sibling temporary directory
    whose marker file is written last, and the directory is renamed into place in one step, so
    `out_dir` is either absent or complete. A present marker returns at once without rebuilding.

    Raises ValueError when `out_dir` holds a checkpoint of another kind or builder version (put
    `BUILDER_VERSION` in the path of long-lived caches), and FileExistsError when `out_dir` is a
    non-empty directory without a marker.
    """
    if _has_matching_marker(out_dir, kind):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(out_dir.parent / f".{out_dir.name}.lock"):
        # Whoever held the lock before us may have just finished the same build.
        if _has_matching_marker(out_dir, kind):
            return out_dir
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists but has no {MARKER_NAME}: not a ttsd tiny checkpoint")
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".building-"))
        try:
            build_tiny_checkpoint(staging, kind, seed=_DEFAULT_SEED)
            marker = {"kind": kind, "seed": _DEFAULT_SEED, "builder_version": BUILDER_VERSION}
            (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            try:
                staging.rename(out_dir)
            except OSError:
                # A builder that does not take the lock (another host on a shared disk) won the race.
                if not _has_matching_marker(out_dir, kind):
                    raise
        finally:
            # After a successful rename `staging` no longer exists and this does nothing.
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _has_matching_marker(out_dir: Path, kind: TinyKind) -> bool:
    try:
        marker = json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    found = (marker.get("kind"), marker.get("builder_version"))
    if found != (kind, BUILDER_VERSION):
        raise ValueError(
            f"{out_dir} holds a tiny checkpoint of kind {found[0]!r}, builder version {found[1]!r}; "
            f"wanted kind {kind!r}, builder version {BUILDER_VERSION} (delete it to rebuild)"
        )
    return True


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # Append mode creates the file without truncating it under another holder; closing releases it.
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _train_text_tokenizer(vocab_size: int = 1024) -> Any:
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


def _talker_config(text_vocab_size: int, kind: TinyKind, scale: int) -> dict[str, Any]:
    # Special codec ids live above the codebook, in the 1024 extra slots the real models have.
    special = _CODEBOOK_SIZE
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
        "vocab_size": _CODEBOOK_SIZE + 1024,
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
        "num_code_groups": _NUM_CODE_GROUPS,
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
            "vocab_size": _CODEBOOK_SIZE,
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
            "num_code_groups": _NUM_CODE_GROUPS,
        },
    }


def _speaker_encoder_config(enc_dim: int) -> dict[str, Any]:
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


def _speech_tokenizer_config() -> dict[str, Any]:
    return {
        "encoder_valid_num_quantizers": _NUM_CODE_GROUPS,
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
            "codebook_size": _CODEBOOK_SIZE,
            "codebook_dim": 16,
            "num_quantizers": _NUM_CODE_GROUPS,
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
            "codebook_size": _CODEBOOK_SIZE,
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
            "num_quantizers": _NUM_CODE_GROUPS,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 64,
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
        },
    }


def _write_generation_defaults(path: Path, max_new_tokens: int) -> None:
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


def _fix_talker_config_json(config: dict[str, Any]) -> None:
    config["transformers_version"] = _DECLARED_TRANSFORMERS_VERSION
    # Qwen3TTSSpeakerEncoderConfig.__init__ takes no **kwargs, yet save_pretrained writes a
    # "model_type" key into the sub-config, which would make reloading raise TypeError.
    config["speaker_encoder_config"].pop("model_type", None)


def _fix_speech_tokenizer_config_json(config: dict[str, Any]) -> None:
    config["transformers_version"] = _DECLARED_TRANSFORMERS_VERSION


def _rewrite_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _build_speech_tokenizer(speech_dir: Path) -> None:
    """The 12 Hz codec (tiny Mimi encoder + tiny decoder), tuned so random codes decode to noise."""
    import torch
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        EuclideanCodebook,
        Qwen3TTSTokenizerV2Model,
    )
    from transformers import EncodecFeatureExtractor

    codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**_speech_tokenizer_config())).eval()
    with torch.no_grad():
        for module in codec.decoder.modules():
            if isinstance(module, EuclideanCodebook):
                # Codebooks start at zero, which would decode every code to silence.
                module.embedding_sum.normal_(0.0, 1.0)
            if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d | torch.nn.Linear):
                # torch's default init instead of std=0.02 keeps the signal alive through the stack;
                # zero biases stop a DC offset from swamping what the codes contribute.
                module.reset_parameters()
                if module.bias is not None:
                    module.bias.zero_()
        probe = torch.randint(0, _CODEBOOK_SIZE, (1, 25, _NUM_CODE_GROUPS))
        std = float(codec.decode(probe).audio_values[0].std().item())
        codec.decoder.decoder[-1].conv.weight.mul_(_DECODED_NOISE_STD / max(std, 1e-8))
    codec.save_pretrained(str(speech_dir), safe_serialization=True)
    EncodecFeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        chunk_length_s=None,
        overlap=None,
        return_attention_mask=True,
        padding_side="right",
    ).save_pretrained(str(speech_dir))
    _rewrite_json(speech_dir / "config.json", _fix_speech_tokenizer_config_json)
