"""Registry names -> where a model's weights come from and which generate kind it is."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["custom_voice", "voice_design", "base"]

KIND_FIELDS: dict[ModelKind, tuple[str, ...]] = {
    "custom_voice": ("speaker", "language", "instruct"),
    "voice_design": ("instruct", "language"),
    "base": ("ref_audio", "ref_text", "language"),
}

OFFICIAL_MODELS: dict[str, tuple[str, ModelKind]] = {
    "qwen3-tts-0.6b": ("Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice", "custom_voice"),
    "qwen3-tts-1.7b": ("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", "custom_voice"),
    "qwen3-tts-1.7b-design": ("Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign", "voice_design"),
    "qwen3-tts-0.6b-base": ("Qwen/Qwen3-TTS-12Hz-0.6B-Base", "base"),
    "qwen3-tts-1.7b-base": ("Qwen/Qwen3-TTS-12Hz-1.7B-Base", "base"),
}

DEFAULT_VOICE_BASE_MODEL = "qwen3-tts-0.6b-base"
"""The Base model a saved voice is made for unless `ttsd voices add --model` says otherwise."""
DEFAULT_VOICE_DESIGN_MODEL = "qwen3-tts-1.7b-design"
"""The VoiceDesign model that renders a designed voice's reference unless `--design-model` says."""

TINY_MODELS: dict[str, ModelKind] = {
    "tiny": "custom_voice",
    "tiny-design": "voice_design",
    "tiny-base": "base",
}

_CHECKPOINT_KINDS: dict[str, ModelKind] = {
    "custom_voice": "custom_voice",
    "voice_design": "voice_design",
    "base": "base",
}


@dataclass(frozen=True)
class ModelEntry:
    """One registry name. Exactly one of `repo_id`, `local_dir`, `tiny` says where the weights are."""

    name: str
    kind: ModelKind
    repo_id: str | None = None
    local_dir: Path | None = None
    tiny: bool = False

    @property
    def source(self) -> str:
        """A human description of where the weights come from."""
        if self.tiny:
            return "built locally (tiny random weights: noise, not speech)"
        return str(self.local_dir) if self.local_dir is not None else f"hf:{self.repo_id}"


def checkpoint_kind(directory: Path) -> ModelKind | None:
    """The generate kind a local checkpoint declares in its config.json, if it says."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    declared = config.get("tts_model_type") if isinstance(config, dict) else None
    return _CHECKPOINT_KINDS.get(declared) if isinstance(declared, str) else None


def _guess_kind_from_id(repo_id: str) -> ModelKind:
    lowered = repo_id.lower()
    if "voicedesign" in lowered:
        return "voice_design"
    if lowered.endswith("-base"):
        return "base"
    return "custom_voice"


def build_registry(extra: Mapping[str, str]) -> dict[str, ModelEntry]:
    """The official names, the tiny family, then `TTS_MODELS` entries (a local directory or a repo id)."""
    registry: dict[str, ModelEntry] = {
        name: ModelEntry(name=name, kind=kind, repo_id=repo_id) for name, (repo_id, kind) in OFFICIAL_MODELS.items()
    }
    registry.update({name: ModelEntry(name=name, kind=kind, tiny=True) for name, kind in TINY_MODELS.items()})
    for name, target in extra.items():
        path = Path(target).expanduser()
        if path.is_absolute() or target.startswith("."):
            registry[name] = ModelEntry(
                name=name, kind=checkpoint_kind(path) or "custom_voice", local_dir=path.absolute()
            )
        else:
            registry[name] = ModelEntry(name=name, kind=_guess_kind_from_id(target), repo_id=target)
    return registry
