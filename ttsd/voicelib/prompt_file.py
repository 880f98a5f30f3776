"""A voice-clone prompt as a file: the fields of qwen-tts' `VoiceClonePromptItem` in safetensors.

The arrays (the speaker embedding, float32; in-context mode also the reference codes, int64) are
the file's tensors; the reference transcript and the two mode flags are its string metadata. So the
file alone is the whole prompt, and its SHA-256 covers everything that shapes the speech cloned
from it. The arrays are numpy (`safetensors.numpy`): the library never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from ttsd.fsutil import NotRegularFile, read_regular_file
from ttsd.voicelib.errors import DamagedVoice, VoiceNotFound, VoiceRejected

PROMPT_FORMAT: Final = "ttsd.voice-prompt.v1"
MAX_PROMPT_BYTES: Final = 16 * 1024 * 1024
"""Far above any real prompt (60 s of reference codes are about 100 KB)."""
_TRUE, _FALSE = "true", "false"


def encode_prompt(fields: Mapping[str, Any]) -> bytes:
    """The file bytes of a prompt item's fields (`ref_spk_embedding`, `ref_code` or None,
    `x_vector_only_mode`, `icl_mode`, `ref_text`); raises VoiceRejected naming a bad field."""
    from safetensors.numpy import save

    embedding = fields.get("ref_spk_embedding")
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 1 or not embedding.size:
        raise VoiceRejected("the prompt's ref_spk_embedding must be a non-empty 1-D numpy array")
    tensors = {"ref_spk_embedding": np.ascontiguousarray(embedding, dtype=np.float32)}
    code = fields.get("ref_code")
    if code is not None:
        if not isinstance(code, np.ndarray) or code.ndim != 2 or not code.size:
            raise VoiceRejected("the prompt's ref_code must be None or a non-empty 2-D numpy array (frames x groups)")
        tensors["ref_code"] = np.ascontiguousarray(code, dtype=np.int64)
    x_vector_only, icl = fields.get("x_vector_only_mode"), fields.get("icl_mode")
    if not isinstance(x_vector_only, bool) or not isinstance(icl, bool):
        raise VoiceRejected("the prompt's x_vector_only_mode and icl_mode must be booleans")
    ref_text = fields.get("ref_text")
    if icl and (code is None or not ref_text):
        raise VoiceRejected("an in-context (icl_mode) prompt needs ref_code and ref_text")
    metadata = {
        "format": PROMPT_FORMAT,
        "x_vector_only_mode": _TRUE if x_vector_only else _FALSE,
        "icl_mode": _TRUE if icl else _FALSE,
    }
    if ref_text is not None:
        metadata["ref_text"] = str(ref_text)
    return bytes(save(tensors, metadata=metadata))


def sha256_of(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def load_prompt(path: Path, expected_sha256: str, voice: str) -> dict[str, Any]:
    """The prompt item's fields from `path` (see `encode_prompt`), after checking the file is the one
    saved: VoiceNotFound when it is gone, DamagedVoice when it is unreadable, changed or malformed."""
    return decode_prompt(checked_prompt_bytes(path, expected_sha256, voice), voice)


def checked_prompt_bytes(path: Path, expected_sha256: str, voice: str) -> bytes:
    """The bytes of the prompt file at `path`, if they are the ones saved (errors as `load_prompt`)."""
    try:
        data = read_regular_file(path, MAX_PROMPT_BYTES + 1)
    except FileNotFoundError:
        raise VoiceNotFound(voice, saved_names(path.parent.parent), why=f"its prompt file {path} is gone") from None
    except (NotRegularFile, OSError) as exc:
        raise DamagedVoice(voice, f"its prompt file {path} cannot be read ({exc})") from exc
    if len(data) > MAX_PROMPT_BYTES:
        raise DamagedVoice(voice, f"its prompt file {path} is over {MAX_PROMPT_BYTES} bytes")
    actual = sha256_of(data)
    if actual != expected_sha256:
        raise DamagedVoice(
            voice, f"its prompt file changed since it was saved (sha256 {actual[:12]}…, saved {expected_sha256[:12]}…)"
        )
    return data


def decode_prompt(data: bytes, voice: str) -> dict[str, Any]:
    """The prompt item's fields from file bytes; DamagedVoice saying what is malformed."""
    from safetensors.numpy import load

    try:
        tensors = load(data)
        metadata = _metadata(data)
    except Exception as exc:  # safetensors raises its own types and plain ones alike
        raise DamagedVoice(voice, f"its prompt file is not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != PROMPT_FORMAT:
        raise DamagedVoice(voice, f"its prompt file's format is {metadata.get('format')!r}, not {PROMPT_FORMAT!r}")
    fields = {
        "ref_code": tensors.get("ref_code"),
        "ref_spk_embedding": tensors.get("ref_spk_embedding"),
        "x_vector_only_mode": metadata.get("x_vector_only_mode") == _TRUE,
        "icl_mode": metadata.get("icl_mode") == _TRUE,
        "ref_text": metadata.get("ref_text"),
    }
    try:
        encode_prompt(fields)
    except VoiceRejected as exc:
        raise DamagedVoice(voice, f"its prompt file is malformed: {exc.message}") from exc
    return fields


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob: its header is an 8-byte little-endian length, then
    that many bytes of JSON."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def saved_names(root: Path) -> list[str]:
    """The names of the voice folders under `root` (valid or not), sorted."""
    try:
        return sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=str.casefold)
    except OSError:
        return []
