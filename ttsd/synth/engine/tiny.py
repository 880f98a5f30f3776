"""Tiny, randomly initialised Qwen3-TTS checkpoints that the official loader reads offline.

`build_tiny_checkpoint` writes the *real* architecture (same classes and code paths as the Hub
models, 16 code groups, codebook 2048, 24 kHz, 1920 samples per 12.5 Hz frame) at tiny widths,
about 12 MB, so tests exercise `qwen_tts.Qwen3TTSModel` end to end without network or GPU.
`scale` grows the talker and its code predictor (for memory measurements on a bigger model);
`widths="0.6b"` gives them the published Qwen3-TTS-12Hz-0.6B widths instead (about 600 M random
parameters, saved in bfloat16: 1.2 GB), for checks that must run at the real model's size.
The layout uses the Hub repositories' file names:

    out_dir/
      config.json, generation_config.json, model.safetensors
      tokenizer.json, tokenizer_config.json, special_tokens_map.json, ...
      speech_tokenizer/config.json, model.safetensors, preprocessor_config.json

Random weights practically never emit the codec's end-of-speech code: called directly through
qwen-tts, every generate call runs until `max_new_tokens` and returns `max_new_tokens - 1` frames of
`SAMPLES_PER_FRAME` samples. ttsd's engine therefore ends a tiny model's rows itself (`tiny_eos`):
by default after a number of frames that follows the text (seeded jitter included), as a trained
model would; with `TTS_TINY_EOS` off, never, so every row runs to its call's frame budget.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.tiny_parts import (
    CODEBOOK_SIZE,
    NUM_CODE_GROUPS,
    SAMPLE_RATE,
    TinyKind,
    Widths,
    fix_speech_tokenizer_config_json,
    fix_talker_config_json,
    real_06b_talker_config,
    rewrite_json,
    round_up,
    speaker_encoder_config,
    speech_tokenizer_config,
    talker_config,
    train_text_tokenizer,
    write_generation_defaults,
)

BUILDER_VERSION: Final = 1
"""Bumped whenever the builder writes a different checkpoint; recorded in the marker file."""
MARKER_NAME: Final = "ttsd-tiny.json"

_DEFAULT_SEED: Final = 0
# "1b7" rather than "0b6": the 0.6B code path drops `instruct`, and ttsd passes it through.
_MODEL_SIZE: Final = "1b7"
# Target loudness of random codes after decoding: audible noise, well clear of clipping.
_DECODED_NOISE_STD: Final = 0.1


@dataclass(frozen=True)
class TinyBuildReport:
    """What `build_tiny_checkpoint` wrote and how long it took."""

    out_dir: Path
    kind: TinyKind
    bytes_on_disk: int
    build_seconds: float
    widths: Widths = "tiny"


def build_tiny_checkpoint(
    out_dir: Path,
    kind: TinyKind = "custom_voice",
    *,
    seed: int = _DEFAULT_SEED,
    max_new_tokens: int = 24,
    scale: int = 1,
    widths: Widths = "tiny",
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

    `widths="0.6b"` gives the talker and the code predictor the published Qwen3-TTS-12Hz-0.6B widths
    (talker: hidden 1024, 28 layers, 16 query / 8 KV heads of 128, MLP 3072, text_hidden_size 2048;
    code predictor: hidden 1024, 5 layers, 16 / 8 heads of 128, MLP 3072) and the speaker encoder
    enc_dim 1024; the text vocabulary, tokenizers and codec stay tiny. The weights (about 600 M, HF's
    own init: normal(0, 0.02), zero biases, unit norms) are saved in bfloat16, 1.2 GB; qwen-tts loads
    them in whatever dtype it is asked for. It cannot be combined with `scale`. Like the tiny one, it
    declares tts_model_size "1b7", so `instruct` reaches the model on the same code path.
    """
    if kind not in get_args(TinyKind):
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}; expected one of {get_args(TinyKind)}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if widths not in get_args(Widths):
        raise ValueError(f"unknown widths {widths!r}; expected one of {get_args(Widths)}")
    if widths != "tiny" and scale != 1:
        raise ValueError(f"scale applies to the tiny widths only; got scale={scale!r} with widths={widths!r}")
    import torch

    import_qwen_tts_quietly()
    from qwen_tts.core.models import Qwen3TTSConfig

    started = time.perf_counter()
    speech_dir = out_dir / "speech_tokenizer"
    speech_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)

        text_tokenizer = train_text_tokenizer()
        text_tokenizer.save_pretrained(str(out_dir))
        token_id = text_tokenizer.convert_tokens_to_ids
        text_vocab_size = round_up(len(text_tokenizer), 64)
        if widths == "tiny":
            talker = talker_config(text_vocab_size, kind, scale)
        else:
            talker = real_06b_talker_config(text_vocab_size, kind)
        config = Qwen3TTSConfig(
            talker_config=talker,
            speaker_encoder_config=speaker_encoder_config(enc_dim=talker["hidden_size"]),
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
        _random_model(config, widths).save_pretrained(str(out_dir), safe_serialization=True)
        write_generation_defaults(out_dir / "generation_config.json", max_new_tokens)
        rewrite_json(out_dir / "config.json", fix_talker_config_json)

        _build_speech_tokenizer(speech_dir)

    bytes_on_disk = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    return TinyBuildReport(
        out_dir=out_dir,
        kind=kind,
        bytes_on_disk=bytes_on_disk,
        build_seconds=round(time.perf_counter() - started, 3),
        widths=widths,
    )


def ensure_tiny_checkpoint(out_dir: Path, kind: TinyKind, widths: Widths = "tiny") -> Path:
    """Return `out_dir` holding a tiny checkpoint of `kind` and `widths`, building it first if it is
    missing (see `build_tiny_checkpoint`).

    Safe when several threads or processes call it at once: builders are serialised by an
    `flock` on a lock file beside `out_dir`, each build happens in a sibling temporary directory
    whose marker file is written last, and the directory is renamed into place in one step, so
    `out_dir` is either absent or complete. A present marker returns at once without rebuilding.

    Raises ValueError when `out_dir` holds a checkpoint of another kind, widths or builder version
    (put `BUILDER_VERSION` in the path of long-lived caches), and FileExistsError when `out_dir` is a
    non-empty directory without a marker.
    """
    if _has_matching_marker(out_dir, kind, widths):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(out_dir.parent / f".{out_dir.name}.lock"):
        # Whoever held the lock before us may have just finished the same build.
        if _has_matching_marker(out_dir, kind, widths):
            return out_dir
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists but has no {MARKER_NAME}: not a ttsd tiny checkpoint")
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".building-"))
        try:
            build_tiny_checkpoint(staging, kind, seed=_DEFAULT_SEED, widths=widths)
            marker: dict[str, object] = {"kind": kind, "seed": _DEFAULT_SEED, "builder_version": BUILDER_VERSION}
            if widths != "tiny":
                # Tiny markers keep their old form, so caches built before widths existed stay valid.
                marker["widths"] = widths
            (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            try:
                staging.rename(out_dir)
            except OSError:
                # A builder that does not take the lock (another host on a shared disk) won the race.
                if not _has_matching_marker(out_dir, kind, widths):
                    raise
        finally:
            # After a successful rename `staging` no longer exists and this does nothing.
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _has_matching_marker(out_dir: Path, kind: TinyKind, widths: Widths) -> bool:
    try:
        marker = json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    found = (marker.get("kind"), marker.get("builder_version"), marker.get("widths", "tiny"))
    if found != (kind, BUILDER_VERSION, widths):
        raise ValueError(
            f"{out_dir} holds a tiny checkpoint of kind {found[0]!r}, builder version {found[1]!r}, "
            f"widths {found[2]!r}; wanted kind {kind!r}, builder version {BUILDER_VERSION}, widths {widths!r} "
            "(delete it to rebuild)"
        )
    return True


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # Append mode creates the file without truncating it under another holder; closing releases it.
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _random_model(config: Any, widths: Widths) -> Any:
    """A randomly initialised Qwen3TTSForConditionalGeneration for `config`, ready to save."""
    import torch
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration

    if widths == "tiny":
        # Unchanged since the first builder: the tiny checkpoint's bytes depend on this exact path.
        return Qwen3TTSForConditionalGeneration(config).eval()
    from transformers.modeling_utils import no_init_weights

    # A plain constructor initialises every Linear twice (torch's kaiming_uniform_, then HF's
    # normal_): about 5.7 s for 600 M parameters on one thread. no_init_weights skips both and leaves
    # the weights unset; HF's init then runs once, in bfloat16, on half the memory: about 3.7 s.
    with no_init_weights():
        model = Qwen3TTSForConditionalGeneration(config)
    model.to(torch.bfloat16)
    model.initialize_weights()
    return model.eval()


def _build_speech_tokenizer(speech_dir: Path) -> None:
    """The 12 Hz codec (tiny Mimi encoder + tiny decoder), tuned so random codes decode to noise."""
    import torch
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        EuclideanCodebook,
        Qwen3TTSTokenizerV2Model,
    )
    from transformers import EncodecFeatureExtractor

    codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**speech_tokenizer_config())).eval()
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
        probe = torch.randint(0, CODEBOOK_SIZE, (1, 25, NUM_CODE_GROUPS))
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
    rewrite_json(speech_dir / "config.json", fix_speech_tokenizer_config_json)
